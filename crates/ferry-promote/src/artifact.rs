//! Artifacts in the central store: the bytes under their digest, and small version records
//! that give `NAME@VERSION` its digest, once and for all.
//!
//! Layout (central store):
//! - `artifacts/sha256/<hex>`: the bytes (see [`crate::location::BLOB_PREFIX`]);
//! - `artifacts/versions/<name>/<version>.json`: `{name, version, digest, size, pushed_at,
//!   pushed_by}`, created only if absent, written after the bytes (the commit marker);
//! - `artifacts/index/<hex>/<name>/<version>.json`: the same record, so that a digest finds its
//!   name and version by listing one prefix.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ferry_store::{ObjectStore, PutMode, StoreError};
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Reference, Verifying};
use crate::error::{PromoteError, Result};
use crate::location::ArtifactLocation;

pub(crate) const VERSIONS_PREFIX: &str = "artifacts/versions/";
pub(crate) const INDEX_PREFIX: &str = "artifacts/index/";

/// A resolved artifact: a digest, with the name and version it was pushed as (when known).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Artifact {
    pub name: String,
    pub version: Option<String>,
    pub digest: Digest,
}

impl Artifact {
    /// `NAME@sha256:<hex>`
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.digest)
    }
}

/// The record of one pushed version. Field names are part of the store format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VersionRecord {
    pub name: String,
    pub version: String,
    pub digest: Digest,
    pub size: u64,
    pub pushed_at: DateTime<Utc>,
    pub pushed_by: String,
}

pub(crate) fn version_key(name: &str, version: &str) -> String {
    format!("{VERSIONS_PREFIX}{name}/{version}.json")
}

pub(crate) fn index_key(digest: &Digest, name: &str, version: &str) -> String {
    format!("{INDEX_PREFIX}{}/{name}/{version}.json", digest.hex())
}

/// Hashes a local file (one pass, bounded memory).
pub(crate) async fn hash_file(path: &Path) -> Result<(Digest, u64)> {
    let io = |source| PromoteError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = tokio::fs::File::open(path).await.map_err(io)?;
    let (mut reader, outcome) = Verifying::new(file, None);
    tokio::io::copy(&mut reader, &mut tokio::io::sink())
        .await
        .map_err(io)?;
    outcome
        .get()
        .ok_or_else(|| io(std::io::Error::other("the file ended without an end")))
}

/// Streams a local file into `dest` as `digest`, failing (nothing stored) if the file no
/// longer hashes to `digest`, e.g. because it changed since it was hashed.
pub(crate) async fn upload_file(
    path: &Path,
    digest: &Digest,
    dest: &dyn ArtifactLocation,
) -> Result<u64> {
    let io = |source| PromoteError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = tokio::fs::File::open(path).await.map_err(io)?;
    let (reader, outcome) = Verifying::new(file, Some(*digest));
    let written = dest.write(digest, Box::pin(reader)).await;
    match outcome.get() {
        Some((actual, _)) if actual != *digest => Err(io(std::io::Error::other(format!(
            "the file changed while it was pushed (it was {digest}, now {actual}); nothing was stored, push it again"
        )))),
        _ => written,
    }
}

/// Writes the version record (and its index entry). Pushing the same bytes under the same
/// version again is a no-op; different bytes are refused.
pub(crate) async fn record_version(
    store: &Arc<dyn ObjectStore>,
    record: &VersionRecord,
) -> Result<VersionRecord> {
    let key = version_key(&record.name, &record.version);
    let bytes = serde_json::to_vec_pretty(record).map_err(|e| PromoteError::BadRecord {
        key: key.clone(),
        store: store.url(),
        message: e.to_string(),
    })?;
    // The index entry first: an index entry without its version record is harmless (gc
    // removes it with the bytes), a version that a digest cannot find is not.
    store
        .put_bytes(
            &index_key(&record.digest, &record.name, &record.version),
            bytes.clone(),
            PutMode::Overwrite,
        )
        .await
        .map_err(PromoteError::store(format!(
            "indexing {} in {}",
            record.digest,
            store.url()
        )))?;
    match store.put_bytes(&key, bytes, PutMode::IfAbsent).await {
        Ok(()) => Ok(record.clone()),
        Err(StoreError::AlreadyExists { .. }) => {
            let existing = read_version(store, &record.name, &record.version)
                .await?
                .ok_or_else(|| PromoteError::NotFound {
                    what: format!("version record {key} vanished while it was read"),
                })?;
            if existing.digest == record.digest {
                Ok(existing)
            } else {
                Err(PromoteError::VersionTaken {
                    name: record.name.clone(),
                    version: record.version.clone(),
                    existing: existing.digest,
                    digest: record.digest,
                })
            }
        }
        Err(e) => Err(PromoteError::store(format!(
            "recording {key} in {}",
            store.url()
        ))(e)),
    }
}

pub(crate) async fn read_version(
    store: &Arc<dyn ObjectStore>,
    name: &str,
    version: &str,
) -> Result<Option<VersionRecord>> {
    let key = version_key(name, version);
    match store.get_bytes(&key).await {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| PromoteError::BadRecord {
                    key,
                    store: store.url(),
                    message: e.to_string(),
                })
        }
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(PromoteError::store(format!(
            "reading {key} from {}",
            store.url()
        ))(e)),
    }
}

/// Every `(name, version)` the digest was pushed as, from the index keys alone.
pub(crate) async fn names_of(
    store: &Arc<dyn ObjectStore>,
    digest: &Digest,
) -> Result<Vec<(String, String)>> {
    let prefix = format!("{INDEX_PREFIX}{}/", digest.hex());
    let mut objects = store
        .list(&prefix)
        .await
        .map_err(PromoteError::store(format!(
            "listing {prefix} in {}",
            store.url()
        )))?;
    // The most recently pushed last.
    objects.sort_by_key(|m| m.modified);
    Ok(objects
        .into_iter()
        .filter_map(|m| {
            let rest = m.key.strip_prefix(&prefix)?.strip_suffix(".json")?;
            let (name, version) = rest.split_once('/')?;
            Some((name.to_string(), version.to_string()))
        })
        .collect())
}

/// Resolves a reference to a digest, once, up front.
pub(crate) async fn resolve(
    store: &Arc<dyn ObjectStore>,
    central: &dyn ArtifactLocation,
    reference: &Reference,
) -> Result<Artifact> {
    match reference {
        Reference::Image(image) => Err(PromoteError::KindMismatch(format!(
            "{image} is an image in an OCI registry, not an artifact of the central store {}",
            store.url()
        ))),
        Reference::Version { name, version } => {
            let record = read_version(store, name, version).await?.ok_or_else(|| {
                PromoteError::NotFound {
                    what: format!(
                        "{name}@{version} was never pushed to {}; push it with `ferry artifact push PATH --name {name} --version {version}`",
                        store.url()
                    ),
                }
            })?;
            Ok(Artifact {
                name: record.name,
                version: Some(record.version),
                digest: record.digest,
            })
        }
        Reference::Digest(digest) | Reference::NamedDigest { digest, .. } => {
            let wanted = match reference {
                Reference::NamedDigest { name, .. } => Some(name.as_str()),
                _ => None,
            };
            let known = names_of(store, digest).await?;
            let found = known
                .iter()
                .rev()
                .find(|(n, _)| wanted.is_none_or(|w| w == n));
            match (found, wanted) {
                (Some((name, version)), _) => Ok(Artifact {
                    name: name.clone(),
                    version: Some(version.clone()),
                    digest: *digest,
                }),
                (None, wanted) => {
                    // Bytes stored without a version record (or under another name): usable,
                    // but only if they are there.
                    if central.size(digest).await?.is_none() {
                        return Err(PromoteError::NotFound {
                            what: format!(
                                "artifact {reference} was never pushed to {}",
                                store.url()
                            ),
                        });
                    }
                    Ok(Artifact {
                        name: wanted.unwrap_or("unnamed").to_string(),
                        version: None,
                        digest: *digest,
                    })
                }
            }
        }
    }
}
