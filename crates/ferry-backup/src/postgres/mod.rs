//! PostgreSQL: `pg_dump` of an exported snapshot, restored into a new database that replaces
//! the target by a rename.
//!
//! **Why the custom format (`pg_dump -Fc -Z0`).** Plain SQL would also stream, but the custom
//! format is the one `pg_restore` understands: it carries a table of contents, so a DBA can list
//! (`pg_restore -l`), restore selectively or restore in parallel (`pg_restore -j`) by hand from
//! `data.gz` after `gunzip`, and `pg_restore` orders the work the fast way (data loaded with
//! `COPY` before indexes and constraints are built). It streams on both sides: `pg_dump -Fc`
//! writes to a pipe, and `pg_restore` reads one when its data blocks are in dump order, which they
//! are. The directory format would allow `pg_dump -j`, but it is many files, cannot be one
//! streamed object and cannot be restored in one transaction. `-Z0` because ferry compresses once,
//! in the pipeline (zlib-rs, level 1); compressing twice costs CPU and gains nothing.
//!
//! **Restore is all-or-nothing, and parallel.** A restore never writes into the target: it
//! creates a new database beside it (`swap.rs`), loads it (`load.rs`: schema, then the rows in
//! `--jobs` parallel `COPY` streams, a big table split across all of them, then indexes and
//! constraints with `pg_restore -j`), checks its tables and row counts against the manifest,
//! and only then ends the target's sessions and swaps the names with `ALTER DATABASE … RENAME`.
//! Any failure before the swap drops the new database and leaves the target as it was.
//!
//! **Consistent row counts.** ferry opens `REPEATABLE READ` on its own connection, exports the
//! snapshot (`pg_export_snapshot()`), counts every table in it, and gives `pg_dump --snapshot`,
//! so the manifest's counts describe exactly the data in the dump. The connection stays open
//! until `pg_dump` exits.
//!
//! Passwords reach the tools through `PGPASSWORD`, never their arguments.

mod archive;
mod load;
mod post;
mod swap;

use ferry_core::DatabaseUrl;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use crate::engine::{
    BoxFut, Dump, DumpEngine, RestoreInput, RestoreRequest, Restored, SnapshotInfo, ToolSearch,
    create_scratch, db, drop_scratch, parse_version, spawn_dump, url_parts,
};
use crate::error::{BackupError, Result};
use crate::manifest::TableRows;

const PACKAGE: &str = "postgresql-client";

pub(crate) struct Postgres {
    pub tools: ToolSearch,
}

pub(crate) async fn connect(url: &DatabaseUrl) -> Result<PgConnection> {
    PgConnection::connect(&url.for_driver())
        .await
        .map_err(|source| BackupError::Connect {
            url: url.redacted(),
            source,
        })
}

/// The URL for libpq tools without any password, and the password for `PGPASSWORD`.
pub(crate) fn libpq_target(url: &DatabaseUrl) -> Result<(String, Option<String>)> {
    let mut parsed = url::Url::parse(url.expose())
        .map_err(|e| BackupError::Internal(format!("cannot parse {url}: {e}")))?;
    // Decoded as the driver decodes it (a raw `+` is a `+`), so the tools log in as ferry did.
    let parts = url_parts(url)?;
    let password = parts.any_password().map(str::to_string);
    let _ = parsed.set_password(None);
    if parts.param("password").is_some() {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &parts.query {
            if k != "password" {
                q.append_pair(k, v);
            }
        }
        let q = q.finish();
        parsed.set_query((!q.is_empty()).then_some(q.as_str()));
    }
    Ok((parsed.to_string(), password))
}

pub(crate) fn quote_ident(name: &str) -> String {
    ferry_core::scratch::quote_ident(ferry_core::Engine::Postgres, name)
}

const TABLES: &str = r"
SELECT n.nspname, c.relname, format('%I.%I', n.nspname, c.relname),
       c.relkind = 'r' AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2";

/// Every table and its row count, on `conn` (inside whatever transaction it has open).
///
/// With `loaded` (a database [`load`] just loaded in parallel: the rows of each table as each
/// `COPY` counted them), a plain table (no partitions or inheritance children, whose rows
/// `count(*)` would add) takes the load's count instead of a scan; nobody but the restore uses
/// the new database yet, and loading is the only thing that wrote rows into it.
pub(crate) async fn count_tables(
    conn: &mut PgConnection,
    url: &DatabaseUrl,
    loaded: Option<&std::collections::HashMap<String, u64>>,
) -> Result<Vec<TableRows>> {
    let rows: Vec<(String, String, String, bool)> = sqlx::query_as(TABLES)
        .fetch_all(&mut *conn)
        .await
        .map_err(db(url, "listing tables"))?;
    let mut out = Vec::with_capacity(rows.len());
    for (schema, table, quoted, plain) in rows {
        let name = format!("{schema}.{table}");
        let rows = match loaded {
            Some(loaded) if plain => loaded.get(&name).map_or(0, |&n| n as i64),
            _ => sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {quoted}")))
                .fetch_one(&mut *conn)
                .await
                .map_err(db(url, "counting rows"))?,
        };
        out.push(TableRows { name, rows });
    }
    Ok(out)
}

/// What `ferry_migrations` says is applied (the history module's one query).
async fn schema_version(conn: &mut PgConnection, url: &DatabaseUrl) -> Result<Option<i64>> {
    ferry_migrate::current_version(conn)
        .await
        .map_err(db(url, "reading the schema version"))
}

pub(crate) async fn server_version(
    conn: &mut PgConnection,
    url: &DatabaseUrl,
) -> Result<(String, i32)> {
    let row = sqlx::query(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(db(url, "reading the server version"))?;
    let text: String = row
        .try_get(0)
        .map_err(db(url, "reading the server version"))?;
    let num: i32 = row
        .try_get(1)
        .map_err(db(url, "reading the server version"))?;
    let short = text.split_whitespace().next().unwrap_or(&text).to_string();
    Ok((short, num))
}

/// Every table of `url` and its row count, in one snapshot ([`count_tables`]).
pub(crate) async fn tables_of(
    url: &DatabaseUrl,
    loaded: Option<&std::collections::HashMap<String, u64>>,
) -> Result<Vec<TableRows>> {
    let mut conn = connect(url).await?;
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut conn)
        .await
        .map_err(db(url, "opening a snapshot"))?;
    let tables = count_tables(&mut conn, url, loaded).await;
    let _ = conn.close().await;
    tables
}

impl DumpEngine for Postgres {
    fn start_dump<'a>(&'a self, url: &'a DatabaseUrl) -> BoxFut<'a, Dump> {
        Box::pin(async move {
            let tool = self.tools.find(&["pg_dump"], PACKAGE)?;
            let version_line = tool.version().await?;
            let tool_version = parse_version(&version_line);
            let mut conn = connect(url).await?;
            let (server, server_num) = server_version(&mut conn, url).await?;
            let server_major = (server_num / 10000) as u64;
            let tool_major = tool_version.first().copied().unwrap_or(0);
            if tool_major < server_major {
                return Err(BackupError::ToolTooOld {
                    tool: tool.path.display().to_string(),
                    tool_version: join(&tool_version),
                    server_version: server.clone(),
                    package: PACKAGE,
                });
            }
            sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut conn)
                .await
                .map_err(db(url, "opening the snapshot"))?;
            let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
                .fetch_one(&mut conn)
                .await
                .map_err(db(url, "exporting the snapshot"))?;
            let tables = count_tables(&mut conn, url, None).await?;
            let schema_version = schema_version(&mut conn, url).await?;

            let (target, password) = libpq_target(url)?;
            let mut cmd = tool.command();
            cmd.args(["--format=custom", "--compress=0", "--no-password"])
                .arg(format!("--snapshot={snapshot}"))
                .arg(format!("--dbname={target}"));
            if let Some(p) = password {
                cmd.env("PGPASSWORD", p);
            }
            let (stream, finish) =
                spawn_dump(&tool, &url.database_name(), cmd, Some(Box::new(conn)))?;
            Ok(Dump {
                info: SnapshotInfo {
                    server_version: server,
                    tool: format!("pg_dump {}", join(&tool_version)),
                    tables,
                    schema_version,
                },
                stream,
                finish,
            })
        })
    }

    fn preflight<'a>(&'a self, request: &'a RestoreRequest<'a>) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.tools.find(&["pg_restore"], PACKAGE)?;
            swap::preflight(request).await
        })
    }

    fn restore<'a>(
        &'a self,
        request: &'a RestoreRequest<'a>,
        input: RestoreInput,
    ) -> BoxFut<'a, Restored> {
        Box::pin(async move {
            let pg_restore = self.tools.find(&["pg_restore"], PACKAGE)?;
            swap::restore(request, &pg_restore, input).await
        })
    }

    fn load_scratch<'a>(
        &'a self,
        request: &'a RestoreRequest<'a>,
        input: RestoreInput,
    ) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let pg_restore = self.tools.find(&["pg_restore"], PACKAGE)?;
            swap::load_verified(request, request.target, &pg_restore, input).await?;
            Ok(())
        })
    }

    fn tables<'a>(&'a self, url: &'a DatabaseUrl) -> BoxFut<'a, Vec<TableRows>> {
        Box::pin(tables_of(url, None))
    }

    fn create_scratch<'a>(
        &'a self,
        source: &'a DatabaseUrl,
        name: &'a str,
    ) -> BoxFut<'a, DatabaseUrl> {
        let options = ferry_core::scratch::ScratchOptions {
            throwaway: true,
            ..Default::default()
        };
        Box::pin(create_scratch(source, name, options))
    }

    fn drop_scratch<'a>(
        &'a self,
        source: &'a DatabaseUrl,
        scratch: &'a DatabaseUrl,
    ) -> BoxFut<'a, ()> {
        Box::pin(drop_scratch(source, scratch))
    }
}

fn join(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_goes_to_env_not_the_url() {
        let url = DatabaseUrl::parse("postgres://app:s%40cret@h:5432/db?sslmode=disable").unwrap();
        let (u, p) = libpq_target(&url).unwrap();
        assert_eq!(u, "postgres://app@h:5432/db?sslmode=disable");
        assert_eq!(p.as_deref(), Some("s@cret"));
        let url = DatabaseUrl::parse("postgres://h/db?user=a&password=x").unwrap();
        let (u, p) = libpq_target(&url).unwrap();
        assert!(!u.contains("password"), "{u}");
        assert_eq!(p.as_deref(), Some("x"));
        // A raw `+` in the user info is a `+`, as the driver reads it; `%2B` is one too.
        let url = DatabaseUrl::parse("postgres://app:a+b%2Bc@h/db").unwrap();
        assert_eq!(libpq_target(&url).unwrap().1.as_deref(), Some("a+b+c"));
    }
}
