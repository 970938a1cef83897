//! PostgreSQL: transactional DDL, a session-level advisory lock polled until `--lock-timeout`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_core::{DatabaseUrl, Engine};
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use super::{BoxFut, COLUMNS, Driver, HistoryRecord, connect_error, script_error};
use crate::error::{Result, db};
use crate::{Direction, MigrateError};

/// One key for every ferry run on a database (advisory locks are per database), mixed with the
/// schema so that two schemas of one database migrate independently.
const LOCK_KEY: &str = "hashtext('ferry_migrations:' || current_schema())";

pub struct Postgres {
    conn: PgConnection,
    url: String,
}

impl Postgres {
    pub async fn connect(url: &DatabaseUrl) -> Result<Self> {
        let conn = PgConnection::connect(&url.for_driver())
            .await
            .map_err(connect_error(url))?;
        Ok(Self {
            conn,
            url: url.redacted(),
        })
    }
}

fn record_from(row: &sqlx::postgres::PgRow) -> std::result::Result<HistoryRecord, sqlx::Error> {
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
    conn: &mut PgConnection,
    r: &HistoryRecord,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO ferry_migrations ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
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

async fn exists(conn: &mut PgConnection, version: i64) -> std::result::Result<bool, sqlx::Error> {
    sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM ferry_migrations WHERE version = $1)",
    )
    .bind(version)
    .fetch_one(conn)
    .await
}

/// Runs a script; one statement at a time outside a transaction, because PostgreSQL runs a
/// multi-statement simple query as one implicit transaction.
async fn run_script(
    conn: &mut PgConnection,
    sql: &str,
    in_tx: bool,
) -> std::result::Result<(), sqlx::Error> {
    if in_tx {
        return sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
            .execute(conn)
            .await
            .map(drop);
    }
    for (_, stmt) in crate::sql::split_statements(sql) {
        sqlx::raw_sql(AssertSqlSafe(stmt))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

impl Driver for Postgres {
    fn engine(&self) -> Engine {
        Engine::Postgres
    }

    fn transactional_ddl(&self) -> bool {
        true
    }

    fn lock(&mut self, timeout: Duration) -> BoxFut<'_, ()> {
        Box::pin(async move {
            // Polled, not waited for in `pg_advisory_lock`: a session blocked in that statement
            // holds a snapshot, and `CREATE INDEX CONCURRENTLY` in the lock holder's migration
            // waits for every older snapshot, so the holder would wait for its waiters and
            // PostgreSQL would end the cycle with "deadlock detected". Between two polls a
            // waiter runs no statement and holds no snapshot.
            let deadline = tokio::time::Instant::now() + timeout;
            let mut pause = Duration::from_millis(10);
            loop {
                let got: bool = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT pg_try_advisory_lock({LOCK_KEY})"
                )))
                .fetch_one(&mut self.conn)
                .await
                .map_err(db("taking the migration lock"))?;
                if got {
                    return Ok(());
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Err(MigrateError::LockTimeout {
                        url: self.url.clone(),
                        timeout,
                    });
                }
                tokio::time::sleep(pause.min(deadline - now)).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
        })
    }

    fn unlock(&mut self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "SELECT pg_advisory_unlock({LOCK_KEY})"
            )))
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
                    version BIGINT PRIMARY KEY,
                    name TEXT NOT NULL,
                    checksum TEXT NOT NULL,
                    down_sql TEXT,
                    down_transaction BOOLEAN NOT NULL DEFAULT TRUE,
                    applied_at TIMESTAMPTZ NOT NULL,
                    execution_ms BIGINT NOT NULL,
                    success BOOLEAN NOT NULL,
                    applied_by TEXT NOT NULL
                )",
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
            run_script(&mut tx, sql, true)
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
            run_script(&mut tx, sql, true)
                .await
                .map_err(script_error(label, Direction::Down))?;
            sqlx::query("DELETE FROM ferry_migrations WHERE version = $1")
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
            run_script(&mut self.conn, sql, false)
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
            sqlx::query("DELETE FROM ferry_migrations WHERE version = $1")
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
                "UPDATE ferry_migrations SET success = $1, execution_ms = $2 WHERE version = $3",
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
                "UPDATE ferry_migrations SET name = $1, checksum = $2, down_sql = $3, down_transaction = $4 \
                 WHERE version = $5",
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
            sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
                .bind(table)
                .fetch_one(&mut self.conn)
                .await
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
