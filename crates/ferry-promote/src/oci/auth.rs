//! Answering a registry's `WWW-Authenticate` challenge: Basic with the credentials found for
//! it, or a Bearer token from its token service (asked with Basic credentials, or with an
//! identity token through the OAuth2 refresh-token grant), kept per scope set. The credentials
//! are looked up (a helper run) only here, when a registry first asks.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use url::Url;

use super::client::{Registry, json_value};
use super::credentials::Auth;
use crate::error::{PromoteError, Result};

#[derive(Default)]
pub(super) struct AuthState {
    /// The registry asked for Basic auth.
    pub(super) basic: bool,
    /// The registry's token service (`realm`, `service`), once it asked for a Bearer token.
    pub(super) bearer: Option<(String, Option<String>)>,
    /// Tokens by scope set.
    pub(super) tokens: HashMap<String, String>,
}

impl Registry {
    pub(super) fn auth_header(&self, scopes: &[String]) -> Option<String> {
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
    pub(super) async fn credentials(&self) -> Result<Option<&Auth>> {
        let found = self
            .credentials
            .get_or_try_init(|| self.source.resolve(&self.host))
            .await?;
        Ok(found.as_ref())
    }

    /// Learns from a `WWW-Authenticate` challenge: Basic, or a Bearer token for `scopes`.
    pub(super) async fn answer(
        &self,
        context: &str,
        challenge: &str,
        scopes: &[String],
    ) -> Result<()> {
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
}

/// `realm="…",service="…",scope="…"` → map.
pub(super) fn parse_challenge(params: &str) -> HashMap<String, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
