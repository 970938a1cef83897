//! How an artifact travels between two locations: server-side when one server holds both
//! (covered by every scenario), streamed through the verifying reader otherwise.

use ferry_promote::{ArtifactLocation, Digest, PromoteError, StoreLocation};
use ferry_testkit::s3::{Kind, Server};

#[tokio::test]
async fn between_a_directory_and_a_bucket_the_bytes_stream_through_ferry() {
    let Some(server) = Server::start(Kind::S3sFs) else {
        return;
    };
    server.create_bucket("envs").await;
    let dir = tempfile::tempdir().unwrap();
    let local = ferry_store::open(dir.path().to_str().unwrap(), &Default::default())
        .await
        .unwrap();
    let bucket = server.store("envs/prod", None).await;
    let (src, dest) = (StoreLocation::new(local), StoreLocation::new(bucket));

    let bytes = b"release 7\n".repeat(5000);
    let digest = Digest::of(&bytes);
    src.write(&digest, Box::pin(std::io::Cursor::new(bytes.clone())))
        .await
        .unwrap();
    let outcome = src.copy_to(&digest, &dest).await.unwrap();
    assert!(!outcome.server_side);
    assert_eq!(
        (outcome.bytes_copied, outcome.bytes_verified),
        (bytes.len() as u64, bytes.len() as u64)
    );
    assert_eq!(dest.size(&digest).await.unwrap(), Some(bytes.len() as u64));

    // Bytes that no longer match their digest never complete at the destination.
    let other = Digest::of(b"what the digest promised");
    src.write(
        &other,
        Box::pin(std::io::Cursor::new(b"something else".to_vec())),
    )
    .await
    .unwrap();
    let err = src.copy_to(&other, &dest).await.unwrap_err();
    assert!(matches!(err, PromoteError::Tampered { .. }), "{err}");
    assert_eq!(dest.size(&other).await.unwrap(), None);
}
