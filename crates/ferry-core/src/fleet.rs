//! The per-environment fleet keys of `ferry.toml` (`ferry rollout`, `ferry smoke`, and the
//! rollout step of `ferry deploy`): the hosts, the command that deploys to one, batches, the load
//! balancer, timeouts and smoke checks. [`FleetConfig`] is flattened into
//! [`EnvSection`](crate::config::EnvSection), so the keys sit directly in `[env.NAME]`.
//!
//! Parsing never fails on the *values*; [`FleetConfig::validate`] does, naming the key
//! (`env.production.batch_size`) and the way out, so a command that does not touch the fleet
//! (`ferry migrate`) is not blocked by a typo in it. The accessors apply the documented defaults.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;

use crate::CoreError;

pub const DEFAULT_SETTLE_SECONDS: f64 = 60.0;
pub const DEFAULT_HEALTH_TIMEOUT_SECONDS: f64 = 5.0;
pub const DEFAULT_MAX_FAILED: usize = 3;
pub const DEFAULT_DRAIN_SECONDS: f64 = 30.0;
pub const DEFAULT_TESTBED_SOAK_SECONDS: f64 = 300.0;
pub const DEFAULT_SMOKE_TIMEOUT_SECONDS: f64 = 5.0;

/// The fleet keys of one `[env.NAME]` section.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct FleetConfig {
    /// Run once per host: `{host} {version} {digest} {name} {env}` are filled in, shell-quoted.
    pub deploy_command: Option<String>,
    /// What a rollback runs instead of `deploy_command` with the previous release (the same
    /// placeholders, plus `{undeploy}`: the version being taken off).
    pub undeploy_command: Option<String>,
    /// Hosts per batch: a number or a percentage of the hosts (`"25%"`). Default 1.
    pub batch_size: Option<BatchSize>,
    /// Wait after a host's deploy before its health is checked again. Default 60.
    pub settle_seconds: Option<f64>,
    /// Per health (and version) request. Default 5.
    pub health_timeout_seconds: Option<f64>,
    /// More stopped hosts than this marks the rollout failed. Default 3.
    pub max_failed: Option<usize>,
    /// Most time to wait for a draining host's sessions to reach 0. Default 30.
    pub drain_seconds: Option<f64>,
    /// This host goes first, alone, and soaks.
    pub testbed: Option<String>,
    /// How long the test bed is health-checked (every few seconds) before the rest. Default 300.
    pub testbed_soak_seconds: Option<f64>,
    /// Without a `[load_balancer]`: takes `{host}` out of traffic (optional).
    pub drain_command: Option<String>,
    /// Without a `[load_balancer]`: puts `{host}` back (optional).
    pub undrain_command: Option<String>,
    pub load_balancer: Option<LoadBalancerConfig>,
    #[serde(default)]
    pub hosts: Vec<HostConfig>,
    #[serde(default)]
    pub smoke: Vec<SmokeCheck>,
}

/// `batch_size = 2` or `batch_size = "25%"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum BatchSize {
    Count(i64),
    Text(String),
}

/// `[env.NAME.load_balancer]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerConfig {
    /// Only `"haproxy"` (its Runtime API).
    pub kind: Option<String>,
    /// `unix:///run/haproxy/admin.sock` or `tcp://127.0.0.1:9999`.
    pub admin: Option<String>,
    /// The backend whose servers are named after the hosts.
    pub backend: Option<String>,
}

/// The kinds of load balancer ferry drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadBalancerKind {
    Haproxy,
}

/// Where HAProxy's Runtime API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAddress {
    Unix(std::path::PathBuf),
    /// `host:port`
    Tcp(String),
}

impl std::fmt::Display for AdminAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminAddress::Unix(p) => write!(f, "unix://{}", p.display()),
            AdminAddress::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

impl LoadBalancerConfig {
    pub fn kind(&self) -> LoadBalancerKind {
        LoadBalancerKind::Haproxy
    }

    /// The admin address, parsed (valid after [`FleetConfig::validate`]).
    pub fn admin_address(&self) -> Result<AdminAddress, String> {
        let admin = self.admin.as_deref().unwrap_or("");
        if let Some(path) = admin.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(
                    "unix:// needs a socket path, e.g. unix:///run/haproxy/admin.sock".into(),
                );
            }
            return Ok(AdminAddress::Unix(path.into()));
        }
        if let Some(addr) = admin.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            match addr.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    return Ok(AdminAddress::Tcp(addr.to_string()));
                }
                _ => return Err("tcp:// needs HOST:PORT, e.g. tcp://127.0.0.1:9999".into()),
            }
        }
        Err(
            "expected unix:///path/to/admin.sock or tcp://HOST:PORT (HAProxy's `stats socket ... level admin`)"
                .into(),
        )
    }
}

/// `[[env.NAME.hosts]]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Also the server's name in the load balancer's backend.
    pub name: String,
    /// `200` is healthy.
    pub health_url: String,
    /// The healthy answer must also contain this text.
    pub health_contains: Option<String>,
    /// Must answer with the release's version (or digest).
    pub version_url: Option<String>,
}

/// `[[env.NAME.smoke]]`: an HTTP GET or a SQL query in a read-only transaction.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeCheck {
    pub name: String,
    /// A URL to GET.
    pub http: Option<String>,
    /// The expected HTTP status (default 200).
    pub status: Option<u16>,
    /// Text the HTTP body must contain.
    pub contains: Option<String>,
    /// A query run on the environment's database in a read-only transaction.
    pub sql: Option<String>,
    /// What the first column of the first row must read as (e.g. `"true"`, `"1"`).
    pub expect: Option<String>,
    /// Default 5.
    pub timeout_seconds: Option<f64>,
}

/// What a smoke check does, after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmokeKind {
    Http,
    Sql,
}

impl SmokeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SmokeKind::Http => "http",
            SmokeKind::Sql => "sql",
        }
    }
}

impl SmokeCheck {
    pub fn kind(&self) -> SmokeKind {
        if self.sql.is_some() {
            SmokeKind::Sql
        } else {
            SmokeKind::Http
        }
    }

    pub fn timeout(&self) -> Duration {
        secs(
            self.timeout_seconds
                .unwrap_or(DEFAULT_SMOKE_TIMEOUT_SECONDS),
        )
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

impl FleetConfig {
    pub fn settle(&self) -> Duration {
        secs(self.settle_seconds.unwrap_or(DEFAULT_SETTLE_SECONDS))
    }

    pub fn health_timeout(&self) -> Duration {
        secs(
            self.health_timeout_seconds
                .unwrap_or(DEFAULT_HEALTH_TIMEOUT_SECONDS),
        )
    }

    pub fn max_failed(&self) -> usize {
        self.max_failed.unwrap_or(DEFAULT_MAX_FAILED)
    }

    pub fn drain(&self) -> Duration {
        secs(self.drain_seconds.unwrap_or(DEFAULT_DRAIN_SECONDS))
    }

    pub fn testbed_soak(&self) -> Duration {
        secs(
            self.testbed_soak_seconds
                .unwrap_or(DEFAULT_TESTBED_SOAK_SECONDS),
        )
    }

    pub fn host(&self, name: &str) -> Option<&HostConfig> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Hosts per batch out of `total` (at least 1): a count as given, a percentage rounded up.
    pub fn batch_len(&self, total: usize) -> usize {
        let n = match &self.batch_size {
            None => 1,
            Some(BatchSize::Count(n)) => (*n).max(1) as usize,
            Some(BatchSize::Text(t)) => match parse_batch_text(t) {
                Ok(BatchLen::Count(n)) => n,
                Ok(BatchLen::Percent(p)) => ((total as f64) * p / 100.0).ceil() as usize,
                Err(_) => 1,
            },
        };
        n.clamp(1, total.max(1))
    }

    /// Checks every fleet key of `[env.<env>]`; the error names the key and the way out.
    pub fn validate(&self, env: &str) -> Result<(), CoreError> {
        let bad = |key: &str, value: String, reason: String| CoreError::BadValue {
            what: format!("`env.{env}.{key}` in ferry.toml"),
            value,
            reason,
        };
        let seconds = |key: &str, v: Option<f64>, positive: bool| -> Result<(), CoreError> {
            match v {
                Some(s) if !s.is_finite() || s < 0.0 || (positive && s == 0.0) => Err(bad(
                    key,
                    s.to_string(),
                    if positive {
                        "must be a number of seconds above 0".into()
                    } else {
                        "must be a number of seconds, 0 or more".into()
                    },
                )),
                _ => Ok(()),
            }
        };
        seconds("settle_seconds", self.settle_seconds, false)?;
        seconds("health_timeout_seconds", self.health_timeout_seconds, true)?;
        seconds("drain_seconds", self.drain_seconds, false)?;
        seconds("testbed_soak_seconds", self.testbed_soak_seconds, false)?;

        match &self.batch_size {
            None => {}
            Some(BatchSize::Count(n)) if *n >= 1 => {}
            Some(BatchSize::Count(n)) => {
                return Err(bad(
                    "batch_size",
                    n.to_string(),
                    "must be at least 1 (hosts per batch), or a percentage such as \"25%\"".into(),
                ));
            }
            Some(BatchSize::Text(t)) => {
                parse_batch_text(t)
                    .map_err(|reason| bad("batch_size", format!("{t:?}"), reason))?;
            }
        }

        let mut names = BTreeSet::new();
        for (i, h) in self.hosts.iter().enumerate() {
            let key = |k: &str| format!("hosts[{i}].{k}");
            if h.name.trim().is_empty() {
                return Err(bad(
                    &key("name"),
                    String::new(),
                    "a host needs a name".into(),
                ));
            }
            if h.name.contains(['/', ' ', '\n', '\t']) {
                return Err(bad(
                    &key("name"),
                    h.name.clone(),
                    "a host name is also its server name in the load balancer: no spaces or `/`"
                        .into(),
                ));
            }
            if !names.insert(h.name.as_str()) {
                return Err(bad(
                    &key("name"),
                    h.name.clone(),
                    "another host has this name; host names must be unique".into(),
                ));
            }
            check_http_url(&h.health_url)
                .map_err(|r| bad(&key("health_url"), h.health_url.clone(), r))?;
            if let Some(u) = &h.version_url {
                check_http_url(u).map_err(|r| bad(&key("version_url"), u.clone(), r))?;
            }
        }

        if let Some(tb) = &self.testbed
            && !names.contains(tb.as_str())
        {
            return Err(bad(
                "testbed",
                tb.clone(),
                format!(
                    "is not one of the hosts ({}); name a host from [[env.{env}.hosts]]",
                    if names.is_empty() {
                        "none are configured".to_string()
                    } else {
                        names.iter().copied().collect::<Vec<_>>().join(", ")
                    }
                ),
            ));
        }
        // The order of timeouts: a soak must fit at least one health request.
        if self.testbed.is_some() {
            let soak = self.testbed_soak();
            if !soak.is_zero() && soak < self.health_timeout() {
                return Err(bad(
                    "testbed_soak_seconds",
                    soak.as_secs_f64().to_string(),
                    format!(
                        "is shorter than health_timeout_seconds ({}): the soak could not finish one health check; raise it or lower health_timeout_seconds",
                        self.health_timeout().as_secs_f64()
                    ),
                ));
            }
        }

        if let Some(lb) = &self.load_balancer {
            match lb.kind.as_deref() {
                None | Some("haproxy") => {}
                Some(other) => {
                    return Err(bad(
                        "load_balancer.kind",
                        other.into(),
                        "ferry drives `haproxy` (its Runtime API); without a load balancer use drain_command/undrain_command".into(),
                    ));
                }
            }
            if lb.backend.as_deref().is_none_or(|b| b.trim().is_empty()) {
                return Err(bad(
                    "load_balancer.backend",
                    String::new(),
                    "a load balancer needs the backend whose servers are named after the hosts, e.g. backend = \"app\"".into(),
                ));
            }
            lb.admin_address().map_err(|r| {
                bad(
                    "load_balancer.admin",
                    lb.admin.clone().unwrap_or_default(),
                    r,
                )
            })?;
            for key in ["drain_command", "undrain_command"] {
                let set = if key == "drain_command" {
                    self.drain_command.is_some()
                } else {
                    self.undrain_command.is_some()
                };
                if set {
                    return Err(bad(
                        key,
                        String::new(),
                        "is run only without a [load_balancer], which drains hosts itself; remove one of the two".into(),
                    ));
                }
            }
        }

        let mut smoke_names = BTreeSet::new();
        for (i, c) in self.smoke.iter().enumerate() {
            let key = |k: &str| format!("smoke[{i}].{k}");
            if c.name.trim().is_empty() {
                return Err(bad(
                    &key("name"),
                    String::new(),
                    "a smoke check needs a name".into(),
                ));
            }
            if !smoke_names.insert(c.name.as_str()) {
                return Err(bad(
                    &key("name"),
                    c.name.clone(),
                    "another smoke check has this name; names must be unique".into(),
                ));
            }
            match (&c.http, &c.sql) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(bad(
                        &key("http"),
                        String::new(),
                        "a smoke check has exactly one of `http = \"URL\"` or `sql = \"SELECT ...\"`".into(),
                    ));
                }
                (Some(u), None) => {
                    check_http_url(u).map_err(|r| bad(&key("http"), u.clone(), r))?;
                    if c.expect.is_some() {
                        return Err(bad(
                            &key("expect"),
                            String::new(),
                            "`expect` belongs to SQL checks; an HTTP check uses `status` and `contains`".into(),
                        ));
                    }
                }
                (None, Some(sql)) => {
                    if sql.trim().is_empty() {
                        return Err(bad(&key("sql"), String::new(), "the query is empty".into()));
                    }
                    if c.status.is_some() || c.contains.is_some() {
                        return Err(bad(
                            &key(if c.status.is_some() { "status" } else { "contains" }),
                            String::new(),
                            "`status` and `contains` belong to HTTP checks; a SQL check uses `expect`".into(),
                        ));
                    }
                }
            }
            if let Some(s) = c.status
                && !(100..=599).contains(&s)
            {
                return Err(bad(
                    &key("status"),
                    s.to_string(),
                    "an HTTP status is 100 to 599".into(),
                ));
            }
            seconds(&key("timeout_seconds"), c.timeout_seconds, true)?;
        }
        Ok(())
    }
}

enum BatchLen {
    Count(usize),
    Percent(f64),
}

fn parse_batch_text(t: &str) -> Result<BatchLen, String> {
    let t = t.trim();
    if let Some(p) = t.strip_suffix('%') {
        let p: f64 = p
            .trim()
            .parse()
            .map_err(|_| "expected a percentage such as \"25%\"".to_string())?;
        if !(p > 0.0 && p <= 100.0) {
            return Err("a percentage must be above 0% and at most 100%".into());
        }
        return Ok(BatchLen::Percent(p));
    }
    match t.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(BatchLen::Count(n)),
        _ => Err("expected a number of hosts (1 or more) or a percentage such as \"25%\"".into()),
    }
}

fn check_http_url(u: &str) -> Result<(), String> {
    match url::Url::parse(u) {
        Ok(p) if matches!(p.scheme(), "http" | "https") && p.host_str().is_some() => Ok(()),
        Ok(_) => Err("expected an http:// or https:// URL with a host".into()),
        Err(e) => Err(format!("not a URL: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigFile;

    fn parse(env_body: &str) -> FleetConfig {
        let text = format!("[env.prod]\n{env_body}");
        let file: ConfigFile = toml::from_str(&text).unwrap();
        file.env["prod"].fleet.clone()
    }

    fn err(env_body: &str) -> String {
        parse(env_body).validate("prod").unwrap_err().to_string()
    }

    const HOSTS: &str = "[[env.prod.hosts]]\nname = \"h1\"\nhealth_url = \"http://127.0.0.1:1/_status\"\n\
                         [[env.prod.hosts]]\nname = \"h2\"\nhealth_url = \"http://127.0.0.1:2/_status\"\n";

    #[test]
    fn the_issue_example_parses_beside_the_other_env_keys() {
        let f = parse(
            "database_url = \"sqlite:x.db\"\ndeploy_command = \"./deploy.sh {host} {version} {digest}\"\n\
             batch_size = \"25%\"\nsettle_seconds = 0\nhealth_timeout_seconds = 0.5\nmax_failed = 1\n\
             drain_seconds = 30\ntestbed = \"h1\"\ntestbed_soak_seconds = 1\n\
             [env.prod.load_balancer]\nkind = \"haproxy\"\nadmin = \"unix:///run/haproxy/admin.sock\"\nbackend = \"app\"\n\
             [[env.prod.hosts]]\nname = \"h1\"\nhealth_url = \"http://10.0.0.1:8080/_status\"\nhealth_contains = \"ok\"\nversion_url = \"http://10.0.0.1:8080/version\"\n\
             [[env.prod.smoke]]\nname = \"home\"\nhttp = \"https://shop.example/\"\ncontains = \"Welcome\"\n\
             [[env.prod.smoke]]\nname = \"orders\"\nsql = \"SELECT count(*) > 0 FROM orders\"\nexpect = \"true\"\n",
        );
        f.validate("prod").unwrap();
        assert_eq!(f.batch_size, Some(BatchSize::Text("25%".into())));
        assert_eq!(f.batch_len(4), 1);
        assert_eq!(f.batch_len(10), 3);
        assert_eq!(f.settle(), Duration::ZERO);
        assert_eq!(f.max_failed(), 1);
        assert_eq!(
            f.load_balancer.as_ref().unwrap().admin_address().unwrap(),
            AdminAddress::Unix("/run/haproxy/admin.sock".into())
        );
        assert_eq!(f.smoke[1].kind(), SmokeKind::Sql);
        // Defaults.
        let d = FleetConfig::default();
        assert_eq!(d.settle(), Duration::from_secs(60));
        assert_eq!(d.batch_len(5), 1);
        assert_eq!(d.max_failed(), 3);
    }

    #[test]
    fn an_unknown_key_in_the_env_section_is_still_refused() {
        let text = "[env.prod]\ndeploy_comand = \"x\"\n";
        let e = toml::from_str::<ConfigFile>(text).unwrap_err().to_string();
        assert!(e.contains("deploy_comand"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = err(&format!("testbed = \"h9\"\n{HOSTS}"));
        assert!(
            e.contains("env.prod.testbed") && e.contains("h1, h2"),
            "{e}"
        );
        let e = err(&format!("batch_size = 0\n{HOSTS}"));
        assert!(e.contains("env.prod.batch_size"), "{e}");
        let e = err(&format!("batch_size = \"150%\"\n{HOSTS}"));
        assert!(
            e.contains("env.prod.batch_size") && e.contains("100%"),
            "{e}"
        );
        let e = err(&format!("batch_size = \"0%\"\n{HOSTS}"));
        assert!(e.contains("env.prod.batch_size"), "{e}");
        let e = err(&format!(
            "{HOSTS}[env.prod.load_balancer]\nadmin = \"tcp://127.0.0.1:9999\"\n"
        ));
        assert!(e.contains("env.prod.load_balancer.backend"), "{e}");
        let e = err(&format!(
            "{HOSTS}[env.prod.load_balancer]\nadmin = \"http://x\"\nbackend = \"app\"\n"
        ));
        assert!(e.contains("env.prod.load_balancer.admin"), "{e}");
        let e = err(&format!(
            "testbed = \"h1\"\ntestbed_soak_seconds = 2\nhealth_timeout_seconds = 5\n{HOSTS}"
        ));
        assert!(e.contains("env.prod.testbed_soak_seconds"), "{e}");
        let e = err(&format!("health_timeout_seconds = 0\n{HOSTS}"));
        assert!(e.contains("env.prod.health_timeout_seconds"), "{e}");
        let e = err(&format!("settle_seconds = -1\n{HOSTS}"));
        assert!(e.contains("env.prod.settle_seconds"), "{e}");
        let e = err("[[env.prod.hosts]]\nname = \"h1\"\nhealth_url = \"ftp://x/\"\n");
        assert!(e.contains("env.prod.hosts[0].health_url"), "{e}");
        let e = err(&format!(
            "{HOSTS}[[env.prod.hosts]]\nname = \"h1\"\nhealth_url = \"http://x/\"\n"
        ));
        assert!(e.contains("env.prod.hosts[2].name"), "{e}");
        let e = err("[[env.prod.smoke]]\nname = \"a\"\nhttp = \"http://x/\"\nsql = \"SELECT 1\"\n");
        assert!(e.contains("env.prod.smoke[0]"), "{e}");
        let e = err(&format!(
            "drain_command = \"x\"\n{HOSTS}[env.prod.load_balancer]\nadmin = \"tcp://127.0.0.1:9\"\nbackend = \"app\"\n"
        ));
        assert!(e.contains("env.prod.drain_command"), "{e}");
    }
}
