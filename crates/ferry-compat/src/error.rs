//! Errors of the compatibility check. Findings are not errors: an unsafe migration is a
//! [`crate::Report`] with `compatible: false`; these are the cases where no report can be made.

#[derive(Debug, thiserror::Error)]
pub enum CompatError {
    #[error(
        "{context}: {source}; check that the shadow server is reachable and that the user may create databases"
    )]
    Shadow {
        context: String,
        #[source]
        source: Box<sqlx::Error>,
    },

    /// `--old-queries` input that cannot be used: unreadable, not sqlx's JSON, for another
    /// engine, or no queries at all.
    #[error("--old-queries {}: {reason}", path.display())]
    OldQueries {
        path: std::path::PathBuf,
        reason: String,
    },

    /// Old queries were given without a server to prepare them on.
    #[error(
        "old queries are prepared against a real database, and there is none: give a shadow \
         server (--shadow-url, or --database-url whose server ferry may create a database on)"
    )]
    OldQueriesNeedShadow,

    #[error(transparent)]
    Core(#[from] ferry_core::CoreError),

    #[error(transparent)]
    Migrate(#[from] ferry_migrate::MigrateError),
}
