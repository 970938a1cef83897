//! [`OciLocation`]: a repository as an environment's artifact location, the
//! [`ArtifactLocation`] implementation for registries: resolving tags, reading and checking
//! manifests, copying an image (index children, blobs by mount or stream, then the manifest)
//! and moving the environment's tag.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_store::ByteStream;
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};

use super::client::{Registry, RegistryOptions, pull, push, unexpected};
use super::reference::{ImageRef, OciUrl, check_tag};
use crate::digest::Digest;
use crate::error::{PromoteError, Result};
use crate::location::{ArtifactLocation, CopyOutcome, LocFut};

/// A repository in a registry, as an environment's artifact location.
pub struct OciLocation {
    registry: Arc<Registry>,
    repo: String,
    /// The tag [`ArtifactLocation::make_live`] moves; `None` for a source repository.
    tag: Option<String>,
}

impl OciLocation {
    /// Opens `oci://HOST/REPO[:TAG]`; `default_tag` (the environment's name) is the tag when
    /// the URL has none. Nothing is sent until it is used.
    pub fn open(url: &str, default_tag: Option<&str>, options: &RegistryOptions) -> Result<Self> {
        Self::open_parsed(OciUrl::parse(url)?, default_tag, options)
    }

    /// [`OciLocation::open`] of a URL already parsed.
    pub fn open_parsed(
        parsed: OciUrl,
        default_tag: Option<&str>,
        options: &RegistryOptions,
    ) -> Result<Self> {
        let url = parsed.to_string();
        let tag = match (parsed.tag, default_tag) {
            (Some(t), _) => Some(t),
            (None, Some(t)) => {
                check_tag(t).map_err(|reason| PromoteError::BadOciUrl {
                    url: url.to_string(),
                    reason: format!(
                        "the environment name is the default tag, and {reason}; add :TAG to the URL"
                    ),
                })?;
                Some(t.to_string())
            }
            (None, None) => None,
        };
        Ok(OciLocation {
            registry: Arc::new(Registry::new(&parsed.host, options)?),
            repo: parsed.repo,
            tag,
        })
    }

    /// The repository an image reference names (no tag is ever moved there).
    pub fn for_image(image: &ImageRef, options: &RegistryOptions) -> Result<Self> {
        Ok(OciLocation {
            registry: Arc::new(Registry::new(&image.host, options)?),
            repo: image.repo.clone(),
            tag: None,
        })
    }

    pub fn repo(&self) -> &str {
        &self.repo
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// Resolves a tag to its manifest digest, once (HEAD, else GET and hash).
    pub async fn resolve_tag(&self, tag: &str) -> Result<Digest> {
        let not_found = || PromoteError::NotFound {
            what: format!("tag {tag} is not in {}", self.url()),
        };
        match self.registry.head_manifest(&self.repo, tag).await? {
            None => Err(not_found()),
            Some((Some(d), _)) => Ok(d),
            Some((None, _)) => {
                let (bytes, _) = self
                    .registry
                    .get_manifest(&self.repo, tag)
                    .await?
                    .ok_or_else(not_found)?;
                Ok(Digest::of(&bytes))
            }
        }
    }

    /// The manifest bytes of `digest` and their media type, checked against the digest.
    async fn manifest_verified(&self, digest: &Digest) -> Result<(Vec<u8>, String)> {
        let (bytes, media_type) = self
            .registry
            .get_manifest(&self.repo, &digest.to_string())
            .await?
            .ok_or_else(|| PromoteError::NotFound {
                what: format!("image {digest} is not in {}", self.url()),
            })?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(PromoteError::Tampered {
                digest: *digest,
                location: self.url(),
                actual,
            });
        }
        Ok((bytes, media_type))
    }

    /// Checks that `reference` (a digest or tag) resolves to `digest` here.
    async fn check_resolves(&self, reference: &str, digest: &Digest) -> Result<()> {
        let found = self.registry.head_manifest(&self.repo, reference).await?;
        let actual = match found {
            Some((Some(d), _)) => Some(d),
            Some((None, _)) => self
                .registry
                .get_manifest(&self.repo, reference)
                .await?
                .map(|(b, _)| Digest::of(&b)),
            None => None,
        };
        match actual {
            Some(d) if d == *digest => Ok(()),
            other => Err(PromoteError::RegistryMismatch {
                location: format!("{}/{}:{reference}", self.registry.host, self.repo),
                digest: *digest,
                actual: other.map_or_else(|| "nothing".to_string(), |d| d.to_string()),
            }),
        }
    }

    fn same_registry(&self, other: &OciLocation) -> bool {
        self.registry.base == other.registry.base
    }

    /// Copies the image (index children, blobs, then the manifest) from `self` to `dest`.
    fn copy_image<'a>(
        &'a self,
        digest: &'a Digest,
        dest: &'a OciLocation,
    ) -> LocFut<'a, CopyOutcome> {
        Box::pin(async move {
            let (bytes, media_type) = self.manifest_verified(digest).await?;
            let manifest: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| PromoteError::Registry {
                    registry: self.registry.host.clone(),
                    context: format!("reading manifest {digest} of {}", self.repo),
                    message: format!("not JSON: {e}"),
                })?;
            let mut outcome = CopyOutcome {
                bytes_copied: 0,
                bytes_verified: bytes.len() as u64,
                server_side: false,
            };
            let digests_in = |key: &str| -> Vec<String> {
                manifest
                    .get(key)
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.get("digest")?.as_str().map(str::to_string))
                    .collect()
            };
            for child in digests_in("manifests") {
                let child: Digest = child.parse()?;
                if dest
                    .registry
                    .head_manifest(&dest.repo, &child.to_string())
                    .await?
                    .is_none()
                {
                    let c = self.copy_image(&child, dest).await?;
                    outcome.bytes_copied += c.bytes_copied;
                    outcome.bytes_verified += c.bytes_verified;
                }
            }
            let mut blobs = Vec::new();
            if let Some(config) = manifest
                .get("config")
                .and_then(|c| c.get("digest"))
                .and_then(|d| d.as_str())
            {
                blobs.push(config.to_string());
            }
            blobs.extend(digests_in("layers"));
            for blob in &blobs {
                outcome.bytes_copied += self.copy_blob(blob, dest).await?;
            }
            // Only the manifest passed through ferry: every blob was mounted (or already there).
            outcome.server_side = outcome.bytes_copied == 0;
            let put = dest
                .registry
                .put_manifest(&dest.repo, &digest.to_string(), &bytes, &media_type)
                .await?;
            if let Some(put) = put.filter(|p| p != digest) {
                return Err(PromoteError::RegistryMismatch {
                    location: dest.url(),
                    digest: *digest,
                    actual: put.to_string(),
                });
            }
            dest.check_resolves(&digest.to_string(), digest).await?;
            tracing::info!(%digest, from = %self.url(), to = %dest.url(), bytes_copied = outcome.bytes_copied, "image copied");
            Ok(outcome)
        })
    }

    /// Copies one blob unless `dest` has it: a mount within one registry (0 bytes through
    /// ferry), else a streamed GET → PUT. Returns the payload bytes that passed through ferry.
    async fn copy_blob(&self, blob: &str, dest: &OciLocation) -> Result<u64> {
        let dreg = &dest.registry;
        if dreg.blob_exists(&dest.repo, blob).await? {
            return Ok(0);
        }
        let push_scopes = [push(&dest.repo)];
        let upload = if self.same_registry(dest) {
            let mut url = dreg.url(&format!("v2/{}/blobs/uploads/", dest.repo));
            url.query_pairs_mut()
                .append_pair("mount", blob)
                .append_pair("from", &self.repo);
            let context = format!("mounting blob {blob} from {} into {}", self.repo, dest.repo);
            let scopes = [push(&dest.repo), pull(&self.repo)];
            let resp = dreg
                .send(&context, &scopes, || {
                    dreg.http.post(url.clone()).header(CONTENT_LENGTH, "0")
                })
                .await?;
            match resp.status() {
                StatusCode::CREATED => {
                    // 201 means mounted; make sure before relying on it.
                    if dreg.blob_exists(&dest.repo, blob).await? {
                        tracing::debug!(blob, from = %self.repo, to = %dest.repo, "blob mounted");
                        return Ok(0);
                    }
                    return Err(dreg.err(&context, "201 Created, but the blob is not there"));
                }
                // The registry would not mount; it opened an upload session instead.
                StatusCode::ACCEPTED => {
                    tracing::info!(blob, "registry answered a mount with an upload; streaming");
                    dreg.upload_location(&context, &resp)?
                }
                s => return Err(dreg.err(&context, unexpected(s, resp).await)),
            }
        } else {
            let url = dreg.url(&format!("v2/{}/blobs/uploads/", dest.repo));
            let context = format!("starting an upload of {blob} to {}", dest.repo);
            let resp = dreg
                .send(&context, &push_scopes, || {
                    dreg.http.post(url.clone()).header(CONTENT_LENGTH, "0")
                })
                .await?;
            if resp.status() != StatusCode::ACCEPTED {
                let s = resp.status();
                return Err(dreg.err(&context, unexpected(s, resp).await));
            }
            dreg.upload_location(&context, &resp)?
        };

        // Stream the blob: GET from the source, PUT to the upload session.
        let sreg = &self.registry;
        let get_url = sreg.url(&format!("v2/{}/blobs/{blob}", self.repo));
        let context = format!("reading blob {blob} from {}", self.repo);
        let resp = sreg
            .send(&context, &[pull(&self.repo)], || {
                sreg.http.get(get_url.clone())
            })
            .await?;
        if !resp.status().is_success() {
            let s = resp.status();
            return Err(sreg.err(&context, unexpected(s, resp).await));
        }
        let length = resp.content_length();
        let counted = Arc::new(AtomicU64::new(0));
        let counter = counted.clone();
        let stream = resp.bytes_stream().map(move |chunk| {
            if let Ok(c) = &chunk {
                counter.fetch_add(c.len() as u64, Ordering::Relaxed);
            }
            chunk
        });
        let mut put_url = upload;
        put_url.query_pairs_mut().append_pair("digest", blob);
        let mut req = dreg
            .http
            .put(put_url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(stream));
        if let Some(n) = length {
            req = req.header(CONTENT_LENGTH, n);
        }
        let context = format!("uploading blob {blob} to {}", dest.repo);
        let resp = dreg.send_once(&context, &push_scopes, req).await?;
        if resp.status() != StatusCode::CREATED {
            let s = resp.status();
            return Err(dreg.err(&context, unexpected(s, resp).await));
        }
        let n = counted.load(Ordering::Relaxed);
        tracing::debug!(blob, bytes = n, from = %self.url(), to = %dest.url(), "blob streamed");
        Ok(n)
    }
}

impl ArtifactLocation for OciLocation {
    fn url(&self) -> String {
        match &self.tag {
            Some(tag) => format!("oci://{}/{}:{tag}", self.registry.host, self.repo),
            None => format!("oci://{}/{}", self.registry.host, self.repo),
        }
    }

    fn size<'a>(&'a self, digest: &'a Digest) -> LocFut<'a, Option<u64>> {
        Box::pin(async move {
            Ok(self
                .registry
                .head_manifest(&self.repo, &digest.to_string())
                .await?
                .map(|(_, size)| size))
        })
    }

    /// The manifest bytes (what the digest is the hash of).
    fn read<'a>(&'a self, digest: &'a Digest) -> LocFut<'a, ByteStream> {
        Box::pin(async move {
            let (bytes, _) = self
                .registry
                .get_manifest(&self.repo, &digest.to_string())
                .await?
                .ok_or_else(|| PromoteError::NotFound {
                    what: format!("image {digest} is not in {}", self.url()),
                })?;
            Ok(Box::pin(std::io::Cursor::new(bytes)) as ByteStream)
        })
    }

    fn write<'a>(&'a self, digest: &'a Digest, _body: ByteStream) -> LocFut<'a, u64> {
        Box::pin(async move {
            Err(PromoteError::KindMismatch(format!(
                "cannot copy {digest} from an object store into the OCI registry {}: an image is copied from another repository (promote an image reference REGISTRY/REPO@sha256:…, and keep every environment of a `requires` chain in registries)",
                self.url()
            )))
        })
    }

    fn list(&self) -> LocFut<'_, Vec<(Digest, u64)>> {
        Box::pin(async move {
            Err(PromoteError::KindMismatch(format!(
                "{} is an OCI registry, which cannot list its images by digest; clean it up with the registry's own garbage collection",
                self.url()
            )))
        })
    }

    fn delete<'a>(&'a self, digest: &'a Digest) -> LocFut<'a, ()> {
        Box::pin(async move {
            let reg = &self.registry;
            let url = reg.url(&format!("v2/{}/manifests/{digest}", self.repo));
            let context = format!("deleting {digest} from {}", self.repo);
            let resp = reg
                .send(&context, &[push(&self.repo)], || {
                    reg.http.delete(url.clone())
                })
                .await?;
            match resp.status() {
                StatusCode::NOT_FOUND => Ok(()),
                s if s.is_success() => Ok(()),
                s => Err(reg.err(&context, unexpected(s, resp).await)),
            }
        })
    }

    fn copy_to<'a>(
        &'a self,
        digest: &'a Digest,
        dest: &'a dyn ArtifactLocation,
    ) -> LocFut<'a, CopyOutcome> {
        Box::pin(async move {
            let any: &dyn std::any::Any = dest;
            match any.downcast_ref::<OciLocation>() {
                Some(dest) => self.copy_image(digest, dest).await,
                None => Err(PromoteError::KindMismatch(format!(
                    "cannot copy image {digest} from the OCI registry {} into the object store {}: keep every environment of a `requires` chain in registries",
                    self.url(),
                    dest.url()
                ))),
            }
        })
    }

    fn is_registry(&self) -> bool {
        true
    }

    /// PUTs the manifest bytes under the environment's tag, then checks the tag resolves to
    /// the digest.
    fn make_live<'a>(&'a self, digest: &'a Digest) -> LocFut<'a, ()> {
        Box::pin(async move {
            let Some(tag) = &self.tag else {
                return Ok(());
            };
            let (bytes, media_type) = self.manifest_verified(digest).await?;
            self.registry
                .put_manifest(&self.repo, tag, &bytes, &media_type)
                .await?;
            self.check_resolves(tag, digest).await?;
            tracing::info!(%digest, location = %self.url(), "tag moved");
            Ok(())
        })
    }
}
