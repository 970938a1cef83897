//! The SQL of smoke checks, per engine, always read-only:
//! - PostgreSQL: the session starts with `default_transaction_read_only = on` and the check
//!   runs in `BEGIN READ ONLY` with a `statement_timeout`, as one prepared statement (the
//!   extended protocol refuses a second statement, so `COMMIT; DELETE …` cannot escape).
//! - MySQL/MariaDB: `SET SESSION TRANSACTION READ ONLY`, then `START TRANSACTION READ ONLY`,
//!   one prepared statement.
//! - SQLite: the file is opened read-only and `PRAGMA query_only = ON` (a file that does not
//!   exist is an empty database, as SQLite has it, and is not created); a progress handler
//!   interrupts the query at its timeout.
//!
//! Every transaction is rolled back. The first column of the first row is read as text.

use std::str::FromStr;
use std::time::Duration;

use ferry_core::{DatabaseUrl, Engine};
use sqlx::{AssertSqlSafe, Column, ConnectOptions, Connection, Row, TypeInfo};

/// Reads column 0 as the first of the given types that fits; a boolean column (by its type
/// name) as `true`/`false`.
macro_rules! decode {
    ($row:expr, $bool_name:literal => bool, $($t:ty),+) => {{
        let row = &$row;
        let col = row.columns().first();
        let type_name = col.map(|c| c.type_info().name().to_string()).unwrap_or_default();
        let mut out: Result<String, String> = Err(format!(
            "cannot read a value of type {type_name}; cast it to text in the query"
        ));
        if col.is_none() {
            out = Err("the query returns no columns".into());
        } else if type_name.eq_ignore_ascii_case($bool_name) {
            if let Ok(v) = row.try_get::<Option<bool>, _>(0) {
                out = Ok(v.map(|b| b.to_string()).unwrap_or_else(|| "null".into()));
            }
        } else {
            $(
                if out.is_err()
                    && let Ok(v) = row.try_get::<Option<$t>, _>(0)
                {
                    out = Ok(v.map(|x| x.to_string()).unwrap_or_else(|| "null".into()));
                }
            )+
        }
        out
    }};
}

/// Opens the read-only transaction with `begin`, fetches the user's query as one prepared
/// statement, rolls back whatever happened and closes the connection: the fetched row, if any.
macro_rules! read_only_row {
    ($conn:expr, $sql:expr, $err:expr, [$($begin:literal),+]) => {{
        let mut conn = $conn;
        $(
            sqlx::raw_sql($begin)
                .execute(&mut conn)
                .await
                .map_err($err)?;
        )+
        let row = sqlx::query(AssertSqlSafe($sql.to_string()))
            .fetch_optional(&mut conn)
            .await;
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut conn).await;
        let _ = conn.close().await;
        row.map_err($err)?
    }};
}

/// The first column of the first row, as text (`None`: no rows; `"null"`: SQL NULL).
pub(super) async fn first_value(
    url: &DatabaseUrl,
    sql: &str,
    timeout: Duration,
) -> Result<Option<String>, String> {
    let err = |e: sqlx::Error| match e {
        sqlx::Error::Database(d) => d.message().to_string(),
        other => other.to_string(),
    };
    match url.engine() {
        Engine::Postgres => {
            let ms = timeout.as_millis().max(1).to_string();
            let opts = sqlx::postgres::PgConnectOptions::from_str(&url.for_driver())
                .map_err(err)?
                .options([
                    ("default_transaction_read_only", "on"),
                    ("statement_timeout", ms.as_str()),
                ]);
            let conn = opts.connect().await.map_err(err)?;
            let Some(row) = read_only_row!(conn, sql, err, ["BEGIN READ ONLY"]) else {
                return Ok(None);
            };
            decode!(row, "BOOL" => bool, i16, i32, i64, f32, f64, String).map(Some)
        }
        Engine::MySql => {
            let opts =
                sqlx::mysql::MySqlConnectOptions::from_str(&url.for_driver()).map_err(err)?;
            let conn = opts.connect().await.map_err(err)?;
            let Some(row) = read_only_row!(
                conn,
                sql,
                err,
                [
                    "SET SESSION TRANSACTION READ ONLY",
                    "START TRANSACTION READ ONLY"
                ]
            ) else {
                return Ok(None);
            };
            decode!(row, "BOOLEAN" => bool, i64, u64, f64, String)
                // DECIMAL and friends arrive as text in MySQL's binary protocol.
                .or_else(|e| {
                    row.try_get_unchecked::<Option<String>, _>(0)
                        .map(|v| v.unwrap_or_else(|| "null".into()))
                        .map_err(|_| e)
                })
                .map(Some)
        }
        Engine::Sqlite => {
            // A file that does not exist reads as an empty database (SQLite's own rule), and a
            // smoke check must not create it.
            let path = ferry_core::url::sqlite_path(url.expose());
            let missing = path != ":memory:" && !std::path::Path::new(path).exists();
            let source = if missing {
                "sqlite::memory:".to_string()
            } else {
                url.for_driver()
            };
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&source)
                .map_err(err)?
                .read_only(!missing)
                .create_if_missing(false);
            let mut conn = opts.connect().await.map_err(err)?;
            // SQLite runs the query on its own thread, which a dropped future does not stop:
            // interrupt it at the deadline.
            let deadline = std::time::Instant::now() + timeout;
            conn.lock_handle()
                .await
                .map_err(err)?
                .set_progress_handler(10_000, move || std::time::Instant::now() < deadline);
            sqlx::raw_sql("PRAGMA query_only = ON")
                .execute(&mut conn)
                .await
                .map_err(err)?;
            let row = sqlx::query(AssertSqlSafe(sql.to_string()))
                .fetch_optional(&mut conn)
                .await;
            let _ = conn.close().await;
            let Some(row) = row.map_err(err)? else {
                return Ok(None);
            };
            decode!(row, "BOOLEAN" => bool, i64, f64, String).map(Some)
        }
    }
}
