//! What is live in an environment, its history, and the rollouts recorded beside it.

use serde::Serialize;

use crate::Promoter;
use crate::error::Result;
use crate::history::{History, Release, RolloutRecord};

/// `ferry releases --env ENV`; the JSON keys are the contract.
#[derive(Debug, Clone, Serialize)]
pub struct Releases {
    pub env: String,
    pub live: Option<Release>,
    /// What `rollback` without `--to` would bring back: the newest earlier release of another
    /// digest that is not bad. Without rollbacks, the release live before the current one.
    pub previous: Option<Release>,
    /// Newest first.
    pub history: Vec<Release>,
}

impl Promoter {
    /// What is live in an environment, what was before, and its history, newest first.
    pub async fn releases(&self, env: &str) -> Result<Releases> {
        let env = self.env(env)?;
        let history = History::read(&self.central, &env.name).await?;
        Ok(Releases {
            env: env.name.clone(),
            live: history.live().cloned(),
            previous: history.previous().cloned(),
            history: history.releases.iter().rev().cloned().collect(),
        })
    }

    /// Records a rollout of release `record.seq` of `env` to its hosts, beside the release
    /// record (`record.n` is assigned here). `releases` shows it with the release.
    pub async fn record_rollout(&self, env: &str, record: RolloutRecord) -> Result<RolloutRecord> {
        let env = self.env(env)?;
        History::append_rollout(&self.central, &env.name, record).await
    }
}
