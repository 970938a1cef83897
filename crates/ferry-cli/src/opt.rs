//! Every clap definition of the `ferry` command line, in one place (sqlx-cli's `opt.rs` model).
//! Doc comments are the help text. Names, flags and their meanings are a contract with users'
//! CI scripts: add, never rename.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// Deploys that are safe for the database and the build artifact.
///
/// Exit codes: 0 success; 1 the operation failed (SQL error, server unreachable, ...);
/// 2 invalid input (usage, config, migration files); 3 refused by a safety check
/// (checksum drift, irreversible step, failed migration, unconfirmed destructive step).
#[derive(Debug, Parser)]
#[command(name = "ferry", bin_name = "ferry", version, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes, before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// Config file [default: ./ferry.toml if it exists]
    #[arg(long, global = true, env = "FERRY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Environment from ferry.toml ([env.NAME]) to use
    #[arg(long, global = true, env = "FERRY_ENV", value_name = "NAME")]
    pub env: Option<String>,

    /// Database URL: sqlite:PATH, postgres://..., mysql://... or mariadb://...
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// Migrations directory [default: [migrations] dir in ferry.toml, else ./migrations]
    #[arg(long, global = true, env = "FERRY_MIGRATIONS", value_name = "DIR")]
    pub migrations: Option<PathBuf>,

    /// How long to wait for another run's migration lock, e.g. 60s, 5m [default: 60s]
    #[arg(
        long,
        global = true,
        env = "FERRY_LOCK_TIMEOUT",
        value_name = "DURATION"
    )]
    pub lock_timeout: Option<String>,

    /// How long each migration waits for a table lock before giving up and trying again,
    /// e.g. 10s; 0 waits forever [default: 10s]
    #[arg(
        long,
        global = true,
        env = "FERRY_DDL_LOCK_TIMEOUT",
        value_name = "DURATION"
    )]
    pub ddl_lock_timeout: Option<String>,

    /// How many times a migration that gave up waiting for a table lock is tried again
    /// [default: 3]
    #[arg(long, global = true, env = "FERRY_DDL_LOCK_RETRIES", value_name = "N")]
    pub ddl_lock_retries: Option<u32>,

    /// Where backups and artifacts are kept: file:///path or s3://bucket/prefix
    /// [default: [store] url in ferry.toml, else .ferry/ beside ferry.toml or here]
    #[arg(long, global = true, env = "FERRY_STORE", value_name = "URL")]
    pub store: Option<String>,

    /// Output format
    #[arg(long, global = true, env = "FERRY_OUTPUT", value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables and sentences for people
    Human,
    /// One JSON document on stdout, for scripts
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply, revert and inspect schema migrations
    #[command(subcommand)]
    Migrate(MigrateCommand),

    /// Take, check and restore compressed, checksummed database backups
    #[command(subcommand)]
    Backup(BackupCommand),

    /// Prove migrations keep the previous app version working, and that each down reverses its up
    #[command(subcommand)]
    Compat(CompatCommand),

    /// Store immutable artifacts by their SHA-256 digest, and clean up old ones
    #[command(subcommand)]
    Artifact(ArtifactCommand),

    /// Make an artifact live in an environment (--to), without rebuilding it
    Promote {
        /// NAME@sha256:<hex>, sha256:<hex>, or NAME@VERSION (resolved to its digest once)
        reference: String,
        /// The environment ([env.NAME] in ferry.toml)
        #[arg(long, value_name = "ENV")]
        to: String,
        /// Why, recorded in the history
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Promote during a freeze window; needs --reason, which is recorded
        #[arg(long)]
        override_freeze: bool,
    },

    /// Show what is live in an environment (--env), what was before, and the history
    Releases,

    /// Make the previous (or a chosen) release of an environment (--env) live again: the
    /// artifact, the hosts and the schema recorded with it (stored down scripts). Without --to
    /// it first finishes undoing an interrupted deploy. Never blocked by a freeze window
    Rollback {
        /// A release's sequence number, a digest (sha256:<hex>) or a version
        #[arg(long, value_name = "SEQ|DIGEST|VERSION")]
        to: Option<String>,
        /// Why, recorded in the history
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Restore this backup where a migration cannot be reverted with its stored down
        #[arg(long, value_name = "ID")]
        restore_backup: Option<String>,
        /// Do not ask for confirmation at a terminal
        #[arg(long, short = 'y')]
        yes: bool,
    },

    /// Deploy a release to an environment (--env): gates (lock, freeze, stage order),
    /// pre_deploy, compat check, backup, migrate, promote, rollout, smoke, post_deploy. A
    /// failure from migrate on rolls back the hosts, the artifact and the schema by itself.
    /// Exit 0 when the release is live, 3 when refused before anything changed, 1 when it
    /// failed (rolled back or not)
    Deploy(DeployArgs),

    /// Roll a release over an environment's hosts (--env) without downtime: promote it there
    /// if it is not live yet, then batch by batch drain each host, run its deploy command,
    /// check health and version, and put it back (exit 1 when it halted or failed)
    Rollout {
        /// NAME@sha256:<hex>, sha256:<hex>, NAME@VERSION, or an image REGISTRY/REPO@sha256:<hex>
        #[arg(long, value_name = "REF")]
        artifact: String,
        /// Print the plan (gathered health, batches, commands filled in); change nothing
        #[arg(long)]
        dry_run: bool,
        /// Why, recorded in the history
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },

    /// Run an environment's smoke checks (--env): HTTP GETs and read-only SQL queries, all of
    /// them, in parallel (exit 1 when any fails)
    Smoke,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DeployArgs {
    #[command(subcommand)]
    pub command: Option<DeployCommand>,
    /// The release: NAME@sha256:<hex>, NAME@VERSION, or an image REGISTRY/REPO@sha256:<hex>
    /// or REGISTRY/REPO:TAG (resolved to its digest once)
    #[arg(long, value_name = "REF", required = true)]
    pub artifact: Option<String>,
    /// Print the plan (gates and their verdicts, pending migrations, backup, batches); change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Why, recorded in the release history and the deployment record
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Do not ask for confirmation at a terminal
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// What is live in an environment (--env), its last deploys with status and actor, and
    /// its deploy lock (held, stale, free)
    Status {
        /// How many deploys to show
        #[arg(long, value_name = "N", default_value_t = 10)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum CompatCommand {
    /// Check pending migrations (or those above --from): static analysis of their SQL, then a
    /// proof in a shadow database that ferry creates and drops (exit 3 when anything breaking)
    Check {
        /// Check every migration above VERSION [default: those pending on the configured database]
        #[arg(long, value_name = "VERSION")]
        from: Option<i64>,
        /// Server for the shadow database [default: the configured database's server]
        #[arg(long, value_name = "URL")]
        shadow_url: Option<String>,
        /// Also fail on locking and data-loss findings, and on irreversible migrations
        #[arg(long)]
        strict: bool,
        /// The previous version's queries, prepared (never run) against the migrated shadow
        /// schema: a .sql file, a sqlx offline query (.sqlx/query-*.json), or a directory of
        /// both; a query that no longer prepares is breaking
        #[arg(long, value_name = "PATH", env = "FERRY_COMPAT_OLD_QUERIES")]
        old_queries: Option<PathBuf>,
        /// Shadow databases a long release (24 migrations or more) is proven in at once, 1 to 4
        /// [default: one per core, at most 3]
        #[arg(long, value_name = "N", env = "FERRY_COMPAT_PARALLEL")]
        parallel: Option<usize>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ArtifactCommand {
    /// Store a file under its digest; prints NAME@sha256:<hex>
    Push {
        path: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
    },

    /// Remove artifacts no environment's last N releases refer to; without --yes only lists
    Gc {
        /// How many of each environment's newest releases keep their artifacts
        #[arg(long, value_name = "N")]
        keep: usize,
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Snapshot the database into the store; prints the new backup's id
    Create {
        /// A note kept in the manifest, e.g. the release being deployed
        #[arg(long, value_name = "TEXT")]
        label: Option<String>,
    },

    /// List backups, newest first
    List,

    /// Show one backup's manifest
    Show {
        /// Backup id, as `ferry backup list` prints it
        id: String,
    },

    /// Check a backup's checksum and compressed stream end to end
    Verify {
        id: String,
        /// Also restore it into a scratch database ferry creates and drops, and compare tables
        /// and row counts with the manifest
        #[arg(long)]
        restore_check: bool,
    },

    /// Replace a database's contents with a backup (verified before the target is touched)
    Restore {
        id: String,
        /// Restore into this database instead of the configured one
        #[arg(long, value_name = "URL")]
        to: Option<String>,
        /// Restore over the configured database without asking, and end the sessions
        /// connected to the target (PostgreSQL swaps the restored database in by a rename,
        /// which needs the target to itself); without it a target with sessions is refused
        #[arg(long, short = 'y')]
        yes: bool,
        /// Parallel loading connections (PostgreSQL) [default: one per core]
        #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        jobs: Option<u16>,
        /// Keep the replaced database under a new name instead of dropping it (PostgreSQL);
        /// the name is printed
        #[arg(long)]
        keep_old: bool,
        /// Do not restore the objects' owners: everything belongs to the restoring user
        /// (PostgreSQL), for a server that lacks the backup's roles
        #[arg(long)]
        no_owner: bool,
        /// Restore as this role (PostgreSQL: `SET ROLE` for every restoring session)
        #[arg(long, value_name = "ROLE")]
        role: Option<String>,
    },

    /// Delete old backups; without --yes only lists what it would delete
    Prune {
        /// Always keep this many of the newest backups
        #[arg(long, value_name = "N")]
        keep_last: usize,
        /// Also keep every backup younger than this, e.g. 7d, 12h
        #[arg(long, value_name = "DURATION")]
        keep_within: Option<String>,
        /// Delete; without it prune only lists
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Show every migration and its state: applied, pending, modified, missing or failed
    Status,

    /// Apply pending migrations in order
    Up {
        /// Apply pending migrations up to and including this version
        #[arg(long, value_name = "VERSION")]
        to: Option<i64>,
        /// Print the SQL that would run; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Apply a pending migration older than the newest applied one
        #[arg(long)]
        allow_out_of_order: bool,
    },

    /// Revert applied migrations, newest first (default: one)
    #[command(group(ArgGroup::new("target").args(["steps", "to"])))]
    Down {
        /// Revert this many migrations
        #[arg(long, value_name = "N")]
        steps: Option<usize>,
        /// Leave VERSION applied and revert everything above it (0 reverts all)
        #[arg(long, value_name = "VERSION")]
        to: Option<i64>,
        /// Print the SQL that would run; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation at a terminal
        #[arg(long, short = 'y')]
        yes: bool,
    },

    /// Revert the newest migration and apply it again
    Redo {
        /// Do not ask for confirmation at a terminal
        #[arg(long, short = 'y')]
        yes: bool,
    },

    /// Check the migration files and, with a database, that applied ones are unchanged (exit 3 on drift)
    Validate,

    /// After fixing a failed or modified migration by hand: clear failed records and record current checksums
    Repair,

    /// Record migrations as applied without running them, to adopt an existing database
    #[command(group(ArgGroup::new("source").args(["version", "from"]).required(true)))]
    Baseline {
        /// Mark every migration up to and including VERSION as applied
        #[arg(long, value_name = "V")]
        version: Option<i64>,
        /// Read this tool's history table and record the same versions as applied
        #[arg(long, value_enum, value_name = "TOOL")]
        from: Option<AdoptFrom>,
    },

    /// Write a new pair of migration files (<UTC timestamp>_<name>.up.sql / .down.sql)
    New {
        /// What the migration does, e.g. add_email_to_users
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AdoptFrom {
    Sqlx,
    Diesel,
    GolangMigrate,
    Refinery,
    Flyway,
    Dbmate,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
