//! The object store ferry keeps backups (and, later, artifacts) in: a local directory
//! (`file:///path`) or S3 and S3-compatible servers (`s3://bucket/prefix`).
//!
//! Contract: an object is either complete at its key or absent. Streams are written to a
//! temporary name and renamed (file) or uploaded in parts and completed (S3); on any error the
//! partial data is removed (the multipart upload is aborted), never left at the key. Memory is
//! bounded by the part size, whatever the object's size. `put_bytes` with
//! [`PutMode::IfAbsent`] is an atomic create-if-absent (exclusive create on disk,
//! `If-None-Match: *` on S3), the primitive that lets two concurrent writers race safely.
//!
//! Every request to S3 is bounded ([`StoreOptions::network`]): a connect timeout, a read
//! timeout (to the first byte of the answer, and then between reads of a body), and a number of
//! retries of what may succeed when tried again, counted in the error. A server that accepts
//! connections and never answers fails the operation, it never hangs it.
//!
//! Key decision: one narrow trait, [`ObjectStore`], with keys as `/`-separated relative paths;
//! callers (backup, promote) own their key layout and never see which backend they talk to.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::io::AsyncRead;

mod error;
mod file;
mod s3;

pub use error::StoreError;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;
/// A stream of bytes read from or written to the store.
pub type ByteStream = Pin<Box<dyn AsyncRead + Send>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key relative to the store's root (no leading `/`).
    pub key: String,
    pub size: u64,
    pub modified: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Replace whatever is at the key.
    Overwrite,
    /// Fail with [`StoreError::AlreadyExists`] when the key exists, atomically.
    IfAbsent,
}

/// What a server-side copy ([`ObjectStore::copy_verified`]) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerCopy {
    /// The object's size.
    pub size: u64,
    /// Bytes ferry read back to check the SHA-256: 0 when the server computed it (S3
    /// `CopyObject` with a SHA-256 checksum), the size when the copy had to be re-read (a
    /// local filesystem, an S3-compatible server without copy checksums).
    pub bytes_read: u64,
}

/// How to reach a store, besides its URL.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// S3 endpoint override (`AWS_ENDPOINT_URL` or `[store] endpoint`), for S3-compatible
    /// servers; path-style addressing is used with it.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Size of the first multipart part in bytes (S3 minimum 5 MiB); `None` for the default.
    pub part_size: Option<usize>,
    /// Connect and read timeouts and retries of every S3 request (`[store]`).
    pub network: ferry_core::config::Network,
}

/// A place to keep objects. Keys are relative, `/`-separated paths.
pub trait ObjectStore: Send + Sync {
    /// The store's URL, for messages and manifests (no secrets in it).
    fn url(&self) -> String;

    /// Streams `body` to `key` and returns the number of bytes written. The object appears at
    /// `key` only when complete; on error nothing is left there.
    fn put_stream<'a>(&'a self, key: &'a str, body: ByteStream) -> BoxFut<'a, u64>;

    /// Writes a small object in one request.
    fn put_bytes<'a>(&'a self, key: &'a str, bytes: Vec<u8>, mode: PutMode) -> BoxFut<'a, ()>;

    /// Reads an object as a stream; [`StoreError::NotFound`] when absent.
    fn get_stream<'a>(&'a self, key: &'a str) -> BoxFut<'a, ByteStream>;

    /// Reads a whole (small) object.
    fn get_bytes<'a>(&'a self, key: &'a str) -> BoxFut<'a, Vec<u8>> {
        Box::pin(async move {
            let mut stream = self.get_stream(key).await?;
            let mut buf = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut buf)
                .await
                .map_err(|e| StoreError::io(key, e))?;
            Ok(buf)
        })
    }

    /// The object's metadata, or `None` when absent.
    fn head<'a>(&'a self, key: &'a str) -> BoxFut<'a, Option<ObjectMeta>>;

    /// Every object whose key starts with `prefix`, sorted by key.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFut<'a, Vec<ObjectMeta>>;

    /// Removes an object; removing an absent one is not an error.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFut<'a, ()>;

    /// Copies `src_key` of this store to `dest_key` of `dest` without the bytes passing through
    /// ferry, when one server can do it (both on one filesystem, both buckets behind one S3
    /// endpoint), and makes the copy visible at `dest_key` only once its SHA-256 is `sha256`;
    /// on a mismatch the error is [`StoreError::ChecksumMismatch`] and nothing is left at
    /// `dest_key`. `Ok(None)`: there is no server-side route between the two stores (different
    /// backends or endpoints, or the server refused a cross-bucket copy); the caller streams.
    fn copy_verified<'a>(
        &'a self,
        src_key: &'a str,
        dest: &'a dyn ObjectStore,
        dest_key: &'a str,
        sha256: [u8; 32],
    ) -> BoxFut<'a, Option<ServerCopy>> {
        let _ = (src_key, dest, dest_key, sha256);
        Box::pin(async { Ok(None) })
    }

    /// For [`ObjectStore::copy_verified`]: whether `dest` is a store of the same kind.
    fn as_any(&self) -> &dyn Any;
}

/// Reads `body` to its end: its SHA-256 and length (how a server-side copy is re-read when
/// the server does not prove it).
pub(crate) async fn hash_stream<R: AsyncRead + Unpin + ?Sized>(
    body: &mut R,
) -> std::io::Result<([u8; 32], u64)> {
    use sha2::{Digest as _, Sha256};
    use tokio::io::AsyncReadExt;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let read = body.read(&mut buf).await?;
        if read == 0 {
            return Ok((hasher.finalize().into(), n));
        }
        hasher.update(&buf[..read]);
        n += read as u64;
    }
}

/// Hex of a SHA-256, for messages.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The marker in temporary keys (file names on disk, staging objects on S3); `list` never
/// returns keys that contain it.
pub(crate) const PARTIAL: &str = ".ferry-partial-";

/// Checks that `key` is a relative `/`-separated path without empty, `.` or `..` parts, the same
/// rule on every backend, so a layout that works on one works on the other.
pub(crate) fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadUrl {
            url: key.to_string(),
            reason: "object keys are relative paths without `.` or `..` parts".into(),
        })
    }
}

/// Opens the store a URL names: `file:///abs/path` (or a plain path) or `s3://bucket/prefix`.
pub async fn open(url: &str, options: &StoreOptions) -> Result<Arc<dyn ObjectStore>> {
    if let Some(rest) = url.strip_prefix("s3://") {
        return Ok(Arc::new(s3::S3Store::open(rest, options).await?));
    }
    let path = match url.strip_prefix("file://") {
        Some(p) => p,
        None if url.contains("://") => {
            return Err(StoreError::BadUrl {
                url: ferry_core::url::redact(url),
                reason: "use file:///path or s3://bucket/prefix".into(),
            });
        }
        None => url,
    };
    if path.is_empty() {
        return Err(StoreError::BadUrl {
            url: url.into(),
            reason: "it names no directory".into(),
        });
    }
    Ok(Arc::new(file::FileStore::open(std::path::Path::new(path))?))
}
