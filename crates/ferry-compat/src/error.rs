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

    #[error(transparent)]
    Core(#[from] ferry_core::CoreError),

    #[error(transparent)]
    Migrate(#[from] ferry_migrate::MigrateError),
}
