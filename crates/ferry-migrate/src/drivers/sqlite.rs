//! SQLite: transactional DDL; the lock is the database's own write lock, taken per migration
//! with `BEGIN IMMEDIATE` (waiting up to the lock timeout), with the history re-read under it.
//! SQLite has no session lock that outlives a transaction, so this is what makes every
//! migration apply exactly once however many runs race.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_core::{DatabaseUrl, Engine};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, Connection, Row, SqliteConnection};

use super::{BoxFut, COLUMNS, Driver, HistoryRecord, connect_error, script_error};
use crate::error::{Result, db};
use crate::{Direction, MigrateError};

pub struct Sqlite {
    conn: SqliteConnection,
    url: String,
    timeout: Duration,
}

impl Sqlite {
    pub async fn connect(url: &DatabaseUrl) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(&url.for_driver())
            .map_err(connect_error(url))?
            .create_if_missing(true);
        if let Some(parent) =
            std::path::Path::new(ferry_core::url::sqlite_path(url.expose())).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| connect_error(url)(sqlx::Error::Io(e)))?;
        }
        let conn = SqliteConnection::connect_with(&options)
            .await
            .map_err(connect_error(url))?;
        Ok(Self {
            conn,
            url: url.redacted(),
            timeout: ferry_core::config::DEFAULT_LOCK_TIMEOUT,
        })
    }

    /// Starts a write transaction; a timeout waiting for another writer is a lock timeout.
    async fn begin_write(&mut self) -> Result<sqlx::Transaction<'_, sqlx::Sqlite>> {
        let (url, timeout) = (self.url.clone(), self.timeout);
        self.conn.begin_with("BEGIN IMMEDIATE").await.map_err(|e| {
            let busy = e.as_database_error().is_some_and(|d| {
                d.code().as_deref() == Some("5") || d.message().contains("locked")
            });
            if busy {
                MigrateError::LockTimeout { url, timeout }
            } else {
                db("starting a write transaction")(e)
            }
        })
    }
}

fn record_from(row: &sqlx::sqlite::SqliteRow) -> std::result::Result<HistoryRecord, sqlx::Error> {
    Ok(HistoryRecord {
        version: row.try_get("version")?,
        name: row.try_get("name")?,
        checksum: row.try_get("checksum")?,
        down_sql: row.try_get("down_sql")?,
        down_transaction: row.try_get("down_transaction")?,
        applied_at: row.try_get::<DateTime<Utc>, _>("applied_at")?,
        execution_ms: row.try_get("execution_ms")?,
        success: row.try_get("success")?,
        applied_by: row.try_get("applied_by")?,
    })
}

async fn insert(
    conn: &mut SqliteConnection,
    r: &HistoryRecord,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO ferry_migrations ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )))
    .bind(r.version)
    .bind(&r.name)
    .bind(&r.checksum)
    .bind(&r.down_sql)
    .bind(r.down_transaction)
    .bind(r.applied_at)
    .bind(r.execution_ms)
    .bind(r.success)
    .bind(&r.applied_by)
    .execute(conn)
    .await
    .map(drop)
}

async fn exists(
    conn: &mut SqliteConnection,
    version: i64,
) -> std::result::Result<bool, sqlx::Error> {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM ferry_migrations WHERE version = ?")
        .bind(version)
        .fetch_one(conn)
        .await
        .map(|n| n > 0)
}

async fn run_script(
    conn: &mut SqliteConnection,
    sql: &str,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(conn)
        .await
        .map(drop)
}

impl Driver for Sqlite {
    fn engine(&self) -> Engine {
        Engine::Sqlite
    }

    fn transactional_ddl(&self) -> bool {
        true
    }

    fn lock(&mut self, timeout: Duration) -> BoxFut<'_, ()> {
        Box::pin(async move {
            self.timeout = timeout;
            sqlx::raw_sql(AssertSqlSafe(format!(
                "PRAGMA busy_timeout = {}",
                timeout.as_millis()
            )))
            .execute(&mut self.conn)
            .await
            .map(drop)
            .map_err(db("setting busy_timeout"))
        })
    }

    fn unlock(&mut self) -> BoxFut<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn ensure_history(&mut self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let mut tx = self.begin_write().await?;
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS ferry_migrations (
                    version INTEGER PRIMARY KEY,
                    name TEXT NOT NULL,
                    checksum TEXT NOT NULL,
                    down_sql TEXT,
                    down_transaction BOOLEAN NOT NULL DEFAULT TRUE,
                    applied_at TEXT NOT NULL,
                    execution_ms INTEGER NOT NULL,
                    success BOOLEAN NOT NULL,
                    applied_by TEXT NOT NULL
                )",
            )
            .execute(&mut *tx)
            .await
            .map_err(db("creating ferry_migrations"))?;
            tx.commit().await.map_err(db("creating ferry_migrations"))
        })
    }

    fn history(&mut self) -> BoxFut<'_, Vec<HistoryRecord>> {
        Box::pin(async move {
            if !self.table_exists(super::HISTORY_TABLE).await? {
                return Ok(Vec::new());
            }
            let rows = sqlx::query(AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM ferry_migrations ORDER BY version"
            )))
            .fetch_all(&mut self.conn)
            .await
            .map_err(db("reading ferry_migrations"))?;
            rows.iter()
                .map(record_from)
                .collect::<std::result::Result<_, _>>()
                .map_err(db("decoding ferry_migrations"))
        })
    }

    fn apply_atomic<'a>(&'a mut self, sql: &'a str, record: &'a HistoryRecord) -> BoxFut<'a, bool> {
        Box::pin(async move {
            let mut tx = self.begin_write().await?;
            if exists(&mut tx, record.version)
                .await
                .map_err(db("reading ferry_migrations"))?
            {
                return Ok(false);
            }
            let label = format!("{}_{}", record.version, record.name);
            let started = std::time::Instant::now();
            run_script(&mut tx, sql)
                .await
                .map_err(script_error(&label, Direction::Up))?;
            let record = &super::with_elapsed(record, started);
            insert(&mut tx, record)
                .await
                .map_err(db("recording the migration"))?;
            tx.commit().await.map_err(db("committing the migration"))?;
            Ok(true)
        })
    }

    fn revert_atomic<'a>(
        &'a mut self,
        sql: &'a str,
        version: i64,
        label: &'a str,
    ) -> BoxFut<'a, bool> {
        Box::pin(async move {
            let mut tx = self.begin_write().await?;
            if !exists(&mut tx, version)
                .await
                .map_err(db("reading ferry_migrations"))?
            {
                return Ok(false);
            }
            run_script(&mut tx, sql)
                .await
                .map_err(script_error(label, Direction::Down))?;
            sqlx::query("DELETE FROM ferry_migrations WHERE version = ?")
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(db("recording the revert"))?;
            tx.commit().await.map_err(db("committing the revert"))?;
            Ok(true)
        })
    }

    fn execute<'a>(&'a mut self, sql: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            run_script(&mut self.conn, sql)
                .await
                .map_err(db("running the script"))
        })
    }

    fn insert_record<'a>(&'a mut self, record: &'a HistoryRecord) -> BoxFut<'a, ()> {
        Box::pin(async move {
            insert(&mut self.conn, record)
                .await
                .map_err(db("recording a migration"))
        })
    }

    fn delete_record(&mut self, version: i64) -> BoxFut<'_, ()> {
        Box::pin(async move {
            sqlx::query("DELETE FROM ferry_migrations WHERE version = ?")
                .bind(version)
                .execute(&mut self.conn)
                .await
                .map(drop)
                .map_err(db("deleting a history row"))
        })
    }

    fn set_success(&mut self, version: i64, success: bool, execution_ms: i64) -> BoxFut<'_, ()> {
        Box::pin(async move {
            sqlx::query(
                "UPDATE ferry_migrations SET success = ?, execution_ms = ? WHERE version = ?",
            )
            .bind(success)
            .bind(execution_ms)
            .bind(version)
            .execute(&mut self.conn)
            .await
            .map(drop)
            .map_err(db("updating a history row"))
        })
    }

    fn update_record<'a>(&'a mut self, r: &'a HistoryRecord) -> BoxFut<'a, ()> {
        Box::pin(async move {
            sqlx::query(
                "UPDATE ferry_migrations SET name = ?, checksum = ?, down_sql = ?, down_transaction = ? \
                 WHERE version = ?",
            )
            .bind(&r.name)
            .bind(&r.checksum)
            .bind(&r.down_sql)
            .bind(r.down_transaction)
            .bind(r.version)
            .execute(&mut self.conn)
            .await
            .map(drop)
            .map_err(db("updating a history row"))
        })
    }

    fn table_exists<'a>(&'a mut self, table: &'a str) -> BoxFut<'a, bool> {
        Box::pin(async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
            )
            .bind(table)
            .fetch_one(&mut self.conn)
            .await
            .map(|n| n > 0)
            .map_err(db(format!("looking for table {table}")))
        })
    }

    fn text_rows<'a>(&'a mut self, sql: &'a str) -> BoxFut<'a, Vec<Vec<Option<String>>>> {
        Box::pin(async move {
            let rows = sqlx::query(AssertSqlSafe(sql.to_string()))
                .fetch_all(&mut self.conn)
                .await
                .map_err(db("reading another tool's history"))?;
            rows.iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| r.try_get::<Option<String>, _>(i))
                        .collect()
                })
                .collect::<std::result::Result<_, _>>()
                .map_err(db("decoding another tool's history"))
        })
    }

    fn cast_text(&self, expr: &str) -> String {
        format!("CAST({expr} AS TEXT)")
    }

    fn close(self: Box<Self>) -> BoxFut<'static, ()> {
        Box::pin(async move {
            self.conn
                .close()
                .await
                .map_err(db("closing the connection"))
        })
    }
}
