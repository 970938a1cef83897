//! The index builds of the post-data section, all at once.
//!
//! `pg_restore -j` builds a table's indexes one after another: a `PRIMARY KEY` or `UNIQUE`
//! constraint is `ALTER TABLE … ADD CONSTRAINT`, whose `ACCESS EXCLUSIVE` lock waits for (and
//! blocks) every other build on the table, and the common shape (one big table, a key and an
//! index or two) gets no parallelism at all. Here such a constraint is built the way pgcopydb
//! builds it: `CREATE UNIQUE INDEX` under the constraint's name (a `SHARE` lock, which other
//! builds on the table share), then `ADD CONSTRAINT … USING INDEX`, which only attaches it. The
//! archive's own `CREATE INDEX` statements run as written. All of them share `jobs` connections,
//! the builds on the tables that loaded the most bytes first; whatever else post-data holds
//! (foreign keys, triggers, the constraints this does not read, comments, ACLs) is left to
//! `pg_restore`, which runs after.
//!
//! Only what is known to come out the same is taken: entries in the default tablespace, on a
//! plain table (not partitioned, not a partition for a constraint: `USING INDEX` is refused
//! there), and constraints exactly of `pg_dump`'s shape `ALTER TABLE ONLY t ADD CONSTRAINT c
//! PRIMARY KEY (cols);` (or `UNIQUE`), with no option after the column list (`DEFERRABLE`,
//! `INCLUDE`, `WITH`, `NULLS NOT DISTINCT` go to `pg_restore`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ferry_core::DatabaseUrl;
use sqlx::{AssertSqlSafe, Connection};
use tokio::sync::Mutex;

use super::archive::{SECTION_POST_DATA, Toc, TocEntry};
use super::connect;
use crate::error::{BackupError, Result};

/// One index to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Build {
    pub dump_id: i64,
    /// The table, as the statement names it (qualified, quoted where needed).
    pub table: String,
    /// `CREATE [UNIQUE] INDEX …`.
    pub sql: String,
    /// For a constraint: the `ALTER TABLE … ADD CONSTRAINT … USING INDEX` run after the build.
    pub attach: Option<String>,
    /// What it is, for messages: `index public.events_at` or `constraint events_pkey`.
    pub what: String,
}

/// The builds this module can take from the archive, before the server has said which
/// tables are plain ones.
pub(super) fn candidates(toc: &Toc) -> Vec<Build> {
    toc.entries
        .iter()
        .filter(|e| e.section == SECTION_POST_DATA && e.tablespace.is_empty())
        .filter_map(|e| match e.desc.as_str() {
            "INDEX" => index(e),
            "CONSTRAINT" => constraint(e),
            _ => None,
        })
        .collect()
}

/// An archive's `CREATE [UNIQUE] INDEX name ON table USING …;`, run as written.
fn index(e: &TocEntry) -> Option<Build> {
    let d = e.defn.trim();
    let rest = d
        .strip_prefix("CREATE INDEX ")
        .or_else(|| d.strip_prefix("CREATE UNIQUE INDEX "))?;
    let (_, rest) = ident(rest)?;
    let rest = rest.strip_prefix(" ON ")?;
    if rest.starts_with("ONLY ") {
        return None; // a partitioned table's own index
    }
    let (table, rest) = qualified(rest)?;
    rest.strip_prefix(" USING ")?;
    Some(Build {
        dump_id: e.dump_id,
        table: table.to_string(),
        sql: d.to_string(),
        attach: None,
        what: format!("index {}.{}", e.namespace, e.tag),
    })
}

/// `ALTER TABLE ONLY t\n    ADD CONSTRAINT c PRIMARY KEY (cols);` (or `UNIQUE`): a unique
/// index named `c`, then the constraint on it.
fn constraint(e: &TocEntry) -> Option<Build> {
    let d = e.defn.trim();
    let rest = d.strip_prefix("ALTER TABLE ONLY ")?;
    let (table, rest) = qualified(rest)?;
    let rest = rest.trim_start().strip_prefix("ADD CONSTRAINT ")?;
    let (name, rest) = ident(rest)?;
    let (kind, rest) = if let Some(r) = rest.strip_prefix(" PRIMARY KEY (") {
        ("PRIMARY KEY", r)
    } else if let Some(r) = rest.strip_prefix(" UNIQUE (") {
        ("UNIQUE", r)
    } else {
        return None;
    };
    let cols = rest.strip_suffix(");")?;
    // Anything but a plain column list (an option after it, an expression) is not this shape.
    if cols.is_empty() || cols.contains(['(', ')', ';']) {
        return None;
    }
    Some(Build {
        dump_id: e.dump_id,
        table: table.to_string(),
        sql: format!("CREATE UNIQUE INDEX {name} ON {table} USING btree ({cols})"),
        attach: Some(format!(
            "ALTER TABLE ONLY {table} ADD CONSTRAINT {name} {kind} USING INDEX {name}"
        )),
        what: format!("constraint {name} of {table}"),
    })
}

/// An identifier at the start of `s` as SQL writes it (`name` or `"Na""me"`), and the rest.
fn ident(s: &str) -> Option<(&str, &str)> {
    if let Some(body) = s.strip_prefix('"') {
        let mut i = 0;
        let b = body.as_bytes();
        loop {
            let q = body[i..].find('"')? + i;
            if b.get(q + 1) == Some(&b'"') {
                i = q + 2;
            } else {
                return Some((&s[..q + 2], &s[q + 2..]));
            }
        }
    }
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .unwrap_or(s.len());
    (end > 0).then(|| s.split_at(end))
}

/// `schema.name` (or `name`) at the start of `s`, and the rest.
fn qualified(s: &str) -> Option<(&str, &str)> {
    let (first, rest) = ident(s)?;
    match rest.strip_prefix('.') {
        Some(r) => {
            let (second, rest) = ident(r)?;
            let len = first.len() + 1 + second.len();
            Some((&s[..len], rest))
        }
        None => Some((first, rest)),
    }
}

/// What [`run`] needs.
pub(super) struct Indexes<'a> {
    pub url: &'a DatabaseUrl,
    pub jobs: usize,
    /// SQL each session runs first (encoding, role, timeouts), as the loading sessions do.
    pub setup: &'a str,
    /// Bytes loaded per table, keyed as the statements name tables: the biggest build first.
    pub weights: &'a HashMap<String, u64>,
}

/// Builds what [`candidates`] found on plain tables; returns the dump ids it built, which
/// `pg_restore` must then leave out.
pub(super) async fn run(
    ix: &Indexes<'_>,
    builds: Vec<Build>,
    failed: &(dyn Fn(String) -> BackupError + Sync),
) -> Result<HashSet<i64>> {
    if builds.is_empty() {
        return Ok(HashSet::new());
    }
    let mut conn = connect(ix.url).await?;
    let builds = plain_tables(&mut conn, builds)
        .await
        .map_err(|e| failed(format!("reading the new database's tables: {e}")));
    let _ = conn.close().await;
    let mut builds = builds?;
    if builds.is_empty() {
        return Ok(HashSet::new());
    }
    builds.sort_by_key(|b| std::cmp::Reverse(ix.weights.get(&b.table).copied().unwrap_or(0)));
    let done: HashSet<i64> = builds.iter().map(|b| b.dump_id).collect();
    let attaches: Vec<(String, String)> = builds
        .iter()
        .filter_map(|b| b.attach.clone().map(|a| (a, b.what.clone())))
        .collect();
    tracing::info!(
        builds = builds.len(),
        jobs = ix.jobs.min(builds.len()),
        "building indexes"
    );

    let queue = Arc::new(Mutex::new(builds.into_iter()));
    let workers = (0..ix.jobs.max(1).min(done.len())).map(|_| {
        let queue = queue.clone();
        async move {
            let mut conn = connect(ix.url).await?;
            let r = async {
                sqlx::raw_sql(AssertSqlSafe(ix.setup.to_string()))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| failed(format!("preparing an index session: {e}")))?;
                loop {
                    let Some(b) = queue.lock().await.next() else {
                        return Ok(());
                    };
                    let started = std::time::Instant::now();
                    sqlx::raw_sql(AssertSqlSafe(b.sql.clone()))
                        .execute(&mut conn)
                        .await
                        .map_err(|e| failed(format!("building {}: {e}", b.what)))?;
                    tracing::debug!(what = %b.what, ms = started.elapsed().as_millis() as u64, "index built");
                }
            }
            .await;
            let _ = conn.close().await;
            r
        }
    });
    super::load::join_all_ok(workers).await?;

    if !attaches.is_empty() {
        let mut conn = connect(ix.url).await?;
        let r = async {
            sqlx::raw_sql(AssertSqlSafe(ix.setup.to_string()))
                .execute(&mut conn)
                .await
                .map_err(|e| failed(format!("preparing an index session: {e}")))?;
            for (sql, what) in &attaches {
                sqlx::raw_sql(AssertSqlSafe(sql.clone()))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| failed(format!("adding {what}: {e}")))?;
            }
            Ok(())
        }
        .await;
        let _ = conn.close().await;
        r?;
    }
    Ok(done)
}

/// The builds whose table is a plain one: `relkind = 'r'`, and for a constraint not a
/// partition (`USING INDEX` is refused there). Anything else is left to `pg_restore`.
async fn plain_tables(
    conn: &mut sqlx::PgConnection,
    builds: Vec<Build>,
) -> std::result::Result<Vec<Build>, sqlx::Error> {
    let tables: Vec<String> = builds.iter().map(|b| b.table.clone()).collect();
    let rows: Vec<(String, Option<String>, Option<bool>)> = sqlx::query_as(
        "SELECT t, c.relkind::text, c.relispartition
         FROM unnest($1::text[]) t LEFT JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(t)",
    )
    .bind(&tables)
    .fetch_all(&mut *conn)
    .await?;
    let kinds: HashMap<String, (Option<String>, Option<bool>)> =
        rows.into_iter().map(|(t, k, p)| (t, (k, p))).collect();
    Ok(builds
        .into_iter()
        .filter(|b| match kinds.get(&b.table) {
            Some((Some(kind), Some(partition))) => {
                kind == "r" && (b.attach.is_none() || !partition)
            }
            _ => false,
        })
        .collect())
}

/// How PostgreSQL's own dump writes a name: bare when it is lower case letters, digits and
/// underscores (not starting with a digit), else quoted. Keywords are quoted too by `pg_dump`;
/// a name missed here only loses its place in the order, never its build.
pub(super) fn written(name: &str) -> String {
    let bare = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if bare {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(desc: &str, defn: &str) -> TocEntry {
        TocEntry {
            dump_id: 7,
            desc: desc.into(),
            section: SECTION_POST_DATA,
            defn: defn.into(),
            copy_stmt: String::new(),
            namespace: "public".into(),
            tag: "t".into(),
            tablespace: String::new(),
        }
    }

    #[test]
    fn a_key_becomes_a_unique_index_and_its_constraint() {
        let b = constraint(&entry(
            "CONSTRAINT",
            "ALTER TABLE ONLY public.events\n    ADD CONSTRAINT events_pkey PRIMARY KEY (id);\n",
        ))
        .unwrap();
        assert_eq!(b.table, "public.events");
        assert_eq!(
            b.sql,
            "CREATE UNIQUE INDEX events_pkey ON public.events USING btree (id)"
        );
        assert_eq!(
            b.attach.as_deref(),
            Some(
                "ALTER TABLE ONLY public.events ADD CONSTRAINT events_pkey PRIMARY KEY USING INDEX events_pkey"
            )
        );
        let b = constraint(&entry(
            "CONSTRAINT",
            "ALTER TABLE ONLY \"My\"\"Schema\".\"Odd Table\"\n    ADD CONSTRAINT \"u q\" UNIQUE (a, \"B\");\n",
        ))
        .unwrap();
        assert_eq!(b.table, "\"My\"\"Schema\".\"Odd Table\"");
        assert_eq!(
            b.sql,
            "CREATE UNIQUE INDEX \"u q\" ON \"My\"\"Schema\".\"Odd Table\" USING btree (a, \"B\")"
        );
    }

    #[test]
    fn constraints_of_another_shape_are_left_to_pg_restore() {
        for defn in [
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT u UNIQUE (a) DEFERRABLE;\n",
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT p PRIMARY KEY (a) INCLUDE (b);\n",
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT p PRIMARY KEY (a) WITH (fillfactor='70');\n",
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT u UNIQUE NULLS NOT DISTINCT (a);\n",
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT x EXCLUDE USING gist (r WITH &&);\n",
            "ALTER TABLE public.t\n    ADD CONSTRAINT c CHECK ((a > 0)) NOT VALID;\n",
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES public.u(id);\n",
        ] {
            assert_eq!(constraint(&entry("CONSTRAINT", defn)), None, "{defn}");
        }
    }

    #[test]
    fn indexes_run_as_written_but_not_a_partitioned_tables_own() {
        let b = index(&entry(
            "INDEX",
            "CREATE INDEX events_at ON public.events USING btree (account_id, at);\n",
        ))
        .unwrap();
        assert_eq!(b.table, "public.events");
        assert_eq!(
            b.sql,
            "CREATE INDEX events_at ON public.events USING btree (account_id, at);"
        );
        assert!(
            index(&entry(
                "INDEX",
                "CREATE UNIQUE INDEX \"I\" ON \"S\".t USING btree (lower(a)) WHERE (b IS NULL);"
            ))
            .is_some()
        );
        assert_eq!(
            index(&entry(
                "INDEX",
                "CREATE INDEX p_a ON ONLY public.p USING btree (a);"
            )),
            None
        );
        let mut e = entry("INDEX", "CREATE INDEX i ON public.t USING btree (a);");
        e.tablespace = "fast".into();
        assert!(
            candidates(&Toc {
                entries: vec![e],
                compressed: false,
                int_size: 4
            })
            .is_empty()
        );
    }

    #[test]
    fn names_are_written_as_pg_dump_writes_them() {
        assert_eq!(written("events"), "events");
        assert_eq!(written("Events"), "\"Events\"");
        assert_eq!(written("a b\""), "\"a b\"\"\"");
        assert_eq!(written("1x"), "\"1x\"");
    }
}
