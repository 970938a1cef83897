//! PostgreSQL: `pg_dump` of an exported snapshot, restored in one transaction.
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
//! **Restore is one transaction.** `pg_restore -f -` turns the archive into SQL, which ferry
//! pipes into `psql --single-transaction -v ON_ERROR_STOP=1`, preceded by SQL that drops the
//! target's non-system schemas (and so every object in them) and recreates `public`. ferry holds
//! `psql`'s stdin and closes it (which commits) only after the whole object passed its checksum;
//! any failure kills `psql` before that, so the target is left exactly as it was. The price is
//! that a restore is single-threaded (no `pg_restore -j`): atomicity matters more after a failed
//! release than the last bit of speed.
//!
//! **Consistent row counts.** ferry opens `REPEATABLE READ` on its own connection, exports the
//! snapshot (`pg_export_snapshot()`), counts every table in it, and gives `pg_dump --snapshot`,
//! so the manifest's counts describe exactly the data in the dump. The connection stays open
//! until `pg_dump` exits.
//!
//! Passwords reach the tools through `PGPASSWORD`, never their arguments.

use std::process::Stdio;

use ferry_core::DatabaseUrl;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};
use tokio::io::AsyncWriteExt;

use crate::engine::{
    BoxFut, Dump, DumpEngine, RestoreInput, SnapshotInfo, Tool, ToolSearch, clean_stderr,
    collect_stderr, create_scratch, db, drop_scratch, parse_version, spawn_dump, url_parts,
};
use crate::error::{BackupError, Result};
use crate::manifest::TableRows;

const PACKAGE: &str = "postgresql-client";

pub(crate) struct Postgres {
    pub tools: ToolSearch,
}

async fn connect(url: &DatabaseUrl) -> Result<PgConnection> {
    PgConnection::connect(&url.for_driver())
        .await
        .map_err(|source| BackupError::Connect {
            url: url.redacted(),
            source,
        })
}

/// The URL for libpq tools without any password, and the password for `PGPASSWORD`.
fn libpq_target(url: &DatabaseUrl) -> Result<(String, Option<String>)> {
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

fn quote_ident(name: &str) -> String {
    ferry_core::scratch::quote_ident(ferry_core::Engine::Postgres, name)
}

const TABLES: &str = r"
SELECT n.nspname, c.relname, format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2";

/// Every table and its row count, on `conn` (inside whatever transaction it has open).
async fn count_tables(conn: &mut PgConnection, url: &DatabaseUrl) -> Result<Vec<TableRows>> {
    let rows = sqlx::query(TABLES)
        .fetch_all(&mut *conn)
        .await
        .map_err(db(url, "listing tables"))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let schema: String = row.try_get(0).map_err(db(url, "listing tables"))?;
        let table: String = row.try_get(1).map_err(db(url, "listing tables"))?;
        let quoted: String = row.try_get(2).map_err(db(url, "listing tables"))?;
        let count: i64 =
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {quoted}")))
                .fetch_one(&mut *conn)
                .await
                .map_err(db(url, "counting rows"))?;
        out.push(TableRows {
            name: format!("{schema}.{table}"),
            rows: count,
        });
    }
    Ok(out)
}

/// What `ferry_migrations` says is applied (the history module's one query).
async fn schema_version(conn: &mut PgConnection, url: &DatabaseUrl) -> Result<Option<i64>> {
    ferry_migrate::current_version(conn)
        .await
        .map_err(db(url, "reading the schema version"))
}

async fn server_version(conn: &mut PgConnection, url: &DatabaseUrl) -> Result<(String, i32)> {
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
            let tables = count_tables(&mut conn, url).await?;
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

    fn restore<'a>(
        &'a self,
        id: &'a str,
        target: &'a DatabaseUrl,
        input: RestoreInput,
    ) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let pg_restore = self.tools.find(&["pg_restore"], PACKAGE)?;
            let psql = self.tools.find(&["psql"], PACKAGE)?;
            let prelude = {
                let mut conn = connect(target).await?;
                let (_, num) = server_version(&mut conn, target).await?;
                let schemas: Vec<String> = sqlx::query_scalar(
                    r"SELECT nspname::text FROM pg_namespace
                      WHERE nspname NOT IN ('pg_catalog', 'information_schema')
                        AND nspname NOT LIKE 'pg\_toast%' AND nspname NOT LIKE 'pg\_temp\_%'
                      ORDER BY 1",
                )
                .fetch_all(&mut conn)
                .await
                .map_err(db(target, "listing schemas"))?;
                let _ = conn.close().await;
                reset_sql(&schemas, num)
            };
            run_restore(id, target, &pg_restore, &psql, &prelude, input).await
        })
    }

    fn tables<'a>(&'a self, url: &'a DatabaseUrl) -> BoxFut<'a, Vec<TableRows>> {
        Box::pin(async move {
            let mut conn = connect(url).await?;
            sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut conn)
                .await
                .map_err(db(url, "opening a snapshot"))?;
            let tables = count_tables(&mut conn, url).await;
            let _ = conn.close().await;
            tables
        })
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

/// SQL that empties a database the way a fresh one is: every non-system schema dropped, a
/// default `public` recreated (`pg_dump` does not emit `CREATE SCHEMA public`).
fn reset_sql(schemas: &[String], server_num: i32) -> String {
    let mut sql = String::from("SET client_min_messages = warning;\n");
    for s in schemas {
        sql.push_str(&format!("DROP SCHEMA {} CASCADE;\n", quote_ident(s)));
    }
    if server_num >= 150000 {
        // As PostgreSQL 15 makes it, owned by pg_database_owner; a database owner who is not
        // a superuser may not name that role (its membership is implicit), and gets the schema
        // itself, which is what it would own through that role anyway.
        sql.push_str(
            "DO $ferry$ BEGIN\n\
               IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN\n\
                 CREATE SCHEMA public AUTHORIZATION pg_database_owner;\n\
               ELSE\n\
                 CREATE SCHEMA public;\n\
               END IF;\n\
             END $ferry$;\n\
             GRANT USAGE ON SCHEMA public TO PUBLIC;\n",
        );
    } else {
        sql.push_str("CREATE SCHEMA public;\nGRANT ALL ON SCHEMA public TO PUBLIC;\n");
    }
    sql.push_str(
        "COMMENT ON SCHEMA public IS 'standard public schema';\nRESET client_min_messages;\n",
    );
    sql
}

async fn run_restore(
    id: &str,
    target: &DatabaseUrl,
    pg_restore: &Tool,
    psql: &Tool,
    prelude: &str,
    input: RestoreInput,
) -> Result<()> {
    let failed = |message: String| BackupError::RestoreFailed {
        id: id.to_string(),
        target: target.redacted(),
        message,
    };
    let (dbname, password) = libpq_target(target)?;
    let mut psql_cmd = psql.command();
    psql_cmd
        .args([
            "-X",
            "-q",
            "--no-password",
            "-v",
            "ON_ERROR_STOP=1",
            "--single-transaction",
            "-f",
            "-",
        ])
        .arg(format!("--dbname={dbname}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(p) = &password {
        psql_cmd.env("PGPASSWORD", p);
    }
    let mut psql_child = psql.spawn(&mut psql_cmd)?;
    let psql_err = collect_stderr(&mut psql_child);
    let mut psql_in = psql_child
        .stdin
        .take()
        .ok_or_else(|| BackupError::Internal("psql has no stdin".into()))?;

    let mut restore_cmd = pg_restore.command();
    restore_cmd
        .args(["--file=-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut restore_child = pg_restore.spawn(&mut restore_cmd)?;
    let restore_err = collect_stderr(&mut restore_child);
    let restore_in = restore_child.stdin.take();
    let restore_out = restore_child.stdout.take();

    let mut stream = input.stream;
    let feed = async move {
        let Some(mut stdin) = restore_in else {
            return Ok(0);
        };
        let n = tokio::io::copy(&mut stream, &mut stdin).await;
        let _ = stdin.shutdown().await;
        n
    };
    let pump = async {
        psql_in.write_all(prelude.as_bytes()).await?;
        let Some(mut out) = restore_out else {
            return Ok(0);
        };
        tokio::io::copy(&mut out, &mut psql_in).await
    };
    let (fed, pumped, verified) = tokio::join!(feed, pump, input.verified);
    let restore_status = restore_child.wait().await;
    let restore_stderr = restore_err.await.unwrap_or_default();

    // Commit only if every stage succeeded: closing psql's stdin ends the single transaction
    // with COMMIT; killing psql instead rolls it back.
    let all_ok = verified.is_ok()
        && fed.is_ok()
        && pumped.is_ok()
        && restore_status.as_ref().is_ok_and(|s| s.success());
    if all_ok {
        drop(psql_in);
    } else {
        let _ = psql_child.start_kill();
        drop(psql_in);
    }
    let psql_status = psql_child.wait().await;
    let psql_stderr = psql_err.await.unwrap_or_default();
    let psql_ok = psql_status.as_ref().is_ok_and(|s| s.success());

    if all_ok && psql_ok {
        return Ok(());
    }
    verified?;
    if !psql_ok && !psql_stderr.is_empty() {
        return Err(failed(format!(
            "psql: {}; the target was left unchanged",
            clean_stderr(&psql_stderr)
        )));
    }
    if !restore_status.as_ref().is_ok_and(|s| s.success()) {
        return Err(failed(format!(
            "pg_restore: {}; the target was left unchanged",
            clean_stderr(&restore_stderr)
        )));
    }
    let io = fed.err().or(pumped.err());
    Err(failed(format!(
        "{}; the target was left unchanged",
        io.map(|e| e.to_string())
            .unwrap_or_else(|| format!("psql exited with {psql_status:?}"))
    )))
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

    #[test]
    fn reset_quotes_schema_names() {
        let sql = reset_sql(&["public".into(), "we\"ird".into()], 150000);
        assert!(sql.contains("DROP SCHEMA \"we\"\"ird\" CASCADE;"));
        assert!(sql.contains("AUTHORIZATION pg_database_owner"));
    }
}
