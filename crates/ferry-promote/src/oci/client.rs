//! The HTTP client of the distribution API (`/v2/…`) on reqwest: one [`Registry`] per host,
//! its connect and read timeouts, retries of 429 and 5xx answers (honouring `Retry-After`),
//! and the manifest and blob primitives the location builds on. Authentication is answered in
//! `auth.rs`; [`RegistryOptions`] is how the caller configures it all.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use ferry_core::config::Network;
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};
use url::Url;

use super::auth::AuthState;
use super::credentials::{Auth, Credentials, Source};
use crate::digest::Digest;
use crate::error::{PromoteError, Result};

/// Every manifest type ferry asks for and copies.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Manifests are small JSON documents; anything bigger is not one.
pub(super) const MAX_MANIFEST: usize = 4 << 20;

pub(super) const DIGEST_HEADER: &str = "Docker-Content-Digest";

/// The longest `Retry-After` ferry honours; a registry that asks for more fails the command
/// at once (try again later) instead of holding a CI job.
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How ferry talks to registries, resolved by the caller (the CLI, from the environment and
/// `ferry.toml`); this crate reads no environment variable.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Connect and read timeouts, and how many times a request that failed in a way that may
    /// pass (a timeout, a connection error, 429, 5xx) is tried again.
    pub network: Network,
    /// Registries (`host` or `host:port`) reached over plain HTTP besides loopback ones.
    pub insecure: Vec<String>,
    /// Credentials for every registry (`FERRY_REGISTRY_USERNAME`/`FERRY_REGISTRY_PASSWORD`);
    /// they win over the docker configuration.
    pub credentials: Option<Credentials>,
    /// The docker `config.json` whose `credHelpers`, `credsStore` and `auths` give
    /// per-registry credentials.
    pub docker_config: Option<PathBuf>,
}

impl RegistryOptions {
    /// Plain HTTP for loopback hosts and those listed as insecure; HTTPS for everything else.
    pub fn scheme_for(&self, host: &str) -> &'static str {
        let bare = host_without_port(host);
        if is_loopback(bare)
            || self
                .insecure
                .iter()
                .any(|h| h.eq_ignore_ascii_case(host) || h.eq_ignore_ascii_case(bare))
        {
            "http"
        } else {
            "https"
        }
    }

    /// Where the credentials for `host` come from: the environment's, else the docker
    /// configuration's (see `credentials.rs`).
    pub(crate) fn credential_source(&self, host: &str) -> Result<Source> {
        Source::find(
            self.credentials.as_ref(),
            self.docker_config.as_deref(),
            host,
        )
    }
}

fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One registry: base URL, credentials, and what it asked for.
pub(super) struct Registry {
    pub(super) host: String,
    pub(super) base: Url,
    pub(super) http: reqwest::Client,
    /// Where the credentials are; resolved (a helper run) when the registry first asks.
    pub(super) source: Source,
    pub(super) credentials: tokio::sync::OnceCell<Option<Auth>>,
    pub(super) auth: Mutex<AuthState>,
    pub(super) network: Network,
}

pub(super) fn pull(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

pub(super) fn push(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

impl Registry {
    pub(super) fn new(host: &str, options: &RegistryOptions) -> Result<Self> {
        let scheme = options.scheme_for(host);
        let base =
            Url::parse(&format!("{scheme}://{host}/")).map_err(|e| PromoteError::BadOciUrl {
                url: format!("oci://{host}"),
                reason: e.to_string(),
            })?;
        // reqwest's read timeout applies to every read (the answer's head, then each read of its
        // body) and restarts after each, so a large blob may take as long as it needs while a
        // silent registry fails within the timeout.
        let http = reqwest::Client::builder()
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.network.connect_timeout)
            .read_timeout(options.network.read_timeout)
            .build()
            .map_err(|e| PromoteError::Registry {
                registry: host.to_string(),
                context: "creating an HTTP client".into(),
                message: e.to_string(),
            })?;
        Ok(Registry {
            host: host.to_string(),
            base,
            http,
            source: options.credential_source(host)?,
            credentials: tokio::sync::OnceCell::new(),
            auth: Mutex::new(AuthState::default()),
            network: options.network,
        })
    }

    pub(super) fn url(&self, path: &str) -> Url {
        // `path` is built from checked repository names and digests.
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    pub(super) fn err(&self, context: &str, message: impl std::fmt::Display) -> PromoteError {
        PromoteError::Registry {
            registry: self.host.clone(),
            context: context.to_string(),
            message: message.to_string(),
        }
    }

    /// Sends a request that can be rebuilt, again after a failure that may pass (a timeout, a
    /// connection error, 429, 5xx): at most `retries` more times, after the pause the registry
    /// asks for in `Retry-After` (up to [`MAX_RETRY_AFTER`]) or a growing one. The error of the
    /// last try says how many there were.
    pub(super) async fn send_retrying(
        &self,
        context: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let tries = |attempt: u32| {
            if attempt > 1 {
                format!(" (after {attempt} attempts)")
            } else {
                String::new()
            }
        };
        let mut attempt = 1;
        loop {
            let last = attempt > self.network.retries;
            let (pause, why) = match build().send().await {
                Ok(resp) if !retryable_status(resp.status()) => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status();
                    let asked = retry_after(resp.headers(), chrono::Utc::now());
                    if last {
                        let text = unexpected(status, resp).await;
                        return Err(self.err(context, format!("{text}{}", tries(attempt))));
                    }
                    if let Some(wait) = asked.filter(|w| *w > MAX_RETRY_AFTER) {
                        return Err(self.err(
                            context,
                            format!(
                                "the registry answered {status} and asks to wait {}s before trying again, longer than ferry waits ({}s); try again later{}",
                                wait.as_secs(),
                                MAX_RETRY_AFTER.as_secs(),
                                tries(attempt)
                            ),
                        ));
                    }
                    (
                        asked.unwrap_or_else(|| Network::backoff(attempt)),
                        status.to_string(),
                    )
                }
                Err(e) if !last && (e.is_timeout() || e.is_connect() || e.is_request()) => {
                    (Network::backoff(attempt), chain(&e))
                }
                Err(e) => {
                    return Err(self.err(context, format!("{}{}", chain(&e), tries(attempt))));
                }
            };
            tracing::warn!(registry = %self.host, context, attempt, ?pause, error = %why,
                "registry request failed; trying again");
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    /// Sends a request that can be rebuilt (retried as [`Registry::send_retrying`] does),
    /// answering one authentication challenge.
    pub(super) async fn send(
        &self,
        context: &str,
        scopes: &[String],
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let mut answered = false;
        loop {
            let resp = self
                .send_retrying(context, || {
                    let req = build();
                    match self.auth_header(scopes) {
                        Some(h) => req.header(AUTHORIZATION, h),
                        None => req,
                    }
                })
                .await?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            if answered {
                return Err(PromoteError::RegistryAuth {
                    registry: self.host.clone(),
                    reason: format!(
                        "{context}: the registry refused the credentials{}",
                        if matches!(self.credentials.get(), Some(Some(_))) {
                            ""
                        } else {
                            " (none were found)"
                        }
                    ),
                });
            }
            answered = true;
            let challenge = resp
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            self.answer(context, &challenge, scopes).await?;
        }
    }

    /// Sends a request whose body cannot be replayed (a streamed blob): authenticated with what
    /// earlier requests of the same scope learnt, no retry (the client's timeouts bound it).
    pub(super) async fn send_once(
        &self,
        context: &str,
        scopes: &[String],
        mut req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        if let Some(h) = self.auth_header(scopes) {
            req = req.header(AUTHORIZATION, h);
        }
        req.send().await.map_err(|e| self.err(context, chain(&e)))
    }

    /// HEAD or GET a manifest in any of the media types ferry copies: the response when the
    /// registry has it, `None` on 404, an error naming `context` otherwise.
    pub(super) async fn fetch_manifest(
        &self,
        method: reqwest::Method,
        repo: &str,
        reference: &str,
        context: &str,
    ) -> Result<Option<reqwest::Response>> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let resp = self
            .send(context, &[pull(repo)], || {
                self.http
                    .request(method.clone(), url.clone())
                    .header(ACCEPT, MANIFEST_TYPES.join(", "))
            })
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(resp)),
            s => Err(self.err(context, unexpected(s, resp).await)),
        }
    }

    /// HEAD a manifest: its digest (from `Docker-Content-Digest`) and size, when present.
    pub(super) async fn head_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<(Option<Digest>, u64)>> {
        let context = format!("looking up {repo}:{reference}");
        let Some(resp) = self
            .fetch_manifest(reqwest::Method::HEAD, repo, reference, &context)
            .await?
        else {
            return Ok(None);
        };
        let digest = header_digest(resp.headers());
        let size = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(Some((digest, size)))
    }

    /// GET a manifest's bytes and media type, when present.
    pub(super) async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<(Vec<u8>, String)>> {
        let context = format!("reading manifest {repo}@{reference}");
        let Some(resp) = self
            .fetch_manifest(reqwest::Method::GET, repo, reference, &context)
            .await?
        else {
            return Ok(None);
        };
        let header_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let mut bytes = Vec::new();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.err(&context, chain(&e)))?;
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_MANIFEST {
                return Err(self.err(
                    &context,
                    format!("larger than {MAX_MANIFEST} bytes: not a manifest"),
                ));
            }
        }
        let media_type = header_type
            .filter(|t| MANIFEST_TYPES.contains(&t.as_str()))
            .or_else(|| {
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()?
                    .get("mediaType")?
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_else(|| MANIFEST_TYPES[0].to_string());
        Ok(Some((bytes, media_type)))
    }

    /// PUT manifest bytes unchanged under `reference` (a digest or a tag); returns the digest
    /// the registry computed.
    pub(super) async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Option<Digest>> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let context = format!("writing manifest {repo}:{reference}");
        let resp = self
            .send(&context, &[push(repo)], || {
                self.http
                    .put(url.clone())
                    .header(CONTENT_TYPE, media_type)
                    .body(bytes.to_vec())
            })
            .await?;
        if resp.status().is_success() {
            Ok(header_digest(resp.headers()))
        } else {
            let status = resp.status();
            Err(self.err(&context, unexpected(status, resp).await))
        }
    }

    pub(super) async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"));
        let context = format!("looking for blob {digest} in {repo}");
        let resp = self
            .send(&context, &[pull(repo)], || self.http.head(url.clone()))
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => Ok(true),
            s => Err(self.err(&context, unexpected(s, resp).await)),
        }
    }

    /// The upload URL a `202 Accepted` names in `Location` (relative or absolute).
    pub(super) fn upload_location(&self, context: &str, resp: &reqwest::Response) -> Result<Url> {
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.err(context, "202 Accepted without a Location"))?;
        self.base
            .join(location)
            .map_err(|e| self.err(context, format!("upload location `{location}`: {e}")))
    }
}

/// Throttling and server errors: what may pass when tried again.
pub(super) fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED
}

/// `Retry-After`: a number of seconds, or an HTTP date (a date in the past is no wait).
pub(super) fn retry_after(
    headers: &HeaderMap,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

pub(super) fn header_digest(headers: &HeaderMap) -> Option<Digest> {
    headers
        .get(DIGEST_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

pub(super) async fn unexpected(status: StatusCode, resp: reqwest::Response) -> String {
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    format!("unexpected answer {status}: {}", body.trim())
}

pub(super) async fn json_value(
    resp: reqwest::Response,
) -> std::result::Result<serde_json::Value, String> {
    let bytes = resp.bytes().await.map_err(|e| chain(&e))?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_and_insecure_registries() {
        let o = RegistryOptions {
            insecure: vec!["registry.lan:5000".into(), "build.lan".into()],
            ..Default::default()
        };
        for host in [
            "127.0.0.1:5000",
            "127.8.9.1",
            "localhost:5000",
            "[::1]:5000",
            "registry.lan:5000",
            "build.lan:443",
        ] {
            assert_eq!(o.scheme_for(host), "http", "{host}");
        }
        for host in [
            "registry.example.com",
            "10.0.0.1:5000",
            "registry.lan:5001",
            "localhost.evil.com",
            "128.0.0.1",
        ] {
            assert_eq!(o.scheme_for(host), "https", "{host}");
        }
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(reqwest::header::RETRY_AFTER, v.parse().unwrap());
            retry_after(&h, now)
        };
        assert_eq!(with("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            with("Tue, 01 Dec 2026 10:00:07 GMT"),
            Some(Duration::from_secs(7))
        );
        assert_eq!(with("Tue, 01 Dec 2026 09:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(with("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
        for (code, retry) in [
            (429, true),
            (503, true),
            (500, true),
            (501, false),
            (404, false),
        ] {
            assert_eq!(
                retryable_status(StatusCode::from_u16(code).unwrap()),
                retry,
                "{code}"
            );
        }
    }
}
