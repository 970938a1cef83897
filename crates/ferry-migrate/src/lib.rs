//! Paired up/down migrations on PostgreSQL, MySQL/MariaDB and SQLite: locked against concurrent
//! runs, transactional where the database allows, checksummed.
//!
//! Contract: every migration is applied exactly once however many runs race; a migration and its
//! history row either both happen or, where the database cannot roll DDL back (MySQL), the row
//! says `failed` and blocks further runs until a human runs `repair`. Nothing prints: results
//! are values, progress goes to an [`Observer`], diagnostics to `tracing`.
//!
//! Key design decision: the history table `ferry_migrations` stores each migration's **down
//! script as it was when applied**, and `down` runs that stored text. A rollback therefore
//! works from the previous release's checkout, where the newer migration files do not exist.
//!
//! Embedding it at application start-up takes a few lines:
//!
//! ```no_run
//! # async fn start() -> Result<(), Box<dyn std::error::Error>> {
//! let url = ferry_core::DatabaseUrl::parse(&std::env::var("DATABASE_URL")?)?;
//! let report = ferry_migrate::Migrator::from_dir("migrations")?.run_up(&url).await?;
//! println!("applied {} migrations, now at {:?}", report.applied.len(), report.current_version);
//! # Ok(()) }
//! ```

pub mod drivers;
mod error;
mod migrator;
pub mod source;
pub mod sql;

pub use drivers::{
    Blocker, Conn, Driver, HISTORY_TABLE, HistoryRecord, Tool, connect, current_version,
};
pub use error::{Direction, MigrateError, Result};
pub use migrator::{
    BaselineReport, DdlLock, DownReport, DownTarget, MigrateOptions, MigrationStatus, Migrator,
    Observer, Problem, Quiet, RedoReport, RepairChange, RepairReport, RoundTrip, State,
    StatusReport, Step, UpReport, ValidateReport,
};
pub use source::{Layout, Migration, SourceError};
