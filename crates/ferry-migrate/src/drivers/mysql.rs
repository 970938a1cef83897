//! MySQL and MariaDB: DDL commits implicitly, so scripts are *tracked* (row first, then script,
//! then the row marked finished); the lock is `GET_LOCK`, held by the session.

use std::time::Duration;

use ferry_core::{DatabaseUrl, Engine};
use sqlx::{AssertSqlSafe, Connection, MySqlConnection, Row};

use super::history::Sql;
use super::{Blocker, BoxFut, Conn, Driver, ScriptFut, Tx, connect_error};
use crate::MigrateError;
use crate::error::{Result, db};

/// GET_LOCK names are limited to 64 characters and are server-wide, so the database's name is
/// hashed into the key.
const LOCK_NAME: &str = "CONCAT('ferry:', SHA1(IFNULL(DATABASE(), '')))";

/// The processlist entries of the other sessions with an open InnoDB transaction, oldest first:
/// the ones that can hold a table's metadata lock or a row lock. (Who holds a metadata lock
/// exactly is only known with the optional `metadata_lock_info` plugin.)
const BLOCKERS: &str = "SELECT CAST(p.ID AS SIGNED), CAST(p.USER AS CHAR), CAST(p.HOST AS CHAR),
        CAST(CONCAT_WS(', ', p.COMMAND, NULLIF(p.STATE, '')) AS CHAR),
        CAST(TIMESTAMPDIFF(MICROSECOND, t.trx_started, NOW(6)) / 1000000 AS DOUBLE)
    FROM information_schema.INNODB_TRX t
    JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id
    WHERE p.ID <> CONNECTION_ID() ORDER BY t.trx_started";

/// `lock_wait_timeout` for "forever": its maximum, one year.
const FOREVER_SECS: u64 = 31_536_000;

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

    /// Only atomic for scripts without DDL (MySQL commits DDL implicitly); the engine uses the
    /// tracked path on this driver, since [`Driver::transactional_ddl`] is false.
    fn begin(&mut self) -> BoxFut<'_, Tx<'_>> {
        Box::pin(async move {
            self.conn
                .begin()
                .await
                .map(Tx::MySql)
                .map_err(db("starting a transaction"))
        })
    }

    fn run_script<'a>(&'a mut self, sql: &'a str) -> ScriptFut<'a> {
        Box::pin(Sql::<sqlx::MySql>::run_counted(&mut self.conn, sql))
    }

    fn connection(&mut self) -> Conn<'_> {
        Conn::MySql(&mut self.conn)
    }

    /// Whole seconds (the variables' unit), at least one.
    fn set_ddl_lock_timeout(&mut self, timeout: Option<Duration>) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let secs = timeout.map_or(FOREVER_SECS, |t| t.as_secs_f64().ceil().max(1.0) as u64);
            sqlx::raw_sql(AssertSqlSafe(format!(
                "SET SESSION lock_wait_timeout = {secs}, innodb_lock_wait_timeout = {secs}"
            )))
            .execute(&mut self.conn)
            .await
            .map(drop)
            .map_err(db("setting lock_wait_timeout"))
        })
    }

    fn blockers(&mut self) -> BoxFut<'_, Vec<Blocker>> {
        Box::pin(async move {
            let rows = sqlx::query(BLOCKERS)
                .fetch_all(&mut self.conn)
                .await
                .map_err(db("reading the processlist"))?;
            rows.iter()
                .map(|r| {
                    Ok(Blocker {
                        id: r.try_get(0)?,
                        user: r.try_get(1)?,
                        application: r.try_get(2)?,
                        state: r.try_get(3)?,
                        transaction_seconds: r.try_get(4)?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(db("reading the processlist"))
        })
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
