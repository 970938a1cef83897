//! The `ferry deploy` keys of `ferry.toml`: per environment (flattened into
//! [`EnvSection`](crate::config::EnvSection)) the hooks, the backup policy and what a failed
//! release may do to the database; and the top-level `[git]` section.
//!
//! ```toml
//! [env.production]
//! pre_deploy = "./scripts/announce.sh"     # non-zero exit refuses the deploy (exit 3)
//! post_deploy = "./scripts/warm-cache.sh"  # non-zero exit rolls the deploy back
//! backup = "always"                        # default "auto": only when migrations are pending
//! restore_on_failure = true                # an irreversible migration: restore the backup
//!
//! [git]
//! tag = true                               # tag the deployed commit, move `live`/`last_live`
//! ```
//!
//! Parsed here, checked (`validate`) with errors naming the key; used by `ferry-deploy`.

use serde::Deserialize;

use crate::CoreError;

/// When `ferry deploy` takes a backup before migrating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupPolicy {
    /// Only when at least one migration is pending (the default).
    #[default]
    Auto,
    /// Before every deploy, even with nothing to migrate.
    Always,
}

/// The deploy keys of one `[env.<name>]` section.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct DeploySection {
    /// A shell command run before anything changes; a non-zero exit refuses the deploy.
    pub pre_deploy: Option<String>,
    /// A shell command run after the smoke checks; a non-zero exit rolls the deploy back.
    pub post_deploy: Option<String>,
    /// `"auto"` (default) or `"always"`.
    pub backup: Option<BackupPolicy>,
    /// When a failed deploy applied an irreversible migration: restore the pre-deploy backup
    /// (true) or stop and leave the decision to a DBA (false, the default).
    pub restore_on_failure: Option<bool>,
    /// Longest a hook may run, e.g. "5m" (default 10m).
    pub hook_timeout: Option<String>,
}

impl DeploySection {
    /// Checks the values that serde cannot: non-empty hooks, a parsable timeout.
    pub fn validate(&self, env: &str) -> Result<(), CoreError> {
        for (key, value) in [
            ("pre_deploy", &self.pre_deploy),
            ("post_deploy", &self.post_deploy),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(CoreError::BadValue {
                    what: format!("env.{env}.{key}"),
                    value: String::new(),
                    reason: "a hook is a shell command; remove the key or give a command".into(),
                });
            }
        }
        if let Some(t) = &self.hook_timeout {
            crate::config::parse_duration(t).map_err(|reason| CoreError::BadValue {
                what: format!("env.{env}.hook_timeout"),
                value: t.clone(),
                reason,
            })?;
        }
        Ok(())
    }

    /// The hook timeout (default ten minutes).
    pub fn hook_timeout(&self) -> std::time::Duration {
        self.hook_timeout
            .as_deref()
            .and_then(|t| crate::config::parse_duration(t).ok())
            .unwrap_or(std::time::Duration::from_secs(600))
    }
}

/// `[git]`: what a successful deploy does to the repository ferry runs in.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitSection {
    /// Tag the deployed commit (`HEAD`) with the release version and move the `live` and
    /// `last_live` tags, so `git checkout live` is the code that runs.
    #[serde(default)]
    pub tag: bool,
    /// Only deploys to this environment tag and move the refs (default: every environment).
    pub env: Option<String>,
}

impl GitSection {
    /// Whether a deploy to `env` tags the repository.
    pub fn tags(&self, env: &str) -> bool {
        self.tag && self.env.as_deref().is_none_or(|e| e == env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_and_validation() {
        let s: DeploySection = toml::from_str(
            "pre_deploy = \"true\"\nbackup = \"always\"\nrestore_on_failure = true\nhook_timeout = \"30s\"",
        )
        .unwrap();
        assert_eq!(s.backup, Some(BackupPolicy::Always));
        assert_eq!(s.hook_timeout(), std::time::Duration::from_secs(30));
        s.validate("dev").unwrap();
        let bad: Result<DeploySection, _> = toml::from_str("backup = \"sometimes\"");
        assert!(bad.is_err());
        let empty: DeploySection = toml::from_str("post_deploy = \" \"").unwrap();
        let e = empty.validate("prod").unwrap_err().to_string();
        assert!(e.contains("env.prod.post_deploy"), "{e}");
        let g = GitSection {
            tag: true,
            env: Some("production".into()),
        };
        assert!(g.tags("production") && !g.tags("dev"));
    }

    #[test]
    fn keys_sit_in_the_env_section_beside_the_fleet_keys() {
        let file: crate::ConfigFile = toml::from_str(
            "[git]\ntag = true\n[env.dev]\ndatabase_url = \"sqlite:x.db\"\npre_deploy = \"./hook\"\n\
             restore_on_failure = true\nsettle_seconds = 0\n[[env.dev.smoke]]\nname = \"s\"\nsql = \"SELECT 1\"\n",
        )
        .unwrap();
        let dev = &file.env["dev"];
        assert_eq!(dev.deploy.pre_deploy.as_deref(), Some("./hook"));
        assert_eq!(dev.deploy.restore_on_failure, Some(true));
        assert_eq!(dev.fleet.smoke.len(), 1);
        assert!(file.git.tags("dev"));
        // A typo is still an error naming the key.
        let bad = toml::from_str::<crate::ConfigFile>("[env.dev]\nrestore_on_falure = true\n")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("restore_on_falure"), "{bad}");
    }
}
