//! Server-side copies (`ObjectStore::copy_verified`): the bytes go from store to store without
//! passing through ferry, and appear at the destination only when their SHA-256 is the one
//! expected. On disk the copy is re-read to prove it; on S3 the server computes the copy's
//! SHA-256 when it can (moto, AWS) and ferry re-reads it when it cannot (s3s-fs).

use ferry_store::{ObjectStore, PutMode, ServerCopy, StoreError};

use crate::body::{Body, MIB, expected_sha256, sha256_of};
use ferry_testkit::s3::{Kind, Server};

async fn file_store(dir: &std::path::Path) -> std::sync::Arc<dyn ObjectStore> {
    ferry_store::open(dir.to_str().unwrap(), &Default::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn file_to_file_copies_and_proves_the_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = file_store(&tmp.path().join("central")).await;
    let dest = file_store(&tmp.path().join("prod")).await;
    let len = 3 * MIB + 17;
    src.put_stream("a/blob", Body::new(len).boxed())
        .await
        .unwrap();

    let copy = src
        .copy_verified("a/blob", dest.as_ref(), "b/blob", expected_sha256(len))
        .await
        .unwrap();
    assert_eq!(
        copy,
        Some(ServerCopy {
            size: len as u64,
            bytes_read: len as u64
        })
    );
    let (sum, n) = sha256_of(dest.get_stream("b/blob").await.unwrap()).await;
    assert_eq!((sum, n), (expected_sha256(len), len));
    // Nothing temporary is left beside it.
    let listed: Vec<String> = dest
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(listed, ["b/blob"]);
    assert_eq!(
        std::fs::read_dir(tmp.path().join("prod/b"))
            .unwrap()
            .count(),
        1
    );
}

#[tokio::test]
async fn file_copy_of_changed_bytes_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = file_store(&tmp.path().join("central")).await;
    let dest = file_store(&tmp.path().join("prod")).await;
    src.put_bytes("a/blob", b"tampered".to_vec(), PutMode::Overwrite)
        .await
        .unwrap();
    let err = src
        .copy_verified("a/blob", dest.as_ref(), "a/blob", [7u8; 32])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::ChecksumMismatch { expected, .. } if expected == &"07".repeat(32)),
        "{err}"
    );
    assert!(dest.head("a/blob").await.unwrap().is_none());
    assert_eq!(
        std::fs::read_dir(tmp.path().join("prod/a"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn file_copy_of_a_missing_object_is_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let src = file_store(&tmp.path().join("central")).await;
    let dest = file_store(&tmp.path().join("prod")).await;
    let err = src
        .copy_verified("nope", dest.as_ref(), "nope", [0u8; 32])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

/// Copies between two buckets of one server. `server_sums`: whether the server computes the
/// copy's SHA-256 itself (then ferry reads nothing back).
async fn s3_copy(kind: Kind, server_sums: bool) {
    let Some(server) = Server::start(kind) else {
        return;
    };
    server.create_bucket("central").await;
    server.create_bucket("prod").await;
    let src = server.store("central/artifacts", None).await;
    let dest = server.store("prod/app", None).await;
    let len = 9 * MIB + 5; // multipart at the 8 MiB default part size
    src.put_stream("sha256/x", Body::new(len).boxed())
        .await
        .unwrap();

    let copy = src
        .copy_verified("sha256/x", dest.as_ref(), "sha256/x", expected_sha256(len))
        .await
        .unwrap()
        .expect("one endpoint: a server-side copy");
    let read_back = if server_sums { 0 } else { len as u64 };
    assert_eq!(
        copy,
        ServerCopy {
            size: len as u64,
            bytes_read: read_back
        }
    );
    let (sum, n) = sha256_of(dest.get_stream("sha256/x").await.unwrap()).await;
    assert_eq!((sum, n), (expected_sha256(len), len));
    // The staging copy is gone, from the store's view and from the bucket's.
    let listed: Vec<String> = dest
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(listed, ["sha256/x"]);
    let raw = server
        .client()
        .list_objects_v2()
        .bucket("prod")
        .send()
        .await
        .unwrap();
    let raw: Vec<&str> = raw.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(raw, ["app/sha256/x"]);

    // Bytes that are not what the digest says are refused, and nothing appears.
    src.put_bytes("sha256/y", b"tampered".to_vec(), PutMode::Overwrite)
        .await
        .unwrap();
    let err = src
        .copy_verified("sha256/y", dest.as_ref(), "sha256/y", expected_sha256(8))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ChecksumMismatch { .. }), "{err}");
    assert!(dest.head("sha256/y").await.unwrap().is_none());
    let raw = server
        .client()
        .list_objects_v2()
        .bucket("prod")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.contents().len(), 1, "{raw:?}");

    // A missing source is NotFound; a store on another backend has no server-side route.
    let err = src
        .copy_verified("sha256/z", dest.as_ref(), "sha256/z", [0u8; 32])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let local = file_store(tmp.path()).await;
    let none = src
        .copy_verified("sha256/x", local.as_ref(), "sha256/x", expected_sha256(len))
        .await
        .unwrap();
    assert_eq!(none, None);
}

#[tokio::test]
async fn s3_copy_between_buckets_reads_back_without_server_checksums_s3s_fs() {
    s3_copy(Kind::S3sFs, false).await;
}

#[tokio::test]
async fn s3_copy_between_buckets_is_proven_by_the_server_moto() {
    s3_copy(Kind::Moto, true).await;
}
