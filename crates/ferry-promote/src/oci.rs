//! OCI registries as artifact locations: `oci://HOST[:PORT]/REPO[:TAG]`, spoken to through a
//! small client of the distribution API (`/v2/…`) on `reqwest`.
//!
//! An image's digest is its **manifest digest** (an image manifest or an index). Ferry carries
//! the manifest bytes itself and hashes them: [`ArtifactLocation::read`] returns them, so a
//! manifest that does not hash to its digest is [`PromoteError::Tampered`]. Blobs (config and
//! layers) are content-addressed by the registry, which checks their digest when they are
//! uploaded (`PUT …?digest=`), so ferry streams them without hashing them again.
//!
//! A copy between two repositories ([`ArtifactLocation::copy_to`]) copies every blob the
//! destination lacks (for an index, every child manifest and its blobs first): within one
//! registry by a cross-repository mount (no payload through ferry); between registries by a
//! streamed GET → PUT, never holding a blob in memory. Then it PUTs the manifest bytes
//! unchanged, with their own media type, and checks that the destination resolves the digest
//! to itself. [`ArtifactLocation::make_live`] points the environment's tag at the digest.
//!
//! Never: send credentials over plain HTTP to anything but loopback or a registry the user
//! marked insecure; print or log credentials.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ferry_store::ByteStream;
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};
use url::Url;

use ferry_core::config::Network;

use crate::digest::Digest;
use crate::error::{PromoteError, Result};
use crate::location::{ArtifactLocation, CopyOutcome, LocFut};

mod credentials;

use credentials::{Auth, Source};
pub use credentials::Credentials;

/// Every manifest type ferry asks for and copies.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Manifests are small JSON documents; anything bigger is not one.
const MAX_MANIFEST: usize = 4 << 20;

const DIGEST_HEADER: &str = "Docker-Content-Digest";

/// The longest `Retry-After` ferry honours; a registry that asks for more fails the command
/// at once (try again later) instead of holding a CI job.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// `oci://HOST[:PORT]/REPO[/…][:TAG]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciUrl {
    /// `HOST[:PORT]` as written.
    pub host: String,
    /// The repository path, e.g. `team/app-prod`.
    pub repo: String,
    pub tag: Option<String>,
}

impl OciUrl {
    pub const SCHEME: &str = "oci://";

    /// Whether `url` is written as an OCI location (whether or not it is a valid one).
    pub fn is_oci(url: &str) -> bool {
        url.starts_with(Self::SCHEME)
    }

    pub fn parse(url: &str) -> Result<Self> {
        let bad = |reason: &str| PromoteError::BadOciUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix(Self::SCHEME)
            .ok_or_else(|| bad("it must start with oci://"))?;
        let rest = rest.trim_end_matches('/');
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("write oci://HOST[:PORT]/REPOSITORY[:TAG]"))?;
        check_host(host).map_err(|r| bad(&r))?;
        let (repo, tag) = split_tag(path);
        check_repo(repo).map_err(|r| bad(&r))?;
        if let Some(tag) = tag {
            check_tag(tag).map_err(|r| bad(&r))?;
        }
        Ok(OciUrl {
            host: host.to_string(),
            repo: repo.to_string(),
            tag: tag.map(str::to_string),
        })
    }
}

/// An image reference: `HOST[:PORT]/REPO@sha256:<hex>` or `HOST[:PORT]/REPO:TAG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub host: String,
    pub repo: String,
    pub tag: Option<String>,
    /// When given, it wins over the tag (as in `docker pull repo:tag@sha256:…`).
    pub digest: Option<Digest>,
}

/// True when `s` names an image in a registry: its first path component is a registry host
/// (contains `.` or `:`, or is `localhost`). Store references never contain `/`.
pub fn looks_like_image(s: &str) -> bool {
    match s.split_once('/') {
        Some((host, _)) => host.contains('.') || host.contains(':') || host == "localhost",
        None => false,
    }
}

impl FromStr for ImageRef {
    type Err = PromoteError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| PromoteError::BadReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        let (host, path) = s.split_once('/').ok_or_else(|| {
            bad("write REGISTRY/REPOSITORY@sha256:<hex> or REGISTRY/REPOSITORY:TAG")
        })?;
        check_host(host).map_err(|r| bad(&r))?;
        let (named, digest) = match path.split_once('@') {
            Some((named, digest)) => (named, Some(digest.parse::<Digest>()?)),
            None => (path, None),
        };
        let (repo, tag) = split_tag(named);
        check_repo(repo).map_err(|r| bad(&r))?;
        if let Some(tag) = tag {
            check_tag(tag).map_err(|r| bad(&r))?;
        }
        if tag.is_none() && digest.is_none() {
            return Err(bad(
                "name the image by digest (REPOSITORY@sha256:<hex>) or by tag (REPOSITORY:TAG)",
            ));
        }
        Ok(ImageRef {
            host: host.to_string(),
            repo: repo.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }
}

impl std::fmt::Display for OciUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}/{}", Self::SCHEME, self.host, self.repo)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.repo)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// `repo:tag` → (`repo`, `tag`); a `:` before the last `/` is not a tag separator.
fn split_tag(path: &str) -> (&str, Option<&str>) {
    let last = path.rfind('/').map_or(0, |i| i + 1);
    match path[last..].rfind(':') {
        Some(i) => (&path[..last + i], Some(&path[last + i + 1..])),
        None => (path, None),
    }
}

fn check_host(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if ok {
        Ok(())
    } else {
        Err(format!("`{host}` is not a registry host[:port]"))
    }
}

/// Repository paths per the distribution spec: lowercase components separated by `/`.
fn check_repo(repo: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
    };
    if repo.is_empty() || repo.len() > 255 || !repo.split('/').all(component_ok) {
        return Err(format!(
            "`{repo}` is not a repository path: use lowercase letters, digits and `._-`, components separated by `/`"
        ));
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{tag}` is not a tag: up to 128 letters, digits, `.`, `_`, `-`, not starting with `.` or `-`"
        ))
    }
}

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

#[derive(Default)]
struct AuthState {
    /// The registry asked for Basic auth.
    basic: bool,
    /// The registry's token service (`realm`, `service`), once it asked for a Bearer token.
    bearer: Option<(String, Option<String>)>,
    /// Tokens by scope set.
    tokens: HashMap<String, String>,
}

/// One registry: base URL, credentials, and what it asked for.
struct Registry {
    host: String,
    base: Url,
    http: reqwest::Client,
    /// Where the credentials are; resolved (a helper run) when the registry first asks.
    source: Source,
    credentials: tokio::sync::OnceCell<Option<Auth>>,
    auth: Mutex<AuthState>,
    network: Network,
}

fn pull(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

fn push(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

impl Registry {
    fn new(host: &str, options: &RegistryOptions) -> Result<Self> {
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

    fn url(&self, path: &str) -> Url {
        // `path` is built from checked repository names and digests.
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    fn err(&self, context: &str, message: impl std::fmt::Display) -> PromoteError {
        PromoteError::Registry {
            registry: self.host.clone(),
            context: context.to_string(),
            message: message.to_string(),
        }
    }

    fn auth_header(&self, scopes: &[String]) -> Option<String> {
        let state = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        if state.bearer.is_some()
            && let Some(token) = state.tokens.get(&scopes.join(" "))
        {
            return Some(format!("Bearer {token}"));
        }
        if state.basic
            && let Some(Some(Auth::Basic(c))) = self.credentials.get()
        {
            return Some(format!(
                "Basic {}",
                BASE64.encode(format!("{}:{}", c.username, c.password))
            ));
        }
        None
    }

    /// The credentials, found (a helper run) the first time a registry asks for them.
    async fn credentials(&self) -> Result<Option<&Auth>> {
        let found = self
            .credentials
            .get_or_try_init(|| self.source.resolve(&self.host))
            .await?;
        Ok(found.as_ref())
    }

    /// Sends a request that can be rebuilt, again after a failure that may pass (a timeout, a
    /// connection error, 429, 5xx): at most `retries` more times, after the pause the registry
    /// asks for in `Retry-After` (up to [`MAX_RETRY_AFTER`]) or a growing one. The error of the
    /// last try says how many there were.
    async fn send_retrying(
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
    async fn send(
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
    async fn send_once(
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

    /// Learns from a `WWW-Authenticate` challenge: Basic, or a Bearer token for `scopes`.
    async fn answer(&self, context: &str, challenge: &str, scopes: &[String]) -> Result<()> {
        let no_credentials = || PromoteError::RegistryAuth {
            registry: self.host.clone(),
            reason: format!(
                "{context}: the registry requires credentials; set FERRY_REGISTRY_USERNAME and FERRY_REGISTRY_PASSWORD, or log in with `docker login {}`",
                self.host
            ),
        };
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let credentials = self.credentials().await?;
        if scheme.eq_ignore_ascii_case("basic") {
            match credentials {
                None => return Err(no_credentials()),
                Some(Auth::IdentityToken(_)) => {
                    return Err(PromoteError::RegistryAuth {
                        registry: self.host.clone(),
                        reason: format!(
                            "{context}: the credentials found for it are an identity token, which only a token service accepts, and this registry asks for Basic auth; log in with a username and password (`docker login {}`) or set FERRY_REGISTRY_USERNAME and FERRY_REGISTRY_PASSWORD",
                            self.host
                        ),
                    });
                }
                Some(Auth::Basic(_)) => {}
            }
            self.auth.lock().unwrap_or_else(|e| e.into_inner()).basic = true;
            return Ok(());
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(self.err(
                context,
                format!("unsupported authentication challenge `{scheme}` (401)"),
            ));
        }
        let params = parse_challenge(params);
        let realm = params
            .get("realm")
            .cloned()
            .ok_or_else(|| self.err(context, "Bearer challenge without a realm"))?;
        let service = params.get("service").cloned();
        let mut url = Url::parse(&realm)
            .map_err(|e| self.err(context, format!("token realm `{realm}`: {e}")))?;
        let resp = match credentials {
            // The OAuth2 refresh-token grant of the distribution token spec: a POSTed form.
            Some(Auth::IdentityToken(token)) => {
                let form = {
                    let mut form = url::form_urlencoded::Serializer::new(String::new());
                    form.append_pair("grant_type", "refresh_token")
                        .append_pair("refresh_token", token)
                        .append_pair("client_id", "ferry")
                        .append_pair("scope", &scopes.join(" "));
                    if let Some(s) = &service {
                        form.append_pair("service", s);
                    }
                    form.finish()
                };
                self.send_retrying("fetching a token", || {
                    self.http
                        .post(url.clone())
                        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(form.clone())
                })
                .await?
            }
            basic => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = &service {
                        q.append_pair("service", s);
                    }
                    for scope in scopes {
                        q.append_pair("scope", scope);
                    }
                }
                self.send_retrying("fetching a token", || {
                    let req = self.http.get(url.clone());
                    match basic {
                        Some(Auth::Basic(c)) => req.basic_auth(&c.username, Some(&c.password)),
                        _ => req,
                    }
                })
                .await?
            }
        };
        if resp.status() == StatusCode::UNAUTHORIZED
            || resp.status() == StatusCode::FORBIDDEN
            // An OAuth2 token endpoint answers a refused grant with 400 invalid_grant.
            || (resp.status() == StatusCode::BAD_REQUEST && credentials.is_some())
        {
            return Err(if credentials.is_none() {
                no_credentials()
            } else {
                PromoteError::RegistryAuth {
                    registry: self.host.clone(),
                    reason: format!(
                        "{context}: the token service refused the credentials ({})",
                        resp.status()
                    ),
                }
            });
        }
        if !resp.status().is_success() {
            return Err(self.err(
                "fetching a token",
                format!("the token service answered {}", resp.status()),
            ));
        }
        let body = json_value(resp)
            .await
            .map_err(|e| self.err("reading a token", e))?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| self.err("reading a token", "the answer has no token"))?;
        let mut state = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        state.bearer = Some((realm, service));
        state.tokens.insert(scopes.join(" "), token.to_string());
        Ok(())
    }

    /// HEAD or GET a manifest in any of the media types ferry copies: the response when the
    /// registry has it, `None` on 404, an error naming `context` otherwise.
    async fn fetch_manifest(
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
    async fn head_manifest(
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
    async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Option<(Vec<u8>, String)>> {
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
    async fn put_manifest(
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

    async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
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
    fn upload_location(&self, context: &str, resp: &reqwest::Response) -> Result<Url> {
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
fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED
}

/// `Retry-After`: a number of seconds, or an HTTP date (a date in the past is no wait).
fn retry_after(headers: &HeaderMap, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
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

fn header_digest(headers: &HeaderMap) -> Option<Digest> {
    headers
        .get(DIGEST_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// `realm="…",service="…",scope="…"` → map.
fn parse_challenge(params: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.split_once('"') {
                Some((v, next)) => (v, next),
                None => (quoted, ""),
            }
        } else {
            match after.split_once(',') {
                Some((v, next)) => (v, next),
                None => (after, ""),
            }
        };
        out.insert(key, value.trim().to_string());
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

async fn unexpected(status: StatusCode, resp: reqwest::Response) -> String {
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    format!("unexpected answer {status}: {}", body.trim())
}

async fn json_value(resp: reqwest::Response) -> std::result::Result<serde_json::Value, String> {
    let bytes = resp.bytes().await.map_err(|e| chain(&e))?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// A repository in a registry, as an environment's artifact location.
pub struct OciLocation {
    registry: Arc<Registry>,
    repo: String,
    /// The tag [`ArtifactLocation::make_live`] moves; `None` for a source repository.
    tag: Option<String>,
}

impl OciLocation {
    /// Opens `oci://HOST/REPO[:TAG]`; `default_tag` (the environment's name) is the tag when
    /// the URL has none. Nothing is sent until it is used.
    pub fn open(url: &str, default_tag: Option<&str>, options: &RegistryOptions) -> Result<Self> {
        Self::open_parsed(OciUrl::parse(url)?, default_tag, options)
    }

    /// [`OciLocation::open`] of a URL already parsed.
    pub fn open_parsed(
        parsed: OciUrl,
        default_tag: Option<&str>,
        options: &RegistryOptions,
    ) -> Result<Self> {
        let url = parsed.to_string();
        let tag = match (parsed.tag, default_tag) {
            (Some(t), _) => Some(t),
            (None, Some(t)) => {
                check_tag(t).map_err(|reason| PromoteError::BadOciUrl {
                    url: url.to_string(),
                    reason: format!(
                        "the environment name is the default tag, and {reason}; add :TAG to the URL"
                    ),
                })?;
                Some(t.to_string())
            }
            (None, None) => None,
        };
        Ok(OciLocation {
            registry: Arc::new(Registry::new(&parsed.host, options)?),
            repo: parsed.repo,
            tag,
        })
    }

    /// The repository an image reference names (no tag is ever moved there).
    pub fn for_image(image: &ImageRef, options: &RegistryOptions) -> Result<Self> {
        Ok(OciLocation {
            registry: Arc::new(Registry::new(&image.host, options)?),
            repo: image.repo.clone(),
            tag: None,
        })
    }

    pub fn repo(&self) -> &str {
        &self.repo
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// Resolves a tag to its manifest digest, once (HEAD, else GET and hash).
    pub async fn resolve_tag(&self, tag: &str) -> Result<Digest> {
        let not_found = || PromoteError::NotFound {
            what: format!("tag {tag} is not in {}", self.url()),
        };
        match self.registry.head_manifest(&self.repo, tag).await? {
            None => Err(not_found()),
            Some((Some(d), _)) => Ok(d),
            Some((None, _)) => {
                let (bytes, _) = self
                    .registry
                    .get_manifest(&self.repo, tag)
                    .await?
                    .ok_or_else(not_found)?;
                Ok(Digest::of(&bytes))
            }
        }
    }

    /// The manifest bytes of `digest` and their media type, checked against the digest.
    async fn manifest_verified(&self, digest: &Digest) -> Result<(Vec<u8>, String)> {
        let (bytes, media_type) = self
            .registry
            .get_manifest(&self.repo, &digest.to_string())
            .await?
            .ok_or_else(|| PromoteError::NotFound {
                what: format!("image {digest} is not in {}", self.url()),
            })?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(PromoteError::Tampered {
                digest: *digest,
                location: self.url(),
                actual,
            });
        }
        Ok((bytes, media_type))
    }

    /// Checks that `reference` (a digest or tag) resolves to `digest` here.
    async fn check_resolves(&self, reference: &str, digest: &Digest) -> Result<()> {
        let found = self.registry.head_manifest(&self.repo, reference).await?;
        let actual = match found {
            Some((Some(d), _)) => Some(d),
            Some((None, _)) => self
                .registry
                .get_manifest(&self.repo, reference)
                .await?
                .map(|(b, _)| Digest::of(&b)),
            None => None,
        };
        match actual {
            Some(d) if d == *digest => Ok(()),
            other => Err(PromoteError::RegistryMismatch {
                location: format!("{}/{}:{reference}", self.registry.host, self.repo),
                digest: *digest,
                actual: other.map_or_else(|| "nothing".to_string(), |d| d.to_string()),
            }),
        }
    }

    fn same_registry(&self, other: &OciLocation) -> bool {
        self.registry.base == other.registry.base
    }

    /// Copies the image (index children, blobs, then the manifest) from `self` to `dest`.
    fn copy_image<'a>(
        &'a self,
        digest: &'a Digest,
        dest: &'a OciLocation,
    ) -> LocFut<'a, CopyOutcome> {
        Box::pin(async move {
            let (bytes, media_type) = self.manifest_verified(digest).await?;
            let manifest: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| PromoteError::Registry {
                    registry: self.registry.host.clone(),
                    context: format!("reading manifest {digest} of {}", self.repo),
                    message: format!("not JSON: {e}"),
                })?;
            let mut outcome = CopyOutcome {
                bytes_copied: 0,
                bytes_verified: bytes.len() as u64,
                server_side: false,
            };
            let digests_in = |key: &str| -> Vec<String> {
                manifest
                    .get(key)
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.get("digest")?.as_str().map(str::to_string))
                    .collect()
            };
            for child in digests_in("manifests") {
                let child: Digest = child.parse()?;
                if dest
                    .registry
                    .head_manifest(&dest.repo, &child.to_string())
                    .await?
                    .is_none()
                {
                    let c = self.copy_image(&child, dest).await?;
                    outcome.bytes_copied += c.bytes_copied;
                    outcome.bytes_verified += c.bytes_verified;
                }
            }
            let mut blobs = Vec::new();
            if let Some(config) = manifest
                .get("config")
                .and_then(|c| c.get("digest"))
                .and_then(|d| d.as_str())
            {
                blobs.push(config.to_string());
            }
            blobs.extend(digests_in("layers"));
            for blob in &blobs {
                outcome.bytes_copied += self.copy_blob(blob, dest).await?;
            }
            // Only the manifest passed through ferry: every blob was mounted (or already there).
            outcome.server_side = outcome.bytes_copied == 0;
            let put = dest
                .registry
                .put_manifest(&dest.repo, &digest.to_string(), &bytes, &media_type)
                .await?;
            if let Some(put) = put.filter(|p| p != digest) {
                return Err(PromoteError::RegistryMismatch {
                    location: dest.url(),
                    digest: *digest,
                    actual: put.to_string(),
                });
            }
            dest.check_resolves(&digest.to_string(), digest).await?;
            tracing::info!(%digest, from = %self.url(), to = %dest.url(), bytes_copied = outcome.bytes_copied, "image copied");
            Ok(outcome)
        })
    }

    /// Copies one blob unless `dest` has it: a mount within one registry (0 bytes through
    /// ferry), else a streamed GET → PUT. Returns the payload bytes that passed through ferry.
    async fn copy_blob(&self, blob: &str, dest: &OciLocation) -> Result<u64> {
        let dreg = &dest.registry;
        if dreg.blob_exists(&dest.repo, blob).await? {
            return Ok(0);
        }
        let push_scopes = [push(&dest.repo)];
        let upload = if self.same_registry(dest) {
            let mut url = dreg.url(&format!("v2/{}/blobs/uploads/", dest.repo));
            url.query_pairs_mut()
                .append_pair("mount", blob)
                .append_pair("from", &self.repo);
            let context = format!("mounting blob {blob} from {} into {}", self.repo, dest.repo);
            let scopes = [push(&dest.repo), pull(&self.repo)];
            let resp = dreg
                .send(&context, &scopes, || {
                    dreg.http.post(url.clone()).header(CONTENT_LENGTH, "0")
                })
                .await?;
            match resp.status() {
                StatusCode::CREATED => {
                    // 201 means mounted; make sure before relying on it.
                    if dreg.blob_exists(&dest.repo, blob).await? {
                        tracing::debug!(blob, from = %self.repo, to = %dest.repo, "blob mounted");
                        return Ok(0);
                    }
                    return Err(dreg.err(&context, "201 Created, but the blob is not there"));
                }
                // The registry would not mount; it opened an upload session instead.
                StatusCode::ACCEPTED => {
                    tracing::info!(blob, "registry answered a mount with an upload; streaming");
                    dreg.upload_location(&context, &resp)?
                }
                s => return Err(dreg.err(&context, unexpected(s, resp).await)),
            }
        } else {
            let url = dreg.url(&format!("v2/{}/blobs/uploads/", dest.repo));
            let context = format!("starting an upload of {blob} to {}", dest.repo);
            let resp = dreg
                .send(&context, &push_scopes, || {
                    dreg.http.post(url.clone()).header(CONTENT_LENGTH, "0")
                })
                .await?;
            if resp.status() != StatusCode::ACCEPTED {
                let s = resp.status();
                return Err(dreg.err(&context, unexpected(s, resp).await));
            }
            dreg.upload_location(&context, &resp)?
        };

        // Stream the blob: GET from the source, PUT to the upload session.
        let sreg = &self.registry;
        let get_url = sreg.url(&format!("v2/{}/blobs/{blob}", self.repo));
        let context = format!("reading blob {blob} from {}", self.repo);
        let resp = sreg
            .send(&context, &[pull(&self.repo)], || {
                sreg.http.get(get_url.clone())
            })
            .await?;
        if !resp.status().is_success() {
            let s = resp.status();
            return Err(sreg.err(&context, unexpected(s, resp).await));
        }
        let length = resp.content_length();
        let counted = Arc::new(AtomicU64::new(0));
        let counter = counted.clone();
        let stream = resp.bytes_stream().map(move |chunk| {
            if let Ok(c) = &chunk {
                counter.fetch_add(c.len() as u64, Ordering::Relaxed);
            }
            chunk
        });
        let mut put_url = upload;
        put_url.query_pairs_mut().append_pair("digest", blob);
        let mut req = dreg
            .http
            .put(put_url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(stream));
        if let Some(n) = length {
            req = req.header(CONTENT_LENGTH, n);
        }
        let context = format!("uploading blob {blob} to {}", dest.repo);
        let resp = dreg.send_once(&context, &push_scopes, req).await?;
        if resp.status() != StatusCode::CREATED {
            let s = resp.status();
            return Err(dreg.err(&context, unexpected(s, resp).await));
        }
        let n = counted.load(Ordering::Relaxed);
        tracing::debug!(blob, bytes = n, from = %self.url(), to = %dest.url(), "blob streamed");
        Ok(n)
    }
}

impl ArtifactLocation for OciLocation {
    fn url(&self) -> String {
        match &self.tag {
            Some(tag) => format!("oci://{}/{}:{tag}", self.registry.host, self.repo),
            None => format!("oci://{}/{}", self.registry.host, self.repo),
        }
    }

    fn size<'a>(&'a self, digest: &'a Digest) -> LocFut<'a, Option<u64>> {
        Box::pin(async move {
            Ok(self
                .registry
                .head_manifest(&self.repo, &digest.to_string())
                .await?
                .map(|(_, size)| size))
        })
    }

    /// The manifest bytes (what the digest is the hash of).
    fn read<'a>(&'a self, digest: &'a Digest) -> LocFut<'a, ByteStream> {
        Box::pin(async move {
            let (bytes, _) = self
                .registry
                .get_manifest(&self.repo, &digest.to_string())
                .await?
                .ok_or_else(|| PromoteError::NotFound {
                    what: format!("image {digest} is not in {}", self.url()),
                })?;
            Ok(Box::pin(std::io::Cursor::new(bytes)) as ByteStream)
        })
    }

    fn write<'a>(&'a self, digest: &'a Digest, _body: ByteStream) -> LocFut<'a, u64> {
        Box::pin(async move {
            Err(PromoteError::KindMismatch(format!(
                "cannot copy {digest} from an object store into the OCI registry {}: an image is copied from another repository (promote an image reference REGISTRY/REPO@sha256:…, and keep every environment of a `requires` chain in registries)",
                self.url()
            )))
        })
    }

    fn list(&self) -> LocFut<'_, Vec<(Digest, u64)>> {
        Box::pin(async move {
            Err(PromoteError::KindMismatch(format!(
                "{} is an OCI registry, which cannot list its images by digest; clean it up with the registry's own garbage collection",
                self.url()
            )))
        })
    }

    fn delete<'a>(&'a self, digest: &'a Digest) -> LocFut<'a, ()> {
        Box::pin(async move {
            let reg = &self.registry;
            let url = reg.url(&format!("v2/{}/manifests/{digest}", self.repo));
            let context = format!("deleting {digest} from {}", self.repo);
            let resp = reg
                .send(&context, &[push(&self.repo)], || {
                    reg.http.delete(url.clone())
                })
                .await?;
            match resp.status() {
                StatusCode::NOT_FOUND => Ok(()),
                s if s.is_success() => Ok(()),
                s => Err(reg.err(&context, unexpected(s, resp).await)),
            }
        })
    }

    fn copy_to<'a>(
        &'a self,
        digest: &'a Digest,
        dest: &'a dyn ArtifactLocation,
    ) -> LocFut<'a, CopyOutcome> {
        Box::pin(async move {
            let any: &dyn std::any::Any = dest;
            match any.downcast_ref::<OciLocation>() {
                Some(dest) => self.copy_image(digest, dest).await,
                None => Err(PromoteError::KindMismatch(format!(
                    "cannot copy image {digest} from the OCI registry {} into the object store {}: keep every environment of a `requires` chain in registries",
                    self.url(),
                    dest.url()
                ))),
            }
        })
    }

    fn is_registry(&self) -> bool {
        true
    }

    /// PUTs the manifest bytes under the environment's tag, then checks the tag resolves to
    /// the digest.
    fn make_live<'a>(&'a self, digest: &'a Digest) -> LocFut<'a, ()> {
        Box::pin(async move {
            let Some(tag) = &self.tag else {
                return Ok(());
            };
            let (bytes, media_type) = self.manifest_verified(digest).await?;
            self.registry
                .put_manifest(&self.repo, tag, &bytes, &media_type)
                .await?;
            self.check_resolves(tag, digest).await?;
            tracing::info!(%digest, location = %self.url(), "tag moved");
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u = OciUrl::parse("oci://registry.example.com/app-prod").unwrap();
        assert_eq!(
            u,
            OciUrl {
                host: "registry.example.com".into(),
                repo: "app-prod".into(),
                tag: None
            }
        );
        let u = OciUrl::parse("oci://127.0.0.1:5000/team/app:live").unwrap();
        assert_eq!(u.host, "127.0.0.1:5000");
        assert_eq!(u.repo, "team/app");
        assert_eq!(u.tag.as_deref(), Some("live"));
        for bad in [
            "oci://host",
            "oci:///app",
            "oci://host/App",
            "oci://host/app:",
            "oci://host/app:-x",
            "oci://host//app",
            "s3://b/app",
            "oci://ho st/app",
        ] {
            assert!(OciUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn image_references_parse() {
        let d = Digest::of(b"manifest");
        let r: ImageRef = format!("127.0.0.1:5000/app-build@{d}").parse().unwrap();
        assert_eq!(r.host, "127.0.0.1:5000");
        assert_eq!(r.repo, "app-build");
        assert_eq!((r.tag, r.digest), (None, Some(d)));
        let r: ImageRef = "registry.example.com/team/app:1.2.3".parse().unwrap();
        assert_eq!(r.repo, "team/app");
        assert_eq!(r.tag.as_deref(), Some("1.2.3"));
        let r: ImageRef = format!("localhost/app:1.0@{d}").parse().unwrap();
        assert_eq!((r.tag.as_deref(), r.digest), (Some("1.0"), Some(d)));
        assert_eq!(r.to_string(), format!("localhost/app:1.0@{d}"));
        for bad in [
            "registry.example.com/app",
            "registry.example.com/app@sha256:12",
            "registry.example.com/APP:1",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad}");
        }
        assert!(looks_like_image("127.0.0.1:5000/app@sha256:00"));
        assert!(looks_like_image("localhost/app:1"));
        assert!(looks_like_image("registry.example.com/app:1"));
        assert!(!looks_like_image("app@1.2.3"));
        assert!(!looks_like_image("app:1.2.3"));
        assert!(!looks_like_image("team/app:1"));
        assert_eq!(split_tag("host/a/b:1"), ("host/a/b", Some("1")));
        assert_eq!(split_tag("a/b"), ("a/b", None));
    }

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
        for (code, retry) in [(429, true), (503, true), (500, true), (501, false), (404, false)] {
            assert_eq!(
                retryable_status(StatusCode::from_u16(code).unwrap()),
                retry,
                "{code}"
            );
        }
    }

    #[test]
    fn bearer_challenges_parse() {
        let p = parse_challenge(
            r#"realm="https://auth.example.com/token",service="registry.example.com",scope="repository:app:pull,push""#,
        );
        assert_eq!(p["realm"], "https://auth.example.com/token");
        assert_eq!(p["service"], "registry.example.com");
        assert_eq!(p["scope"], "repository:app:pull,push");
    }
}
