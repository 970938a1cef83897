//! MySQL and MariaDB: DDL commits implicitly, so scripts are *tracked* (row first, then script,
//! then the row marked finished); the lock is `GET_LOCK`, held by the session.

use std::time::Duration;

use chrono::NaiveDateTime;
use ferry_core::{DatabaseUrl, Engine};
use sqlx::{AssertSqlSafe, Connection, MySqlConnection, Row};

use super::{BoxFut, COLUMNS, Driver, HistoryRecord, connect_error, script_error};
use crate::error::{Result, db};
use crate::{Direction, MigrateError};

/// GET_LOCK names are limited to 64 characters and are server-wide, so the database's name is
/// hashed into the key.
const LOCK_NAME: &str = "CONCAT('ferry:', SHA1(IFNULL(DATABASE(), '')))";

pub struct MySql {
    conn: MySqlConnection,
    url: String,
}

impl MySql {
    pub async fn connect(url: &DatabaseUrl) -> Result<Self> {
        let conn = MySqlConnection::connect(&url.for_driver())
            .await
            .map_err(connect_error(url))?;
        Ok(Self {
            conn,
            url: url.redacted(),
        })
    }
}

fn record_from(row: &sqlx::mysql::MySqlRow) -> std::result::Result<HistoryRecord, sqlx::Error> {
    Ok(HistoryRecord {
        version: row.try_get("version")?,
        name: row.try_get("name")?,
        checksum: row.try_get("checksum")?,
        down_sql: row.try_get("down_sql")?,
        down_transaction: row.try_get("down_transaction")?,
        applied_at: row.try_get::<NaiveDateTime, _>("applied_at")?.and_utc(),
        execution_ms: row.try_get("execution_ms")?,
        success: row.try_get("success")?,
        applied_by: row.try_get("applied_by")?,
    })
}

async fn insert(
    conn: &mut MySqlConnection,
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
    .bind(r.applied_at.naive_utc())
    .bind(r.execution_ms)
    .bind(r.success)
    .bind(&r.applied_by)
    .execute(conn)
    .await
    .map(drop)
}

async fn exists(
    conn: &mut MySqlConnection,
    version: i64,
) -> std::result::Result<bool, sqlx::Error> {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM ferry_migrations WHERE version = ?")
        .bind(version)
        .fetch_one(conn)
        .await
        .map(|n| n > 0)
}

async fn run_script(conn: &mut MySqlConnection, sql: &str) -> std::result::Result<(), sqlx::Error> {
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(conn)
        .await
        .map(drop)
}

impl Driver for MySql {
    fn engine(&self) -> Engine {
        Engine::MySql
    }

    fn transactional_ddl(&self) -> bool {
        false
    }

    fn lock(&mut self, timeout: Duration) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let secs = timeout.as_secs_f64().max(0.001);
            let got: Option<i64> =
                sqlx::query_scalar(AssertSqlSafe(format!("SELECT GET_LOCK({LOCK_NAME}, ?)")))
                    .bind(secs)
                    .fetch_one(&mut self.conn)
                    .await
                    .map_err(db("taking the migration lock"))?;
            match got {
                Some(1) => Ok(()),
                _ => Err(MigrateError::LockTimeout {
                    url: self.url.clone(),
                    timeout,
                }),
            }
        })
    }

    fn unlock(&mut self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            sqlx::query(AssertSqlSafe(format!("SELECT RELEASE_LOCK({LOCK_NAME})")))
                .execute(&mut self.conn)
                .await
                .map(drop)
                .map_err(db("releasing the migration lock"))
        })
    }

    fn ensure_history(&mut self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS ferry_migrations (
                    version BIGINT NOT NULL PRIMARY KEY,
                    name VARCHAR(255) NOT NULL,
                    checksum CHAR(64) NOT NULL,
                    down_sql LONGTEXT NULL,
                    down_transaction BOOLEAN NOT NULL DEFAULT TRUE,
                    applied_at DATETIME(6) NOT NULL,
                    execution_ms BIGINT NOT NULL,
                    success BOOLEAN NOT NULL,
                    applied_by VARCHAR(255) NOT NULL
                ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            )
            .execute(&mut self.conn)
            .await
            .map(drop)
            .map_err(db("creating ferry_migrations"))
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

    /// Only correct for scripts without DDL (MySQL commits DDL implicitly); the engine uses the
    /// tracked path on this driver, since [`Driver::transactional_ddl`] is false.
    fn apply_atomic<'a>(&'a mut self, sql: &'a str, record: &'a HistoryRecord) -> BoxFut<'a, bool> {
        Box::pin(async move {
            let mut tx = self
                .conn
                .begin()
                .await
                .map_err(db("starting a transaction"))?;
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
            let mut tx = self
                .conn
                .begin()
                .await
                .map_err(db("starting a transaction"))?;
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
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?",
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
        format!("CAST({expr} AS CHAR)")
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
