//! `ferry artifact gc`: removes artifacts no environment's last releases refer to.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Promoter;
use crate::artifact::{self, VersionRecord};
use crate::digest::Digest;
use crate::error::{PromoteError, Result};
use crate::history::{self, History};
use crate::location::ArtifactLocation;

/// `ferry artifact gc --keep N [--delete]`.
#[derive(Debug, Clone)]
pub struct GcRequest {
    /// How many of each environment's newest releases keep their artifacts (at least 1).
    pub keep: usize,
    /// Report what would be removed, remove nothing.
    pub dry_run: bool,
    pub now: DateTime<Utc>,
    /// Artifacts pushed more recently than this are kept even if no release refers to them
    /// yet: they may be about to be promoted. Default one day.
    pub min_age: chrono::Duration,
}

impl GcRequest {
    pub fn new(keep: usize, dry_run: bool, now: DateTime<Utc>) -> Self {
        GcRequest {
            keep,
            dry_run,
            now,
            min_age: chrono::Duration::days(1),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    pub keep: usize,
    pub dry_run: bool,
    /// Locations gc did not look at (OCI registries cannot list images by digest; use the
    /// registry's own garbage collection).
    pub skipped: Vec<String>,
    /// Every artifact kept because a release or a recent push needs it.
    pub kept: Vec<Digest>,
    /// What was removed (or, in a dry run, would be).
    pub removed: Vec<GcRemoval>,
    pub freed_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcRemoval {
    pub digest: Digest,
    pub location: String,
    pub size: u64,
}

impl Promoter {
    /// Deletes the version records and index entries of a digest about to be removed.
    async fn forget_names(
        &self,
        digest: &Digest,
        versions: Option<&Vec<VersionRecord>>,
    ) -> Result<()> {
        let index_prefix = format!("{}{}/", artifact::INDEX_PREFIX, digest.hex());
        let index = self
            .central
            .list(&index_prefix)
            .await
            .map_err(PromoteError::store(format!(
                "listing {index_prefix} in {}",
                self.central.url()
            )))?;
        let keys = versions
            .into_iter()
            .flatten()
            .map(|v| artifact::version_key(&v.name, &v.version))
            .chain(index.into_iter().map(|m| m.key));
        for key in keys {
            self.central
                .delete(&key)
                .await
                .map_err(PromoteError::store(format!(
                    "deleting {key} from {}",
                    self.central.url()
                )))?;
        }
        Ok(())
    }

    /// Removes artifacts (in the central store and every environment's location) that no
    /// environment's last `keep` releases refer to and that were not pushed recently.
    pub async fn gc(&self, req: GcRequest) -> Result<GcReport> {
        if req.keep == 0 {
            return Err(PromoteError::Invalid(
                "--keep must be at least 1, so that what is live is never removed".into(),
            ));
        }
        // Every environment with a history, configured or not (a removed [env] section does
        // not make its releases fair game).
        let mut env_names: BTreeSet<String> = self.envs.keys().cloned().collect();
        let records =
            self.central
                .list(history::RELEASES_PREFIX)
                .await
                .map_err(PromoteError::store(format!(
                    "listing release histories in {}",
                    self.central.url()
                )))?;
        for m in &records {
            if let Some((env, _)) = m
                .key
                .strip_prefix(history::RELEASES_PREFIX)
                .and_then(|k| k.split_once('/'))
            {
                env_names.insert(env.to_string());
            }
        }
        let mut keep: BTreeSet<Digest> = BTreeSet::new();
        for env in &env_names {
            let h = History::read(&self.central, env).await?;
            keep.extend(h.releases.iter().rev().take(req.keep).map(|r| r.digest));
        }

        // Version records: which digests were pushed recently, and which records go with a
        // removed digest.
        let versions =
            self.central
                .list(artifact::VERSIONS_PREFIX)
                .await
                .map_err(PromoteError::store(format!(
                    "listing artifact versions in {}",
                    self.central.url()
                )))?;
        let mut records_of: BTreeMap<Digest, Vec<VersionRecord>> = BTreeMap::new();
        for m in versions {
            // A store error stops gc: skipping a record could remove a fresh push.
            let bytes = match self.central.get_bytes(&m.key).await {
                Ok(bytes) => bytes,
                Err(ferry_store::StoreError::NotFound { .. }) => continue,
                Err(e) => {
                    return Err(PromoteError::store(format!("reading {}", m.key))(e));
                }
            };
            let Ok(v) = serde_json::from_slice::<VersionRecord>(&bytes) else {
                continue; // unreadable: leave it for a human; it names no digest to keep
            };
            if req.now - v.pushed_at < req.min_age {
                keep.insert(v.digest);
            }
            records_of.entry(v.digest).or_default().push(v);
        }

        let mut locations: Vec<Arc<dyn ArtifactLocation>> = vec![self.central_loc.clone()];
        let mut urls = BTreeSet::from([self.central.url()]);
        let mut skipped = Vec::new();
        for env in self.envs.keys() {
            let loc = self.location(env).await?;
            if loc.is_registry() {
                tracing::info!(location = %loc.url(), "gc skips OCI registries");
                skipped.push(loc.url());
                continue;
            }
            if urls.insert(loc.url()) {
                locations.push(loc);
            }
        }

        let mut removed = Vec::new();
        // Environment locations first, the central store last: if gc stops half-way, what
        // remains can still be promoted again from the central store.
        for loc in locations.iter().rev() {
            for (digest, size) in loc.list().await? {
                if keep.contains(&digest) {
                    continue;
                }
                if !req.dry_run {
                    if Arc::ptr_eq(loc, &self.central_loc) {
                        // Names first, so no version ever points at missing bytes.
                        self.forget_names(&digest, records_of.get(&digest)).await?;
                    }
                    loc.delete(&digest).await?;
                }
                tracing::info!(%digest, location = %loc.url(), dry_run = req.dry_run, "artifact removed");
                removed.push(GcRemoval {
                    digest,
                    location: loc.url(),
                    size,
                });
            }
        }
        Ok(GcReport {
            keep: req.keep,
            dry_run: req.dry_run,
            skipped,
            kept: keep.into_iter().collect(),
            freed_bytes: removed.iter().map(|r| r.size).sum(),
            removed,
        })
    }
}
