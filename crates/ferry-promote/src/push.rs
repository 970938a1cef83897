//! `ferry artifact push` and resolving a reference to a digest, once, up front.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::artifact::{self, VersionRecord};
use crate::digest::{self, Digest, Reference};
use crate::error::{PromoteError, Result};
use crate::location::ArtifactLocation;
use crate::oci::{OciLocation, OciUrl};
use crate::{Artifact, Promoter};

/// `ferry artifact push`.
#[derive(Debug, Clone)]
pub struct PushRequest {
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    pub actor: String,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// `NAME@sha256:<hex>`
    pub reference: String,
    pub name: String,
    pub version: String,
    pub digest: Digest,
    pub size: u64,
    /// False when the bytes were already in the store (nothing new was stored).
    pub stored: bool,
    /// When this version was first pushed.
    pub pushed_at: DateTime<Utc>,
}

impl Promoter {
    /// Stores a file under its digest and records its name and version.
    pub async fn push(&self, req: PushRequest) -> Result<PushReport> {
        let bad = |reason: String| PromoteError::BadReference {
            reference: format!("{}@{}", req.name, req.version),
            reason,
        };
        digest::check_name(&req.name).map_err(bad)?;
        digest::check_version(&req.version).map_err(bad)?;
        let (digest, size) = artifact::hash_file(&req.path).await?;
        let stored = match self.central_loc.size(&digest).await? {
            Some(_) => false,
            None => {
                artifact::upload_file(&req.path, &digest, self.central_loc.as_ref()).await?;
                true
            }
        };
        let record = artifact::record_version(
            &self.central,
            &VersionRecord {
                name: req.name.clone(),
                version: req.version.clone(),
                digest,
                size,
                pushed_at: req.now,
                pushed_by: req.actor.clone(),
            },
        )
        .await?;
        tracing::info!(%digest, size, stored, name = %req.name, version = %req.version, "artifact pushed");
        Ok(PushReport {
            reference: format!("{}@{digest}", req.name),
            name: req.name,
            version: req.version,
            digest,
            size,
            stored,
            pushed_at: record.pushed_at,
        })
    }

    /// Resolves `NAME@sha256:<hex>`, `sha256:<hex>`, `NAME@VERSION`, `NAME:VERSION`, or an
    /// image `REGISTRY/REPO@sha256:<hex>` / `REGISTRY/REPO:TAG`.
    pub async fn resolve(&self, reference: &str) -> Result<Artifact> {
        Ok(self.resolve_with_source(reference).await?.0)
    }

    /// Resolves a reference, with the repository an image reference names (where the first
    /// environment of a registry chain copies from).
    pub(crate) async fn resolve_with_source(
        &self,
        reference: &str,
    ) -> Result<(Artifact, Option<Arc<dyn ArtifactLocation>>)> {
        let parsed: Reference = reference.parse()?;
        let Reference::Image(image) = parsed else {
            let artifact =
                artifact::resolve(&self.central, self.central_loc.as_ref(), &parsed).await?;
            return Ok((artifact, None));
        };
        let repo = OciLocation::for_image(&image, &self.registry)?;
        let digest = match (image.digest, &image.tag) {
            (Some(d), _) => {
                if repo.size(&d).await?.is_none() {
                    return Err(PromoteError::NotFound {
                        what: format!("image {d} is not in {}", repo.url()),
                    });
                }
                d
            }
            (None, Some(tag)) => repo.resolve_tag(tag).await?,
            (None, None) => unreachable!("ImageRef has a tag or a digest"),
        };
        tracing::info!(reference, %digest, "image resolved");
        let artifact = Artifact {
            name: image.repo.clone(),
            version: Some(
                image
                    .tag
                    .clone()
                    .unwrap_or_else(|| digest.hex()[..12].to_string()),
            ),
            digest,
        };
        Ok((artifact, Some(Arc::new(repo))))
    }

    /// How to promote this release again (which re-applies a tag that failed to move).
    pub(crate) fn retry_command(
        location: &dyn ArtifactLocation,
        env: &str,
        digest: &Digest,
    ) -> String {
        match OciUrl::parse(&location.url()) {
            Ok(u) => format!("ferry promote {}/{}@{digest} --to {env}", u.host, u.repo),
            Err(_) => format!("ferry promote {digest} --to {env}"),
        }
    }
}
