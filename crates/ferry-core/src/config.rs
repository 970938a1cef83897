//! `ferry.toml` and the resolution of settings: flags > environment variables > file > defaults.
//!
//! The CLI's clap definitions already merge each flag with its environment variable (clap's `env`),
//! so they arrive here as one [`Overrides`] value; this module adds the file and the defaults.
//! Values in the file may reference environment variables as `${VAR}` (`$$` is a literal `$`);
//! a reference to an unset variable is an error that names the key and the variable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::{CoreError, DatabaseUrl};

/// The file name looked for in the working directory when `--config` is not given.
pub const CONFIG_FILE: &str = "ferry.toml";
/// Where migrations live when nothing says otherwise.
pub const DEFAULT_MIGRATIONS_DIR: &str = "migrations";
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a migration's statements wait for a table lock before the try is given up.
pub const DEFAULT_DDL_LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a migration that gave up waiting for a table lock is tried again.
pub const DEFAULT_DDL_LOCK_RETRIES: u32 = 3;
/// The embedded default store, beside `ferry.toml` (or in the working directory).
pub const DEFAULT_STORE_DIR: &str = ".ferry";

/// The parsed `ferry.toml`, after `${VAR}` expansion.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The environment used when neither `--env` nor `FERRY_ENV` names one.
    pub default_env: Option<String>,
    #[serde(default)]
    pub migrations: MigrationsSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub backup: BackupSection,
    #[serde(default)]
    pub env: BTreeMap<String, EnvSection>,
    /// What a successful `ferry deploy` does to the repository (`deploy.rs`).
    #[serde(default)]
    pub git: crate::deploy::GitSection,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationsSection {
    /// Relative paths are relative to the directory of `ferry.toml`.
    pub dir: Option<PathBuf>,
    /// e.g. "60s", "2m".
    pub lock_timeout: Option<String>,
    /// How long a migration's statements wait for a table lock, e.g. "10s"; "0" waits forever.
    pub ddl_lock_timeout: Option<String>,
    /// How many times a migration that gave up waiting for a table lock is tried again.
    pub ddl_lock_retries: Option<u32>,
}

/// `[backup]`: how new backups are compressed (`ferry-backup` checks the values).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSection {
    /// `gzip` or `zstd`.
    pub compression: Option<String>,
    pub level: Option<i32>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub url: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// How long to wait for a TCP (and TLS) connection to an S3 endpoint or a registry, e.g. "10s".
    pub connect_timeout: Option<String>,
    /// How long to wait for an answer (the first byte of a response, and then each read of
    /// its body) before the attempt counts as failed, e.g. "30s".
    pub read_timeout: Option<String>,
    /// How many times a failed request (timeout, connection error, throttling, 5xx) is tried
    /// again before the command fails.
    pub retries: Option<u32>,
}

/// How ferry talks to anything over the network (S3 endpoints, OCI registries): the bounds
/// that make a server which accepts connections and never answers a failure, not a hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    pub connect_timeout: Duration,
    /// Time to the first byte of an answer (which includes sending the request's body), and
    /// the longest pause while reading a body.
    pub read_timeout: Duration,
    /// Tries after the first; 0 = one try.
    pub retries: u32,
}

impl Network {
    /// Defaults for CI: a silent server fails a command within about
    /// `(retries + 1) * (connect_timeout + read_timeout)` plus the pauses between tries.
    pub const DEFAULT: Network = Network {
        connect_timeout: Duration::from_secs(10),
        read_timeout: Duration::from_secs(30),
        retries: 3,
    };

    /// The pause before try number `attempt + 1` (after `attempt` failures): 0.5 s, doubling,
    /// at most 8 s.
    pub fn backoff(attempt: u32) -> Duration {
        Duration::from_millis(500)
            .saturating_mul(1 << attempt.saturating_sub(1).min(4))
            .min(Duration::from_secs(8))
    }

    /// The longest a request can take before its error, when every try times out.
    pub fn worst_case(&self) -> Duration {
        let per_try = self.connect_timeout + self.read_timeout;
        let pauses: Duration = (1..=self.retries).map(Network::backoff).sum();
        per_try * (self.retries + 1) + pauses
    }
}

impl Default for Network {
    fn default() -> Self {
        Network::DEFAULT
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSection {
    pub database_url: Option<String>,
    /// Where this environment's artifacts live (store URL or `oci://` repository).
    pub artifacts: Option<String>,
    /// The environment a release must have been live in first.
    pub requires: Option<String>,
    /// When promotions to this environment are refused (unless overridden with a reason).
    /// Absent: no freeze, except for an environment named `production` or `prod`, which
    /// defaults to no deploys on Friday, Saturday and Sunday (UTC). `freeze = []` means never.
    pub freeze: Option<Vec<FreezeWindow>>,
    /// Hosts, deploy command, batches, load balancer, timeouts, smoke checks (`ferry rollout`).
    #[serde(flatten)]
    pub fleet: crate::fleet::FleetConfig,
    /// `ferry deploy`'s keys: hooks, backup policy, restore on failure (`deploy.rs`).
    #[serde(flatten)]
    pub deploy: crate::deploy::DeploySection,
}

/// One freeze window, e.g. `{ days = ["fri"], from = "18:00", to = "06:00", tz = "Europe/Berlin" }`.
/// Parsed and checked by `ferry-promote`; kept as text here so the core has no time-zone data.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeWindow {
    /// Weekdays on which the window starts: `mon` … `sun` (full names also accepted).
    pub days: Vec<String>,
    /// Local start time `HH:MM` (default `00:00`).
    pub from: Option<String>,
    /// Local end time `HH:MM`, up to `24:00` (default `24:00`); earlier than `from` means the
    /// window runs past midnight into the next day.
    pub to: Option<String>,
    /// IANA time zone (`Europe/Berlin`), `UTC` (the default) or a fixed offset (`+01:00`).
    pub tz: Option<String>,
}

/// What the command line (flags merged with their environment variables) says.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub env: Option<String>,
    pub database_url: Option<String>,
    pub migrations: Option<PathBuf>,
    pub lock_timeout: Option<String>,
    pub ddl_lock_timeout: Option<String>,
    pub ddl_lock_retries: Option<u32>,
    pub store: Option<String>,
}

/// Everything a command needs to know about where things are, fully resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file that was read, if any.
    pub config_path: Option<PathBuf>,
    /// The selected environment, if any.
    pub env: Option<String>,
    pub database_url: Option<DatabaseUrl>,
    pub migrations_dir: PathBuf,
    pub lock_timeout: Duration,
    /// How long a migration's statements wait for a table lock; `None` waits forever.
    pub ddl_lock_timeout: Option<Duration>,
    pub ddl_lock_retries: u32,
    pub store_url: Option<String>,
    pub store_endpoint: Option<String>,
    pub store_region: Option<String>,
    /// Timeouts and retries for S3 endpoints and registries (`[store]`).
    pub network: Network,
    /// The parsed file (empty when there is none), for commands that need more of it.
    pub file: ConfigFile,
}

impl Settings {
    /// The database URL, or the error that tells the user every way to give one.
    pub fn require_database_url(&self) -> Result<&DatabaseUrl, CoreError> {
        self.database_url.as_ref().ok_or(CoreError::NoDatabaseUrl)
    }

    /// The directory that relative paths in the config are relative to.
    pub fn base_dir(&self) -> PathBuf {
        base_dir_of(self.config_path.as_deref())
    }

    /// The store URL: `--store`/`FERRY_STORE`, `[store] url`, else the embedded default
    /// `file://<dir of ferry.toml, or the working directory>/.ferry`.
    pub fn store_url(&self) -> String {
        match &self.store_url {
            Some(url) => url.clone(),
            None => {
                let base = self.base_dir();
                let base = std::path::absolute(&base).unwrap_or(base);
                format!("file://{}", base.join(DEFAULT_STORE_DIR).display())
            }
        }
    }
}

fn base_dir_of(config_path: Option<&Path>) -> PathBuf {
    config_path
        .and_then(|p| p.parent())
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Resolves settings from the command line, the config file and defaults.
/// `lookup` reads environment variables (for `${VAR}` expansion); tests pass their own.
pub fn resolve(
    over: &Overrides,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, CoreError> {
    let config_path = match &over.config {
        Some(p) => Some(p.clone()),
        None => Some(PathBuf::from(CONFIG_FILE)).filter(|p| p.is_file()),
    };
    let file = match &config_path {
        Some(p) => load(p, over.env.as_deref(), lookup)?,
        None => ConfigFile::default(),
    };
    let base = base_dir_of(config_path.as_deref());
    let shown_path = config_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("{CONFIG_FILE} (none found)"));

    let env = over.env.clone().or_else(|| file.default_env.clone());
    let env_section = match &env {
        Some(name) => Some(file.env.get(name).ok_or_else(|| CoreError::UnknownEnv {
            name: name.clone(),
            path: shown_path.clone(),
            defined: if file.env.is_empty() {
                "none".to_string()
            } else {
                file.env.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        })?),
        None => None,
    };

    let database_url = match (
        &over.database_url,
        env_section.and_then(|e| e.database_url.as_ref()),
    ) {
        (Some(flag), _) => Some(DatabaseUrl::parse(flag)?),
        (None, Some(from_file)) => Some(DatabaseUrl::parse(&relative_sqlite(from_file, &base))?),
        (None, None) => None,
    };

    let migrations_dir = match (&over.migrations, &file.migrations.dir) {
        (Some(flag), _) => flag.clone(),
        (None, Some(dir)) if dir.is_relative() => base.join(dir),
        (None, Some(dir)) => dir.clone(),
        (None, None) => PathBuf::from(DEFAULT_MIGRATIONS_DIR),
    };

    let lock_timeout = match over
        .lock_timeout
        .as_ref()
        .or(file.migrations.lock_timeout.as_ref())
    {
        Some(text) => parse_duration(text).map_err(|reason| CoreError::BadValue {
            what: "lock timeout".into(),
            value: text.clone(),
            reason,
        })?,
        None => DEFAULT_LOCK_TIMEOUT,
    };

    let ddl_lock_timeout = match over
        .ddl_lock_timeout
        .as_ref()
        .or(file.migrations.ddl_lock_timeout.as_ref())
    {
        Some(text) => match parse_duration(text) {
            Ok(Duration::ZERO) => None,
            Ok(d) => Some(d),
            Err(reason) => {
                return Err(CoreError::BadValue {
                    what: "DDL lock timeout ([migrations] ddl_lock_timeout, --ddl-lock-timeout)"
                        .into(),
                    value: text.clone(),
                    reason,
                });
            }
        },
        None => Some(DEFAULT_DDL_LOCK_TIMEOUT),
    };
    let ddl_lock_retries = over
        .ddl_lock_retries
        .or(file.migrations.ddl_lock_retries)
        .unwrap_or(DEFAULT_DDL_LOCK_RETRIES);
    let network = network(&file.store)?;

    Ok(Settings {
        config_path,
        env,
        database_url,
        migrations_dir,
        lock_timeout,
        ddl_lock_timeout,
        ddl_lock_retries,
        store_url: over.store.clone().or_else(|| file.store.url.clone()),
        store_endpoint: file.store.endpoint.clone(),
        store_region: file.store.region.clone(),
        network,
        file,
    })
}

/// `[store] connect_timeout`, `read_timeout` and `retries` over [`Network::DEFAULT`].
fn network(store: &StoreSection) -> Result<Network, CoreError> {
    let timeout = |key: &str, value: &Option<String>, default: Duration| {
        match value {
        None => Ok(default),
        Some(text) => match parse_duration(text) {
            Ok(d) if d.is_zero() => Err(CoreError::BadValue {
                what: format!("[store] {key}"),
                value: text.clone(),
                reason: "a timeout of 0 would wait forever on a silent server; give a duration such as 30s".into(),
            }),
            Ok(d) => Ok(d),
            Err(reason) => Err(CoreError::BadValue {
                what: format!("[store] {key}"),
                value: text.clone(),
                reason,
            }),
        },
    }
    };
    let retries = store.retries.unwrap_or(Network::DEFAULT.retries);
    if retries > 20 {
        return Err(CoreError::BadValue {
            what: "[store] retries".into(),
            value: retries.to_string(),
            reason: "at most 20".into(),
        });
    }
    Ok(Network {
        connect_timeout: timeout(
            "connect_timeout",
            &store.connect_timeout,
            Network::DEFAULT.connect_timeout,
        )?,
        read_timeout: timeout(
            "read_timeout",
            &store.read_timeout,
            Network::DEFAULT.read_timeout,
        )?,
        retries,
    })
}

/// A relative SQLite path written in the config file is relative to the file, not to wherever
/// ferry happens to run, so `--config some/dir/ferry.toml` finds the same database.
fn relative_sqlite(url: &str, base: &Path) -> String {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return url.to_string();
    };
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path.starts_with('/') || path.starts_with(":memory:") || base == Path::new(".") {
        return url.to_string();
    }
    format!("sqlite://{}", base.join(path).display())
}

/// Reads and parses a config file, expanding `${VAR}` in every string value except those of
/// environments other than the selected one (`env`, else the file's `default_env`): a dev run
/// must not need production's password to be set.
pub fn load(
    path: &Path,
    env: Option<&str>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<ConfigFile, CoreError> {
    let text = std::fs::read_to_string(path).map_err(|source| CoreError::ConfigRead {
        path: path.to_path_buf(),
        source,
    })?;
    let mut value: toml::Value = toml::from_str(&text).map_err(|e| CoreError::ConfigParse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut default_env = value
        .get("default_env")
        .cloned()
        .unwrap_or(toml::Value::Boolean(false));
    expand_value(&mut default_env, "default_env".into(), path, None, lookup)?;
    let selected = env
        .map(str::to_string)
        .or_else(|| default_env.as_str().map(str::to_string));
    expand_value(&mut value, String::new(), path, selected.as_deref(), lookup)?;
    value
        .try_into()
        .map_err(|e: toml::de::Error| CoreError::ConfigParse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

fn expand_value(
    value: &mut toml::Value,
    key: String,
    path: &Path,
    selected_env: Option<&str>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), CoreError> {
    match value {
        toml::Value::String(s) => {
            *s = expand_vars(s, lookup).map_err(|var| CoreError::MissingVar {
                path: path.to_path_buf(),
                key: key.clone(),
                var,
            })?;
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                // Only the selected environment is expanded: the others may name variables
                // that are set only where they deploy. Decided on the table itself, not on the
                // dotted key, since an environment's name may hold a dot (`[env."eu.prod"]`).
                if key == "env" && Some(k.as_str()) != selected_env {
                    continue;
                }
                let sub = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                expand_value(v, sub, path, selected_env, lookup)?;
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                expand_value(v, format!("{key}[{i}]"), path, selected_env, lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Expands `${VAR}`; `$$` is a literal `$`. Returns the name of the first unset variable.
pub fn expand_vars(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                out.push_str(&rest[i..]);
                return Ok(out);
            };
            let var = &body[..end];
            out.push_str(&lookup(var).ok_or_else(|| var.to_string())?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses "90", "90s", "2m", "1h", "7d", "500ms".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        "expected a number with an optional unit: ms, s, m, h or d (e.g. 60s)".to_string()
    })?;
    let secs = |per_unit: u64| {
        n.checked_mul(per_unit)
            .map(Duration::from_secs)
            .ok_or_else(|| "too long; give at most a few days (e.g. 7d)".to_string())
    };
    match unit.trim() {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        other => Err(format!("unknown unit `{other}`; use ms, s, m, h or d")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("ferry.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Found by fuzzing (`config`): an environment whose name holds a dot was expanded although
    /// another one was selected, because the decision read the dotted key.
    #[test]
    fn an_unselected_environment_with_a_dot_in_its_name_is_left_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(
            &path,
            "[env.staging]\ndatabase_url = \"sqlite:s.db\"\n[env.\"eu.prod\"]\ndatabase_url = \"postgres://u:${PW}@h/db\"\n",
        )
        .unwrap();
        let lookup = |_: &str| Some("secret".to_string());
        let file = load(&path, Some("staging"), &lookup).unwrap();
        assert_eq!(
            file.env["eu.prod"].database_url.as_deref(),
            Some("postgres://u:${PW}@h/db")
        );
        let file = load(&path, Some("eu.prod"), &lookup).unwrap();
        assert_eq!(
            file.env["eu.prod"].database_url.as_deref(),
            Some("postgres://u:secret@h/db")
        );
    }

    #[test]
    fn expands_variables_and_escapes() {
        let l = vars(&[("PW", "s3cret"), ("HOST", "db")]);
        assert_eq!(
            expand_vars("postgres://u:${PW}@${HOST}/x", &l).unwrap(),
            "postgres://u:s3cret@db/x"
        );
        assert_eq!(
            expand_vars("cost $$5 and $x", &l).unwrap(),
            "cost $5 and $x"
        );
        assert_eq!(expand_vars("${NOPE}", &l).unwrap_err(), "NOPE");
    }

    #[test]
    fn ddl_lock_timeout_flag_beats_file_and_zero_waits_forever() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(
            dir.path(),
            "[migrations]\nddl_lock_timeout = \"3s\"\nddl_lock_retries = 1\n",
        );
        let l = vars(&[]);
        let defaults = resolve(&Overrides::default(), &l).unwrap();
        assert_eq!(defaults.ddl_lock_timeout, Some(DEFAULT_DDL_LOCK_TIMEOUT));
        assert_eq!(defaults.ddl_lock_retries, DEFAULT_DDL_LOCK_RETRIES);
        let file = Overrides {
            config: Some(cfg.clone()),
            ..Default::default()
        };
        let s = resolve(&file, &l).unwrap();
        assert_eq!(s.ddl_lock_timeout, Some(Duration::from_secs(3)));
        assert_eq!(s.ddl_lock_retries, 1);
        let flags = Overrides {
            config: Some(cfg.clone()),
            ddl_lock_timeout: Some("0".into()),
            ddl_lock_retries: Some(0),
            ..Default::default()
        };
        let s = resolve(&flags, &l).unwrap();
        assert_eq!(s.ddl_lock_timeout, None, "0 waits forever");
        assert_eq!(s.ddl_lock_retries, 0);
        let bad = Overrides {
            config: Some(cfg),
            ddl_lock_timeout: Some("soon".into()),
            ..Default::default()
        };
        let err = resolve(&bad, &l).unwrap_err().to_string();
        assert!(
            err.contains("ddl_lock_timeout") && err.contains("soon"),
            "{err}"
        );
    }

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(
            dir.path(),
            "default_env = \"dev\"\n[migrations]\ndir = \"db/migrations\"\nlock_timeout = \"5s\"\n\
             [env.dev]\ndatabase_url = \"postgres://app:${PW}@localhost/dev\"\n\
             [env.prod]\ndatabase_url = \"postgres://app@prod/app\"\n",
        );
        let l = vars(&[("PW", "pw")]);
        let from_file = resolve(
            &Overrides {
                config: Some(cfg.clone()),
                ..Default::default()
            },
            &l,
        )
        .unwrap();
        assert_eq!(from_file.env.as_deref(), Some("dev"));
        assert_eq!(
            from_file.database_url.as_ref().unwrap().expose(),
            "postgres://app:pw@localhost/dev"
        );
        assert_eq!(from_file.migrations_dir, dir.path().join("db/migrations"));
        assert_eq!(from_file.lock_timeout, Duration::from_secs(5));

        let over = Overrides {
            config: Some(cfg.clone()),
            env: Some("prod".into()),
            migrations: Some("m".into()),
            lock_timeout: Some("2m".into()),
            ..Default::default()
        };
        let s = resolve(&over, &l).unwrap();
        assert_eq!(s.database_url.unwrap().expose(), "postgres://app@prod/app");
        assert_eq!(s.migrations_dir, PathBuf::from("m"));
        assert_eq!(s.lock_timeout, Duration::from_secs(120));

        let over = Overrides {
            config: Some(cfg),
            database_url: Some("sqlite:x.db".into()),
            ..Default::default()
        };
        assert_eq!(
            resolve(&over, &l).unwrap().database_url.unwrap().expose(),
            "sqlite:x.db"
        );
    }

    #[test]
    fn defaults_without_a_file() {
        let over = Overrides {
            config: None,
            ..Default::default()
        };
        // The working directory of unit tests is the crate, which has no ferry.toml.
        let s = resolve(&over, &|_| None).unwrap();
        assert!(s.database_url.is_none());
        assert_eq!(s.migrations_dir, PathBuf::from("migrations"));
        assert_eq!(s.lock_timeout, DEFAULT_LOCK_TIMEOUT);
        assert!(matches!(
            s.require_database_url(),
            Err(CoreError::NoDatabaseUrl)
        ));
    }

    #[test]
    fn errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(
            dir.path(),
            "[env.dev]\ndatabase_url = \"postgres://u:${DB_PW}@h/x\"\n",
        );
        let dev = Overrides {
            config: Some(cfg.clone()),
            env: Some("dev".into()),
            ..Default::default()
        };
        let err = resolve(&dev, &|_| None).unwrap_err().to_string();
        assert!(
            err.contains("env.dev.database_url") && err.contains("DB_PW"),
            "{err}"
        );

        let cfg = write(dir.path(), "[env.dev]\ndatabse_url = \"sqlite:x\"\n");
        let err = resolve(
            &Overrides {
                config: Some(cfg.clone()),
                ..Default::default()
            },
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("databse_url") && err.contains("ferry.toml"),
            "{err}"
        );

        let cfg = write(dir.path(), "[env.dev]\ndatabase_url = \"sqlite:x\"\n");
        let over = Overrides {
            config: Some(cfg),
            env: Some("prod".into()),
            ..Default::default()
        };
        let err = resolve(&over, &|_| None).unwrap_err().to_string();
        assert!(err.contains("`prod`") && err.contains("dev"), "{err}");

        let missing = Overrides {
            config: Some(dir.path().join("nope.toml")),
            ..Default::default()
        };
        assert!(matches!(
            resolve(&missing, &|_| None),
            Err(CoreError::ConfigRead { .. })
        ));
    }

    #[test]
    fn unselected_environments_need_not_have_their_variables_set() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(
            dir.path(),
            "default_env = \"dev\"\n[env.dev]\ndatabase_url = \"sqlite:dev.db\"\n\
             [env.prod]\ndatabase_url = \"postgres://app:${PROD_PW}@db/app\"\n",
        );
        let s = resolve(
            &Overrides {
                config: Some(cfg.clone()),
                ..Default::default()
            },
            &|_| None,
        )
        .unwrap();
        assert_eq!(s.env.as_deref(), Some("dev"));
        let prod = Overrides {
            config: Some(cfg),
            env: Some("prod".into()),
            ..Default::default()
        };
        let err = resolve(&prod, &|_| None).unwrap_err().to_string();
        assert!(err.contains("PROD_PW"), "{err}");
    }

    #[test]
    fn relative_sqlite_paths_follow_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(
            dir.path(),
            "default_env = \"dev\"\n[env.dev]\ndatabase_url = \"sqlite:.ferry/dev.db\"\n",
        );
        let s = resolve(
            &Overrides {
                config: Some(cfg),
                ..Default::default()
            },
            &|_| None,
        )
        .unwrap();
        assert_eq!(
            s.database_url.unwrap().expose(),
            format!("sqlite://{}", dir.path().join(".ferry/dev.db").display())
        );
    }

    #[test]
    fn network_settings_come_from_the_store_section() {
        let dir = tempfile::tempdir().unwrap();
        let over = |cfg: PathBuf| Overrides {
            config: Some(cfg),
            ..Default::default()
        };
        let cfg = write(dir.path(), "[store]\nurl = \"s3://b/p\"\n");
        assert_eq!(
            resolve(&over(cfg), &|_| None).unwrap().network,
            Network::DEFAULT
        );
        let cfg = write(
            dir.path(),
            "[store]\nconnect_timeout = \"2s\"\nread_timeout = \"1500ms\"\nretries = 0\n",
        );
        let n = resolve(&over(cfg), &|_| None).unwrap().network;
        assert_eq!(
            n,
            Network {
                connect_timeout: Duration::from_secs(2),
                read_timeout: Duration::from_millis(1500),
                retries: 0
            }
        );
        assert_eq!(n.worst_case(), Duration::from_millis(3500));
        for (text, named) in [
            ("read_timeout = \"0s\"", "read_timeout"),
            ("connect_timeout = \"soon\"", "connect_timeout"),
            ("retries = 99", "retries"),
        ] {
            let cfg = write(dir.path(), &format!("[store]\n{text}\n"));
            let err = resolve(&over(cfg), &|_| None).unwrap_err().to_string();
            assert!(err.contains(named), "{err}");
        }
        assert_eq!(Network::backoff(1), Duration::from_millis(500));
        assert_eq!(Network::backoff(2), Duration::from_secs(1));
        assert_eq!(Network::backoff(10), Duration::from_secs(8));
        // 4 tries of 40 s, and 0.5 + 1 + 2 s between them.
        assert_eq!(
            Network::DEFAULT.worst_case(),
            Duration::from_millis(163_500)
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 days").is_err());
    }

    /// Found while writing the `config` fuzz target: a large count with a unit overflowed the
    /// multiplication (a panic in debug builds, a wrong timeout in release ones).
    #[test]
    fn durations_too_long_for_their_unit_are_refused() {
        for text in [
            "213503982334602d",
            "307445734561825861m",
            "5124095576030432h",
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains("too long"), "{text}: {err}");
        }
        assert_eq!(
            parse_duration("18446744073709551615").unwrap(),
            Duration::from_secs(u64::MAX)
        );
    }
}
