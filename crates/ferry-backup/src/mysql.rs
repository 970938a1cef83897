//! MySQL/MariaDB: `mariadb-dump` (or `mysqldump`) with `--single-transaction`, restored through
//! the `mariadb` (or `mysql`) client.
//!
//! MySQL commits DDL implicitly, so a restore cannot be one transaction. ferry therefore checks
//! the whole backup first, and only then drops and recreates the target database (keeping its
//! character set and collation) and loads the dump. If loading fails part-way the target is
//! partly restored, and the error says so.
//!
//! Row counts are taken in a `WITH CONSISTENT SNAPSHOT` transaction opened just before the dump
//! starts; the dump's own snapshot is a different one (the tool opens it), so under concurrent
//! writes the counts may differ slightly from the dump. On a quiet database they match.
//!
//! The password reaches the tools through `MYSQL_PWD`, never their arguments.

use std::process::Stdio;

use ferry_core::DatabaseUrl;
use sqlx::{AssertSqlSafe, Connection, MySqlConnection, Row};
use tokio::io::AsyncWriteExt;

use crate::engine::{
    BoxFut, Dump, DumpEngine, RestoreInput, RestoreRequest, SnapshotInfo, Tool, ToolSearch,
    clean_stderr, collect_stderr, create_scratch, db, drop_scratch, parse_version, spawn_dump,
    url_parts, with_database,
};
use crate::error::{BackupError, Result};
use crate::manifest::TableRows;

const PACKAGE: &str = "mariadb-client";

pub(crate) struct MySql {
    pub tools: ToolSearch,
}

async fn connect(url: &DatabaseUrl) -> Result<MySqlConnection> {
    MySqlConnection::connect(&url.for_driver())
        .await
        .map_err(|source| BackupError::Connect {
            url: url.redacted(),
            source,
        })
}

fn quote_ident(name: &str) -> String {
    ferry_core::scratch::quote_ident(ferry_core::Engine::MySql, name)
}

/// Connection arguments for the client tools, and the password for `MYSQL_PWD`.
fn tool_args(url: &DatabaseUrl, cmd: &mut tokio::process::Command) -> Result<String> {
    let parts = url_parts(url)?;
    if let Some(h) = &parts.host {
        cmd.arg(format!("--host={h}"));
    }
    if let Some(p) = parts.port {
        cmd.arg(format!("--port={p}"));
    }
    if let Some(u) = &parts.user {
        cmd.arg(format!("--user={u}"));
    }
    if let Some(s) = parts.param("socket") {
        cmd.arg(format!("--socket={s}"));
    }
    if let Some(p) = parts.any_password() {
        cmd.env("MYSQL_PWD", p);
    }
    Ok(parts.database)
}

/// The tool's own version: `Distrib 10.11.19-MariaDB` (MariaDB) or `Ver 8.0.36` (MySQL).
fn tool_version(line: &str) -> Vec<u64> {
    match line.find("Distrib ") {
        Some(i) => parse_version(&line[i + 8..]),
        None => match line.find("Ver ") {
            Some(i) => parse_version(&line[i + 4..]),
            None => parse_version(line),
        },
    }
}

async fn count_tables(conn: &mut MySqlConnection, url: &DatabaseUrl) -> Result<Vec<TableRows>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db(url, "listing tables"))?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {}",
            quote_ident(&name)
        )))
        .fetch_one(&mut *conn)
        .await
        .map_err(db(url, "counting rows"))?;
        out.push(TableRows { name, rows });
    }
    Ok(out)
}

/// What `ferry_migrations` says is applied (the history module's one query).
async fn schema_version(conn: &mut MySqlConnection, url: &DatabaseUrl) -> Result<Option<i64>> {
    ferry_migrate::current_version(conn)
        .await
        .map_err(db(url, "reading the schema version"))
}

/// The character set and collation of database `name`, or the server's defaults.
async fn charset_of(
    conn: &mut MySqlConnection,
    url: &DatabaseUrl,
    name: &str,
) -> Result<(String, String)> {
    let row = sqlx::query(
        "SELECT CAST(DEFAULT_CHARACTER_SET_NAME AS CHAR), CAST(DEFAULT_COLLATION_NAME AS CHAR) \
         FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db(url, "reading the character set"))?;
    let row = match row {
        Some(r) => r,
        None => sqlx::query(
            "SELECT CAST(@@character_set_server AS CHAR), CAST(@@collation_server AS CHAR)",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(db(url, "reading the character set"))?,
    };
    Ok((
        row.try_get(0)
            .map_err(db(url, "reading the character set"))?,
        row.try_get(1)
            .map_err(db(url, "reading the character set"))?,
    ))
}

fn safe_word(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Drops and recreates `name` with the given character set; on the server of `url`.
async fn recreate(
    conn: &mut MySqlConnection,
    url: &DatabaseUrl,
    name: &str,
    (charset, collation): (String, String),
) -> Result<()> {
    sqlx::raw_sql(AssertSqlSafe(ferry_core::scratch::drop_sql(
        ferry_core::Engine::MySql,
        name,
        None,
    )))
    .execute(&mut *conn)
    .await
    .map_err(db(url, "dropping the database"))?;
    let mut create = format!("CREATE DATABASE {}", quote_ident(name));
    if safe_word(&charset) && safe_word(&collation) {
        create.push_str(&format!(" CHARACTER SET {charset} COLLATE {collation}"));
    }
    sqlx::raw_sql(AssertSqlSafe(create))
        .execute(&mut *conn)
        .await
        .map_err(db(url, "creating the database"))?;
    Ok(())
}

impl MySql {
    /// Replaces the contents of `target` with the dump read from `input`.
    fn replace<'a>(
        &'a self,
        id: &'a str,
        target: &'a DatabaseUrl,
        input: RestoreInput,
    ) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let client = self.tools.find(&["mariadb", "mysql"], PACKAGE)?;
            let name = target.database_name();
            if name.is_empty() {
                return Err(BackupError::RestoreFailed {
                    id: id.to_string(),
                    target: target.redacted(),
                    message: "the URL names no database; add /DBNAME".into(),
                });
            }
            let server = with_database(target, "")?;
            let mut conn = connect(&server).await?;
            let charset = charset_of(&mut conn, &server, &name).await?;
            recreate(&mut conn, &server, &name, charset).await?;
            let _ = conn.close().await;
            load(id, target, &client, input).await
        })
    }
}

impl DumpEngine for MySql {
    fn start_dump<'a>(&'a self, url: &'a DatabaseUrl) -> BoxFut<'a, Dump> {
        Box::pin(async move {
            let tool = self.tools.find(&["mariadb-dump", "mysqldump"], PACKAGE)?;
            let version_line = tool.version().await?;
            let tv = tool_version(&version_line);
            let mut conn = connect(url).await?;
            let server: String = sqlx::query_scalar("SELECT CAST(VERSION() AS CHAR)")
                .fetch_one(&mut conn)
                .await
                .map_err(db(url, "reading the server version"))?;
            let sv = parse_version(&server);
            let same_family =
                version_line.contains("MariaDB") == server.to_ascii_lowercase().contains("mariadb");
            let major_minor = |v: &[u64]| {
                (
                    v.first().copied().unwrap_or(0),
                    v.get(1).copied().unwrap_or(0),
                )
            };
            if same_family && major_minor(&tv) < major_minor(&sv) {
                return Err(BackupError::ToolTooOld {
                    tool: tool.path.display().to_string(),
                    tool_version: join(&tv),
                    server_version: server,
                    package: PACKAGE,
                });
            }
            sqlx::raw_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                .execute(&mut conn)
                .await
                .map_err(db(url, "opening a snapshot"))?;
            let tables = count_tables(&mut conn, url).await?;
            let schema_version = schema_version(&mut conn, url).await?;
            let _ = conn.close().await;

            let mut cmd = tool.command();
            cmd.args([
                "--single-transaction",
                "--routines",
                "--triggers",
                "--events",
                "--hex-blob",
                "--default-character-set=utf8mb4",
                "--no-tablespaces",
            ]);
            let database = tool_args(url, &mut cmd)?;
            cmd.arg("--").arg(&database);
            let (stream, finish) = spawn_dump(&tool, &database, cmd, None)?;
            Ok(Dump {
                info: SnapshotInfo {
                    server_version: server,
                    tool: format!("{} {}", tool.name, join(&tv)),
                    tables,
                    schema_version,
                },
                stream,
                finish,
            })
        })
    }

    fn load_scratch<'a>(
        &'a self,
        request: &'a RestoreRequest<'a>,
        input: RestoreInput,
    ) -> BoxFut<'a, ()> {
        self.replace(request.id, request.target, input)
    }

    fn tables<'a>(&'a self, url: &'a DatabaseUrl) -> BoxFut<'a, Vec<TableRows>> {
        Box::pin(async move {
            let mut conn = connect(url).await?;
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
        Box::pin(async move {
            let mut conn = connect(source).await?;
            let charset = charset_of(&mut conn, source, &source.database_name()).await?;
            let _ = conn.close().await;
            let options = ferry_core::scratch::ScratchOptions {
                charset: Some(charset),
                ..Default::default()
            };
            create_scratch(source, name, options).await
        })
    }

    fn drop_scratch<'a>(
        &'a self,
        source: &'a DatabaseUrl,
        scratch: &'a DatabaseUrl,
    ) -> BoxFut<'a, ()> {
        Box::pin(drop_scratch(source, scratch))
    }
}

async fn load(id: &str, target: &DatabaseUrl, client: &Tool, input: RestoreInput) -> Result<()> {
    let failed = |message: String| BackupError::RestoreFailed {
        id: id.to_string(),
        target: target.redacted(),
        message,
    };
    let mut cmd = client.command();
    cmd.args(["--batch", "--default-character-set=utf8mb4"]);
    let database = tool_args(target, &mut cmd)?;
    cmd.arg(format!("--database={database}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = client.spawn(&mut cmd)?;
    let stderr = collect_stderr(&mut child);
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| BackupError::Internal("client has no stdin".into()))?;
    let mut stream = input.stream;
    let (fed, verified) = tokio::join!(tokio::io::copy(&mut stream, &mut stdin), input.verified);
    if verified.is_ok() && fed.is_ok() {
        let _ = stdin.shutdown().await;
        drop(stdin);
    } else {
        let _ = child.start_kill();
        drop(stdin);
    }
    let status = child.wait().await;
    let err = stderr.await.unwrap_or_default();
    let partial = "the target database is partly restored; restore again or from another backup";
    verified.map_err(|e| failed(format!("{e}; {partial}")))?;
    if !status.as_ref().is_ok_and(|s| s.success()) {
        return Err(failed(format!(
            "{}: {}; {partial}",
            client.name,
            clean_stderr(&err)
        )));
    }
    fed.map_err(|e| failed(format!("{e}; {partial}")))?;
    Ok(())
}

fn join(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_versions() {
        assert_eq!(
            tool_version(
                "mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)"
            ),
            vec![10, 11, 19]
        );
        assert_eq!(
            tool_version(
                "mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)"
            ),
            vec![8, 0, 36]
        );
    }
}
