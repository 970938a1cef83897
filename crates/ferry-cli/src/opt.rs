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
    pub top: TopOpts,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes, before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct TopOpts {
    /// Config file [default: ./ferry.toml if it exists]
    #[arg(long, global = true, env = "FERRY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Environment from ferry.toml ([env.NAME]) to use
    #[arg(long, global = true, env = "FERRY_ENV", value_name = "NAME")]
    pub env: Option<String>,

    /// Output format
    #[arg(long, global = true, env = "FERRY_OUTPUT", value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

/// The database a command works on (sqlx-cli's `ConnectOpts`).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Database")]
pub struct DbOpts {
    /// Database URL: sqlite:PATH, postgres://..., mysql://... or mariadb://...
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

/// Where the migration files are (sqlx-cli's `Source`).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Migrations")]
pub struct SourceOpts {
    /// Migrations directory [default: [migrations] dir in ferry.toml, else ./migrations]
    #[arg(long, env = "FERRY_MIGRATIONS", value_name = "DIR")]
    pub migrations: Option<PathBuf>,
}

/// How long applying or reverting migrations waits for locks.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Locks")]
pub struct LockOpts {
    /// How long to wait for another run's migration lock, e.g. 60s, 5m [default: 60s]
    #[arg(long, env = "FERRY_LOCK_TIMEOUT", value_name = "DURATION")]
    pub lock_timeout: Option<String>,

    /// How long each migration waits for a table lock before giving up and trying again,
    /// e.g. 10s; 0 waits forever [default: 10s]
    #[arg(long, env = "FERRY_DDL_LOCK_TIMEOUT", value_name = "DURATION")]
    pub ddl_lock_timeout: Option<String>,

    /// How many times a migration that gave up waiting for a table lock is tried again
    /// [default: 3]
    #[arg(long, env = "FERRY_DDL_LOCK_RETRIES", value_name = "N")]
    pub ddl_lock_retries: Option<u32>,
}

/// The central store of backups, artifacts and histories.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Store")]
pub struct StoreOpts {
    /// Where backups and artifacts are kept: file:///path or s3://bucket/prefix
    /// [default: [store] url in ferry.toml, else .ferry/ beside ferry.toml or here]
    #[arg(long, env = "FERRY_STORE", value_name = "URL")]
    pub store: Option<String>,
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
        #[command(flatten)]
        store: StoreOpts,
    },

    /// Show what is live in an environment (--env), what was before, and the history
    Releases {
        #[command(flatten)]
        store: StoreOpts,
    },

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
        #[command(flatten)]
        db: DbOpts,
        #[command(flatten)]
        source: SourceOpts,
        #[command(flatten)]
        lock: LockOpts,
        #[command(flatten)]
        store: StoreOpts,
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
        #[command(flatten)]
        store: StoreOpts,
    },

    /// Run an environment's smoke checks (--env): HTTP GETs and read-only SQL queries, all of
    /// them, in parallel (exit 1 when any fails)
    Smoke {
        #[command(flatten)]
        db: DbOpts,
    },
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
    #[command(flatten)]
    pub db: DbOpts,
    #[command(flatten)]
    pub source: SourceOpts,
    #[command(flatten)]
    pub lock: LockOpts,
    #[command(flatten)]
    pub store: StoreOpts,
}

#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// What is live in an environment (--env), its last deploys with status and actor, and
    /// its deploy lock (held, stale, free)
    Status {
        /// How many deploys to show
        #[arg(long, value_name = "N", default_value_t = 10)]
        limit: usize,
        #[command(flatten)]
        store: StoreOpts,
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
        /// Apply the deployed migrations in every shadow database and keep nothing [default:
        /// keep a database (SQLite: a file) at the deployed version on the shadow server and
        /// copy it for each check; `ferry compat clean` removes them]
        #[arg(long)]
        no_keep_base: bool,
        #[command(flatten)]
        db: DbOpts,
        #[command(flatten)]
        source: SourceOpts,
    },

    /// Remove every base database that `compat check` kept on the shadow server (SQLite: every
    /// kept base file); a base a running check is building is left alone
    Clean {
        /// The shadow server [default: the configured database's server]
        #[arg(long, value_name = "URL")]
        shadow_url: Option<String>,
        #[command(flatten)]
        db: DbOpts,
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
        #[command(flatten)]
        store: StoreOpts,
    },

    /// Remove artifacts no environment's last N releases refer to; without --delete only lists
    Gc {
        /// How many of each environment's newest releases keep their artifacts
        #[arg(long, value_name = "N")]
        keep: usize,
        /// Delete; without it gc only lists (`--yes`, `-y`: the older name)
        #[arg(long = "delete", short = 'y', alias = "yes")]
        yes: bool,
        #[command(flatten)]
        store: StoreOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Snapshot the database into the store; prints the new backup's id
    Create {
        /// A note kept in the manifest, e.g. the release being deployed
        #[arg(long, value_name = "TEXT")]
        label: Option<String>,
        #[command(flatten)]
        db: DbOpts,
        #[command(flatten)]
        store: StoreOpts,
    },

    /// List backups, newest first
    List {
        #[command(flatten)]
        store: StoreOpts,
    },

    /// Show one backup's manifest
    Show {
        /// Backup id, as `ferry backup list` prints it
        id: String,
        #[command(flatten)]
        store: StoreOpts,
    },

    /// Check a backup's checksum and compressed stream end to end
    Verify {
        id: String,
        /// Also restore it into a scratch database ferry creates and drops, and compare tables
        /// and row counts with the manifest
        #[arg(long)]
        restore_check: bool,
        #[command(flatten)]
        db: DbOpts,
        #[command(flatten)]
        store: StoreOpts,
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
        #[command(flatten)]
        db: DbOpts,
        #[command(flatten)]
        store: StoreOpts,
    },

    /// Delete old backups; without --delete only lists what it would delete
    Prune {
        /// Always keep this many of the newest backups
        #[arg(long, value_name = "N")]
        keep_last: usize,
        /// Also keep every backup younger than this, e.g. 7d, 12h
        #[arg(long, value_name = "DURATION")]
        keep_within: Option<String>,
        /// Delete; without it prune only lists (`--yes`, `-y`: the older name)
        #[arg(long = "delete", short = 'y', alias = "yes")]
        yes: bool,
        #[command(flatten)]
        store: StoreOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Show every migration and its state: applied, pending, modified, missing or failed
    Status {
        #[command(flatten)]
        db: DbOpts,
        #[command(flatten)]
        source: SourceOpts,
    },

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
        #[command(flatten)]
        db: DbOpts,
        #[command(flatten)]
        source: SourceOpts,
        #[command(flatten)]
        lock: LockOpts,
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
        #[command(flatten)]
        db: DbOpts,
        #[command(flatten)]
        source: SourceOpts,
        #[command(flatten)]
        lock: LockOpts,
    },

    /// Revert the newest migration and apply it again
    Redo {
        /// Do not ask for confirmation at a terminal
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        db: DbOpts,
        #[command(flatten)]
        source: SourceOpts,
        #[command(flatten)]
        lock: LockOpts,
    },

    /// Check the migration files and, with a database, that applied ones are unchanged (exit 3 on drift)
    Validate {
        #[command(flatten)]
        db: DbOpts,
        #[command(flatten)]
        source: SourceOpts,
    },

    /// After fixing a failed or modified migration by hand: clear failed records and record current checksums
    Repair {
        #[command(flatten)]
        db: DbOpts,
        #[command(flatten)]
        source: SourceOpts,
        #[command(flatten)]
        lock: LockOpts,
    },

    /// Record migrations as applied without running them, to adopt an existing database
    #[command(group(ArgGroup::new("source").args(["version", "from"]).required(true)))]
    Baseline {
        /// Mark every migration up to and including VERSION as applied
        #[arg(long, value_name = "V")]
        version: Option<i64>,
        /// Read this tool's history table and record the same versions as applied
        #[arg(long, value_enum, value_name = "TOOL")]
        from: Option<AdoptFrom>,
        #[command(flatten)]
        db: DbOpts,
        #[command(flatten)]
        source: SourceOpts,
        #[command(flatten)]
        lock: LockOpts,
    },

    /// Write a new pair of migration files (<UTC timestamp>_<name>.up.sql / .down.sql)
    New {
        /// What the migration does, e.g. add_email_to_users
        name: String,
        #[command(flatten)]
        source: SourceOpts,
    },
}

/// The option groups a command has.
#[derive(Default)]
struct Groups<'a> {
    db: Option<&'a DbOpts>,
    source: Option<&'a SourceOpts>,
    lock: Option<&'a LockOpts>,
    store: Option<&'a StoreOpts>,
}

impl Cli {
    /// What the command line says about the settings, gathered once from the top level and
    /// the command's groups. What a command has no group for stays `None`, so it comes from
    /// `ferry.toml` or the defaults.
    pub fn options(&self) -> ferry_core::Overrides {
        let g = self.command.groups();
        let lock = g.lock.cloned().unwrap_or_default();
        ferry_core::Overrides {
            config: self.top.config.clone(),
            env: self.top.env.clone(),
            database_url: g.db.and_then(|d| d.database_url.clone()),
            migrations: g.source.and_then(|s| s.migrations.clone()),
            lock_timeout: lock.lock_timeout,
            ddl_lock_timeout: lock.ddl_lock_timeout,
            ddl_lock_retries: lock.ddl_lock_retries,
            store: g.store.and_then(|s| s.store.clone()),
        }
    }
}

impl Command {
    fn groups(&self) -> Groups<'_> {
        let all = |db, source, lock, store| Groups {
            db: Some(db),
            source: Some(source),
            lock: Some(lock),
            store: Some(store),
        };
        let store = |store| Groups {
            store: Some(store),
            ..Groups::default()
        };
        match self {
            Command::Migrate(m) => match m {
                MigrateCommand::Status { db, source } | MigrateCommand::Validate { db, source } => {
                    Groups {
                        db: Some(db),
                        source: Some(source),
                        ..Groups::default()
                    }
                }
                MigrateCommand::Up {
                    db, source, lock, ..
                }
                | MigrateCommand::Down {
                    db, source, lock, ..
                }
                | MigrateCommand::Redo {
                    db, source, lock, ..
                }
                | MigrateCommand::Repair { db, source, lock }
                | MigrateCommand::Baseline {
                    db, source, lock, ..
                } => Groups {
                    db: Some(db),
                    source: Some(source),
                    lock: Some(lock),
                    ..Groups::default()
                },
                MigrateCommand::New { source, .. } => Groups {
                    source: Some(source),
                    ..Groups::default()
                },
            },
            Command::Backup(b) => match b {
                BackupCommand::Create { db, store, .. }
                | BackupCommand::Verify { db, store, .. }
                | BackupCommand::Restore { db, store, .. } => Groups {
                    db: Some(db),
                    store: Some(store),
                    ..Groups::default()
                },
                BackupCommand::List { store }
                | BackupCommand::Show { store, .. }
                | BackupCommand::Prune { store, .. } => Groups {
                    store: Some(store),
                    ..Groups::default()
                },
            },
            Command::Compat(CompatCommand::Check { db, source, .. }) => Groups {
                db: Some(db),
                source: Some(source),
                ..Groups::default()
            },
            Command::Compat(CompatCommand::Clean { db, .. }) => Groups {
                db: Some(db),
                ..Groups::default()
            },
            Command::Artifact(ArtifactCommand::Push { store: s, .. })
            | Command::Artifact(ArtifactCommand::Gc { store: s, .. })
            | Command::Promote { store: s, .. }
            | Command::Releases { store: s }
            | Command::Rollout { store: s, .. } => store(s),
            Command::Rollback {
                db,
                source,
                lock,
                store,
                ..
            } => all(db, source, lock, store),
            Command::Deploy(d) => match &d.command {
                Some(DeployCommand::Status { store: s, .. }) => store(s),
                None => all(&d.db, &d.source, &d.lock, &d.store),
            },
            Command::Smoke { db } => Groups {
                db: Some(db),
                ..Groups::default()
            },
        }
    }
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

/// The long options that belong to a command's groups, not to the top level. Before the groups
/// existed every option was global, so scripts write `ferry --database-url URL migrate up`;
/// [`hoist_command_options`] keeps that working.
const GROUP_OPTIONS: [&str; 6] = [
    "database-url",
    "migrations",
    "lock-timeout",
    "ddl-lock-timeout",
    "ddl-lock-retries",
    "store",
];

/// Keeps command lines written when every option was global working: a group option written
/// before the subcommand (`ferry --store URL backup list`) moves to just after it (`ferry backup
/// list --store URL`), where its group parses it; one the command has no use for, wherever it
/// is written, is dropped with a warning naming it (it used to be ignored silently). Returns
/// the arguments and the warnings. Everything else stays in place, so clap still reports bad
/// usage as before.
pub fn hoist_command_options(
    args: Vec<std::ffi::OsString>,
) -> (Vec<std::ffi::OsString>, Vec<String>) {
    use clap::CommandFactory;
    use std::ffi::OsString;
    /// `--name` or `--name=value`: the name, and whether the value is inline.
    fn long_name(a: &OsString) -> Option<(&str, bool)> {
        let long = a.to_str()?.strip_prefix("--").filter(|l| !l.is_empty())?;
        Some(match long.split_once('=') {
            Some((n, _)) => (n, true),
            None => (long, false),
        })
    }
    let top = ["config", "env", "output"];
    let mut out: Vec<OsString> = args.first().cloned().into_iter().collect();
    let mut hoisted: Vec<(String, Vec<OsString>)> = Vec::new();
    let mut i = 1;
    // Leading options, up to the subcommand's name.
    while i < args.len() {
        let Some((name, inline)) = long_name(&args[i]) else {
            if args[i].to_str().is_some_and(|a| a.starts_with('-')) {
                out.push(args[i].clone());
                i += 1;
                continue;
            }
            break;
        };
        let mut taken = vec![args[i].clone()];
        let takes_value = GROUP_OPTIONS.contains(&name) || top.contains(&name);
        if takes_value && !inline && i + 1 < args.len() {
            taken.push(args[i + 1].clone());
        }
        i += taken.len();
        if GROUP_OPTIONS.contains(&name) {
            hoisted.push((name.to_string(), taken));
        } else {
            out.extend(taken);
        }
    }
    // The subcommand path: names of subcommands, descending.
    let mut cmd = Cli::command();
    let mut path = Vec::new();
    while i < args.len() {
        let Some(sub) = args[i]
            .to_str()
            .and_then(|name| cmd.find_subcommand(name))
            .cloned()
        else {
            break;
        };
        out.push(args[i].clone());
        path.push(sub.get_name().to_string());
        cmd = sub;
        i += 1;
    }
    if path.is_empty() {
        // No subcommand (`--help`, `--version`, a typo): clap says what is wrong.
        return (args, Vec::new());
    }
    let own = |long: &str| cmd.get_arguments().find(|a| a.get_long() == Some(long));
    let mut warnings = Vec::new();
    let mut ignore = |name: &str| {
        let w = format!(
            "--{name} has no effect on `ferry {}`; ignored",
            path.join(" ")
        );
        if !warnings.contains(&w) {
            warnings.push(w);
        }
    };
    for (name, taken) in hoisted {
        if own(&name).is_some() {
            out.extend(taken);
        } else {
            ignore(&name);
        }
    }
    // The rest: group options the command has no use for are dropped with their values.
    while i < args.len() {
        if args[i] == "--" {
            out.extend(args[i..].iter().cloned());
            break;
        }
        let Some((name, inline)) = long_name(&args[i]) else {
            out.push(args[i].clone());
            i += 1;
            continue;
        };
        let with_value = |takes: bool| {
            if takes && !inline && i + 1 < args.len() {
                2
            } else {
                1
            }
        };
        let n = match own(name) {
            Some(arg) => {
                out.extend(
                    args[i..i + with_value(arg.get_action().takes_values())]
                        .iter()
                        .cloned(),
                );
                with_value(arg.get_action().takes_values())
            }
            None if GROUP_OPTIONS.contains(&name) => {
                ignore(name);
                with_value(true)
            }
            None => {
                out.push(args[i].clone());
                1
            }
        };
        i += n;
    }
    (out, warnings)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    fn hoist(args: &[&str]) -> (Vec<String>, Vec<String>) {
        let (out, warnings) =
            super::hoist_command_options(args.iter().map(std::ffi::OsString::from).collect());
        (
            out.into_iter().map(|a| a.into_string().unwrap()).collect(),
            warnings,
        )
    }

    #[test]
    fn group_options_before_the_subcommand_move_after_it() {
        let (out, w) = hoist(&[
            "ferry",
            "--output",
            "json",
            "--database-url",
            "sqlite:a.db",
            "--store=file:///s",
            "migrate",
            "up",
            "--to",
            "3",
        ]);
        assert_eq!(
            out,
            [
                "ferry",
                "--output",
                "json",
                "migrate",
                "up",
                "--database-url",
                "sqlite:a.db",
                "--to",
                "3"
            ]
        );
        assert_eq!(w, ["--store has no effect on `ferry migrate up`; ignored"]);
        // A positional after the subcommand stays after the moved options.
        let (out, w) = hoist(&["ferry", "--store", "s3://b/p", "backup", "show", "ID"]);
        assert_eq!(
            out,
            ["ferry", "backup", "show", "--store", "s3://b/p", "ID"]
        );
        assert!(w.is_empty());
        // After the subcommand, one the command has no use for is dropped with its value.
        let (out, w) = hoist(&[
            "ferry",
            "backup",
            "list",
            "--store",
            "s",
            "--database-url",
            "sqlite:a.db",
            "--migrations=m",
            "--output",
            "json",
        ]);
        assert_eq!(
            out,
            [
                "ferry", "backup", "list", "--store", "s", "--output", "json"
            ]
        );
        assert_eq!(
            w,
            [
                "--database-url has no effect on `ferry backup list`; ignored",
                "--migrations has no effect on `ferry backup list`; ignored"
            ]
        );
        // A value that looks like an option stays the value of its own option.
        let (out, _) = hoist(&[
            "ferry", "promote", "a@1", "--to", "dev", "--reason", "--store",
        ]);
        assert_eq!(
            out,
            [
                "ferry", "promote", "a@1", "--to", "dev", "--reason", "--store"
            ]
        );
        // Nothing to move: unchanged, bad usage included.
        let args = ["ferry", "--env", "dev", "nonsense", "--store", "x"];
        assert_eq!(hoist(&args).0, args);
    }

    #[test]
    fn each_command_shows_only_its_own_options() {
        use clap::CommandFactory;
        let mut cli = super::Cli::command();
        let longs = |cmd: &clap::Command| -> Vec<String> {
            cmd.get_arguments()
                .filter_map(|a| a.get_long().map(str::to_string))
                .collect()
        };
        let compat = cli
            .find_subcommand_mut("compat")
            .unwrap()
            .find_subcommand_mut("check")
            .unwrap()
            .clone();
        let l = longs(&compat);
        assert!(
            l.contains(&"database-url".into()) && l.contains(&"migrations".into()),
            "{l:?}"
        );
        assert!(
            !l.contains(&"store".into()) && !l.contains(&"lock-timeout".into()),
            "{l:?}"
        );
        let gc = cli
            .find_subcommand_mut("artifact")
            .unwrap()
            .find_subcommand_mut("gc")
            .unwrap()
            .clone();
        let l = longs(&gc);
        assert!(
            l.contains(&"store".into()) && l.contains(&"delete".into()),
            "{l:?}"
        );
        assert!(!l.contains(&"database-url".into()), "{l:?}");
    }
}
