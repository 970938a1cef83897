//! `file:///path`: objects are files under a root directory. Streams go to a temporary file
//! beside the target, are flushed to disk, then renamed into place, so a reader never sees a
//! partial object. Create-if-absent links the finished temporary file to the key, which fails
//! atomically when the key exists.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use crate::{
    BoxFut, ByteStream, ObjectMeta, ObjectStore, PARTIAL, PutMode, Result, ServerCopy, StoreError,
};

pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root)
            .map_err(|e| StoreError::io(&root.display().to_string(), e))?;
        let root = root
            .canonicalize()
            .map_err(|e| StoreError::io(&root.display().to_string(), e))?;
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        crate::check_key(key)?;
        Ok(self.root.join(key))
    }

    fn temp_beside(target: &Path) -> PathBuf {
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        target.with_file_name(format!("{name}{PARTIAL}{:016x}", rand::random::<u64>()))
    }

    /// Writes `body` to a temporary file beside `target`, synced to disk; returns it and the size.
    async fn write_temp(
        &self,
        key: &str,
        target: &Path,
        mut body: ByteStream,
    ) -> Result<(PathBuf, u64)> {
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| StoreError::io(key, e))?;
        }
        let temp = Self::temp_beside(target);
        let result = async {
            let mut file = tokio::fs::File::create(&temp).await?;
            let n = tokio::io::copy(&mut body, &mut file).await?;
            file.flush().await?;
            file.sync_all().await?;
            Ok::<_, std::io::Error>(n)
        }
        .await;
        match result {
            Ok(n) => Ok((temp, n)),
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                Err(StoreError::io(key, e))
            }
        }
    }
}

/// Copies `src` to `temp` in the kernel (`copy_file_range`, a reflink where the filesystem
/// has them) and syncs it, then returns the copy's SHA-256 and size: the bytes never pass
/// through a userspace buffer on the way, only on the read-back that proves them.
async fn copy_and_hash(src: &Path, temp: &Path) -> std::io::Result<([u8; 32], u64)> {
    tokio::fs::copy(src, temp).await?;
    let mut copy = tokio::fs::File::open(temp).await?;
    copy.sync_all().await?;
    crate::hash_stream(&mut copy).await
}

impl ObjectStore for FileStore {
    fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn copy_verified<'a>(
        &'a self,
        src_key: &'a str,
        dest: &'a dyn ObjectStore,
        dest_key: &'a str,
        sha256: [u8; 32],
    ) -> BoxFut<'a, Option<ServerCopy>> {
        Box::pin(async move {
            let Some(dest) = dest.as_any().downcast_ref::<FileStore>() else {
                return Ok(None);
            };
            let src = self.path(src_key)?;
            let target = dest.path(dest_key)?;
            if let Some(dir) = target.parent() {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| StoreError::io(dest_key, e))?;
            }
            let temp = Self::temp_beside(&target);
            let (actual, size) = match copy_and_hash(&src, &temp).await {
                Ok(done) => done,
                Err(e) => {
                    let _ = tokio::fs::remove_file(&temp).await;
                    if e.kind() == std::io::ErrorKind::NotFound && !src.exists() {
                        return Err(StoreError::NotFound {
                            key: src_key.to_string(),
                        });
                    }
                    return Err(StoreError::io(dest_key, e));
                }
            };
            if actual != sha256 {
                let _ = tokio::fs::remove_file(&temp).await;
                return Err(StoreError::ChecksumMismatch {
                    key: format!("{}/{src_key}", self.url()),
                    expected: crate::hex(&sha256),
                    actual: crate::hex(&actual),
                });
            }
            if let Err(e) = tokio::fs::rename(&temp, &target).await {
                let _ = tokio::fs::remove_file(&temp).await;
                return Err(StoreError::io(dest_key, e));
            }
            Ok(Some(ServerCopy {
                size,
                bytes_read: size,
            }))
        })
    }

    fn put_stream<'a>(&'a self, key: &'a str, body: ByteStream) -> BoxFut<'a, u64> {
        Box::pin(async move {
            let target = self.path(key)?;
            let (temp, n) = self.write_temp(key, &target, body).await?;
            if let Err(e) = tokio::fs::rename(&temp, &target).await {
                let _ = tokio::fs::remove_file(&temp).await;
                return Err(StoreError::io(key, e));
            }
            Ok(n)
        })
    }

    fn put_bytes<'a>(&'a self, key: &'a str, bytes: Vec<u8>, mode: PutMode) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let target = self.path(key)?;
            let body: ByteStream = Box::pin(std::io::Cursor::new(bytes));
            let (temp, _) = self.write_temp(key, &target, body).await?;
            let placed = match mode {
                PutMode::Overwrite => tokio::fs::rename(&temp, &target).await,
                // link(2) fails with EEXIST when the key exists: an atomic create-if-absent
                // of a file that is already complete.
                PutMode::IfAbsent => tokio::fs::hard_link(&temp, &target).await,
            };
            let _ = tokio::fs::remove_file(&temp).await;
            match placed {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(StoreError::AlreadyExists {
                        key: key.to_string(),
                    })
                }
                Err(e) => Err(StoreError::io(key, e)),
            }
        })
    }

    fn get_stream<'a>(&'a self, key: &'a str) -> BoxFut<'a, ByteStream> {
        Box::pin(async move {
            match tokio::fs::File::open(self.path(key)?).await {
                Ok(f) => Ok(Box::pin(f) as ByteStream),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound {
                    key: key.to_string(),
                }),
                Err(e) => Err(StoreError::io(key, e)),
            }
        })
    }

    fn head<'a>(&'a self, key: &'a str) -> BoxFut<'a, Option<ObjectMeta>> {
        Box::pin(async move {
            match tokio::fs::metadata(self.path(key)?).await {
                Ok(m) if m.is_file() => Ok(Some(ObjectMeta {
                    key: key.to_string(),
                    size: m.len(),
                    modified: m.modified().ok().map(Into::into),
                })),
                Ok(_) => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(StoreError::io(key, e)),
            }
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFut<'a, Vec<ObjectMeta>> {
        Box::pin(async move {
            let root = self.root.clone();
            let owned = prefix.to_string();
            tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                walk(&root, &root, &owned, &mut out).map_err(|e| StoreError::io(&owned, e))?;
                out.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(out)
            })
            .await
            .map_err(|e| StoreError::io(prefix, std::io::Error::other(e)))?
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            match tokio::fs::remove_file(self.path(key)?).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(StoreError::io(key, e)),
            }
        })
    }
}

fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<ObjectMeta>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let key = rel.to_string_lossy().replace('\\', "/");
        // An entry can vanish between the directory read and its metadata (a concurrent
        // writer's temporary file renamed into place, an object deleted): it is not listed.
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            // Descend only where the prefix can still match.
            let as_dir = format!("{key}/");
            if prefix.starts_with(&as_dir) || as_dir.starts_with(prefix) {
                walk(root, &path, prefix, out)?;
            }
        } else if key.starts_with(prefix) && !key.contains(PARTIAL) {
            out.push(ObjectMeta {
                key,
                size: meta.len(),
                modified: meta.modified().ok().map(Into::into),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(bytes: &'static [u8]) -> ByteStream {
        Box::pin(bytes)
    }

    #[tokio::test]
    async fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        assert_eq!(
            store
                .put_stream("backups/a/data.gz", stream(b"hello"))
                .await
                .unwrap(),
            5
        );
        store
            .put_bytes(
                "backups/a/manifest.json",
                b"{}".to_vec(),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        store
            .put_bytes("other/x", b"x".to_vec(), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(
            store.get_bytes("backups/a/data.gz").await.unwrap(),
            b"hello"
        );
        let keys: Vec<String> = store
            .list("backups/")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, vec!["backups/a/data.gz", "backups/a/manifest.json"]);
        assert_eq!(
            store.head("backups/a/data.gz").await.unwrap().unwrap().size,
            5
        );
        store.delete("backups/a/data.gz").await.unwrap();
        store.delete("backups/a/data.gz").await.unwrap();
        assert!(store.head("backups/a/data.gz").await.unwrap().is_none());
        assert!(matches!(
            store.get_stream("nope").await,
            Err(StoreError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn create_if_absent_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        store
            .put_bytes("h/1", b"first".to_vec(), PutMode::IfAbsent)
            .await
            .unwrap();
        let again = store
            .put_bytes("h/1", b"second".to_vec(), PutMode::IfAbsent)
            .await;
        assert!(matches!(again, Err(StoreError::AlreadyExists { .. })));
        assert_eq!(store.get_bytes("h/1").await.unwrap(), b"first");
        assert_eq!(
            store.list("h/").await.unwrap().len(),
            1,
            "a temporary file was left behind"
        );
    }

    #[tokio::test]
    async fn a_failing_stream_leaves_nothing_at_the_key() {
        struct Failing;
        impl AsyncRead for Failing {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                _: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Err(std::io::Error::other("dump tool died")))
            }
        }
        use std::pin::Pin;
        use tokio::io::AsyncRead;
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        assert!(store.put_stream("b/data", Box::pin(Failing)).await.is_err());
        assert!(store.head("b/data").await.unwrap().is_none());
        assert!(
            std::fs::read_dir(dir.path().join("b"))
                .unwrap()
                .next()
                .is_none(),
            "temp file left"
        );
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        for key in ["../x", "/etc/passwd", "a/../../x", ""] {
            assert!(
                store
                    .put_bytes(key, vec![], PutMode::Overwrite)
                    .await
                    .is_err(),
                "{key}"
            );
        }
    }
}
