//! `ferry deploy status`: what is live, the newest deployments (with who ran them and how they
//! ended; a `running` one whose lock is no longer held is shown `interrupted`), and the lock.

use chrono::{DateTime, Utc};
use ferry_promote::Release;
use serde::Serialize;

use crate::error::Result;
use crate::lease::LockStatus;
use crate::{Deployer, Kind, Status, record};

/// One deployment, as `deploy status` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct DeploySummary {
    pub seq: Option<u64>,
    pub kind: Kind,
    pub artifact: String,
    pub version: Option<String>,
    pub status: Status,
    pub actor: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub backup_id: Option<String>,
    /// The step that failed, was refused, or was running when the run stopped.
    pub stopped_at: Option<String>,
    pub message: Option<String>,
    /// For an interrupted or half-undone deployment: whether `ferry rollback` still has
    /// something to undo.
    pub undo_pending: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeployStatusReport {
    pub env: String,
    pub live: Option<Release>,
    pub lock: LockStatus,
    /// Newest first.
    pub deploys: Vec<DeploySummary>,
}

pub(crate) async fn status(dep: &Deployer, env: &str, limit: usize) -> Result<DeployStatusReport> {
    let releases = dep.promoter.releases(env).await?;
    let lock = crate::lease::status(dep.store.as_ref(), env).await?;
    let mut deploys = Vec::new();
    for mut d in record::recent(dep.store.as_ref(), env, limit).await? {
        record::derive_interrupted(&mut d, &lock);
        let stopped_at = d
            .steps
            .iter()
            .find(|s| {
                matches!(
                    s.status,
                    crate::StepStatus::Failed
                        | crate::StepStatus::Refused
                        | crate::StepStatus::Running
                        | crate::StepStatus::Interrupted
                )
            })
            .map(|s| s.name.clone());
        deploys.push(DeploySummary {
            seq: d.seq,
            kind: d.kind,
            undo_pending: matches!(d.status, Status::Interrupted | Status::Failed)
                && d.undo.pending(),
            artifact: d.artifact,
            version: d.version,
            status: d.status,
            actor: d.actor,
            started_at: d.started_at,
            finished_at: d.finished_at,
            backup_id: d.backup_id,
            stopped_at,
            message: d.message,
        });
    }
    Ok(DeployStatusReport {
        env: env.to_string(),
        live: releases.live,
        lock,
        deploys,
    })
}
