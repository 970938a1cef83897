//! The S3 store against real S3-compatible servers. Each case runs on every server that has
//! what it checks: s3s-fs (SigV4, data on disk that survives a restart) and moto
//! (ListMultipartUploads, multipart ETags, If-None-Match).

use std::time::{Duration, Instant};

use ferry_store::{PutMode, StoreError};

use crate::body::{Body, MIB, expected_sha256, sha256_of};
use ferry_testkit::s3::{Kind, Server};

const BUCKET: &str = "ferry-it";

async fn started(kind: Kind) -> Option<Server> {
    let server = Server::start(kind)?;
    server.create_bucket(BUCKET).await;
    Some(server)
}

fn keys(objects: Vec<ferry_store::ObjectMeta>) -> Vec<String> {
    objects.into_iter().map(|m| m.key).collect()
}

async fn round_trip(kind: Kind) {
    let Some(server) = started(kind).await else {
        return;
    };
    // Objects beside the store's prefix, including one that shares its first characters,
    // must stay invisible to it.
    let client = server.client();
    for key in ["outside", "team/ferry-other/x", "team/ferryx"] {
        client
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(b"x".to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let store = server.store(&format!("{BUCKET}/team/ferry"), None).await;
    assert_eq!(store.url(), "s3://ferry-it/team/ferry");

    let n = store
        .put_stream("backups/a/data.gz", Body::new(5).boxed())
        .await
        .unwrap();
    assert_eq!(n, 5);
    store
        .put_bytes(
            "backups/a/manifest.json",
            b"{}".to_vec(),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    store
        .put_bytes(
            "backups/a/manifest.json",
            b"{\"v\":2}".to_vec(),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    store
        .put_bytes("other/x", b"x".to_vec(), PutMode::Overwrite)
        .await
        .unwrap();

    assert_eq!(
        store.get_bytes("backups/a/manifest.json").await.unwrap(),
        b"{\"v\":2}"
    );
    let (sha, len) = sha256_of(store.get_stream("backups/a/data.gz").await.unwrap()).await;
    assert_eq!((sha, len), (expected_sha256(5), 5));
    assert_eq!(
        keys(store.list("backups/").await.unwrap()),
        ["backups/a/data.gz", "backups/a/manifest.json"]
    );
    assert_eq!(
        keys(store.list("").await.unwrap()),
        ["backups/a/data.gz", "backups/a/manifest.json", "other/x"]
    );
    // The S3 key is `<prefix>/<key>`.
    client
        .head_object()
        .bucket(BUCKET)
        .key("team/ferry/backups/a/data.gz")
        .send()
        .await
        .unwrap();

    let meta = store.head("backups/a/data.gz").await.unwrap().unwrap();
    assert_eq!((meta.key.as_str(), meta.size), ("backups/a/data.gz", 5));
    assert!(meta.modified.is_some());

    store.delete("backups/a/data.gz").await.unwrap();
    store.delete("backups/a/data.gz").await.unwrap();
    assert!(store.head("backups/a/data.gz").await.unwrap().is_none());
    assert!(matches!(
        store.get_stream("backups/a/data.gz").await,
        Err(StoreError::NotFound { key }) if key == "backups/a/data.gz"
    ));

    // Create-if-absent, one writer after the other: the second is refused, the first kept.
    store
        .put_bytes("locks/x", b"first".to_vec(), PutMode::IfAbsent)
        .await
        .unwrap();
    let again = store
        .put_bytes("locks/x", b"second".to_vec(), PutMode::IfAbsent)
        .await;
    assert!(
        matches!(&again, Err(StoreError::AlreadyExists { key }) if key == "locks/x"),
        "{again:?}"
    );
    assert_eq!(store.get_bytes("locks/x").await.unwrap(), b"first");

    // A missing bucket is an S3 error that names the object and the service's code. (s3s-fs
    // creates a bucket's directory on the first PUT, so only moto refuses.)
    if kind != Kind::Moto {
        return;
    }
    let missing = server.store("no-such-bucket/p", None).await;
    let err = missing
        .put_bytes("k", b"x".to_vec(), PutMode::Overwrite)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            StoreError::S3 {
                operation: "PutObject",
                ..
            }
        ) && text.contains("s3://no-such-bucket/p/k")
            && text.contains("NoSuchBucket"),
        "{text}"
    );
    assert!(!text.contains(ferry_testkit::s3::SECRET_KEY), "{text}");
}

#[tokio::test]
async fn round_trip_with_prefix_s3s_fs() {
    round_trip(Kind::S3sFs).await;
}

#[tokio::test]
async fn round_trip_with_prefix_moto() {
    round_trip(Kind::Moto).await;
}

async fn multipart(kind: Kind) {
    let Some(server) = started(kind).await else {
        return;
    };
    let store = server.store(&format!("{BUCKET}/mp"), Some(5 * MIB)).await;
    // 5 parts (4 of 5 MiB and 3 MiB), then an exact multiple of the part size (2 parts and an
    // empty read at the end), then one byte short of a part (a single PutObject).
    for (key, len, parts) in [
        ("big/23m", 23 * MIB, Some(5)),
        ("big/10m", 10 * MIB, Some(2)),
        ("big/small", 5 * MIB - 1, None),
    ] {
        let started = Instant::now();
        let n = store.put_stream(key, Body::new(len).boxed()).await.unwrap();
        eprintln!(
            "{kind:?}: put {key} ({len} bytes) in {:?}",
            started.elapsed()
        );
        assert_eq!(n, len as u64, "{key}");
        assert_eq!(store.head(key).await.unwrap().unwrap().size, len as u64);
        let (sha, got) = sha256_of(store.get_stream(key).await.unwrap()).await;
        assert_eq!(got, len, "{key}");
        assert!(
            sha == expected_sha256(len),
            "{key} differs from what was sent"
        );
        if kind == Kind::Moto {
            // moto computes S3's multipart ETag, `<md5 of part md5s>-<parts>`.
            let e_tag = server
                .client()
                .head_object()
                .bucket(BUCKET)
                .key(format!("mp/{key}"))
                .send()
                .await
                .unwrap()
                .e_tag
                .unwrap_or_default();
            let suffix = parts.map(|p| format!("-{p}\""));
            assert_eq!(
                suffix.as_deref().map(|s| e_tag.ends_with(s)),
                parts.map(|_| true),
                "{key}: ETag {e_tag}"
            );
            if parts.is_none() {
                assert!(!e_tag.contains('-'), "{key}: ETag {e_tag}");
            }
        }
    }
}

#[tokio::test]
async fn multipart_upload_reads_back_identical_s3s_fs() {
    multipart(Kind::S3sFs).await;
}

#[tokio::test]
async fn multipart_upload_reads_back_identical_moto() {
    multipart(Kind::Moto).await;
}

/// Two writers create the same key at once, ten times: exactly one wins each time. Only on
/// moto: its conditional PUT checks and stores with no I/O in between, after the body is read.
/// s3s-fs 0.14 checks `If-None-Match` before it streams the body, so two concurrent creates both
/// succeed there (seen in the first round when tried); real S3 is atomic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_if_absent_is_exclusive_under_concurrency_moto() {
    if_absent_race(Kind::Moto).await;
}

async fn if_absent_race(kind: Kind) {
    let Some(server) = started(kind).await else {
        return;
    };
    let store = server.store(&format!("{BUCKET}/race"), None).await;
    for round in 0..10 {
        let key = format!("locks/{round}");
        let writers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|who| {
                let store = store.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    store
                        .put_bytes(&key, who.as_bytes().to_vec(), PutMode::IfAbsent)
                        .await
                        .map(|()| who)
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut refused = 0;
        for writer in writers {
            match writer.await.unwrap() {
                Ok(who) => winners.push(who),
                Err(StoreError::AlreadyExists { .. }) => refused += 1,
                Err(e) => panic!("{key}: {e}"),
            }
        }
        assert_eq!((winners.len(), refused), (1, 1), "{key}: {winners:?}");
        assert_eq!(
            store.get_bytes(&key).await.unwrap(),
            winners[0].as_bytes(),
            "{key}"
        );
    }
}

async fn failing_body(kind: Kind) {
    let Some(server) = started(kind).await else {
        return;
    };
    let store = server.store(&format!("{BUCKET}/fail"), Some(5 * MIB)).await;
    // Half-way through the third part of a multipart upload, and inside a single-PUT body.
    for (key, len, at) in [("b/big", 23 * MIB, 12 * MIB), ("b/small", MIB, MIB / 2)] {
        let err = store
            .put_stream(key, Body::new(len).failing_at(at).boxed())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Io { .. }) && err.to_string().contains("died half-way"),
            "{key}: {err}"
        );
        assert!(store.head(key).await.unwrap().is_none(), "{key} exists");
    }
    assert_eq!(keys(store.list("").await.unwrap()), Vec::<String>::new());
    if kind == Kind::Moto {
        let uploads = server
            .client()
            .list_multipart_uploads()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap();
        assert!(
            uploads.uploads().is_empty(),
            "the upload was not aborted: {:?}",
            uploads.uploads()
        );
    }
}

#[tokio::test]
async fn a_failing_body_leaves_nothing_s3s_fs() {
    failing_body(Kind::S3sFs).await;
}

#[tokio::test]
async fn a_failing_body_leaves_nothing_and_aborts_the_upload_moto() {
    failing_body(Kind::Moto).await;
}

/// The caller gives up on an upload (its future is dropped, as on Ctrl-C or a timeout) while
/// the body hangs: the multipart upload is aborted in the background, not left to accumulate.
#[tokio::test]
async fn a_dropped_upload_is_aborted_moto() {
    let Some(server) = started(Kind::Moto).await else {
        return;
    };
    let store = server.store(&format!("{BUCKET}/drop"), Some(5 * MIB)).await;
    let (reached, mut reached_rx) = tokio::sync::oneshot::channel();
    let body = Body::new(23 * MIB)
        .calling_at(12 * MIB, move || {
            let _ = reached.send(());
        })
        .stalling_at(12 * MIB);
    let mut upload = store.put_stream("b/dropped", body.boxed());
    tokio::select! {
        result = &mut upload => panic!("put_stream returned with a hanging body: {result:?}"),
        _ = &mut reached_rx => {}
    }
    let client = server.client();
    let uploads = || async {
        client
            .list_multipart_uploads()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap()
            .uploads()
            .len()
    };
    assert_eq!(uploads().await, 1, "the upload should be in progress");
    drop(upload);
    let deadline = Instant::now() + Duration::from_secs(20);
    while uploads().await != 0 {
        assert!(
            Instant::now() < deadline,
            "the dropped upload was not aborted within 20s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(store.head("b/dropped").await.unwrap().is_none());
}

/// The server dies in the middle of a large upload: the store gives up within a bounded time
/// (its part retries back off for a few seconds), and after a restart on the same data
/// directory nothing is at the key.
#[tokio::test]
async fn server_killed_mid_upload_fails_in_bounded_time_s3s_fs() {
    let Some(mut server) = started(Kind::S3sFs).await else {
        return;
    };
    let store = server.store(&format!("{BUCKET}/kill"), Some(5 * MIB)).await;
    let kill = server.kill_handle();
    let body = Body::new(40 * MIB).calling_at(15 * MIB, move || kill.kill());
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        store.put_stream("big/killed", body.boxed()),
    )
    .await
    .expect("put_stream still running 60s after the server died");
    eprintln!(
        "put_stream returned {:?} after {:?}",
        result,
        started.elapsed()
    );
    assert!(matches!(result, Err(StoreError::S3 { .. })), "{result:?}");

    server.restart();
    let store = server.store(&format!("{BUCKET}/kill"), Some(5 * MIB)).await;
    assert!(store.head("big/killed").await.unwrap().is_none());
    assert_eq!(keys(store.list("").await.unwrap()), Vec::<String>::new());
}

/// A server that stops reading in the middle of a part (a proxy in front of moto that passes
/// 1 MiB of each connection on and then holds it): the part's tries each time out, the error
/// says how many there were, it comes within the configured bound, and the multipart upload
/// is aborted (the abort is a small request, which the proxy lets through).
#[tokio::test]
async fn a_server_that_stalls_mid_part_times_out_and_the_upload_is_aborted_moto() {
    let Some(server) = started(Kind::Moto).await else {
        return;
    };
    let upstream = server
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy = ferry_testkit::faults::Proxy::start(upstream, |_| {
        Some(ferry_testkit::faults::Fault::StallAfter(MIB as u64))
    });
    let network = ferry_core::config::Network {
        connect_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(2),
        retries: 1,
    };
    let options = ferry_store::StoreOptions {
        endpoint: Some(proxy.endpoint()),
        network,
        ..server.options(Some(5 * MIB))
    };
    let store = ferry_store::open(&format!("s3://{BUCKET}/stall"), &options)
        .await
        .unwrap();
    let started = Instant::now();
    let err = store
        .put_stream("big/stalled", Body::new(12 * MIB).boxed())
        .await
        .unwrap_err();
    let took = started.elapsed();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            StoreError::S3 {
                operation: "UploadPart",
                attempts: 2,
                ..
            }
        ) && text.contains("part 1")
            && text.contains("after 2 attempts"),
        "{text}"
    );
    // Two tries of the part, one of the abort.
    let bound = network.worst_case() + network.read_timeout + Duration::from_secs(10);
    assert!(took < bound, "took {took:?}, more than {bound:?}: {text}");
    assert!(took >= network.read_timeout * 2, "took {took:?}: {text}");
    let uploads = server
        .client()
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    assert!(
        uploads.uploads().is_empty(),
        "the upload was not aborted: {:?}",
        uploads.uploads()
    );
    assert!(store.head("big/stalled").await.unwrap().is_none());
}
