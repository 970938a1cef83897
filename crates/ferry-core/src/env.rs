//! Every environment variable ferry reads, in one list: the CLI reads exactly these, once, at
//! start-up (clap reads the ones that back a flag), and the test harness clears the ones that
//! change what a command does before it runs `ferry`, from this same list.
//!
//! Not here: the variables a `ferry.toml` names as `${VAR}` (the file chooses them), the AWS
//! SDK's own credential and region chain (`AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, `AWS_REGION`,
//! ...), and `PATH`, where dump tools and credential helpers are found.

/// One variable and what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Var {
    pub name: &'static str,
    /// What it sets (README's words).
    pub purpose: &'static str,
    /// Whether it changes what a command does, so a test harness must clear it (a test sets
    /// it explicitly when it wants it). Identity and location variables (`USER`, `HOME`, a
    /// CI's job id) are left alone.
    pub setting: bool,
}

const fn setting(name: &'static str, purpose: &'static str) -> Var {
    Var {
        name,
        purpose,
        setting: true,
    }
}

const fn identity(name: &'static str, purpose: &'static str) -> Var {
    Var {
        name,
        purpose,
        setting: false,
    }
}

pub const DATABASE_URL: &str = "DATABASE_URL";
pub const FERRY_CONFIG: &str = "FERRY_CONFIG";
pub const FERRY_ENV: &str = "FERRY_ENV";
pub const FERRY_MIGRATIONS: &str = "FERRY_MIGRATIONS";
pub const FERRY_LOCK_TIMEOUT: &str = "FERRY_LOCK_TIMEOUT";
pub const FERRY_DDL_LOCK_TIMEOUT: &str = "FERRY_DDL_LOCK_TIMEOUT";
pub const FERRY_DDL_LOCK_RETRIES: &str = "FERRY_DDL_LOCK_RETRIES";
pub const FERRY_STORE: &str = "FERRY_STORE";
pub const FERRY_OUTPUT: &str = "FERRY_OUTPUT";
pub const FERRY_COMPAT_OLD_QUERIES: &str = "FERRY_COMPAT_OLD_QUERIES";
pub const FERRY_COMPAT_PARALLEL: &str = "FERRY_COMPAT_PARALLEL";
pub const FERRY_NOW: &str = "FERRY_NOW";
pub const FERRY_ACTOR: &str = "FERRY_ACTOR";
pub const FERRY_INSECURE_REGISTRIES: &str = "FERRY_INSECURE_REGISTRIES";
pub const FERRY_REGISTRY_USERNAME: &str = "FERRY_REGISTRY_USERNAME";
pub const FERRY_REGISTRY_PASSWORD: &str = "FERRY_REGISTRY_PASSWORD";
pub const AWS_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
pub const AWS_ENDPOINT_URL_S3: &str = "AWS_ENDPOINT_URL_S3";
pub const DOCKER_CONFIG: &str = "DOCKER_CONFIG";
pub const HOME: &str = "HOME";
pub const RUST_LOG: &str = "RUST_LOG";

/// Every variable ferry reads.
pub const VARS: &[Var] = &[
    // Flags' variables (clap reads them; `ferry-cli`'s tests check that this list has them all).
    setting(DATABASE_URL, "--database-url"),
    setting(FERRY_CONFIG, "--config"),
    setting(FERRY_ENV, "--env"),
    setting(FERRY_MIGRATIONS, "--migrations"),
    setting(FERRY_LOCK_TIMEOUT, "--lock-timeout"),
    setting(FERRY_DDL_LOCK_TIMEOUT, "--ddl-lock-timeout"),
    setting(FERRY_DDL_LOCK_RETRIES, "--ddl-lock-retries"),
    setting(FERRY_STORE, "--store"),
    setting(FERRY_OUTPUT, "--output"),
    setting(FERRY_COMPAT_OLD_QUERIES, "compat check --old-queries"),
    // Settings without a flag.
    setting(
        FERRY_COMPAT_PARALLEL,
        "how many shadow databases `compat check` proves in at once",
    ),
    setting(FERRY_NOW, "the clock, RFC 3339 (freeze windows, tests)"),
    setting(FERRY_ACTOR, "who is recorded as running ferry"),
    setting(
        FERRY_INSECURE_REGISTRIES,
        "registries reached over plain HTTP (comma-separated host[:port])",
    ),
    setting(
        FERRY_REGISTRY_USERNAME,
        "registry username, for every registry",
    ),
    setting(
        FERRY_REGISTRY_PASSWORD,
        "registry password, for every registry",
    ),
    setting(AWS_ENDPOINT_URL, "S3 endpoint (beats [store] endpoint)"),
    setting(
        AWS_ENDPOINT_URL_S3,
        "S3 endpoint, S3 only (beats AWS_ENDPOINT_URL)",
    ),
    setting(RUST_LOG, "log filter, e.g. ferry_migrate=info"),
    // Where things are and who is running.
    identity(
        DOCKER_CONFIG,
        "directory of the docker config.json with registry credentials",
    ),
    identity(HOME, "~/.docker/config.json when DOCKER_CONFIG is not set"),
    identity("USER", "the actor: user@host"),
    identity("USERNAME", "the actor, where USER is not set"),
    identity("HOSTNAME", "the actor: user@host"),
    identity("GITHUB_ACTIONS", "the actor: a GitHub Actions run"),
    identity("GITHUB_ACTOR", "the actor: a GitHub Actions run"),
    identity("GITHUB_REPOSITORY", "the actor: a GitHub Actions run"),
    identity("GITHUB_RUN_ID", "the actor: a GitHub Actions run"),
    identity("GITLAB_CI", "the actor: a GitLab CI job"),
    identity("GITLAB_USER_LOGIN", "the actor: a GitLab CI job"),
    identity("CI_JOB_ID", "the actor: a GitLab CI job"),
];

/// The variables that change what a command does: what a test harness clears before it runs
/// `ferry`, so a developer's shell cannot change a test.
pub fn settings() -> impl Iterator<Item = &'static str> {
    VARS.iter().filter(|v| v.setting).map(|v| v.name)
}

/// Whether ferry reads `name` (the CLI refuses to look up anything else).
pub fn is_known(name: &str) -> bool {
    VARS.iter().any(|v| v.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variable_once_and_the_settings_among_them() {
        let mut names: Vec<_> = VARS.iter().map(|v| v.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a variable is listed twice");
        let settings: Vec<_> = settings().collect();
        for name in [
            DATABASE_URL,
            FERRY_STORE,
            FERRY_NOW,
            AWS_ENDPOINT_URL_S3,
            RUST_LOG,
        ] {
            assert!(settings.contains(&name), "{name}");
        }
        for name in [HOME, DOCKER_CONFIG, "USER"] {
            assert!(!settings.contains(&name) && is_known(name), "{name}");
        }
        assert!(!is_known("PATH"));
    }
}
