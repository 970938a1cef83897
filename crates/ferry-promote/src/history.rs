//! The release history of an environment: append-only records in the central store at
//! `releases/<env>/<seq, zero-padded to 10>.json`, each created only if its sequence number is
//! still free. Statuses are never written: they are derived when reading, because a record,
//! once written, never changes.
//!
//! Beside a release record, `releases/<env>/<seq>.rollout.<n:04>.json` records each rollout of
//! that release to the environment's hosts (who, when, each host's outcome): additive, created
//! if absent, never changed, and read with the release they belong to.
//!
//! Derivation: the newest record is `live`; a `rollback` record marks the record just before it
//! (the release it replaced, whose digest it names as `previous`) `bad`; every other record is
//! `superseded`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ferry_store::{ObjectStore, PutMode, StoreError};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{PromoteError, Result};

pub const RELEASES_PREFIX: &str = "releases/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Promote,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The newest release of the environment.
    Live,
    /// Replaced by a later promotion (or was brought back and replaced again).
    Superseded,
    /// Replaced by a rollback: it must not be promoted onward.
    Bad,
}

/// A release record as stored. Field names are part of the store format.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub seq: u64,
    pub digest: Digest,
    pub name: String,
    pub version: Option<String>,
    /// The digest that was live when this record was written (for a rollback: the one it
    /// marked bad).
    pub previous: Option<Digest>,
    pub action: Action,
    pub actor: String,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
    /// Added by `ferry deploy` (absent from older records and plain promotions): the highest
    /// applied migration the release runs against, the backup taken before its migrations,
    /// and its deployment record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<u64>,
}

/// One release as reported: the JSON keys are the `ferry releases` contract.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Release {
    pub seq: u64,
    pub digest: Digest,
    pub name: String,
    pub version: Option<String>,
    pub action: Action,
    pub status: Status,
    pub actor: String,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
    /// The digest live before this release (what a rollback record marked bad). Not part of
    /// the `releases` JSON, which the issue fixes.
    #[serde(skip)]
    pub replaced: Option<Digest>,
    /// The schema version recorded with the release by `ferry deploy` (additive key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<i64>,
    /// The backup taken before the release's migrations (additive key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// The deployment record that made it live (additive key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<u64>,
    /// The rollouts of this release to the environment's hosts, oldest first (an additive key,
    /// absent when there were none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<RolloutRecord>,
}

/// One rollout of a release to an environment's hosts, as stored and as `releases` shows it.
/// Statuses are the rollout's own words (`succeeded`, `halted`, ...; `deployed`, `skipped`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// The release (sequence number) that was rolled out.
    pub seq: u64,
    /// 1 for its first rollout, 2 for the next, ...
    pub n: u32,
    pub digest: Digest,
    pub version: Option<String>,
    pub status: String,
    /// True when this rollout brought a previous release back.
    #[serde(default)]
    pub rollback: bool,
    pub actor: String,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
    pub stopped: usize,
    pub hosts: Vec<RolloutHostRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutHostRecord {
    pub name: String,
    pub status: String,
    pub before_version: Option<String>,
    pub after_version: Option<String>,
    pub duration_ms: u64,
    pub detail: Option<String>,
}

pub(crate) fn rollout_key(env: &str, seq: u64, n: u32) -> String {
    format!("{RELEASES_PREFIX}{env}/{seq:010}.rollout.{n:04}.json")
}

/// `<seq>.rollout.<n>` of a key's file name (without `.json`).
fn parse_rollout_name(name: &str) -> Option<(u64, u32)> {
    let (seq, n) = name.split_once(".rollout.")?;
    if seq.len() != 10 {
        return None;
    }
    Some((seq.parse().ok()?, n.parse().ok()?))
}

pub(crate) fn record_key(env: &str, seq: u64) -> String {
    format!("{RELEASES_PREFIX}{env}/{seq:010}.json")
}

/// The releases of one environment, oldest first.
#[derive(Debug, Clone)]
pub(crate) struct History {
    pub releases: Vec<Release>,
}

impl History {
    pub(crate) async fn read(store: &Arc<dyn ObjectStore>, env: &str) -> Result<History> {
        let prefix = format!("{RELEASES_PREFIX}{env}/");
        let objects = store
            .list(&prefix)
            .await
            .map_err(PromoteError::store(format!(
                "listing the releases of `{env}` in {}",
                store.url()
            )))?;
        let mut records = Vec::new();
        let mut rollouts: Vec<RolloutRecord> = Vec::new();
        for meta in objects {
            if let Some((seq, n)) = meta
                .key
                .strip_prefix(&prefix)
                .and_then(|k| k.strip_suffix(".json"))
                .and_then(parse_rollout_name)
            {
                let bytes = match store.get_bytes(&meta.key).await {
                    Ok(b) => b,
                    Err(StoreError::NotFound { .. }) => continue,
                    Err(e) => return Err(PromoteError::store(format!("reading {}", meta.key))(e)),
                };
                let r: RolloutRecord =
                    serde_json::from_slice(&bytes).map_err(|e| PromoteError::BadRecord {
                        key: meta.key.clone(),
                        store: store.url(),
                        message: e.to_string(),
                    })?;
                if (r.seq, r.n) == (seq, n) {
                    rollouts.push(r);
                }
                continue;
            }
            let Some(seq) = meta
                .key
                .strip_prefix(&prefix)
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|n| n.len() == 10)
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue; // not a record (a stray file): never ours to interpret
            };
            let bad = |message: String| PromoteError::BadRecord {
                key: meta.key.clone(),
                store: store.url(),
                message,
            };
            let bytes = match store.get_bytes(&meta.key).await {
                Ok(b) => b,
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => {
                    return Err(PromoteError::store(format!("reading {}", meta.key))(e));
                }
            };
            let record: Record = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
            if record.seq != seq {
                return Err(bad(format!(
                    "it says seq {} but is stored as {seq}",
                    record.seq
                )));
            }
            records.push(record);
        }
        records.sort_by_key(|r| r.seq);
        let mut history = History::derive(records);
        rollouts.sort_by_key(|r| (r.seq, r.n));
        for r in rollouts {
            if let Some(release) = history.releases.iter_mut().find(|x| x.seq == r.seq) {
                release.rollouts.push(r);
            }
        }
        Ok(history)
    }

    /// Records a rollout of release `record.seq` under the next free number (`record.n` is
    /// set here); create-if-absent, retried when a concurrent rollout took the number.
    pub(crate) async fn append_rollout(
        store: &Arc<dyn ObjectStore>,
        env: &str,
        mut record: RolloutRecord,
    ) -> Result<RolloutRecord> {
        let prefix = format!("{RELEASES_PREFIX}{env}/{:010}.rollout.", record.seq);
        for _ in 0..5 {
            let taken = store
                .list(&prefix)
                .await
                .map_err(PromoteError::store(format!(
                    "listing {prefix} in {}",
                    store.url()
                )))?;
            record.n = taken
                .iter()
                .filter_map(|m| {
                    m.key
                        .strip_prefix(&format!("{RELEASES_PREFIX}{env}/"))
                        .and_then(|k| k.strip_suffix(".json"))
                        .and_then(parse_rollout_name)
                        .map(|(_, n)| n)
                })
                .max()
                .unwrap_or(0)
                + 1;
            let key = rollout_key(env, record.seq, record.n);
            let bytes =
                serde_json::to_vec_pretty(&record).map_err(|e| PromoteError::BadRecord {
                    key: key.clone(),
                    store: store.url(),
                    message: e.to_string(),
                })?;
            match store.put_bytes(&key, bytes, PutMode::IfAbsent).await {
                Ok(()) => return Ok(record),
                Err(StoreError::AlreadyExists { .. }) => continue,
                Err(e) => {
                    return Err(PromoteError::store(format!(
                        "recording rollout {} of release {} of `{env}` in {}",
                        record.n,
                        record.seq,
                        store.url()
                    ))(e));
                }
            }
        }
        Err(PromoteError::Conflict {
            env: env.to_string(),
            seq: record.seq,
        })
    }

    fn derive(records: Vec<Record>) -> History {
        let mut status = vec![Status::Superseded; records.len()];
        for (i, r) in records.iter().enumerate() {
            if r.action == Action::Rollback && i > 0 {
                status[i - 1] = Status::Bad;
            }
        }
        if let Some(last) = status.last_mut() {
            *last = Status::Live;
        }
        let releases = records
            .into_iter()
            .zip(status)
            .map(|(r, status)| Release {
                seq: r.seq,
                digest: r.digest,
                name: r.name,
                version: r.version,
                action: r.action,
                status,
                actor: r.actor,
                at: r.at,
                reason: r.reason,
                replaced: r.previous,
                schema_version: r.schema_version,
                backup_id: r.backup_id,
                deploy: r.deploy,
                rollouts: Vec::new(),
            })
            .collect();
        History { releases }
    }

    pub(crate) fn live(&self) -> Option<&Release> {
        self.releases.last()
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.releases.last().map_or(1, |r| r.seq + 1)
    }

    /// The newest release of `digest` here, which says whether it was ever live (any record)
    /// and whether it is bad now (that record's status).
    pub(crate) fn newest_of(&self, digest: &Digest) -> Option<&Release> {
        self.releases.iter().rev().find(|r| r.digest == *digest)
    }

    pub(crate) fn is_bad(&self, digest: &Digest) -> bool {
        self.newest_of(digest)
            .is_some_and(|r| r.status == Status::Bad)
    }

    /// What `rollback` without a target brings back and what `releases` reports as
    /// `previous`: the newest earlier release of a different digest that is not bad. In a
    /// history without rollbacks that is simply the release live before the current one.
    pub(crate) fn previous(&self) -> Option<&Release> {
        let live = self.live()?;
        self.releases
            .iter()
            .rev()
            .skip(1)
            .find(|r| r.digest != live.digest && !self.is_bad(&r.digest))
    }

    /// Creates the record only if its sequence number is still free.
    pub(crate) async fn append(
        store: &Arc<dyn ObjectStore>,
        env: &str,
        record: &Record,
    ) -> Result<()> {
        let key = record_key(env, record.seq);
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| PromoteError::BadRecord {
            key: key.clone(),
            store: store.url(),
            message: e.to_string(),
        })?;
        match store.put_bytes(&key, bytes, PutMode::IfAbsent).await {
            Ok(()) => Ok(()),
            Err(StoreError::AlreadyExists { .. }) => Err(PromoteError::Conflict {
                env: env.to_string(),
                seq: record.seq,
            }),
            Err(e) => Err(PromoteError::store(format!(
                "recording release {} of `{env}` in {}",
                record.seq,
                store.url()
            ))(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, d: &[u8], action: Action, previous: Option<&[u8]>) -> Record {
        Record {
            seq,
            digest: Digest::of(d),
            name: "app".into(),
            version: None,
            previous: previous.map(Digest::of),
            action,
            actor: "t".into(),
            at: Utc::now(),
            reason: None,
            schema_version: None,
            backup_id: None,
            deploy: None,
        }
    }

    #[test]
    fn statuses_are_derived() {
        use Action::*;
        let h = History::derive(vec![
            rec(1, b"a", Promote, None),
            rec(2, b"b", Promote, Some(b"a")),
            rec(3, b"c", Promote, Some(b"b")),
            rec(4, b"b", Rollback, Some(b"c")),
        ]);
        let st: Vec<Status> = h.releases.iter().map(|r| r.status).collect();
        assert_eq!(
            st,
            [
                Status::Superseded,
                Status::Superseded,
                Status::Bad,
                Status::Live
            ]
        );
        assert!(h.is_bad(&Digest::of(b"c")));
        assert_eq!(h.previous().unwrap().digest, Digest::of(b"a"));
        assert_eq!(h.next_seq(), 5);

        // Rolling back again marks b bad; a is live; previous skips the bad b and c.
        let mut recs: Vec<Record> = vec![
            rec(1, b"a", Promote, None),
            rec(2, b"b", Promote, Some(b"a")),
            rec(3, b"c", Promote, Some(b"b")),
            rec(4, b"b", Rollback, Some(b"c")),
            rec(5, b"a", Rollback, Some(b"b")),
        ];
        let h = History::derive(recs.clone());
        assert!(h.is_bad(&Digest::of(b"b")) && h.is_bad(&Digest::of(b"c")));
        assert!(h.previous().is_none());
        // A fixed promotion of c later makes it good again.
        recs.push(rec(6, b"c", Promote, Some(b"a")));
        let h = History::derive(recs);
        assert!(!h.is_bad(&Digest::of(b"c")));
        assert_eq!(h.previous().unwrap().digest, Digest::of(b"a"));
    }
}
