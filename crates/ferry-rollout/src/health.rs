//! A host's health and version, over HTTP: `health_url` must answer 200 (and contain
//! `health_contains` when set); `version_url`, when set, must answer with the release's version
//! or digest. Each request is bounded by `health_timeout_seconds`.

use std::time::Duration;

use ferry_core::fleet::HostConfig;

use crate::Target;

/// Answers longer than this are cut in details.
const SHOWN: usize = 120;

pub struct Checker {
    http: reqwest::Client,
    timeout: Duration,
}

impl Checker {
    pub fn new(timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Checker { http, timeout })
    }

    async fn get(&self, url: &str) -> Result<(u16, String), String> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| self.describe(url, e))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| self.describe(url, e))?;
        Ok((status, body))
    }

    fn describe(&self, url: &str, e: reqwest::Error) -> String {
        if e.is_timeout() {
            format!("{url} did not answer within {:?}", self.timeout)
        } else if e.is_connect() {
            format!("cannot connect to {url}")
        } else {
            format!("{url}: {e}")
        }
    }

    /// `Ok(())` when healthy, else what the health URL answered.
    pub async fn health(&self, host: &HostConfig) -> Result<(), String> {
        let (status, body) = self.get(&host.health_url).await?;
        if status != 200 {
            return Err(format!(
                "{} answered HTTP {status}: {}",
                host.health_url,
                shown(&body)
            ));
        }
        if let Some(want) = &host.health_contains
            && !body.contains(want.as_str())
        {
            return Err(format!(
                "{} answered 200 without {want:?}: {}",
                host.health_url,
                shown(&body)
            ));
        }
        Ok(())
    }

    /// [`Checker::health`] and [`Checker::version`] at once (each on its own pooled connection).
    pub async fn state(
        &self,
        host: &HostConfig,
    ) -> (Result<(), String>, Result<Option<String>, String>) {
        tokio::join!(self.health(host), self.version(host))
    }

    /// What `version_url` reports (trimmed), `None` without one.
    pub async fn version(&self, host: &HostConfig) -> Result<Option<String>, String> {
        let Some(url) = &host.version_url else {
            return Ok(None);
        };
        let (status, body) = self.get(url).await?;
        if status != 200 {
            return Err(format!("{url} answered HTTP {status}: {}", shown(&body)));
        }
        Ok(Some(body.trim().chars().take(SHOWN).collect()))
    }
}

/// Whether a reported version is the target's: its version, its digest, or the digest's hex.
pub fn is_target(reported: &str, target: &Target) -> bool {
    let r = reported.trim();
    r == target.version || r == target.digest || target.digest.strip_prefix("sha256:") == Some(r)
}

fn shown(body: &str) -> String {
    let b = body.trim();
    if b.is_empty() {
        return "(empty body)".into();
    }
    let mut s: String = b.chars().take(SHOWN).collect();
    if s.len() < b.len() {
        s.push('…');
    }
    s.replace('\n', " ")
}
