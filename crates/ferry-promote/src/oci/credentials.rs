//! Registry credentials, found the way Docker users keep them: the ones the caller gives for
//! every registry ([`RegistryOptions::credentials`](super::RegistryOptions)), else the docker
//! `config.json` the caller names: `credHelpers.<host>`, then
//! `credsStore`, each a `docker-credential-<helper>` program asked with `get` (the host on
//! stdin, `{"Username", "Secret"}` on stdout; the username `<token>` means the secret is an
//! identity token), then `auths.<host>` (`auth`, `username`/`password`, or `identitytoken`).
//!
//! A helper is run only when a registry asks for credentials, once per registry and command.
//! Never: put a secret in an error, a log event or a `Debug` output.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::AsyncWriteExt as _;

use crate::error::{PromoteError, Result};

/// How long a credential helper may take (it may be waiting for a keychain to unlock).
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// A username and password for one registry. Never printed: `Debug` redacts the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What answers a registry's challenge.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Auth {
    /// Basic auth, or the credentials a token service is asked with.
    Basic(Credentials),
    /// An OAuth2 refresh token (`docker login` with a registry that issues them, or a helper's
    /// `<token>` user): exchanged at the token service for an access token, never sent as Basic.
    IdentityToken(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Basic(c) => c.fmt(f),
            Auth::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// Where the credentials for one registry come from, before any helper has run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    None,
    Ready(Auth),
    /// Ask `docker-credential-<helper>`; when it has nothing for the host, use `fallback` (the
    /// `auths` entry, if any).
    Helper {
        helper: String,
        /// Where the helper was configured, for messages: `credHelpers` or `credsStore` in
        /// which file.
        origin: String,
        fallback: Option<Auth>,
    },
}

impl Source {
    /// The environment's credentials win; else the docker configuration at `path`, if it exists.
    pub(crate) fn find(
        env: Option<&Credentials>,
        path: Option<&Path>,
        host: &str,
    ) -> Result<Source> {
        if let Some(c) = env {
            return Ok(Source::Ready(Auth::Basic(c.clone())));
        }
        let Some(path) = path else {
            return Ok(Source::None);
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Source::None),
            Err(source) => {
                return Err(PromoteError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        docker_config(&text, host, path).map_err(|reason| PromoteError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, reason),
        })
    }

    /// The credentials, running the helper if there is one.
    pub(crate) async fn resolve(&self, host: &str) -> Result<Option<Auth>> {
        match self {
            Source::None => Ok(None),
            Source::Ready(auth) => Ok(Some(auth.clone())),
            Source::Helper {
                helper,
                origin,
                fallback,
            } => match run_helper(helper, &server_address(host)).await {
                Ok(Some(auth)) => {
                    tracing::debug!(registry = host, helper, "credentials from a helper");
                    Ok(Some(auth))
                }
                Ok(None) => Ok(fallback.clone()),
                Err(reason) => Err(PromoteError::RegistryAuth {
                    registry: host.to_string(),
                    reason: format!("{reason} (the helper is named by {origin})"),
                }),
            },
        }
    }
}

/// Docker Hub's credentials are filed under its v1 index URL, whatever host is used.
fn server_address(host: &str) -> String {
    if is_docker_hub(host) {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    }
}

fn is_docker_hub(host: &str) -> bool {
    ["docker.io", "index.docker.io", "registry-1.docker.io"]
        .iter()
        .any(|h| h.eq_ignore_ascii_case(host))
}

/// Whether a key of `auths` or `credHelpers` (`host`, `https://host/v1/`, …) names `host`.
fn names_host(key: &str, host: &str) -> bool {
    let bare = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let bare = bare.split('/').next().unwrap_or(bare);
    bare.eq_ignore_ascii_case(host) || (is_docker_hub(bare) && is_docker_hub(host))
}

/// Where a docker `config.json` says the credentials for `host` are: `credHelpers.<host>`,
/// else `credsStore`, else `auths.<host>`.
pub(crate) fn docker_config(
    text: &str,
    host: &str,
    path: &Path,
) -> std::result::Result<Source, String> {
    let config: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let stored = auths_entry(&config, host)?;
    let helper_for_host = config
        .get("credHelpers")
        .and_then(|h| h.as_object())
        .and_then(|h| h.iter().find(|(key, _)| names_host(key, host)))
        .map(|(key, name)| {
            name.as_str()
                .filter(|n| valid_helper_name(n))
                .map(|n| (n.to_string(), format!("credHelpers.{key}")))
                .ok_or_else(|| format!("credHelpers.{key} is not a helper name"))
        })
        .transpose()?;
    let store = config
        .get("credsStore")
        .map(|name| {
            name.as_str()
                .filter(|n| valid_helper_name(n))
                .map(|n| (n.to_string(), "credsStore".to_string()))
                .ok_or_else(|| "credsStore is not a helper name".to_string())
        })
        .transpose()?;
    Ok(match helper_for_host.or(store) {
        Some((helper, key)) => Source::Helper {
            helper,
            origin: format!("{key} in {}", path.display()),
            fallback: stored,
        },
        None => stored.map_or(Source::None, Source::Ready),
    })
}

/// Helper names become part of a program name: letters, digits, `-`, `_`, `.`.
fn valid_helper_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `auths.<host>`: `identitytoken`, `auth` (base64 of `user:password`) or
/// `username`/`password`.
fn auths_entry(
    config: &serde_json::Value,
    host: &str,
) -> std::result::Result<Option<Auth>, String> {
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    for (key, entry) in auths {
        if !names_host(key, host) {
            continue;
        }
        let field = |f: &str| {
            entry
                .get(f)
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        if let Some(token) = field("identitytoken") {
            return Ok(Some(Auth::IdentityToken(token)));
        }
        if let Some(auth) = field("auth") {
            let decoded = BASE64
                .decode(auth.trim())
                .map_err(|_| format!("auths.{key}.auth is not base64"))?;
            let decoded =
                String::from_utf8(decoded).map_err(|_| format!("auths.{key}.auth is not UTF-8"))?;
            let (username, password) = decoded
                .split_once(':')
                .ok_or_else(|| format!("auths.{key}.auth is not base64 of user:password"))?;
            return Ok(Some(Auth::Basic(Credentials {
                username: username.to_string(),
                password: password.to_string(),
            })));
        }
        if let (Some(username), Some(password)) = (field("username"), field("password")) {
            return Ok(Some(Auth::Basic(Credentials { username, password })));
        }
    }
    Ok(None)
}

/// `docker-credential-<helper> get` with `server` on stdin: `Ok(None)` when the helper has no
/// credentials for it, an error (without anything the helper printed on stdout, which may
/// hold a secret) when it fails.
async fn run_helper(helper: &str, server: &str) -> std::result::Result<Option<Auth>, String> {
    let program = format!("docker-credential-{helper}");
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "the credential helper `{program}` is not on PATH; install it, or remove the helper from the docker configuration"
            ),
            _ => format!("cannot run the credential helper `{program}`: {e}"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is judged by its exit status below.
        let _ = stdin.write_all(server.as_bytes()).await;
    }
    let out = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            format!(
                "the credential helper `{program} get` did not answer within {}s",
                HELPER_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("the credential helper `{program} get`: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // The protocol's "not found" answer is this text on stdout.
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or("").trim();
        let first: String = first.chars().take(200).collect();
        return Err(format!(
            "the credential helper `{program} get` failed ({}){}",
            out.status,
            if first.is_empty() {
                String::new()
            } else {
                format!(": {first}")
            }
        ));
    }
    let answer: serde_json::Value = serde_json::from_str(&stdout).map_err(|_| {
        format!("the credential helper `{program} get` did not print JSON with Username and Secret")
    })?;
    let field = |f: &str| answer.get(f).and_then(|v| v.as_str()).unwrap_or("");
    let (username, secret) = (field("Username"), field("Secret"));
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if username == "<token>" {
        Auth::IdentityToken(secret.to_string())
    } else {
        Auth::Basic(Credentials {
            username: username.to_string(),
            password: secret.to_string(),
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(u: &str, p: &str) -> Auth {
        Auth::Basic(Credentials {
            username: u.into(),
            password: p.into(),
        })
    }

    #[test]
    fn auths_entries_are_found_by_host() {
        let auth = BASE64.encode("alice:pa:ss");
        let text = format!(
            r#"{{"auths": {{
                "https://registry.example.com/v1/": {{"auth": "{auth}"}},
                "127.0.0.1:5000": {{"username": "bob", "password": "pw"}},
                "tokens.example.com": {{"identitytoken": "refresh-me"}},
                "https://index.docker.io/v1/": {{"auth": "{auth}"}},
                "other.example.com": {{}}
            }}}}"#
        );
        let p = Path::new("/cfg/config.json");
        let find = |host: &str| docker_config(&text, host, p).unwrap();
        assert_eq!(
            find("registry.example.com"),
            Source::Ready(basic("alice", "pa:ss"))
        );
        assert_eq!(find("127.0.0.1:5000"), Source::Ready(basic("bob", "pw")));
        assert_eq!(
            find("tokens.example.com"),
            Source::Ready(Auth::IdentityToken("refresh-me".into()))
        );
        assert_eq!(
            find("registry-1.docker.io"),
            Source::Ready(basic("alice", "pa:ss"))
        );
        assert_eq!(find("other.example.com"), Source::None);
        assert_eq!(find("127.0.0.1"), Source::None);
        assert_eq!(docker_config("{}", "x", p).unwrap(), Source::None);
        assert!(docker_config("not json", "x", p).is_err());
        assert!(docker_config(r#"{"auths":{"x":{"auth":"%%%"}}}"#, "x", p).is_err());
        // Debug never shows a secret.
        let shown = format!(
            "{:?} {:?}",
            find("127.0.0.1:5000"),
            find("tokens.example.com")
        );
        assert!(
            !shown.contains("pw\"") && !shown.contains("refresh-me"),
            "{shown}"
        );
    }

    #[test]
    fn helpers_come_before_auths_and_the_host_helper_before_the_store() {
        let text = r#"{
            "auths": {"a.example.com": {"username": "u", "password": "p"}},
            "credHelpers": {"b.example.com": "ecr-login"},
            "credsStore": "desktop"
        }"#;
        let p = Path::new("/cfg/config.json");
        assert_eq!(
            docker_config(text, "b.example.com", p).unwrap(),
            Source::Helper {
                helper: "ecr-login".into(),
                origin: "credHelpers.b.example.com in /cfg/config.json".into(),
                fallback: None
            }
        );
        assert_eq!(
            docker_config(text, "a.example.com", p).unwrap(),
            Source::Helper {
                helper: "desktop".into(),
                origin: "credsStore in /cfg/config.json".into(),
                fallback: Some(basic("u", "p"))
            }
        );
        let text = r#"{"credHelpers": {"a": "../../bin/sh"}}"#;
        assert!(docker_config(text, "a", p).is_err());
        // The environment's credentials win over any configuration.
        let env = Credentials {
            username: "ci".into(),
            password: "x".into(),
        };
        assert_eq!(
            Source::find(Some(&env), Some(p), "a").unwrap(),
            Source::Ready(Auth::Basic(env))
        );
        assert_eq!(
            Source::find(None, Some(Path::new("/nonexistent/config.json")), "a").unwrap(),
            Source::None
        );
    }

    #[tokio::test]
    async fn a_missing_helper_is_a_clear_error() {
        let source = Source::Helper {
            helper: "ferry-no-such-helper".into(),
            origin: "credsStore in /cfg/config.json".into(),
            fallback: None,
        };
        let err = source
            .resolve("r.example.com")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("docker-credential-ferry-no-such-helper")
                && err.contains("not on PATH")
                && err.contains("credsStore in /cfg/config.json"),
            "{err}"
        );
    }
}
