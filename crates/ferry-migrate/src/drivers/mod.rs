//! The seam between the engine and each database: one narrow trait, [`Driver`], with what
//! truly differs between engines (the lock, whether DDL is transactional, how a write
//! transaction starts, how a script runs), and one module per engine. The history table is
//! written once, over all three, in [`history`]. These modules are the only place in
//! ferry-migrate that contains SQL.
//!
//! The engine owns the algorithm (lock, read history, check, apply, record, unlock); a driver
//! supplies primitives. Two ways to apply a script exist because databases differ:
//! - *atomic* (`apply_atomic`, `revert_atomic`): the script and its history change commit in
//!   one transaction. PostgreSQL and SQLite, unless the migration opts out.
//! - *tracked*: the history row is written as unfinished first, the script runs, the row is
//!   marked finished. MySQL/MariaDB (DDL commits implicitly) and no-transaction migrations. A crash
//!   in between leaves a `failed` row that blocks further runs until `ferry migrate repair`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_core::{DatabaseUrl, Engine};

use crate::error::{Result, db};
use crate::{Direction, MigrateError};

pub use adopt::{Tool, adopted_versions};
use history::{AtomicError, Sql, on_engine};
pub use history::{Conn, HISTORY_TABLE, Tx, current_version};

mod adopt;
pub mod history;
mod mysql;
mod postgres;
mod sqlite;

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// The future of [`Driver::run_script`].
pub type ScriptFut<'a> =
    Pin<Box<dyn Future<Output = std::result::Result<(), ScriptError>> + Send + 'a>>;

/// A script that failed outside a transaction, and how many of its statements had completed
/// before the failing one (zero: nothing took effect).
#[derive(Debug)]
pub struct ScriptError {
    pub source: sqlx::Error,
    pub completed: usize,
}

/// A session that held a lock a migration waited for, as the server describes it. No query
/// text: it could hold a secret.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Blocker {
    /// PostgreSQL's backend pid, MySQL's connection id.
    pub id: i64,
    pub user: Option<String>,
    /// PostgreSQL's `application_name`, MySQL's client host.
    pub application: Option<String>,
    /// PostgreSQL's `state` (`idle in transaction`, ...), MySQL's command and state.
    pub state: Option<String>,
    /// How long its transaction has been open, in seconds.
    pub transaction_seconds: Option<f64>,
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "session {}", self.id)?;
        let mut parts = Vec::new();
        if let Some(u) = &self.user {
            parts.push(format!("user {u}"));
        }
        if let Some(a) = self.application.as_deref().filter(|a| !a.is_empty()) {
            parts.push(format!("application {a:?}"));
        }
        if let Some(s) = &self.state {
            parts.push(s.clone());
        }
        if let Some(t) = self.transaction_seconds {
            parts.push(format!("transaction open {t:.1}s"));
        }
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

/// Whether `e` is `engine`'s error for a statement that waited longer than its lock timeout:
/// PostgreSQL `lock_not_available` (55P03), MySQL/MariaDB `ER_LOCK_WAIT_TIMEOUT` (1205),
/// SQLite `SQLITE_BUSY`.
pub fn is_lock_wait_timeout(engine: Engine, e: &sqlx::Error) -> bool {
    let Some(d) = e.as_database_error() else {
        return false;
    };
    match engine {
        Engine::Postgres => d.code().as_deref() == Some("55P03"),
        Engine::MySql => d
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .is_some_and(|m| m.number() == 1205),
        Engine::Sqlite => sqlite::is_busy(e),
    }
}

/// One row of `ferry_migrations`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRecord {
    pub version: i64,
    pub name: String,
    /// SHA-256 (hex) of the normalized up script.
    pub checksum: String,
    /// The down script's text as it was when applied; `None` when the migration is irreversible.
    /// `ferry migrate down` runs this, so a rollback works from an older checkout.
    pub down_sql: Option<String>,
    pub down_transaction: bool,
    pub applied_at: DateTime<Utc>,
    pub execution_ms: i64,
    /// False while a tracked script runs, and afterwards if it failed part-way.
    pub success: bool,
    pub applied_by: String,
}

/// The primitives that differ between databases. Everything else (the history, the atomic
/// apply and revert, adopting other tools' history) is written once, on top of these.
pub trait Driver: Send {
    fn engine(&self) -> Engine;

    /// Whether this database can run DDL inside a transaction, so that a script and its history
    /// row commit together.
    fn transactional_ddl(&self) -> bool;

    /// Takes the migration lock for this database, waiting at most `timeout`.
    fn lock(&mut self, timeout: Duration) -> BoxFut<'_, ()>;
    fn unlock(&mut self) -> BoxFut<'_, ()>;

    /// Opens a write transaction (SQLite: `BEGIN IMMEDIATE`, its write lock, waiting up to the
    /// lock timeout; a timeout there is [`MigrateError::LockTimeout`]).
    fn begin(&mut self) -> BoxFut<'_, Tx<'_>>;

    /// Runs a script outside any transaction ferry controls.
    fn run_script<'a>(&'a mut self, sql: &'a str) -> ScriptFut<'a>;

    /// The connection, outside any transaction, for what is the same on every engine.
    fn connection(&mut self) -> Conn<'_>;

    /// How long the next migration's statements wait for a lock before failing with the
    /// engine's lock timeout (`None`: forever). PostgreSQL `lock_timeout`, MySQL/MariaDB
    /// `lock_wait_timeout` and `innodb_lock_wait_timeout`, SQLite `busy_timeout` once its write
    /// lock is taken.
    fn set_ddl_lock_timeout(&mut self, timeout: Option<Duration>) -> BoxFut<'_, ()>;

    /// Starts noting who blocks this session until [`blockers`](Self::blockers) is called
    /// (PostgreSQL watches `pg_blocking_pids` from a second connection while the migration
    /// waits; the others need nothing started).
    fn watch_blockers(&mut self) -> BoxFut<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    /// The sessions that held what this session waited for in its last migration (PostgreSQL:
    /// what [`watch_blockers`](Self::watch_blockers) saw; MySQL/MariaDB: the processlist
    /// entries of the other open transactions; SQLite cannot say).
    fn blockers(&mut self) -> BoxFut<'_, Vec<Blocker>>;

    fn close(self: Box<Self>) -> BoxFut<'static, ()>;
}

/// The history and the atomic paths, once for every driver.
impl<'d> dyn Driver + 'd {
    /// All history rows, by version. Empty when the table does not exist (nothing is created).
    pub async fn history(&mut self) -> Result<Vec<HistoryRecord>> {
        on_engine!(Conn, self.connection(), c => Sql::<D>::read(c).await)
            .map_err(db("reading ferry_migrations"))
    }

    /// The highest successfully applied version, `None` when nothing is applied.
    pub async fn current_version(&mut self) -> Result<Option<i64>> {
        on_engine!(Conn, self.connection(), c => Sql::<D>::current_version(c).await)
            .map_err(db("reading the schema version"))
    }

    /// Creates the history table if it does not exist.
    pub(crate) async fn ensure_history(&mut self) -> Result<()> {
        let tx = self.begin().await?;
        on_engine!(Tx, tx, tx => {
            let mut tx = tx;
            match Sql::<D>::create(&mut *tx).await {
                Ok(()) => tx.commit().await,
                Err(e) => Err(e),
            }
        })
        .map_err(db("creating ferry_migrations"))
    }

    pub(crate) async fn table_exists(&mut self, table: &str) -> Result<bool> {
        on_engine!(Conn, self.connection(), c => Sql::<D>::table_exists(c, table).await)
            .map_err(db(format!("looking for table {table}")))
    }

    /// Runs a query whose columns are all cast to text; for reading other tools' history tables.
    pub(crate) async fn text_rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        on_engine!(Conn, self.connection(), c => Sql::<D>::text_rows(c, sql).await)
            .map_err(db("reading another tool's history"))
    }

    /// How this engine spells a cast to text, around `expr`.
    pub(crate) fn cast_text(&mut self, expr: &str) -> String {
        on_engine!(Conn, self.connection(), _c => history::cast_text::<D>(expr))
    }

    pub(crate) async fn insert_record(&mut self, record: &HistoryRecord) -> Result<()> {
        on_engine!(Conn, self.connection(), c => Sql::<D>::insert(c, record).await)
            .map_err(db("recording a migration"))
    }

    pub(crate) async fn delete_record(&mut self, version: i64) -> Result<()> {
        on_engine!(Conn, self.connection(), c => Sql::<D>::delete(c, version).await)
            .map_err(db("deleting a history row"))
    }

    pub(crate) async fn set_success(
        &mut self,
        version: i64,
        success: bool,
        execution_ms: i64,
    ) -> Result<()> {
        on_engine!(Conn, self.connection(), c =>
            Sql::<D>::set_success(c, version, success, execution_ms).await)
        .map_err(db("updating a history row"))
    }

    /// Records a migration's current file contents (after a human fixed a drift).
    pub(crate) async fn update_record(&mut self, record: &HistoryRecord) -> Result<()> {
        on_engine!(Conn, self.connection(), c => Sql::<D>::update(c, record).await)
            .map_err(db("updating a history row"))
    }

    /// Runs `sql` and inserts `record` in one transaction. Returns false, changing nothing, when
    /// a row for that version already exists (another run got there first).
    pub(crate) async fn apply_atomic(&mut self, sql: &str, record: &HistoryRecord) -> Result<bool> {
        let tx = self.begin().await?;
        let label = format!("{}_{}", record.version, record.name);
        on_engine!(Tx, tx, tx => Sql::<D>::apply(tx, sql, record).await)
            .map_err(atomic_error(&label, Direction::Up))
    }

    /// Runs `sql` and deletes the row of `version` in one transaction. Returns false, changing
    /// nothing, when that row is already gone.
    pub(crate) async fn revert_atomic(
        &mut self,
        sql: &str,
        version: i64,
        label: &str,
    ) -> Result<bool> {
        let tx = self.begin().await?;
        on_engine!(Tx, tx, tx => Sql::<D>::revert(tx, sql, version).await)
            .map_err(atomic_error(label, Direction::Down))
    }
}

/// The error of an atomic apply or revert: a failed script was rolled back by the database.
fn atomic_error(
    label: &str,
    direction: Direction,
) -> impl FnOnce(AtomicError) -> MigrateError + '_ {
    move |e| match e {
        AtomicError::Script(source) => MigrateError::Execute {
            label: label.to_string(),
            direction,
            source,
            recorded_failed: false,
        },
        AtomicError::History(context, source) => db(context)(source),
    }
}

/// Opens a connection to `url` with the driver its scheme names. A SQLite file that does not
/// exist yet is created.
pub async fn connect(url: &DatabaseUrl) -> Result<Box<dyn Driver>> {
    tracing::debug!(url = %url, "connecting");
    Ok(match url.engine() {
        Engine::Postgres => Box::new(postgres::Postgres::connect(url).await?),
        Engine::MySql => Box::new(mysql::MySql::connect(url).await?),
        Engine::Sqlite => Box::new(sqlite::Sqlite::connect(url).await?),
    })
}

/// Maps a connection error, keeping the password out of the message.
pub(crate) fn connect_error(
    url: &DatabaseUrl,
) -> impl FnOnce(sqlx::Error) -> crate::MigrateError + '_ {
    move |source| crate::MigrateError::Connect {
        url: url.redacted(),
        source,
    }
}
