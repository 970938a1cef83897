//! SQLite: transactional DDL; the lock is the database's own write lock, taken per migration
//! with `BEGIN IMMEDIATE` (waiting up to the lock timeout), with the history re-read under it.
//! SQLite has no session lock that outlives a transaction, so this is what makes every
//! migration apply exactly once however many runs race.

use std::str::FromStr;
use std::time::Duration;

use ferry_core::{DatabaseUrl, Engine};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, Connection, SqliteConnection};

use super::history::Sql;
use super::{Blocker, BoxFut, Conn, Driver, ScriptFut, Tx, connect_error};
use crate::MigrateError;
use crate::error::{Result, db};

pub struct Sqlite {
    conn: SqliteConnection,
    url: String,
    /// How long `BEGIN IMMEDIATE` waits for the write lock (the migration lock).
    timeout: Duration,
    /// `busy_timeout` (ms) for a migration's statements once it holds the write lock (a commit
    /// waits for readers in rollback-journal mode); `None` until a migration sets it: the lock
    /// timeout's.
    ddl_busy: Option<u128>,
}

/// `busy_timeout` in milliseconds; SQLite's 0 means "never wait", so "forever" is the maximum.
fn busy_ms(timeout: Option<Duration>) -> u128 {
    timeout.map_or(i32::MAX as u128, |t| {
        t.as_millis().clamp(1, i32::MAX as u128)
    })
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
            ddl_busy: None,
        })
    }

    async fn busy_timeout(&mut self, ms: u128) -> Result<()> {
        sqlx::raw_sql(AssertSqlSafe(format!("PRAGMA busy_timeout = {ms}")))
            .execute(&mut self.conn)
            .await
            .map(drop)
            .map_err(db("setting busy_timeout"))
    }
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
            self.busy_timeout(busy_ms(Some(timeout))).await
        })
    }

    fn unlock(&mut self) -> BoxFut<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    /// `BEGIN IMMEDIATE`: the write lock; a timeout waiting for another writer is a lock
    /// timeout. Once it is held, statements wait up to the DDL lock timeout.
    fn begin(&mut self) -> BoxFut<'_, Tx<'_>> {
        Box::pin(async move {
            let (url, timeout) = (self.url.clone(), self.timeout);
            let lock_ms = busy_ms(Some(timeout));
            let ddl_ms = self.ddl_busy.filter(|ms| *ms != lock_ms);
            if ddl_ms.is_some() {
                self.busy_timeout(lock_ms).await?;
            }
            let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await.map_err(|e| {
                if is_busy(&e) {
                    MigrateError::LockTimeout { url, timeout }
                } else {
                    db("starting a write transaction")(e)
                }
            })?;
            if let Some(ms) = ddl_ms {
                sqlx::raw_sql(AssertSqlSafe(format!("PRAGMA busy_timeout = {ms}")))
                    .execute(&mut *tx)
                    .await
                    .map_err(db("setting busy_timeout"))?;
            }
            Ok(Tx::Sqlite(tx))
        })
    }

    fn run_script<'a>(&'a mut self, sql: &'a str) -> ScriptFut<'a> {
        Box::pin(Sql::<sqlx::Sqlite>::run_counted(&mut self.conn, sql))
    }

    fn connection(&mut self) -> Conn<'_> {
        Conn::Sqlite(&mut self.conn)
    }

    fn set_ddl_lock_timeout(&mut self, timeout: Option<Duration>) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let ms = busy_ms(timeout);
            self.ddl_busy = Some(ms);
            self.busy_timeout(ms).await
        })
    }

    /// SQLite does not say which connection holds a lock.
    fn blockers(&mut self) -> BoxFut<'_, Vec<Blocker>> {
        Box::pin(async { Ok(Vec::new()) })
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

/// SQLITE_BUSY (or a table locked by another connection of this process).
pub(super) fn is_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.code().as_deref() == Some("5") || d.message().contains("locked"))
}
