//! Errors of the migration engine. Each message names the migration (`<version>_<name>`) or the
//! file, and says the way out. The CLI maps each variant to an exit code (see `ferry-cli`'s
//! `exit_code`): bad input 2, a refused safety check 3, everything else 1.

use std::time::Duration;

use crate::source::SourceError;

/// Which way a migration was being run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Up,
    Down,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Up => "up",
            Direction::Down => "down",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Source(#[from] SourceError),

    #[error(transparent)]
    Config(#[from] ferry_core::CoreError),

    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// Redacted.
        url: String,
        #[source]
        source: sqlx::Error,
    },

    #[error("{context}: {source}")]
    Database {
        context: String,
        #[source]
        source: sqlx::Error,
    },

    #[error("{}", execute_message(.label, *.direction, .source, *.recorded_failed))]
    Execute {
        label: String,
        direction: Direction,
        #[source]
        source: sqlx::Error,
        /// True when the history now holds the migration as `failed` (the database could not
        /// roll the script back, so part of it may have taken effect).
        recorded_failed: bool,
    },

    #[error(
        "another ferry run holds the migration lock on {url}; gave up after {timeout:?}. \
         Wait for it to finish, or raise --lock-timeout"
    )]
    LockTimeout { url: String, timeout: Duration },

    #[error("{}", ddl_lock_message(.label, *.direction, *.timeout, *.attempts, .blockers))]
    DdlLockTimeout {
        label: String,
        direction: Direction,
        /// The DDL lock timeout each try waited.
        timeout: Duration,
        attempts: u32,
        /// The sessions that held the lock, as the server described them on the last try.
        blockers: Vec<crate::drivers::Blocker>,
        /// The engine's lock-timeout error of the last try.
        #[source]
        source: sqlx::Error,
    },

    #[error(
        "applied migration{} changed since {}: {}. Restore the file{} as applied, or, if the change is \
         intended and already reflected in the database, run `ferry migrate repair`",
        plural(.labels.len()), if .labels.len() == 1 { "it was applied" } else { "they were applied" },
        .labels.join(", "), plural(.labels.len())
    )]
    Drift { labels: Vec<String> },

    #[error(
        "migration {label} is recorded as failed: it stopped part-way, so some of its statements may \
         have taken effect. Check the schema, finish or undo them by hand, then run `ferry migrate repair` \
         to clear the record"
    )]
    FailedPresent { label: String },

    #[error(
        "pending migration {label} is older than the newest applied migration ({current}); applying it \
         out of order may not be what its author tested. Pass --allow-out-of-order to apply it anyway"
    )]
    OutOfOrder { label: String, current: i64 },

    #[error(
        "migration {label} has no down migration, so it cannot be reverted (nothing was reverted). \
         To go back past it, restore the backup taken before it was applied: `ferry backup list`, \
         then `ferry backup restore ID`"
    )]
    Irreversible { label: String },

    #[error("migration version {version} {problem}")]
    NoSuchMigration { version: i64, problem: String },

    #[error("cannot adopt {tool}'s history: {message}")]
    Adopt { tool: String, message: String },

    #[error("{0}")]
    Invalid(String),
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn execute_message(
    label: &str,
    direction: Direction,
    source: &sqlx::Error,
    recorded_failed: bool,
) -> String {
    let what = match direction {
        Direction::Up => "applying",
        Direction::Down => "reverting",
    };
    if recorded_failed {
        format!(
            "{what} migration {label} failed: {source}. This database commits DDL as it goes, so the \
             statements before the failing one may have taken effect; the migration is recorded as \
             failed and blocks further runs. Fix the schema by hand, then run `ferry migrate repair`"
        )
    } else {
        format!(
            "{what} migration {label} failed: {source}. It was rolled back; nothing was recorded"
        )
    }
}

fn ddl_lock_message(
    label: &str,
    direction: Direction,
    timeout: Duration,
    attempts: u32,
    blockers: &[crate::drivers::Blocker],
) -> String {
    let what = match direction {
        Direction::Up => "applying",
        Direction::Down => "reverting",
    };
    let held = if blockers.is_empty() {
        "The database did not name the session holding it (SQLite cannot; on a server it may have          ended meanwhile)"
            .to_string()
    } else {
        format!(
            "Held by {}",
            blockers
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )
    };
    format!(
        "{what} migration {label} gave up waiting for a table lock: {attempts} tr{} of {timeout:?}          each (--ddl-lock-timeout). Nothing was changed or recorded. {held}. Let that transaction          finish (or end it), then run the command again; or raise --ddl-lock-timeout (0 waits          forever, and every query on the table queues behind the migration meanwhile)",
        if attempts == 1 { "y" } else { "ies" }
    )
}

pub type Result<T, E = MigrateError> = std::result::Result<T, E>;

/// Wraps a sqlx error with what ferry was doing.
pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> MigrateError {
    let context = context.into();
    move |source| MigrateError::Database { context, source }
}
