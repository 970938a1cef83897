//! The `ferry` command line: parses flags, resolves settings (flags > environment > `ferry.toml`
//! > defaults), calls the libraries, and renders their results through one [`output::Printer`].
//!
//! Contract: this is the only crate that prints and the only one that knows clap. It owns the
//! exit codes, and [`exit_code`] is the one function that maps every error to one of them.

use std::process::ExitCode;

use clap::Parser;
use ferry_core::{CoreError, Overrides, Settings};
use ferry_migrate::MigrateError;

mod backup;
mod compat;
mod deploy;
mod env;
mod migrate;
pub mod opt;
mod output;
mod promote;
mod rollout;

use opt::{Cli, Command};
use output::Printer;

/// Exit codes, documented in README.md.
pub mod exit {
    pub const OK: u8 = 0;
    /// The operation failed: SQL error, server unreachable, I/O.
    pub const FAILED: u8 = 1;
    /// Invalid input: usage, config, migration files.
    pub const INVALID: u8 = 2;
    /// Refused by a safety check: drift, irreversible step, failed migration, unconfirmed step.
    pub const REFUSED: u8 = 3;
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error(transparent)]
    Backup(#[from] ferry_backup::BackupError),
    #[error(transparent)]
    Store(#[from] ferry_store::StoreError),
    #[error(transparent)]
    Promote(#[from] ferry_promote::PromoteError),
    #[error(transparent)]
    Compat(#[from] ferry_compat::CompatError),
    #[error(transparent)]
    Rollout(#[from] ferry_rollout::RolloutError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A destructive step was not confirmed at the terminal.
    #[error("{0}")]
    NotConfirmed(String),
    /// Boxed: a deploy error carries whole reports, and every `Result` of the CLI pays for
    /// its largest variant.
    #[error(transparent)]
    Deploy(Box<ferry_deploy::DeployError>),
    /// A deploy or rollback ran and its report is already printed; its status gives the code.
    #[error("{message}")]
    Outcome {
        status: ferry_deploy::Status,
        message: String,
    },
}

impl From<ferry_deploy::DeployError> for CliError {
    fn from(e: ferry_deploy::DeployError) -> Self {
        CliError::Deploy(Box::new(e))
    }
}

/// Maps every error to its documented exit code and a stable kind for JSON output.
pub fn exit_code(err: &CliError) -> (u8, &'static str) {
    match err {
        CliError::Core(_) => (exit::INVALID, "invalid_config"),
        CliError::Io(_) => (exit::FAILED, "io"),
        CliError::NotConfirmed(_) => (exit::REFUSED, "not_confirmed"),
        CliError::Store(e) => match e {
            ferry_store::StoreError::BadUrl { .. } => (exit::INVALID, "invalid_config"),
            ferry_store::StoreError::NotFound { .. } => (exit::INVALID, "not_found"),
            // Bytes that do not match their checksum: refused, as a tampered artifact is.
            ferry_store::StoreError::ChecksumMismatch { .. } => {
                (exit::REFUSED, "checksum_mismatch")
            }
            ferry_store::StoreError::AlreadyExists { .. }
            | ferry_store::StoreError::Io { .. }
            | ferry_store::StoreError::S3 { .. } => (exit::FAILED, "store"),
        },
        CliError::Promote(e) => promote_code(e),
        CliError::Backup(e) => backup_code(e),
        CliError::Migrate(e) => migrate_code(e),
        CliError::Outcome { status, .. } => {
            use ferry_deploy::Status as S;
            match status {
                S::Succeeded | S::Planned => (exit::OK, "ok"),
                S::Refused => (exit::REFUSED, "refused"),
                S::RolledBack => (exit::FAILED, "rolled_back"),
                S::Failed | S::Running => (exit::FAILED, "deploy_failed"),
                S::Interrupted => (exit::FAILED, "interrupted"),
            }
        }
        CliError::Deploy(e) => {
            use ferry_deploy::DeployError as D;
            match e.as_ref() {
                D::Refused(_) => (exit::REFUSED, "refused"),
                D::Config { .. } | D::Invalid(_) => (exit::INVALID, "invalid_input"),
                D::Store { .. } | D::BadRecord { .. } => (exit::FAILED, "store"),
                D::LostLock { .. } => (exit::FAILED, "lost_lock"),
                D::Rollout(e) if e.is_invalid_input() => (exit::INVALID, "invalid_config"),
                D::Rollout(_) => (exit::FAILED, "rollout"),
                D::Promote(e) => promote_code(e),
                D::Migrate(e) => migrate_code(e),
                D::Backup(e) => backup_code(e),
                D::Compat(e) => compat_code(e),
            }
        }
        CliError::Rollout(e) => {
            use ferry_rollout::RolloutError as R;
            match e {
                R::Config(_) | R::NoDeployCommand { .. } | R::UnknownHost { .. } => {
                    (exit::INVALID, "invalid_config")
                }
                R::LoadBalancer { .. } => (exit::FAILED, "load_balancer"),
                R::Http(_) => (exit::FAILED, "io"),
            }
        }
        CliError::Compat(e) => compat_code(e),
    }
}

fn promote_code(e: &ferry_promote::PromoteError) -> (u8, &'static str) {
    use ferry_promote::PromoteError as P;
    match e {
        P::BadReference { .. }
        | P::UnknownEnv { .. }
        | P::BadEnvConfig { .. }
        | P::UnsupportedLocation { .. }
        | P::BadOciUrl { .. }
        | P::KindMismatch(_)
        | P::NotFound { .. }
        | P::Io { .. }
        | P::Invalid(_) => (exit::INVALID, "invalid_input"),
        P::VersionTaken { .. } => (exit::REFUSED, "version_taken"),
        P::NotLiveInRequired { .. } => (exit::REFUSED, "not_live_in_required"),
        P::BadInRequired { .. } => (exit::REFUSED, "bad_in_required"),
        P::Frozen { .. } => (exit::REFUSED, "frozen"),
        P::Tampered { .. } => (exit::REFUSED, "tampered"),
        P::RollbackToBad { .. } => (exit::REFUSED, "rollback_to_bad"),
        P::NothingToRollBack(_) => (exit::REFUSED, "nothing_to_roll_back"),
        P::RegistryMismatch { .. } => (exit::REFUSED, "registry_mismatch"),
        P::RegistryAuth { .. } => (exit::INVALID, "registry_auth"),
        P::Registry { .. } => (exit::FAILED, "registry"),
        P::NotLive { .. } => (exit::FAILED, "not_live"),
        P::Conflict { .. } => (exit::FAILED, "conflict"),
        P::BadRecord { .. } | P::Store { .. } => (exit::FAILED, "store"),
    }
}

fn backup_code(e: &ferry_backup::BackupError) -> (u8, &'static str) {
    use ferry_backup::BackupError as B;
    match e {
        B::NotFound { .. } => (exit::INVALID, "not_found"),
        B::BadId { .. } | B::EngineMismatch { .. } | B::KeepNothing | B::BadLevel { .. } => {
            (exit::INVALID, "invalid_input")
        }
        B::Corrupt { .. } | B::BadManifest { .. } => (exit::REFUSED, "corrupt_backup"),
        B::CheckMismatch { .. } => (exit::REFUSED, "restore_check_mismatch"),
        B::SessionsOpen { .. } => (exit::REFUSED, "sessions_open"),
        B::ToolMissing { .. } | B::ToolTooOld { .. } => (exit::FAILED, "dump_tool"),
        B::ToolFailed { .. } | B::ToolSpawn { .. } | B::EmptyDump { .. } => {
            (exit::FAILED, "dump_failed")
        }
        B::RestoreFailed { .. } => (exit::FAILED, "restore_failed"),
        B::Connect { .. } => (exit::FAILED, "connect"),
        B::Database { .. } | B::Store { .. } | B::Io { .. } | B::Internal(_) => {
            (exit::FAILED, "backup")
        }
    }
}

fn compat_code(e: &ferry_compat::CompatError) -> (u8, &'static str) {
    match e {
        ferry_compat::CompatError::Shadow { .. } => (exit::FAILED, "shadow"),
        ferry_compat::CompatError::OldQueries { .. } => (exit::INVALID, "invalid_old_queries"),
        ferry_compat::CompatError::OldQueriesNeedShadow => (exit::INVALID, "invalid_config"),
        ferry_compat::CompatError::Core(_) => (exit::INVALID, "invalid_config"),
        ferry_compat::CompatError::Migrate(e) => migrate_code(e),
    }
}

/// The exit code of a rollout that ran to its end (README): 0 when every host that was not
/// skipped runs the release and is in traffic (and for a dry run); 3 when a gate refused it;
/// 1 when it halted, failed, or left a host stopped.
pub fn rollout_exit(report: &ferry_rollout::RolloutReport) -> u8 {
    use ferry_rollout::RolloutStatus as S;
    match report.status {
        _ if report.dry_run && report.status == S::Succeeded => exit::OK,
        S::Refused => exit::REFUSED,
        _ if report.all_live() => exit::OK,
        _ => exit::FAILED,
    }
}

fn migrate_code(e: &MigrateError) -> (u8, &'static str) {
    use MigrateError as M;
    match e {
        M::Source(_) => (exit::INVALID, "invalid_migrations"),
        M::Config(_) => (exit::INVALID, "invalid_config"),
        M::NoSuchMigration { .. } | M::Invalid(_) | M::Adopt { .. } => {
            (exit::INVALID, "invalid_input")
        }
        M::Drift { .. } => (exit::REFUSED, "checksum_drift"),
        M::FailedPresent { .. } => (exit::REFUSED, "failed_migration"),
        M::OutOfOrder { .. } => (exit::REFUSED, "out_of_order"),
        M::Irreversible { .. } => (exit::REFUSED, "irreversible"),
        M::Connect { .. } => (exit::FAILED, "connect"),
        M::LockTimeout { .. } => (exit::FAILED, "lock_timeout"),
        M::DdlLockTimeout { .. } => (exit::FAILED, "ddl_lock_timeout"),
        M::Execute { .. } => (exit::FAILED, "migration_failed"),
        M::Database { .. } => (exit::FAILED, "database"),
    }
}

/// Entry point of the binary: parse, run, print the error once, return the exit code.
pub fn main() -> ExitCode {
    let (args, moved) = opt::hoist_command_options(std::env::args_os().collect());
    let cli = Cli::parse_from(args);
    init_tracing();
    let printer = Printer {
        format: cli.top.output,
    };
    for m in moved {
        printer.warn(&m);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            printer.error(
                &format!("cannot start the async runtime: {e}"),
                "io",
                exit::FAILED,
            );
            return ExitCode::from(exit::FAILED);
        }
    };
    match runtime.block_on(run(cli, &printer)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let (code, kind) = exit_code(&err);
            // Belt and braces: no password leaves through an error message, whatever produced it.
            let message = ferry_core::url::redact(&error_chain(&err));
            if matches!(err, CliError::Outcome { .. }) {
                // The report (with its status) is already on stdout.
                printer.error_reported(&message);
            } else {
                printer.error(&message, kind, code);
            }
            ExitCode::from(code)
        }
    }
}

/// The error and its sources, for messages that would otherwise lose the root cause.
fn error_chain(err: &CliError) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = env::Environment::get()
        .log_filter()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs one parsed command line; returns the exit code of a command that finished.
pub async fn run(cli: Cli, printer: &Printer) -> Result<u8, CliError> {
    let global = cli.options();
    match cli.command {
        Command::Migrate(cmd) => migrate::run(cmd, &global, printer).await,
        Command::Backup(cmd) => backup::run(cmd, &global, printer).await,
        Command::Compat(cmd) => compat::run(cmd, &global, printer).await,
        cmd @ (Command::Rollout { .. } | Command::Smoke { .. }) => {
            rollout::run(cmd, &global, printer).await
        }
        cmd @ (Command::Artifact(_) | Command::Promote { .. } | Command::Releases { .. }) => {
            promote::run(cmd, &global, printer).await
        }
        Command::Deploy(args) => deploy::run(args, &global, printer).await,
        Command::Rollback {
            to,
            reason,
            restore_backup,
            yes,
            ..
        } => {
            deploy::rollback(
                deploy::RollbackArgs {
                    to,
                    reason,
                    restore_backup,
                    yes,
                },
                &global,
                printer,
            )
            .await
        }
    }
}

/// Resolves settings from flags (already merged with their environment variables by clap),
/// the config file and defaults.
pub(crate) fn settings(over: &Overrides) -> Result<Settings, CliError> {
    Ok(ferry_core::config::resolve(over, &env::config_lookup)?)
}

/// How to reach stores: `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (environment) beats
/// `[store] endpoint` (file).
pub(crate) fn store_options(settings: &Settings) -> ferry_store::StoreOptions {
    ferry_store::StoreOptions {
        endpoint: env::Environment::get()
            .s3_endpoint()
            .or_else(|| settings.store_endpoint.clone()),
        region: settings.store_region.clone(),
        part_size: None,
        network: settings.network,
    }
}

/// The store of the settings: `--store`/`FERRY_STORE`, `[store] url`, or `.ferry/`.
/// `[backup]` of `ferry.toml` as the backup library's options.
pub(crate) fn backup_options(settings: &Settings) -> Result<ferry_backup::Options, CliError> {
    let section = &settings.file.backup;
    let mut options = ferry_backup::Options::default();
    if let Some(name) = &section.compression {
        options.compression =
            ferry_backup::Compression::parse(name).ok_or_else(|| CoreError::BadValue {
                what: "[backup] compression".into(),
                value: name.clone(),
                reason: "expected \"gzip\" or \"zstd\"".into(),
            })?;
    }
    if let Some(level) = section.level {
        let levels = options.compression.levels();
        if !levels.contains(&level) {
            return Err(CoreError::BadValue {
                what: format!("[backup] level (for {})", options.compression.as_str()),
                value: level.to_string(),
                reason: format!("expected {} to {}", levels.start(), levels.end()),
            }
            .into());
        }
        options.compression_level = Some(level);
    }
    Ok(options)
}

pub(crate) async fn open_store(
    settings: &Settings,
) -> Result<std::sync::Arc<dyn ferry_store::ObjectStore>, CliError> {
    Ok(ferry_store::open(&settings.store_url(), &store_options(settings)).await?)
}
