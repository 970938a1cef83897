//! The process environment, read once: every variable of [`ferry_core::env::VARS`] (the one
//! list of what ferry reads) is captured on first use, and everything the CLI derives from the
//! environment (the clock, the actor, the S3 endpoint, registry options, the log filter) is
//! computed here from that capture and handed to the libraries as values. clap reads the
//! variables behind flags itself; `${VAR}` in `ferry.toml` reads the variables the file
//! names, through [`config_lookup`]. Nothing else in ferry calls `std::env::var`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use ferry_core::CoreError;
use ferry_core::env as vars;

/// The captured values of [`ferry_core::env::VARS`] (empty values count as unset).
#[derive(Debug, Clone, Default)]
pub(crate) struct Environment {
    values: HashMap<&'static str, String>,
}

impl Environment {
    /// The process's environment, read once.
    pub(crate) fn get() -> &'static Environment {
        static CAPTURED: OnceLock<Environment> = OnceLock::new();
        CAPTURED.get_or_init(|| Environment::from_lookup(|name| std::env::var(name).ok()))
    }

    /// An environment read through `lookup` (tests pass their own).
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Environment {
        Environment {
            values: vars::VARS
                .iter()
                .filter_map(|v| Some((v.name, lookup(v.name).filter(|x| !x.is_empty())?)))
                .collect(),
        }
    }

    /// One of [`ferry_core::env::VARS`]; asking for any other is a bug (add it to the list).
    pub(crate) fn var(&self, name: &str) -> Option<&str> {
        debug_assert!(
            vars::is_known(name),
            "{name} is not in ferry_core::env::VARS"
        );
        self.values.get(name).map(String::as_str)
    }

    /// For [`ferry_core::actor::actor`].
    pub(crate) fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |name: &str| self.var(name).map(str::to_string)
    }

    /// `FERRY_NOW` (RFC 3339) pins the clock, so freeze windows can be tested; else the real time.
    pub(crate) fn now(&self) -> Result<DateTime<Utc>, CoreError> {
        match self.var(vars::FERRY_NOW) {
            Some(text) => DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| CoreError::BadValue {
                    what: vars::FERRY_NOW.into(),
                    value: text.to_string(),
                    reason: format!("{e}; expected RFC 3339, e.g. 2026-11-24T10:00:00Z"),
                }),
            None => Ok(Utc::now()),
        }
    }

    /// Who is running ferry, for history records.
    pub(crate) fn actor(&self) -> String {
        ferry_core::actor::actor(&self.lookup())
    }

    /// The S3 endpoint the environment names: `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`
    /// (both beat `[store] endpoint`).
    pub(crate) fn s3_endpoint(&self) -> Option<String> {
        self.var(vars::AWS_ENDPOINT_URL_S3)
            .or_else(|| self.var(vars::AWS_ENDPOINT_URL))
            .map(str::to_string)
    }

    /// Registries over plain HTTP, registry credentials, and the docker configuration:
    /// `FERRY_INSECURE_REGISTRIES` (comma-separated), `FERRY_REGISTRY_USERNAME` and
    /// `FERRY_REGISTRY_PASSWORD`, `$DOCKER_CONFIG/config.json` (else
    /// `$HOME/.docker/config.json`).
    pub(crate) fn registry_options(
        &self,
        network: ferry_core::config::Network,
    ) -> ferry_promote::RegistryOptions {
        let insecure = self
            .var(vars::FERRY_INSECURE_REGISTRIES)
            .map(|v| {
                v.split(',')
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let credentials = match (
            self.var(vars::FERRY_REGISTRY_USERNAME),
            self.var(vars::FERRY_REGISTRY_PASSWORD),
        ) {
            (Some(username), Some(password)) => Some(ferry_promote::Credentials {
                username: username.to_string(),
                password: password.to_string(),
            }),
            _ => None,
        };
        let docker_config = self
            .var(vars::DOCKER_CONFIG)
            .map(|d| PathBuf::from(d).join("config.json"))
            .or_else(|| {
                self.var(vars::HOME)
                    .map(|h| PathBuf::from(h).join(".docker/config.json"))
            });
        ferry_promote::RegistryOptions {
            network,
            insecure,
            credentials,
            docker_config,
        }
    }

    /// The log filter (`RUST_LOG`), if set.
    pub(crate) fn log_filter(&self) -> Option<&str> {
        self.var(vars::RUST_LOG)
    }
}

/// `${VAR}` in `ferry.toml`: any variable the file names (the user chose it).
pub(crate) fn config_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> Environment {
        Environment::from_lookup(|k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn registry_options_come_from_the_environment() {
        let e = env(&[
            ("FERRY_INSECURE_REGISTRIES", "a.lan:5000, b.lan"),
            ("FERRY_REGISTRY_USERNAME", "ci"),
            ("FERRY_REGISTRY_PASSWORD", "s3cret"),
            ("DOCKER_CONFIG", "/cfg"),
            ("HOME", "/home/x"),
        ]);
        let o = e.registry_options(Default::default());
        assert_eq!(o.insecure, ["a.lan:5000", "b.lan"]);
        assert_eq!(
            o.credentials,
            Some(ferry_promote::Credentials {
                username: "ci".into(),
                password: "s3cret".into()
            })
        );
        assert_eq!(o.docker_config, Some(PathBuf::from("/cfg/config.json")));
        assert!(!format!("{o:?}").contains("s3cret"));
        let o = env(&[("HOME", "/home/x")]).registry_options(Default::default());
        assert_eq!(o.credentials, None);
        assert_eq!(
            o.docker_config,
            Some(PathBuf::from("/home/x/.docker/config.json"))
        );
    }

    #[test]
    fn the_s3_endpoint_and_the_clock() {
        assert_eq!(env(&[]).s3_endpoint(), None);
        assert_eq!(
            env(&[("AWS_ENDPOINT_URL", "http://a")])
                .s3_endpoint()
                .as_deref(),
            Some("http://a")
        );
        assert_eq!(
            env(&[
                ("AWS_ENDPOINT_URL", "http://a"),
                ("AWS_ENDPOINT_URL_S3", "http://s3")
            ])
            .s3_endpoint()
            .as_deref(),
            Some("http://s3")
        );
        let pinned = env(&[("FERRY_NOW", "2026-11-24T10:00:00Z")]).now().unwrap();
        assert_eq!(pinned.to_rfc3339(), "2026-11-24T10:00:00+00:00");
        let err = env(&[("FERRY_NOW", "tuesday")])
            .now()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("FERRY_NOW") && err.contains("RFC 3339"),
            "{err}"
        );
        assert_eq!(env(&[("FERRY_ACTOR", "bot")]).actor(), "bot");
    }

    /// Every variable behind a flag is in the one list, as a setting the test harness clears.
    #[test]
    fn every_flag_variable_is_in_the_list() {
        fn walk(cmd: &clap::Command, out: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if let Some(var) = arg.get_env() {
                    out.push(var.to_string_lossy().into_owned());
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, out);
            }
        }
        let mut found = Vec::new();
        walk(
            &<crate::opt::Cli as clap::CommandFactory>::command(),
            &mut found,
        );
        assert!(found.contains(&"DATABASE_URL".to_string()), "{found:?}");
        let settings: Vec<_> = vars::settings().collect();
        for var in &found {
            assert!(
                settings.contains(&var.as_str()),
                "{var} backs a flag but is not a setting in ferry_core::env::VARS"
            );
        }
    }
}
