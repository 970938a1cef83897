//! Where an environment's artifacts live: the [`ArtifactLocation`] seam and its object-store
//! implementation. An OCI registry is the second implementation (`oci://…`, see `oci.rs`); the
//! promotion algorithm in `lib.rs` only speaks this trait.
//!
//! Never: complete an object whose bytes do not match its digest. Every write goes through a
//! verifying stream that fails at its end on a mismatch, so the store never commits it.

use std::any::Any;
use std::sync::Arc;

use ferry_store::{ByteStream, ObjectStore, StoreError, StoreOptions};

use crate::digest::{Digest, Verifying};
use crate::error::{PromoteError, Result};
use crate::oci::OciUrl;

/// Where an environment's artifacts are, parsed once from its `artifacts = "…"`: everything
/// after reads this, not the string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationUrl {
    /// In the central store: no `artifacts`, or the central store's own URL.
    Central,
    /// An object store: `file://…`, a plain path, `s3://…`.
    Store(String),
    /// A repository in an OCI registry: `oci://HOST[:PORT]/REPO[:TAG]`.
    Registry(OciUrl),
    /// A value that still holds a `${VAR}` reference: `ferry.toml` expands variables only in
    /// the selected environment, so another one's may look like this. It can take part in
    /// the checks of a `requires` chain (its scheme says which kind it is) but is no place
    /// to copy to.
    Unexpanded { url: String, registry: bool },
}

impl LocationUrl {
    /// Parses an environment's `artifacts` value; `central` is the central store's URL.
    pub fn parse(artifacts: Option<&str>, central: &str) -> Result<LocationUrl> {
        let Some(url) = artifacts else {
            return Ok(LocationUrl::Central);
        };
        let registry = OciUrl::is_oci(url);
        if ferry_core::config::expand_vars(url, &|_| None).is_err() {
            return Ok(LocationUrl::Unexpanded {
                url: url.to_string(),
                registry,
            });
        }
        if registry {
            return Ok(LocationUrl::Registry(OciUrl::parse(url)?));
        }
        if url.trim_end_matches('/') == central {
            return Ok(LocationUrl::Central);
        }
        Ok(LocationUrl::Store(url.to_string()))
    }

    /// Whether it is (or, unexpanded, names) an OCI registry.
    pub fn is_registry(&self) -> bool {
        match self {
            LocationUrl::Registry(_) => true,
            LocationUrl::Unexpanded { registry, .. } => *registry,
            LocationUrl::Central | LocationUrl::Store(_) => false,
        }
    }
}

/// Where blobs live in every store: `artifacts/sha256/<hex>`, the same in the central store and
/// in environment stores, so an environment whose location is the central store shares its
/// objects and a promotion there copies nothing.
pub const BLOB_PREFIX: &str = "artifacts/sha256/";

pub(crate) fn blob_key(digest: &Digest) -> String {
    format!("{BLOB_PREFIX}{}", digest.hex())
}

/// What a copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyOutcome {
    /// Payload bytes that passed through ferry on their way to the destination: 0 when it
    /// already had the artifact or the copy was server-side.
    pub bytes_copied: u64,
    /// Bytes ferry read and hashed to check the digest (0 when the server proved it).
    pub bytes_verified: u64,
    /// True when the bytes went from source to destination without passing through ferry
    /// (a kernel copy on one filesystem, S3 `CopyObject`, a registry blob mount).
    pub server_side: bool,
}

/// The future every [`ArtifactLocation`] method returns.
pub type LocFut<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send + 'a>>;

/// A place that holds artifacts by digest.
pub trait ArtifactLocation: Send + Sync + Any {
    /// Its URL, for messages and reports (no secrets in it).
    fn url(&self) -> String;

    /// The artifact's size when present.
    fn size<'a>(&'a self, digest: &'a Digest) -> LocFut<'a, Option<u64>>;

    /// Reads the artifact's bytes (unverified: callers hash them).
    fn read<'a>(&'a self, digest: &'a Digest) -> LocFut<'a, ByteStream>;

    /// Stores `body` as `digest`; the object appears only if the body ends without error.
    /// `body` is already a verifying stream (see [`copy_verified`]).
    fn write<'a>(&'a self, digest: &'a Digest, body: ByteStream) -> LocFut<'a, u64>;

    /// Every artifact here, with its size.
    fn list(&self) -> LocFut<'_, Vec<(Digest, u64)>>;

    /// Removes the artifact; removing an absent one is not an error.
    fn delete<'a>(&'a self, digest: &'a Digest) -> LocFut<'a, ()>;

    /// Copies the artifact to `dest`, checking that the bytes match `digest`. The default
    /// streams through ferry; a backend may override it with a server-side copy (S3
    /// `CopyObject` within one endpoint, an OCI blob mount) that still proves the digest.
    fn copy_to<'a>(
        &'a self,
        digest: &'a Digest,
        dest: &'a dyn ArtifactLocation,
    ) -> LocFut<'a, CopyOutcome> {
        Box::pin(copy_verified(self, digest, dest))
    }

    /// True for an OCI registry: it holds images, not store objects, so it copies only to and
    /// from other registries, and gc skips it (it cannot list by digest).
    fn is_registry(&self) -> bool {
        false
    }

    /// Makes `digest` what the location serves as live, after its release was recorded: an
    /// OCI registry moves the environment's tag. Idempotent; a store has nothing to do.
    fn make_live<'a>(&'a self, _digest: &'a Digest) -> LocFut<'a, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Streams `digest` from `src` to `dest` through a verifying reader: on a mismatch the
/// destination never completes the object and the error is [`PromoteError::Tampered`].
pub async fn copy_verified<S: ArtifactLocation + ?Sized>(
    src: &S,
    digest: &Digest,
    dest: &dyn ArtifactLocation,
) -> Result<CopyOutcome> {
    let body = src.read(digest).await?;
    let (verifying, outcome) = Verifying::new(body, Some(*digest));
    let written = dest.write(digest, Box::pin(verifying)).await;
    match (written, outcome.get()) {
        (_, Some((actual, _))) if actual != *digest => Err(PromoteError::Tampered {
            digest: *digest,
            location: src.url(),
            actual,
        }),
        (Ok(n), _) => Ok(CopyOutcome {
            bytes_copied: n,
            bytes_verified: n,
            server_side: false,
        }),
        (Err(e), _) => Err(e),
    }
}

/// Reads the whole artifact at `loc` and checks its digest.
pub async fn verify_at(loc: &dyn ArtifactLocation, digest: &Digest) -> Result<u64> {
    let body = loc.read(digest).await?;
    let (mut verifying, outcome) = Verifying::new(body, None);
    tokio::io::copy(&mut verifying, &mut tokio::io::sink())
        .await
        .map_err(|e| PromoteError::Store {
            context: format!("reading artifact {digest} at {}", loc.url()),
            source: StoreError::io(&blob_key(digest), e),
        })?;
    match outcome.get() {
        Some((actual, n)) if actual == *digest => Ok(n),
        Some((actual, _)) => Err(PromoteError::Tampered {
            digest: *digest,
            location: loc.url(),
            actual,
        }),
        None => Err(PromoteError::Store {
            context: format!("reading artifact {digest} at {}", loc.url()),
            source: StoreError::io(
                &blob_key(digest),
                std::io::Error::other("the stream ended without an end"),
            ),
        }),
    }
}

/// Artifacts in an [`ObjectStore`] (a directory or an S3 bucket and prefix).
pub struct StoreLocation {
    store: Arc<dyn ObjectStore>,
}

impl StoreLocation {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        StoreLocation { store }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }
}

impl ArtifactLocation for StoreLocation {
    fn url(&self) -> String {
        self.store.url()
    }

    fn size<'a>(&'a self, digest: &'a Digest) -> LocFut<'a, Option<u64>> {
        Box::pin(async move {
            let key = blob_key(digest);
            let meta = self
                .store
                .head(&key)
                .await
                .map_err(PromoteError::store(format!(
                    "looking for {digest} in {}",
                    self.url()
                )))?;
            Ok(meta.map(|m| m.size))
        })
    }

    fn read<'a>(&'a self, digest: &'a Digest) -> LocFut<'a, ByteStream> {
        Box::pin(async move {
            let key = blob_key(digest);
            self.store.get_stream(&key).await.map_err(|e| match e {
                StoreError::NotFound { .. } => PromoteError::NotFound {
                    what: format!("artifact {digest} is not in {}", self.url()),
                },
                e => PromoteError::store(format!("reading {digest} from {}", self.url()))(e),
            })
        })
    }

    fn write<'a>(&'a self, digest: &'a Digest, body: ByteStream) -> LocFut<'a, u64> {
        Box::pin(async move {
            let key = blob_key(digest);
            self.store
                .put_stream(&key, body)
                .await
                .map_err(PromoteError::store(format!(
                    "writing {digest} to {}",
                    self.url()
                )))
        })
    }

    fn list(&self) -> LocFut<'_, Vec<(Digest, u64)>> {
        Box::pin(async move {
            let objects = self
                .store
                .list(BLOB_PREFIX)
                .await
                .map_err(PromoteError::store(format!(
                    "listing artifacts in {}",
                    self.url()
                )))?;
            // Anything under the prefix that is not a digest (a stray file) is not ours to touch.
            Ok(objects
                .into_iter()
                .filter_map(|m| {
                    let hex = m.key.strip_prefix(BLOB_PREFIX)?;
                    let digest = format!("sha256:{hex}").parse().ok()?;
                    Some((digest, m.size))
                })
                .collect())
        })
    }

    fn delete<'a>(&'a self, digest: &'a Digest) -> LocFut<'a, ()> {
        Box::pin(async move {
            self.store
                .delete(&blob_key(digest))
                .await
                .map_err(PromoteError::store(format!(
                    "deleting {digest} from {}",
                    self.url()
                )))
        })
    }

    /// Server-side when the destination is a store the same server holds (one filesystem,
    /// one S3 endpoint): the store proves the copy's SHA-256 before the object appears.
    /// Otherwise the bytes stream through ferry's verifying reader.
    fn copy_to<'a>(
        &'a self,
        digest: &'a Digest,
        dest: &'a dyn ArtifactLocation,
    ) -> LocFut<'a, CopyOutcome> {
        Box::pin(async move {
            let dest_any: &dyn Any = dest;
            let Some(dest_store) = dest_any.downcast_ref::<StoreLocation>() else {
                return copy_verified(self, digest, dest).await;
            };
            let key = blob_key(digest);
            let copied = self
                .store
                .copy_verified(&key, dest_store.store.as_ref(), &key, digest.bytes())
                .await;
            match copied {
                Ok(Some(copy)) => {
                    tracing::info!(%digest, from = %self.url(), to = %dest.url(), size = copy.size,
                        bytes_read = copy.bytes_read, "server-side copy");
                    Ok(CopyOutcome {
                        bytes_copied: 0,
                        bytes_verified: copy.bytes_read,
                        server_side: true,
                    })
                }
                Ok(None) => copy_verified(self, digest, dest).await,
                Err(StoreError::ChecksumMismatch { actual, .. }) => Err(PromoteError::Tampered {
                    digest: *digest,
                    location: self.url(),
                    actual: format!("sha256:{actual}").parse().unwrap_or(*digest),
                }),
                Err(StoreError::NotFound { .. }) => Err(PromoteError::NotFound {
                    what: format!("artifact {digest} is not in {}", self.url()),
                }),
                Err(e) => Err(PromoteError::store(format!(
                    "copying {digest} from {} to {}",
                    self.url(),
                    dest.url()
                ))(e)),
            }
        })
    }
}

/// Opens the store location a URL names (`file://…`, `s3://…`, a plain path). `oci://`
/// registries need registry options and the environment's tag: open them with
/// [`OciLocation::open`](crate::OciLocation::open) (as [`Promoter::location`](crate::Promoter::location) does).
pub async fn open_location(url: &str, options: &StoreOptions) -> Result<Arc<dyn ArtifactLocation>> {
    if OciUrl::is_oci(url) {
        return Err(PromoteError::UnsupportedLocation {
            url: url.to_string(),
            reason: "open oci:// locations with OciLocation::open, which takes registry options and the environment's tag".into(),
        });
    }
    let store = ferry_store::open(url, options)
        .await
        .map_err(PromoteError::store(format!(
            "opening artifact location {url}"
        )))?;
    Ok(Arc::new(StoreLocation::new(store)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_locations_parse_once_into_their_kind() {
        let central = "s3://acme/central";
        let parse = |u: Option<&str>| LocationUrl::parse(u, central).unwrap();
        assert_eq!(parse(None), LocationUrl::Central);
        assert_eq!(parse(Some("s3://acme/central/")), LocationUrl::Central);
        assert_eq!(
            parse(Some("s3://acme/dev")),
            LocationUrl::Store("s3://acme/dev".into())
        );
        let LocationUrl::Registry(oci) = parse(Some("oci://127.0.0.1:5000/app:live")) else {
            panic!("not a registry")
        };
        assert_eq!(oci.to_string(), "oci://127.0.0.1:5000/app:live");
        assert_eq!(
            parse(Some("oci://${REGISTRY}/app")),
            LocationUrl::Unexpanded {
                url: "oci://${REGISTRY}/app".into(),
                registry: true
            }
        );
        assert!(!parse(Some("s3://${BUCKET}/x")).is_registry());
        assert!(parse(Some("oci://r.example.com/app")).is_registry());
        // `$$` is an escaped `$`, not a variable.
        assert!(matches!(
            parse(Some("file:///srv/$$x")),
            LocationUrl::Store(_)
        ));
        assert!(matches!(
            LocationUrl::parse(Some("oci://host"), central),
            Err(PromoteError::BadOciUrl { .. })
        ));
    }
}
