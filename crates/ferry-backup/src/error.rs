//! Backup errors. Each names the backup, database or tool it concerns and says what to do.
//! URLs in fields are always redacted; tool output is passed through `ferry_core::url::redact`.

use ferry_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot connect to {url}: {source}; check the URL and that the server is running")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("query on {url} failed while {doing}: {source}")]
    Database {
        url: String,
        doing: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "`{tool}` was not found on the search path; install the `{package}` package (or put `{tool}` on PATH)"
    )]
    ToolMissing { tool: String, package: &'static str },
    #[error(
        "`{tool}` is version {tool_version}, older than the server ({server_version}); install a `{package}` of version {server_version} or newer"
    )]
    ToolTooOld {
        tool: String,
        tool_version: String,
        server_version: String,
        package: &'static str,
    },
    #[error("`{tool}` failed ({status}) on {database}: {stderr}; no backup was written")]
    ToolFailed {
        tool: String,
        database: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run `{tool}`: {source}")]
    ToolSpawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "`{tool}` produced an empty dump of {database}; no backup was written. Check that the user may read the database"
    )]
    EmptyDump { tool: String, database: String },
    #[error("restore of backup {id} into {target} failed: {message}")]
    RestoreFailed {
        id: String,
        target: String,
        message: String,
    },
    #[error(
        "{target} has {sessions} other session(s) connected{detail}; a restore ends them to swap the database in: pass --yes to end them, or stop the application first. The target was not touched"
    )]
    SessionsOpen {
        target: String,
        sessions: i64,
        /// Who is connected (`user@application` of a few), for the message.
        detail: String,
    },
    #[error("backup {id} not found in {store}; run `ferry backup list` to see the backups there")]
    NotFound { id: String, store: String },
    #[error("`{id}` is not a backup id (expected something like 20261123T093012Z-1a2b3c)")]
    BadId { id: String },
    #[error(
        "manifest of backup {id} in {store} is unreadable: {message}; the backup cannot be trusted, delete it with `ferry backup prune`"
    )]
    BadManifest {
        id: String,
        store: String,
        message: String,
    },
    #[error(
        "backup {id} is corrupt: {reason}; it cannot be restored. Use an older backup (`ferry backup list`)"
    )]
    Corrupt { id: String, reason: String },
    #[error(
        "backup {id} is for {backup_engine}, but {target} is a {target_engine} database; restore it into a {backup_engine} database"
    )]
    EngineMismatch {
        id: String,
        backup_engine: String,
        target: String,
        target_engine: String,
    },
    #[error(
        "restore check of backup {id} found differences with its manifest: {differences}; the backup is not a faithful copy"
    )]
    CheckMismatch { id: String, differences: String },
    #[error(
        "{compression} level {level} is out of range; [backup] level takes {levels} for {compression}"
    )]
    BadLevel {
        compression: &'static str,
        level: i32,
        levels: String,
    },
    #[error("prune needs keep_last of at least 1, so that the newest backup is never deleted")]
    KeepNothing,
    #[error("{context}: {source}")]
    Store {
        context: String,
        #[source]
        source: StoreError,
    },
    #[error("local file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = BackupError> = std::result::Result<T, E>;

impl BackupError {
    pub(crate) fn store(context: impl Into<String>) -> impl FnOnce(StoreError) -> BackupError {
        let context = context.into();
        move |source| BackupError::Store { context, source }
    }

    pub(crate) fn io(path: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> BackupError {
        let path = path.to_string();
        move |source| BackupError::Io { path, source }
    }
}
