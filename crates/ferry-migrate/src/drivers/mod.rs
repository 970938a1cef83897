//! The seam between the engine and each database: one narrow trait, [`Driver`], and one module
//! per engine. These modules are the only place in ferry-migrate that contains SQL.
//!
//! The engine owns the algorithm (lock, read history, check, apply, record, unlock); a driver
//! supplies primitives. Two ways to apply a script exist because databases differ:
//! - *atomic* ([`Driver::apply_atomic`], [`Driver::revert_atomic`]): the script and its history
//!   change commit in one transaction. PostgreSQL and SQLite, unless the migration opts out.
//! - *tracked*: the history row is written as unfinished first, the script runs, the row is
//!   marked finished. MySQL/MariaDB (DDL commits implicitly) and no-transaction migrations. A crash
//!   in between leaves a `failed` row that blocks further runs until `ferry migrate repair`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_core::{DatabaseUrl, Engine};

use crate::error::Result;

pub use adopt::{Tool, adopted_versions};

mod adopt;
mod mysql;
mod postgres;
mod sqlite;

/// The history table's name, the same on every engine.
pub const HISTORY_TABLE: &str = "ferry_migrations";

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

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

/// The primitives the engine needs from a database.
pub trait Driver: Send {
    fn engine(&self) -> Engine;

    /// Whether this database can run DDL inside a transaction, so that a script and its history
    /// row commit together.
    fn transactional_ddl(&self) -> bool;

    /// Takes the migration lock for this database, waiting at most `timeout`.
    fn lock(&mut self, timeout: Duration) -> BoxFut<'_, ()>;
    fn unlock(&mut self) -> BoxFut<'_, ()>;

    /// Creates the history table if it does not exist.
    fn ensure_history(&mut self) -> BoxFut<'_, ()>;

    /// All history rows, by version. Empty when the table does not exist (nothing is created).
    fn history(&mut self) -> BoxFut<'_, Vec<HistoryRecord>>;

    /// Runs `sql` and inserts `record` in one transaction. Returns false, changing nothing, when a
    /// row for that version already exists (another run got there first).
    fn apply_atomic<'a>(&'a mut self, sql: &'a str, record: &'a HistoryRecord) -> BoxFut<'a, bool>;

    /// Runs `sql` and deletes the row of `version` in one transaction. Returns false, changing
    /// nothing, when that row is already gone.
    fn revert_atomic<'a>(
        &'a mut self,
        sql: &'a str,
        version: i64,
        label: &'a str,
    ) -> BoxFut<'a, bool>;

    /// Runs a script outside any transaction ferry controls.
    fn execute<'a>(&'a mut self, sql: &'a str) -> BoxFut<'a, ()>;

    fn insert_record<'a>(&'a mut self, record: &'a HistoryRecord) -> BoxFut<'a, ()>;
    fn delete_record(&mut self, version: i64) -> BoxFut<'_, ()>;
    fn set_success(&mut self, version: i64, success: bool, execution_ms: i64) -> BoxFut<'_, ()>;
    /// Records a migration's current file contents (after a human fixed a drift).
    fn update_record<'a>(&'a mut self, record: &'a HistoryRecord) -> BoxFut<'a, ()>;

    fn table_exists<'a>(&'a mut self, table: &'a str) -> BoxFut<'a, bool>;
    /// Runs a query whose columns are all cast to text; for reading other tools' history tables.
    fn text_rows<'a>(&'a mut self, sql: &'a str) -> BoxFut<'a, Vec<Vec<Option<String>>>>;
    /// How this engine spells a cast to text, around `expr`.
    fn cast_text(&self, expr: &str) -> String;

    fn close(self: Box<Self>) -> BoxFut<'static, ()>;
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

/// The error of a script that failed inside a transaction the database rolled back.
pub(crate) fn script_error(
    label: &str,
    direction: crate::Direction,
) -> impl FnOnce(sqlx::Error) -> crate::MigrateError + '_ {
    move |source| crate::MigrateError::Execute {
        label: label.to_string(),
        direction,
        source,
        recorded_failed: false,
    }
}

/// `record` with the time since `started` as its execution time.
pub(crate) fn with_elapsed(record: &HistoryRecord, started: std::time::Instant) -> HistoryRecord {
    HistoryRecord {
        execution_ms: started.elapsed().as_millis() as i64,
        ..record.clone()
    }
}

/// `ferry_migrations` columns in the order every driver selects and inserts them.
pub(crate) const COLUMNS: &str = "version, name, checksum, down_sql, down_transaction, applied_at, execution_ms, success, applied_by";
