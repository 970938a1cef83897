//! `ferry smoke`: the checks a team runs against an environment every morning and after every
//! deploy. Every check runs (a bounded number at a time), a failure never stops the others,
//! and each has its own timeout. An HTTP check is a GET with an expected status (default 200)
//! and optional text; a SQL check runs one statement on the environment's database inside a
//! read-only transaction (`sql.rs`), so it can never change data.

use std::time::{Duration, Instant};

use ferry_core::DatabaseUrl;
use ferry_core::fleet::{SmokeCheck, SmokeKind};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

mod sql;

/// Checks running at once.
pub const PARALLEL: usize = 8;

/// The JSON of `ferry smoke` (the contract).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SmokeReport {
    pub env: String,
    pub passed: bool,
    pub checks: Vec<CheckReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    pub name: String,
    /// `http` or `sql`
    pub kind: String,
    pub passed: bool,
    pub latency_ms: u64,
    /// What was seen (`HTTP 200`, `true`) or what went wrong.
    pub detail: String,
}

/// Runs every check; the report lists them in configuration order.
pub async fn run(
    env: &str,
    checks: &[SmokeCheck],
    database_url: Option<&DatabaseUrl>,
) -> SmokeReport {
    let http = reqwest::Client::builder()
        .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
        .build();
    let results: Vec<CheckReport> = futures_util::stream::iter(checks)
        .map(|c| one(c, http.as_ref().ok(), database_url))
        .buffered(PARALLEL)
        .collect()
        .await;
    SmokeReport {
        env: env.to_string(),
        passed: results.iter().all(|c| c.passed),
        checks: results,
    }
}

async fn one(
    check: &SmokeCheck,
    http: Option<&reqwest::Client>,
    db: Option<&DatabaseUrl>,
) -> CheckReport {
    let kind = check.kind();
    let timeout = check.timeout();
    let start = Instant::now();
    let work = async {
        match kind {
            SmokeKind::Http => match http {
                Some(c) => http_check(c, check).await,
                None => Err("cannot create an HTTP client".to_string()),
            },
            SmokeKind::Sql => sql_check(check, db, timeout).await,
        }
    };
    let timed_out = || format!("timed out after {}", seconds(timeout));
    let outcome = match tokio::time::timeout(timeout, work).await {
        // A check interrupted by its own deadline (SQLite's progress handler races the timer)
        // timed out too, whatever the database called it.
        Ok(Err(_)) if start.elapsed() >= timeout => Err(timed_out()),
        Ok(r) => r,
        Err(_) => Err(timed_out()),
    };
    let latency_ms = start.elapsed().as_millis() as u64;
    tracing::info!(check = %check.name, kind = kind.as_str(), ok = outcome.is_ok(), latency_ms, "smoke check");
    let (passed, detail) = match outcome {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    CheckReport {
        name: check.name.clone(),
        kind: kind.as_str().to_string(),
        passed,
        latency_ms,
        detail,
    }
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

async fn http_check(client: &reqwest::Client, check: &SmokeCheck) -> Result<String, String> {
    let url = check.http.as_deref().unwrap_or_default();
    let resp = client.get(url).send().await.map_err(|e| {
        if e.is_connect() {
            format!("cannot connect to {url}")
        } else {
            format!("{url}: {e}")
        }
    })?;
    let status = resp.status().as_u16();
    let want = check.status.unwrap_or(200);
    let body = resp
        .text()
        .await
        .map_err(|e| format!("reading {url}: {e}"))?;
    if status != want {
        return Err(format!("HTTP {status}, expected {want}"));
    }
    if let Some(text) = &check.contains
        && !body.contains(text.as_str())
    {
        return Err(format!(
            "HTTP {status} but the body does not contain {text:?}"
        ));
    }
    Ok(format!("HTTP {status}"))
}

async fn sql_check(
    check: &SmokeCheck,
    db: Option<&DatabaseUrl>,
    timeout: Duration,
) -> Result<String, String> {
    let Some(url) = db else {
        return Err("no database URL for this environment (database_url in ferry.toml, --database-url or DATABASE_URL)".into());
    };
    let query = check.sql.as_deref().unwrap_or_default();
    let value = sql::first_value(url, query, timeout).await?;
    let shown = value.clone().unwrap_or_else(|| "(no rows)".into());
    match &check.expect {
        None => Ok(shown),
        Some(want) if value.as_deref().is_some_and(|v| same_value(v, want)) => Ok(shown),
        Some(want) => Err(format!("got {shown}, expected {want}")),
    }
}

/// `expect` compares as text, and also as a boolean (`true`/`t`/`1`) or a number, so
/// `expect = "true"` holds on MySQL (which has no boolean type) as on PostgreSQL.
fn same_value(got: &str, want: &str) -> bool {
    let (g, w) = (got.trim(), want.trim());
    if g == w {
        return true;
    }
    let truth = |s: &str| match s.to_ascii_lowercase().as_str() {
        "true" | "t" | "1" => Some(true),
        "false" | "f" | "0" => Some(false),
        _ => None,
    };
    if let (Some(a), Some(b)) = (truth(g), truth(w)) {
        return a == b;
    }
    matches!((g.parse::<f64>(), w.parse::<f64>()), (Ok(a), Ok(b)) if a == b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_compare_as_text_booleans_or_numbers() {
        use super::same_value as s;
        assert!(s("true", "true") && s("1", "true") && s("t", "TRUE") && s("0", "false"));
        assert!(s("3", "3.0") && s(" x ", "x"));
        assert!(!s("2", "true") && !s("false", "true") && !s("abc", "abd"));
    }
}
