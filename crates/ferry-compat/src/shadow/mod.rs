//! The dynamic proof in a shadow database that ferry creates and drops: apply the migrations up
//! to the base, snapshot the catalog, apply each new migration (snapshot after each), then revert
//! them one by one and require each down to restore the previous snapshot exactly, then apply
//! them again. Migrations run through `ferry_migrate::Migrator`, exactly as `ferry migrate` runs
//! them. After the base and after each new migration it also prepares the previous version's
//! queries (never executing them). It never touches the database it was pointed at: it creates
//! its own on that server (PostgreSQL, MySQL/MariaDB) or a temporary file (SQLite), and drops it
//! afterwards. The SQL it sends itself lives only in the per-engine modules.
//!
//! Speed (`benches/compat.sh`): each pass is one run of the migrator (`up_with`/`down_with`);
//! on PostgreSQL a snapshot after a table, view or index script re-reads only what the script
//! can change ([`scope`]); and a long release is split between several shadow databases that
//! run at once ([`split`]), each proving a consecutive part. What a short release spends outside
//! the proof is cut too: the connections to a shadow database open at once, its snapshot
//! statements are planned while the base migrations run, the base snapshot and the old queries'
//! first prepare run at once on their own connections, and the connection that created the
//! database drops it.

mod mysql;
mod postgres;
pub mod scope;
mod sqlite;

use std::collections::{BTreeMap, BTreeSet};

use ferry_core::{DatabaseUrl, Engine};
use ferry_migrate::{DownTarget, MigrateOptions, Migration, Migrator, Quiet};

use crate::queries::OldQuery;
use crate::rules::Rule;
use crate::types::{Change, compare};
use crate::{CompatError, Finding, Roundtrip};

/// Catalog objects: key (`column users.email`) → description.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot(pub BTreeMap<String, String>);

/// What the shadow run found for one migration.
#[derive(Debug, Default)]
pub struct Proof {
    pub findings: Vec<Finding>,
    pub roundtrip: Option<Roundtrip>,
}

struct Shadow {
    engine: Engine,
    url: DatabaseUrl,
    admin: String,
    /// The connection that created the database on a server, kept to drop it (`None` for
    /// SQLite's file).
    admin_conn: Option<Admin>,
    name: String,
    file: Option<std::path::PathBuf>,
}

enum Admin {
    Pg(sqlx::PgConnection),
    MySql(sqlx::MySqlConnection),
}

/// Runs `sql` (a DROP DATABASE) over `kept`, or over a new connection to `admin_url` when that
/// one is gone (a server that closes idle sessions during a long run, say).
async fn drop_over<C>(mut kept: C, admin_url: &str, sql: String) -> Result<(), sqlx::Error>
where
    C: sqlx::Connection,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
{
    match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
        .execute(&mut kept)
        .await
    {
        Ok(_) => return kept.close().await,
        Err(e) => tracing::debug!(error = %e, "compat: dropping over a new connection"),
    }
    let mut conn = C::connect(admin_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await?;
    conn.close().await
}

/// Unique per process and call, short enough for MySQL's 64-character names, and safe to splice
/// into `CREATE DATABASE` (digits and underscores only).
fn unique_name() -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("ferry_shadow_{}_{n}_{nanos}", std::process::id())
}

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    format!("{}/{db}{query}", &base[..host_end])
}

fn shadow_err(context: &str, url: &DatabaseUrl) -> impl FnOnce(sqlx::Error) -> CompatError {
    let context = format!("{context} ({})", url.redacted());
    move |source| CompatError::Shadow {
        context,
        source: Box::new(source),
    }
}

impl Shadow {
    async fn create(server: &DatabaseUrl) -> Result<Shadow, CompatError> {
        let name = unique_name();
        match server.engine() {
            Engine::Sqlite => {
                let file = std::env::temp_dir().join(format!("{name}.db"));
                let url = DatabaseUrl::parse(&format!("sqlite:{}", file.display()))?;
                Ok(Shadow {
                    engine: Engine::Sqlite,
                    url,
                    admin: String::new(),
                    admin_conn: None,
                    name,
                    file: Some(file),
                })
            }
            engine => {
                let admin = server.for_driver();
                let created = match engine {
                    Engine::Postgres => postgres::create_database(&admin, &name)
                        .await
                        .map(Admin::Pg),
                    _ => mysql::create_database(&admin, &name)
                        .await
                        .map(Admin::MySql),
                };
                let admin_conn =
                    created.map_err(shadow_err("cannot create the shadow database", server))?;
                let url = DatabaseUrl::parse(&with_database(server.expose(), &name))?;
                Ok(Shadow {
                    engine,
                    url,
                    admin,
                    admin_conn: Some(admin_conn),
                    name,
                    file: None,
                })
            }
        }
    }

    /// The connections that read the catalog and prepare old queries for the whole run (a
    /// connection per snapshot cost more than the snapshot itself). Two on a server, so that
    /// clearing the old queries' statements never evicts the snapshot's own prepared statements;
    /// one for SQLite, whose connection would prepare against the schema it last read (it reads
    /// it again when it runs a statement, as each snapshot does).
    async fn inspector(&self, with_queries: bool) -> Result<Inspector, CompatError> {
        let (conn, queries) = match with_queries && self.engine != Engine::Sqlite {
            true => {
                let (conn, queries) =
                    futures_util::future::join(self.connect(), self.connect()).await;
                (conn?, Some(queries?))
            }
            false => (self.connect().await?, None),
        };
        Ok(Inspector {
            conn,
            queries,
            catalog: Default::default(),
            snapshots: Default::default(),
            prepares: Default::default(),
        })
    }

    async fn connect(&self) -> Result<Conn, CompatError> {
        let url = self.url.for_driver();
        let r = match self.engine {
            Engine::Postgres => postgres::connect(&url).await.map(Conn::Pg),
            Engine::MySql => mysql::connect(&url).await.map(Conn::MySql),
            Engine::Sqlite => sqlite::connect(&url).await.map(Conn::Sqlite),
        };
        r.map_err(shadow_err(
            "cannot connect to the shadow database",
            &self.url,
        ))
    }

    async fn destroy(self) {
        let (admin, name) = (&self.admin, &self.name);
        let result = match self.admin_conn {
            None => Ok(()),
            Some(Admin::Pg(c)) => drop_over(c, admin, postgres::drop_database(name)).await,
            Some(Admin::MySql(c)) => drop_over(c, admin, mysql::drop_database(name)).await,
        };
        if let Err(e) = result {
            tracing::warn!(database = %self.name, error = %e, "compat: could not drop the shadow database");
        }
        if let Some(f) = self.file {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", f.display()));
            }
        }
    }
}

/// A connection to the shadow database for catalog snapshots and for preparing old queries,
/// with the time spent in each (reported as a `tracing` event: where a slow check goes).
struct Inspector {
    conn: Conn,
    queries: Option<Conn>,
    /// PostgreSQL's schema as last read, for snapshots scoped to what a migration changed.
    catalog: postgres::Catalog,
    snapshots: (u32, std::time::Duration),
    prepares: (u32, std::time::Duration),
}

enum Conn {
    Pg(sqlx::PgConnection),
    MySql(sqlx::MySqlConnection),
    Sqlite(sqlx::SqliteConnection),
}

/// The outcome of preparing one old query: its result columns, or the database's error.
type Prepared = Result<Vec<String>, String>;

impl Inspector {
    /// The whole schema, or with `scope` (PostgreSQL) only the relations a migration can have
    /// changed read again ([`scope::relations`]).
    async fn snapshot(
        &mut self,
        url: &DatabaseUrl,
        scope: Option<&scope::Scope>,
    ) -> Result<Snapshot, CompatError> {
        read(
            &mut self.conn,
            &mut self.catalog,
            &mut self.snapshots,
            url,
            scope,
        )
        .await
    }

    /// The whole schema and the outcome of preparing `queries` on it: at once on a server,
    /// where they have a connection each.
    async fn snapshot_and_prepare(
        &mut self,
        url: &DatabaseUrl,
        queries: &[&OldQuery],
    ) -> Result<(Snapshot, Vec<Prepared>), CompatError> {
        match &mut self.queries {
            Some(q) => {
                let (snap, prepared) = futures_util::future::join(
                    read(
                        &mut self.conn,
                        &mut self.catalog,
                        &mut self.snapshots,
                        url,
                        None,
                    ),
                    prepare_on(q, &mut self.prepares, queries, url),
                )
                .await;
                Ok((snap?, prepared?))
            }
            None => {
                let snap = self.snapshot(url, None).await?;
                Ok((snap, self.prepare(queries, url).await?))
            }
        }
    }

    /// Gets the snapshot statements ready ([`postgres::Catalog::warm`]).
    async fn warm(&mut self) {
        if let Conn::Pg(c) = &mut self.conn {
            postgres::Catalog::warm(c).await;
        }
    }

    /// Prepares (never executes) each query against the current schema.
    async fn prepare(
        &mut self,
        queries: &[&OldQuery],
        url: &DatabaseUrl,
    ) -> Result<Vec<Prepared>, CompatError> {
        let conn = self.queries.as_mut().unwrap_or(&mut self.conn);
        prepare_on(conn, &mut self.prepares, queries, url).await
    }

    async fn close(self) {
        tracing::debug!(
            snapshots = self.snapshots.0,
            snapshot_ms = self.snapshots.1.as_millis() as u64,
            prepares = self.prepares.0,
            prepare_ms = self.prepares.1.as_millis() as u64,
            "compat: shadow inspection"
        );
        for conn in std::iter::once(self.conn).chain(self.queries) {
            let r = match conn {
                Conn::Pg(c) => sqlx::Connection::close(c).await,
                Conn::MySql(c) => sqlx::Connection::close(c).await,
                Conn::Sqlite(c) => sqlx::Connection::close(c).await,
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "compat: closing an inspection connection");
            }
        }
    }
}

/// Reads the catalog on `conn` ([`Inspector::snapshot`]), counting the time in `stats`. In
/// debug builds (every test) a scoped snapshot is checked against a full one.
async fn read(
    conn: &mut Conn,
    catalog: &mut postgres::Catalog,
    stats: &mut (u32, std::time::Duration),
    url: &DatabaseUrl,
    scope: Option<&scope::Scope>,
) -> Result<Snapshot, CompatError> {
    let start = std::time::Instant::now();
    let r = match (&mut *conn, scope) {
        (Conn::Pg(c), Some(scope)) => catalog.scoped(c, scope).await,
        (Conn::Pg(c), None) => catalog.full(c).await,
        (Conn::MySql(c), _) => mysql::snapshot(c).await,
        (Conn::Sqlite(c), _) => sqlite::snapshot(c).await,
    };
    stats.0 += 1;
    stats.1 += start.elapsed();
    let snap = r.map_err(shadow_err("cannot read the shadow database's catalog", url))?;
    if cfg!(debug_assertions)
        && let (Conn::Pg(c), Some(scope)) = (conn, scope)
    {
        let full = postgres::Catalog::default()
            .full(c)
            .await
            .map_err(shadow_err("cannot read the shadow database's catalog", url))?;
        let wrong = differences(&full, &snap);
        assert!(
            wrong.is_empty(),
            "a snapshot scoped to {scope:?} differs from the full one: {wrong:#?}"
        );
    }
    Ok(snap)
}

/// Prepares (never executes) each query on `conn`, counting the time in `stats`. A database
/// error is the query's outcome; anything else (I/O, protocol) fails the run.
async fn prepare_on(
    conn: &mut Conn,
    stats: &mut (u32, std::time::Duration),
    queries: &[&OldQuery],
    url: &DatabaseUrl,
) -> Result<Vec<Prepared>, CompatError> {
    if queries.is_empty() {
        // Not even the statement cache is cleared: on SQLite, or without old queries, this is
        // the snapshot's connection.
        return Ok(Vec::new());
    }
    let start = std::time::Instant::now();
    let r = match conn {
        Conn::Pg(c) => prepare_all(c, queries).await,
        Conn::MySql(c) => prepare_all(c, queries).await,
        Conn::Sqlite(c) => prepare_all(c, queries).await,
    };
    stats.0 += queries.len() as u32;
    stats.1 += start.elapsed();
    r.map_err(shadow_err("cannot prepare the old queries", url))
}

/// `Executor::prepare` is PostgreSQL's Parse/Describe (extended protocol), MySQL's
/// COM_STMT_PREPARE, SQLite's `sqlite3_prepare_v3`: the server resolves every table, column,
/// function and type without running anything. sqlx caches prepared statements per SQL text and
/// would answer from the cache after the schema changed, so the cache is cleared (the
/// statements closed on the server) after every round.
async fn prepare_all<C>(conn: &mut C, queries: &[&OldQuery]) -> Result<Vec<Prepared>, sqlx::Error>
where
    C: sqlx::Connection,
    C::Database: sqlx::database::HasStatementCache,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
{
    use sqlx::{Column, Executor, SqlSafeStr, Statement};
    let mut out = Vec::with_capacity(queries.len());
    for q in queries {
        let sql = sqlx::AssertSqlSafe(q.sql.clone()).into_sql_str();
        match (&mut *conn).prepare(sql).await {
            Ok(stmt) => out.push(Ok(stmt
                .columns()
                .iter()
                .map(|c| c.name().to_string())
                .collect())),
            Err(sqlx::Error::Database(e)) => out.push(Err(match e.code() {
                Some(code) => format!("{} (code {code})", e.message()),
                None => e.message().to_string(),
            })),
            Err(e) => return Err(e),
        }
    }
    conn.clear_cached_statements().await?;
    Ok(out)
}

/// The previous version's queries during the forward pass: which still prepare, and what they
/// return.
struct OldQueries<'q> {
    /// Queries that prepared at the base and after every migration so far, with the result
    /// columns the previous version decodes (sqlx queries only).
    live: Vec<Live<'q>>,
}

struct Live<'q> {
    query: &'q OldQuery,
    decoded: Option<Vec<String>>,
    /// Every word of the query, lowercased: the relations it can name are among them. `None`
    /// when it does not tokenize (it is then prepared after every migration).
    words: Option<BTreeSet<String>>,
}

/// The words (identifiers and keywords) of `sql`, lowercased.
fn words(engine: Engine, sql: &str) -> Option<BTreeSet<String>> {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let dialect = crate::analyze::dialect(engine);
    let tokens = Tokenizer::new(dialect.as_ref(), sql).tokenize().ok()?;
    Some(
        tokens
            .into_iter()
            .filter_map(|t| match t {
                Token::Word(w) => Some(w.value.to_lowercase()),
                _ => None,
            })
            .collect(),
    )
}

/// The relations (lowercased) whose objects a migration changed ([`diff`] of the snapshots
/// before and after it), for deciding which old queries to prepare again. `None` when what changed is not tied to a relation the key
/// names (a function, a type, a sequence, PostgreSQL's and SQLite's index and trigger keys, a
/// MySQL check) or when no difference is visible: every query is prepared then.
pub fn changed_relations(engine: Engine, changes: &[Delta]) -> Option<BTreeSet<String>> {
    if changes.is_empty() {
        return None;
    }
    let mut out = BTreeSet::new();
    for &(key, _, _) in changes {
        let (kind, object) = object_of(key);
        let object = object.to_lowercase();
        match kind {
            "table" | "view" => {
                out.insert(object);
            }
            // `t.c`: a name may hold dots, so both readings count.
            "column" | "constraint" | "foreign" => {
                let object = object.strip_prefix("key ").unwrap_or(&object);
                for (t, _) in [object.split_once('.'), object.rsplit_once('.')]
                    .into_iter()
                    .flatten()
                {
                    out.insert(t.to_string());
                }
            }
            "index" | "trigger" if engine == Engine::MySql => {
                for (t, _) in [object.split_once('.'), object.rsplit_once('.')]
                    .into_iter()
                    .flatten()
                {
                    out.insert(t.to_string());
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

impl<'q> OldQueries<'q> {
    /// The queries as they prepared at the base (`outcomes`, in the same order). Those that fail
    /// there are the query file's fault, not a migration's: one non-breaking finding each,
    /// returned for the first new migration.
    fn at_base(
        engine: Engine,
        all: Vec<&'q OldQuery>,
        outcomes: Vec<Prepared>,
    ) -> (Self, Vec<Finding>) {
        let mut live = Vec::new();
        let mut invalid = Vec::new();
        for (q, outcome) in all.into_iter().zip(outcomes) {
            match outcome {
                Ok(columns) => {
                    // What the previous version decodes: sqlx's recorded columns that the base
                    // schema really returns (a stale .sqlx file is not a migration's fault).
                    let decoded = q
                        .columns
                        .as_ref()
                        .map(|c| c.iter().filter(|n| columns.contains(n)).cloned().collect());
                    live.push(Live {
                        query: q,
                        decoded,
                        words: words(engine, &q.sql),
                    });
                }
                Err(e) => invalid.push(finding(
                    Rule::OldQueryInvalidAtBase,
                    q.source.clone(),
                    format!(
                        "old query {} does not prepare even on the schema before the new \
                         migrations, so it was not checked: {e}",
                        q.source
                    ),
                )),
            }
        }
        (OldQueries { live }, invalid)
    }

    /// Prepares the live queries that can name a relation in `changed` (all of them when it is
    /// `None`) after `label` was applied; the ones that no longer prepare (or lost a result
    /// column) become breaking findings and are not tried again.
    async fn after(
        &mut self,
        label: &str,
        changed: Option<&BTreeSet<String>>,
        inspector: &mut Inspector,
        url: &DatabaseUrl,
    ) -> Result<Vec<Finding>, CompatError> {
        let (affected, mut still): (Vec<Live<'q>>, Vec<Live<'q>>) = std::mem::take(&mut self.live)
            .into_iter()
            .partition(|l| match (changed, &l.words) {
                (Some(changed), Some(words)) => !changed.is_disjoint(words),
                _ => true,
            });
        if affected.is_empty() {
            self.live = still;
            return Ok(Vec::new());
        }
        let queries: Vec<&OldQuery> = affected.iter().map(|l| l.query).collect();
        let outcomes = inspector.prepare(&queries, url).await?;
        let mut findings = Vec::new();
        for (live, outcome) in affected.into_iter().zip(outcomes) {
            let q = live.query;
            match outcome {
                Err(e) => findings.push(finding(
                    Rule::OldQueryFails,
                    q.source.clone(),
                    format!(
                        "old query {} no longer prepares after {label}: {e}",
                        q.source
                    ),
                )),
                Ok(columns) => {
                    let gone: Vec<&str> = live
                        .decoded
                        .iter()
                        .flatten()
                        .filter(|n| !columns.contains(n))
                        .map(String::as_str)
                        .collect();
                    if gone.is_empty() {
                        still.push(live);
                    } else {
                        findings.push(finding(
                            Rule::OldQueryColumnsChanged,
                            q.source.clone(),
                            format!(
                                "old query {} still prepares after {label}, but no longer returns \
                                 {}, which the previous version decodes",
                                q.source,
                                gone.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        self.live = still;
        Ok(findings)
    }
}

fn finding(rule: Rule, object: String, message: String) -> Finding {
    Finding {
        rule,
        class: rule.class(),
        severity: rule.severity(),
        object,
        line: 0,
        message,
        hint: rule.hint().to_string(),
        allowed: false,
        reason: None,
    }
}

/// `column t.c` → `t.c`; `function f(int)` → `f(int)`.
fn object_of(key: &str) -> (&str, &str) {
    key.split_once(' ').unwrap_or(("", key))
}

/// Objects of `base` (what the previous version can rely on) that `before` → `after` removed or
/// changed incompatibly.
/// One object that two snapshots disagree on: its key, its description before (`None`: it is
/// new) and after (`None`: it is gone).
type Delta<'a> = (&'a str, Option<&'a str>, Option<&'a str>);

/// Every object that differs between `before` and `after`, in key order: one walk of both
/// (sorted) maps side by side, so a diff costs a comparison per object, not a lookup.
fn diff<'a>(before: &'a Snapshot, after: &'a Snapshot) -> Vec<Delta<'a>> {
    use std::cmp::Ordering;
    let mut out = Vec::new();
    let mut b = before.0.iter().peekable();
    let mut a = after.0.iter().peekable();
    loop {
        match (b.peek(), a.peek()) {
            (None, None) => break,
            (Some((k, v)), None) => {
                out.push((k.as_str(), Some(v.as_str()), None));
                b.next();
            }
            (None, Some((k, v))) => {
                out.push((k.as_str(), None, Some(v.as_str())));
                a.next();
            }
            (Some((kb, vb)), Some((ka, va))) => match kb.cmp(ka) {
                Ordering::Less => {
                    out.push((kb.as_str(), Some(vb.as_str()), None));
                    b.next();
                }
                Ordering::Greater => {
                    out.push((ka.as_str(), None, Some(va.as_str())));
                    a.next();
                }
                Ordering::Equal => {
                    if vb != va {
                        out.push((kb.as_str(), Some(vb.as_str()), Some(va.as_str())));
                    }
                    b.next();
                    a.next();
                }
            },
        }
    }
    out
}

pub fn incompatibilities(base: &Snapshot, changes: &[Delta]) -> Vec<Finding> {
    let mut out = Vec::new();
    for &(key, old, new) in changes {
        let Some(old) = old else { continue };
        if !base.0.contains_key(key) {
            continue;
        }
        let (kind, object) = object_of(key);
        if !matches!(
            kind,
            "table" | "column" | "view" | "function" | "enum" | "sequence"
        ) {
            continue;
        }
        match new {
            None => out.push(finding(
                Rule::ShadowObjectRemoved,
                object.to_string(),
                format!("{kind} {object} exists before the migration and not after it"),
            )),
            Some(new) => {
                if let Some(why) = incompatible_change(kind, old, new) {
                    out.push(finding(
                        Rule::ShadowObjectChanged,
                        object.to_string(),
                        format!("{kind} {object} {why}"),
                    ));
                }
            }
        }
    }
    out
}

fn incompatible_change(kind: &str, old: &str, new: &str) -> Option<String> {
    match kind {
        "column" => {
            let mut o = old.splitn(3, '|');
            let mut n = new.splitn(3, '|');
            let (ot, on, od) = (o.next()?, o.next()?, o.next().unwrap_or(""));
            let (nt, nn, nd) = (n.next()?, n.next()?, n.next().unwrap_or(""));
            let mut why = Vec::new();
            if matches!(compare(ot, nt), Change::Narrow | Change::EnumDrop(_)) {
                why.push(format!("changes type from {ot} to {nt}"));
            }
            if on.is_empty() && !nn.is_empty() {
                why.push("becomes NOT NULL".to_string());
            }
            if !od.is_empty() && nd.is_empty() {
                why.push(format!("loses its default {od}"));
            }
            (!why.is_empty()).then(|| why.join(", "))
        }
        "enum" => {
            let nv: Vec<&str> = new.split(',').collect();
            let gone: Vec<&str> = old.split(',').filter(|v| !nv.contains(v)).collect();
            (!gone.is_empty()).then(|| format!("loses values {}", gone.join(", ")))
        }
        _ => None,
    }
}

/// What down left different from the snapshot before up.
pub fn differences(before: &Snapshot, after_down: &Snapshot) -> Vec<String> {
    let changes = diff(before, after_down);
    let mut out = Vec::new();
    for &(key, old, new) in &changes {
        match (old, new) {
            (Some(_), None) => out.push(format!(
                "{key} missing: the up removed it and this needs to be undone in down.sql"
            )),
            (Some(old), Some(new)) => out.push(format!(
                "{key} differs: was `{old}`, after down `{new}`; this needs to be undone in down.sql"
            )),
            (None, _) => {}
        }
    }
    for &(key, old, _) in &changes {
        if old.is_none() {
            out.push(format!(
                "{key} still exists after down: down.sql must drop what up created"
            ));
        }
    }
    out
}

/// Whether a query that prepared before a migration may fail to prepare after it (`changes`:
/// the [`diff`] of the two snapshots). Only additions
/// that cannot change how an existing name resolves are safe to skip: new tables, views,
/// indexes, constraints, triggers, sequences and types, and the columns of a table or view the
/// same migration created. A new column on an existing table can make an unqualified name in a
/// join ambiguous, and a new function can make a call ambiguous, so they count; so does any
/// removal or change, and a migration the snapshot sees nothing of (it may have changed what
/// the snapshot does not record).
pub fn may_break_queries(changes: &[Delta]) -> bool {
    if changes.is_empty() || changes.iter().any(|(_, old, _)| old.is_some()) {
        return true;
    }
    // From here on every change is an addition; `changes` is in key order.
    let added = |key: &str| changes.binary_search_by(|(k, _, _)| (*k).cmp(key)).is_ok();
    changes
        .iter()
        .map(|&(key, _, _)| key)
        .any(|key| match object_of(key) {
            ("column", object) => {
                let relation = object.rsplit_once('.').map_or(object, |(t, _)| t);
                !(added(&format!("table {relation}")) || added(&format!("view {relation}")))
            }
            (
                "table" | "view" | "index" | "constraint" | "trigger" | "sequence" | "enum"
                | "check",
                _,
            ) => false,
            (kind, _) => !kind.starts_with("foreign"),
        })
}

/// Remembers which migration a multi-step run started last, to attribute its error.
#[derive(Default)]
struct LastStarted(std::sync::Mutex<String>);

impl LastStarted {
    fn migration<'m>(&self, migrations: &[&'m Migration]) -> Option<&'m Migration> {
        let label = self.0.lock().ok()?.clone();
        migrations.iter().find(|m| m.label() == label).copied()
    }
}

impl ferry_migrate::Observer for LastStarted {
    fn started(&self, label: &str, _: ferry_migrate::Direction, _: usize, _: usize) {
        if let Ok(mut last) = self.0.lock() {
            *last = label.to_string();
        }
    }
}

fn replay_problem(proofs: &mut BTreeMap<i64, Proof>, version: i64, problem: String) {
    let rt = proofs
        .entry(version)
        .or_default()
        .roundtrip
        .get_or_insert(Roundtrip {
            ok: Some(false),
            differences: Vec::new(),
        });
    rt.ok = Some(false);
    rt.differences.push(problem);
}

/// Where the schema after a replay differs from the first pass: `forward[0]` is the schema
/// before the first replayed migration and `forward[i + 1]` the one after migration `i`. Each
/// differing key goes to the last migration that touched it in the first pass (the one whose
/// up built it), or to the last migration when none did. Returns (migration index, keys).
pub fn replay_differences(forward: &[Snapshot], replayed: &Snapshot) -> Vec<(usize, Vec<String>)> {
    let Some(last) = forward.last() else {
        return Vec::new();
    };
    let n = forward.len() - 1;
    let mut by: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (key, _, _) in diff(last, replayed) {
        let owner = (0..n)
            .rev()
            .find(|&i| forward[i].0.get(key) != forward[i + 1].0.get(key))
            .unwrap_or(n.saturating_sub(1));
        by.entry(owner).or_default().push(key.to_string());
    }
    by.into_iter().collect()
}

/// From this many new migrations on, the proof is split between shadow databases that run at
/// once (see [`split`]).
const PARALLEL_FROM: usize = 24;

/// Which new migrations (by index) each shadow database proves: one part per core, at most
/// three. The first proves the oldest part; each later one first brings its database to where
/// the parts before it end with one plain `up`, then proves its own. A part's migrations run
/// three times (up, down, replay) and the ones before it once more, so with all parts taking
/// equally long each part is 2/3 of the one before (two parts: 60 % and 40 %).
/// `FERRY_COMPAT_PARALLEL=N` sets the number of databases (1 to 4; `0` or `1` keeps the proof in
/// one, for a small shared server).
pub fn split(new: usize) -> Vec<std::ops::Range<usize>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wanted = std::env::var("FERRY_COMPAT_PARALLEL")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(cores.min(3));
    let parts = if new < PARALLEL_FROM {
        1
    } else {
        wanted.clamp(1, 4) as i32
    };
    let first = new as f64 / (3.0 * (1.0 - (2.0f64 / 3.0).powi(parts)));
    let mut out = Vec::new();
    let mut start = 0;
    for k in 0..parts {
        let end = if k == parts - 1 {
            new
        } else {
            (start + (first * (2.0f64 / 3.0).powi(k)).round() as usize).min(new)
        };
        out.push(start..end);
        start = end;
    }
    out
}

/// Runs the proof. Returns one [`Proof`] per new migration, in version order.
pub async fn prove(
    migrations: &[Migration],
    base_version: Option<i64>,
    server: &DatabaseUrl,
    old_queries: &[OldQuery],
) -> Result<BTreeMap<i64, Proof>, CompatError> {
    let base = base_version.unwrap_or(0);
    let new = migrations.iter().filter(|m| m.version > base).count();
    let parts = split(new).into_iter().map(|range| async move {
        let shadow = Shadow::create(server).await?;
        let result = run(&shadow, migrations, base_version, old_queries, range).await;
        shadow.destroy().await;
        result
    });
    let mut proofs = BTreeMap::new();
    for part in futures_util::future::join_all(parts).await {
        proofs.extend(part?);
    }
    Ok(proofs)
}

async fn run(
    shadow: &Shadow,
    migrations: &[Migration],
    base_version: Option<i64>,
    old_queries: &[OldQuery],
    range: std::ops::Range<usize>,
) -> Result<BTreeMap<i64, Proof>, CompatError> {
    // At once on a server (each connection is a round trip or three, and TLS); one after the
    // other for SQLite, whose file the driver creates.
    let with_queries = !old_queries.is_empty();
    let (driver, inspector) = match shadow.engine {
        Engine::Sqlite => {
            let driver = ferry_migrate::connect(&shadow.url).await;
            (driver, shadow.inspector(with_queries).await)
        }
        _ => {
            futures_util::future::join(
                ferry_migrate::connect(&shadow.url),
                shadow.inspector(with_queries),
            )
            .await
        }
    };
    let mut driver = driver?;
    let mut inspector = match inspector {
        Ok(inspector) => inspector,
        Err(e) => {
            let _ = driver.close().await;
            return Err(e);
        }
    };
    let start = std::time::Instant::now();
    let result = run_with(
        shadow,
        &mut driver,
        &mut inspector,
        migrations,
        base_version,
        old_queries,
        range.clone(),
    )
    .await;
    tracing::debug!(
        first = range.start,
        end = range.end,
        total_ms = start.elapsed().as_millis() as u64,
        "compat: shadow run"
    );
    inspector.close().await;
    let closed = driver.close().await;
    let proofs = result?;
    closed?;
    Ok(proofs)
}

/// Proves the new migrations `range` (indexes among those above the base) in one shadow
/// database: apply the base (and, for a later part, the new migrations before `range`), then
/// up, down and replay the part.
async fn run_with(
    shadow: &Shadow,
    driver: &mut Box<dyn ferry_migrate::Driver>,
    inspector: &mut Inspector,
    migrations: &[Migration],
    base_version: Option<i64>,
    old_queries: &[OldQuery],
    range: std::ops::Range<usize>,
) -> Result<BTreeMap<i64, Proof>, CompatError> {
    let migrator = Migrator::new(migrations.to_vec(), MigrateOptions::default());
    let base = base_version.unwrap_or(0);
    let above: Vec<&Migration> = migrator
        .migrations()
        .iter()
        .filter(|m| m.version > base)
        .collect();
    let new = &above[range.clone()];
    let mut proofs: BTreeMap<i64, Proof> =
        new.iter().map(|m| (m.version, Proof::default())).collect();
    let Some(newest) = new.last().map(|m| m.version) else {
        return Ok(proofs);
    };
    let index: BTreeMap<i64, usize> = new
        .iter()
        .enumerate()
        .map(|(i, m)| (m.version, i))
        .collect();
    // What each script can change: the snapshot after it re-reads only that (PostgreSQL).
    let engine = shadow.engine;
    let up_scope: Vec<Option<scope::Scope>> = new
        .iter()
        .map(|m| scope::relations(engine, &m.up))
        .collect();
    let down_scope: Vec<Option<scope::Scope>> = new
        .iter()
        .map(|m| m.down.as_deref().and_then(|d| scope::relations(engine, d)))
        .collect();
    let url = &shadow.url;
    // The base, while the inspector gets its statements ready.
    let apply_base = async {
        match base_version {
            Some(_) => migrator
                .up(driver.as_mut(), Some(base), false, &Quiet)
                .await
                .map(drop),
            None => Ok(()),
        }
    };
    futures_util::future::join(apply_base, inspector.warm())
        .await
        .0?;
    let all: Vec<&OldQuery> = old_queries.iter().collect();
    let (base_snap, prepared) = inspector.snapshot_and_prepare(url, &all).await?;
    let (mut queries, invalid) = OldQueries::at_base(engine, all, prepared);
    // A later part starts where the part before it ends. That part reports what its own
    // migrations break (an old query, a failure to apply); here they only set the start.
    let (floor, start_snap) = match range.start.checked_sub(1).map(|i| above[i]) {
        None => {
            proofs.entry(new[0].version).or_default().findings = invalid;
            (base, base_snap.clone())
        }
        Some(before) => {
            if let Err(e) = migrator
                .up(driver.as_mut(), Some(before.version), false, &Quiet)
                .await
            {
                for proof in proofs.values_mut() {
                    proof.roundtrip = Some(Roundtrip {
                        ok: None,
                        differences: vec![format!(
                            "not proven: a migration up to {} failed to apply in the shadow \
                             database: {e}",
                            before.label()
                        )],
                    });
                }
                return Ok(proofs);
            }
            let snap = inspector.snapshot(url, None).await?;
            queries.after(&before.label(), None, inspector, url).await?;
            (before.version, snap)
        }
    };

    // Up, in one run of the migrator (one lock, one history read), a snapshot after each.
    let mut snaps = vec![start_snap];
    let mut inspected: Result<(), CompatError> = Ok(());
    let last = LastStarted::default();
    let forward = migrator
        .up_with(driver.as_mut(), Some(newest), &last, async |step| {
            let label = format!("{}_{}", step.version, step.name);
            let r = async {
                let scope = up_scope[index[&step.version]].as_ref();
                let snap = inspector.snapshot(url, scope).await?;
                let prev = snaps.last().unwrap_or(&base_snap);
                let changes = diff(prev, &snap);
                let mut found = incompatibilities(&base_snap, &changes);
                if may_break_queries(&changes) {
                    let changed = changed_relations(engine, &changes);
                    found.extend(
                        queries
                            .after(&label, changed.as_ref(), inspector, url)
                            .await?,
                    );
                }
                proofs
                    .entry(step.version)
                    .or_default()
                    .findings
                    .extend(found);
                snaps.push(snap);
                Ok(())
            }
            .await;
            let ok = r.is_ok();
            inspected = r;
            ok
        })
        .await;
    std::mem::replace(&mut inspected, Ok(()))?;
    let applied = snaps.len() - 1;
    if let Err(e) = forward {
        let failed = last
            .migration(new)
            .unwrap_or(new[applied.min(new.len() - 1)]);
        proofs
            .entry(failed.version)
            .or_default()
            .findings
            .push(finding(
                Rule::ShadowApplyFailed,
                failed.label(),
                format!("{} fails on a real database: {e}", failed.label()),
            ));
        // The history may now hold a failed record that blocks every down; nothing more to
        // prove.
        for proof in proofs.values_mut() {
            proof.roundtrip = Some(Roundtrip {
                ok: None,
                differences: vec![format!(
                    "not proven: {} failed to apply in the shadow database",
                    failed.label()
                )],
            });
        }
        return Ok(proofs);
    }

    // Down, newest first, in one run of the migrator: each must restore the snapshot taken
    // before its up. It stops at the first that does not (later downs would be compared against
    // a schema that is already wrong, and a replay would only trip over what it left behind),
    // and it stops above the newest irreversible migration, which is reported as such.
    let irreversible = (0..applied).rev().find(|&i| !new[i].reversible());
    let target = match irreversible {
        Some(i) => new[i].version,
        None => floor,
    };
    let mut reverted_to = applied;
    let mut clean = true;
    if irreversible != Some(applied - 1) {
        let last = LastStarted::default();
        let backward = migrator
            .down_with(
                driver.as_mut(),
                DownTarget::To(target),
                &last,
                async |step| {
                    let i = index[&step.version];
                    let r = inspector.snapshot(url, down_scope[i].as_ref()).await;
                    let after = match r {
                        Ok(after) => after,
                        Err(e) => {
                            inspected = Err(e);
                            return false;
                        }
                    };
                    let diffs = differences(&snaps[i], &after);
                    reverted_to = i;
                    clean = diffs.is_empty();
                    proofs.entry(step.version).or_default().roundtrip = Some(Roundtrip {
                        ok: Some(clean),
                        differences: diffs,
                    });
                    clean
                },
            )
            .await;
        inspected?;
        if let Err(e) = backward {
            // Attributed to the migration whose down started last (the one after the last
            // that was reverted, when the observer saw nothing).
            let failed = last
                .migration(new)
                .unwrap_or(new[reverted_to.saturating_sub(1)]);
            proofs.entry(failed.version).or_default().roundtrip = Some(Roundtrip {
                ok: Some(false),
                differences: vec![format!("the down script fails: {e}")],
            });
            clean = false;
        }
    }
    if let Some(i) = irreversible
        && clean
    {
        let m = new[i];
        proofs.entry(m.version).or_default().roundtrip = Some(Roundtrip {
            ok: Some(false),
            differences: vec![format!(
                "{} is irreversible: it has no down script, so a failed release cannot roll it back",
                m.label()
            )],
        });
    }

    // Replay: after clean downs, the reverted migrations must apply again, to the same schema.
    // One snapshot after the whole replay, not one per step: the replay is rarely wrong, and
    // when it is, the forward snapshots say which migration owns each differing object.
    if clean && reverted_to < applied {
        let last = LastStarted::default();
        let outcome = migrator
            .up(
                driver.as_mut(),
                Some(new[applied - 1].version),
                false,
                &last,
            )
            .await;
        if let Err(e) = outcome {
            let failed = last.migration(new).unwrap_or(new[applied - 1]);
            replay_problem(
                &mut proofs,
                failed.version,
                format!("up fails when replayed after down: {e}"),
            );
        } else {
            let snap = inspector.snapshot(url, None).await?;
            for (i, keys) in replay_differences(&snaps[reverted_to..=applied], &snap) {
                replay_problem(
                    &mut proofs,
                    new[reverted_to + i].version,
                    format!(
                        "up replayed after down builds a different schema than the first time: {}",
                        keys.join(", ")
                    ),
                );
            }
        }
    }
    Ok(proofs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(pairs: &[(&str, &str)]) -> Snapshot {
        Snapshot(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn a_diff_walks_both_snapshots_and_finds_what_a_lookup_finds() {
        let before = snap(&[
            ("column a.x", "int"),
            ("column a.y", "text"),
            ("index a_i", "i"),
            ("table a", ""),
            ("table c", ""),
        ]);
        let after = snap(&[
            ("column a.x", "bigint"),
            ("column b.z", "text"),
            ("index a_i", "i"),
            ("table a", ""),
            ("table b", ""),
        ]);
        let walked = diff(&before, &after);
        // The same, one lookup per key.
        let mut looked: Vec<Delta> = before
            .0
            .iter()
            .filter(|(k, v)| after.0.get(*k) != Some(*v))
            .map(|(k, v)| {
                (
                    k.as_str(),
                    Some(v.as_str()),
                    after.0.get(k).map(String::as_str),
                )
            })
            .chain(
                after
                    .0
                    .iter()
                    .filter(|(k, _)| !before.0.contains_key(*k))
                    .map(|(k, v)| (k.as_str(), None, Some(v.as_str()))),
            )
            .collect();
        looked.sort();
        assert_eq!(walked, looked);
        assert_eq!(
            walked,
            vec![
                ("column a.x", Some("int"), Some("bigint")),
                ("column a.y", Some("text"), None),
                ("column b.z", None, Some("text")),
                ("table b", None, Some("")),
                ("table c", Some(""), None),
            ]
        );
        assert!(diff(&before, &before).is_empty());
        assert_eq!(diff(&Snapshot::default(), &before).len(), 5);
    }

    #[test]
    fn only_safe_additions_skip_preparing_old_queries() {
        let base = snap(&[("table users", ""), ("column users.id", "integer||")]);
        let new_table = snap(&[
            ("table users", ""),
            ("column users.id", "integer||"),
            ("table tags", ""),
            ("column tags.id", "integer||"),
            ("index tags_pkey", "CREATE UNIQUE INDEX …"),
            ("foreign key tags.fk", "users"),
        ]);
        assert!(!may_break_queries(&diff(&base, &new_table)));
        let new_column = snap(&[
            ("table users", ""),
            ("column users.id", "integer||"),
            ("column users.name", "text||"),
        ]);
        assert!(
            may_break_queries(&diff(&base, &new_column)),
            "ambiguity in joins"
        );
        let changed = snap(&[("table users", ""), ("column users.id", "bigint||")]);
        assert!(may_break_queries(&diff(&base, &changed)));
        let dropped = snap(&[("table users", "")]);
        assert!(may_break_queries(&diff(&base, &dropped)));
        let function = snap(&[
            ("table users", ""),
            ("column users.id", "integer||"),
            ("function f(integer)", "…"),
        ]);
        assert!(may_break_queries(&diff(&base, &function)), "overloads");
        assert!(may_break_queries(&diff(&base, &base)), "unseen changes");
    }

    #[test]
    fn parts_cover_every_migration_once_oldest_largest() {
        for n in [0, 1, 23, 24, 30, 300] {
            let parts = split(n);
            assert_eq!(parts.first().map_or(0, |r| r.start), 0);
            assert_eq!(parts.last().map_or(0, |r| r.end), n);
            for w in parts.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert!(w[0].len() >= w[1].len(), "{parts:?}");
            }
            if n < PARALLEL_FROM {
                assert_eq!(parts.len(), 1);
            }
        }
    }

    #[test]
    fn changed_relations_name_tables_or_give_up() {
        let base = snap(&[("table users", ""), ("column users.id", "integer||")]);
        let added = snap(&[
            ("table users", ""),
            ("column users.id", "integer||"),
            ("column users.name", "text||"),
            ("constraint Orders.fk", "FOREIGN KEY …"),
        ]);
        let got = changed_relations(Engine::Postgres, &diff(&base, &added));
        assert_eq!(
            got,
            Some(["orders".to_string(), "users".to_string()].into())
        );
        let function = snap(&[
            ("table users", ""),
            ("column users.id", "integer||"),
            ("function f()", "…"),
        ]);
        assert_eq!(
            changed_relations(Engine::Postgres, &diff(&base, &function)),
            None
        );
        assert_eq!(
            changed_relations(Engine::Postgres, &diff(&base, &base)),
            None
        );
        let index = snap(&[
            ("table users", ""),
            ("column users.id", "integer||"),
            ("index users.by_id", "id"),
        ]);
        assert_eq!(
            changed_relations(Engine::MySql, &diff(&base, &index)),
            Some(["users".to_string()].into())
        );
        assert_eq!(
            changed_relations(Engine::Postgres, &diff(&base, &index)),
            None
        );
    }

    #[test]
    fn query_words_are_lowercased_identifiers() {
        let w = words(
            Engine::Postgres,
            "SELECT o.id FROM \"Orders\" o JOIN users u ON u.id = o.user_id WHERE x = $1",
        )
        .unwrap();
        assert!(w.contains("orders") && w.contains("users") && w.contains("user_id"));
        assert!(!w.contains("$1"));
    }

    #[test]
    fn replay_differences_go_to_the_migration_that_built_the_object() {
        let s0 = snap(&[("table a", "")]);
        let s1 = snap(&[("table a", ""), ("index a_x", "x")]);
        let s2 = snap(&[("table a", ""), ("index a_x", "x"), ("table b", "")]);
        assert!(replay_differences(&[s0.clone(), s1.clone(), s2.clone()], &s2).is_empty());
        let replayed = snap(&[("table a", ""), ("index a_x", "y"), ("table b", "")]);
        assert_eq!(
            replay_differences(&[s0.clone(), s1.clone(), s2.clone()], &replayed),
            [(0, vec!["index a_x".to_string()])]
        );
        let extra = snap(&[
            ("table a", ""),
            ("index a_x", "x"),
            ("table b", ""),
            ("table c", ""),
        ]);
        assert_eq!(
            replay_differences(&[s0, s1, s2], &extra),
            [(1, vec!["table c".to_string()])]
        );
    }
}
