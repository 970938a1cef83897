//! Deployment records: `deploys/<env>/<seq:010>.json` in the central store, one per deploy or
//! rollback, created with create-if-absent and then rewritten as the run progresses (only the
//! holder of the environment's deploy lock writes them, so a rewrite never races). A run
//! killed half-way leaves its record at `running`; whoever next takes the lock marks it
//! `interrupted`, and readers derive `interrupted` for a `running` record whose lock is not
//! held (see [`derive_interrupted`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ferry_store::{ObjectStore, PutMode, StoreError};

use crate::error::{DeployError, Result};
use crate::{Deployment, Status};

fn prefix(env: &str) -> String {
    format!("deploys/{env}/")
}

pub(crate) fn key(env: &str, seq: u64) -> String {
    format!("{}{seq:010}.json", prefix(env))
}

/// The sequence numbers of an environment's records, ascending.
async fn seqs(store: &dyn ObjectStore, env: &str) -> Result<Vec<u64>> {
    let p = prefix(env);
    let objects = store.list(&p).await.map_err(DeployError::store(format!(
        "listing the deployments of `{env}` in {}",
        store.url()
    )))?;
    let mut out: Vec<u64> = objects
        .iter()
        .filter_map(|m| {
            let name = m.key.strip_prefix(&p)?;
            // `lock/…` and anything else that is not a record is not ours to read here.
            name.strip_suffix(".json")
                .filter(|n| n.len() == 10 && !n.contains('/'))?
                .parse()
                .ok()
        })
        .collect();
    out.sort_unstable();
    Ok(out)
}

async fn read(store: &dyn ObjectStore, env: &str, seq: u64) -> Result<Option<Deployment>> {
    let k = key(env, seq);
    match store.get_bytes(&k).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| DeployError::BadRecord {
                key: k,
                store: store.url(),
                message: e.to_string(),
            }),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(DeployError::store(format!(
            "reading {k} in {}",
            store.url()
        ))(e)),
    }
}

/// The newest `limit` records, newest first.
pub(crate) async fn recent(
    store: &dyn ObjectStore,
    env: &str,
    limit: usize,
) -> Result<Vec<Deployment>> {
    let mut out = Vec::new();
    for seq in seqs(store, env).await?.into_iter().rev().take(limit) {
        if let Some(d) = read(store, env, seq).await? {
            out.push(d);
        }
    }
    Ok(out)
}

/// Writes a record for the first time under the next free sequence number, which it sets.
pub(crate) async fn create(store: &Arc<dyn ObjectStore>, d: &mut Deployment) -> Result<()> {
    loop {
        let next = seqs(store.as_ref(), &d.env)
            .await?
            .last()
            .map_or(1, |s| s + 1);
        d.seq = Some(next);
        let k = key(&d.env, next);
        match store
            .put_bytes(&k, to_json(store, &k, d)?, PutMode::IfAbsent)
            .await
        {
            Ok(()) => return Ok(()),
            // Only lock holders create records, but a record of a run that was taken over
            // may appear late: take the next number.
            Err(StoreError::AlreadyExists { .. }) => continue,
            Err(e) => {
                return Err(DeployError::store(format!(
                    "recording the deployment in {}",
                    store.url()
                ))(e));
            }
        }
    }
}

/// Rewrites a record (the lock holder's own, as it progresses).
pub(crate) async fn update(store: &Arc<dyn ObjectStore>, d: &Deployment) -> Result<()> {
    let Some(seq) = d.seq else { return Ok(()) };
    let k = key(&d.env, seq);
    store
        .put_bytes(&k, to_json(store, &k, d)?, PutMode::Overwrite)
        .await
        .map_err(DeployError::store(format!(
            "updating deployment record {k} in {}",
            store.url()
        )))
}

fn to_json(store: &Arc<dyn ObjectStore>, k: &str, d: &Deployment) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(d).map_err(|e| DeployError::BadRecord {
        key: k.to_string(),
        store: store.url(),
        message: e.to_string(),
    })
}

/// Marks every `running` record of `env` as `interrupted`; called by the run that just took
/// the environment's lock (so no other run can be writing them). Returns those records.
pub(crate) async fn mark_interrupted(
    store: &Arc<dyn ObjectStore>,
    env: &str,
    why: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Deployment>> {
    let mut marked = Vec::new();
    // Only the newest few can still be running: each run finishes or is marked by the next.
    for mut d in recent(store.as_ref(), env, 5).await? {
        if d.status != Status::Running {
            continue;
        }
        d.status = Status::Interrupted;
        d.finished_at = Some(now);
        d.message = Some(format!("interrupted: {why}"));
        for s in d
            .steps
            .iter_mut()
            .chain(d.rollback.iter_mut().flat_map(|r| r.steps.iter_mut()))
        {
            if s.status == crate::StepStatus::Running {
                s.status = crate::StepStatus::Interrupted;
                s.detail = format!("{} (interrupted: {why})", s.detail)
                    .trim()
                    .to_string();
            }
        }
        update(store, &d).await?;
        marked.push(d);
    }
    Ok(marked)
}

/// For readers that do not hold the lock: a `running` record is `interrupted` unless the lock
/// is held, live, by its run.
pub(crate) fn derive_interrupted(d: &mut Deployment, lock: &crate::lease::LockStatus) {
    if d.status != Status::Running {
        return;
    }
    let live_holder = lock.state == "held"
        && lock
            .holder
            .as_ref()
            .is_some_and(|h| h.deploy.is_none() || h.deploy == d.seq);
    if !live_holder {
        d.status = Status::Interrupted;
        d.message.get_or_insert_with(|| {
            format!(
                "interrupted: the run stopped without finishing ({})",
                lock.stale_because
                    .clone()
                    .unwrap_or_else(|| "its lock is no longer held".into())
            )
        });
    }
}
