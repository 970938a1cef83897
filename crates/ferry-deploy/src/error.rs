//! Deploy errors: what stopped `ferry deploy` or `ferry rollback` before it could produce a
//! report. A deploy that ran (refused by a gate, failed, rolled back) is not an error: it is a
//! [`Deployment`](crate::Deployment) whose `status` says so. Each variant's doc comment names
//! its exit-code class; the CLI's `exit_code` owns the numbers.

use ferry_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Refused (3): another run holds the environment's deploy lock, or the rollback needs a
    /// decision (an irreversible migration, a backup to restore).
    #[error("{0}")]
    Refused(String),

    /// Invalid input (2): the environment's configuration is not usable for a deploy.
    #[error("environment `{env}`: {reason}")]
    Config { env: String, reason: String },

    /// Invalid input (2): nothing to roll back, or a target that does not exist.
    #[error("{0}")]
    Invalid(String),

    /// Failed (1): the central store could not be read or written.
    #[error("{context}: {source}")]
    Store {
        context: String,
        #[source]
        source: StoreError,
    },

    /// Failed (1): a deployment record in the store is not readable.
    #[error("deployment record {key} in {store} is not valid: {message}; fix or remove it")]
    BadRecord {
        key: String,
        store: String,
        message: String,
    },

    /// Failed (1): this run's lease was taken over by another run (its renewals stopped for
    /// longer than the lease), so it stopped.
    #[error(
        "lost the deploy lock of `{env}` to {holder}; this run stopped so that two runs never change the environment at once"
    )]
    LostLock { env: String, holder: String },

    #[error(transparent)]
    Promote(#[from] ferry_promote::PromoteError),

    #[error(transparent)]
    Migrate(#[from] ferry_migrate::MigrateError),

    #[error(transparent)]
    Backup(#[from] ferry_backup::BackupError),

    #[error(transparent)]
    Compat(#[from] ferry_compat::CompatError),

    #[error(transparent)]
    Rollout(#[from] ferry_rollout::RolloutError),
}

impl DeployError {
    pub(crate) fn store(context: impl Into<String>) -> impl FnOnce(StoreError) -> DeployError {
        let context = context.into();
        move |source| DeployError::Store { context, source }
    }
}

pub type Result<T, E = DeployError> = std::result::Result<T, E>;
