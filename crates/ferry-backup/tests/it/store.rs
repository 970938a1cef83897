//! List, show and prune, on SQLite backups in the file store.

use std::time::Duration;

use ferry_backup::{BackupError, Manifest, PrunePolicy};
use ferry_core::DatabaseUrl;
use sqlx::{Connection, SqliteConnection};

use crate::harness::{Store, quiet, store, stored_files};

async fn db(dir: &std::path::Path) -> DatabaseUrl {
    let url = DatabaseUrl::parse(&format!("sqlite://{}", dir.join("app.db").display())).unwrap();
    let mut c = SqliteConnection::connect(&format!("{}?mode=rwc", url.expose()))
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    url
}

/// Rewrites a manifest as if the backup had been taken `days` ago.
fn age(s: &Store, m: &Manifest, days: i64) -> Manifest {
    let mut m = m.clone();
    m.created_at -= chrono::Duration::days(days);
    let path = s
        .dir
        .path()
        .join("store/backups")
        .join(&m.id)
        .join("manifest.json");
    std::fs::write(path, serde_json::to_vec(&m).unwrap()).unwrap();
    m
}

#[tokio::test]
async fn prune_keeps_exactly_what_it_says() {
    let dir = tempfile::tempdir().unwrap();
    let url = db(dir.path()).await;
    let s = store().await;
    let mut made = Vec::new();
    for i in 0..5 {
        let m = s
            .backups
            .create(&url, Some(&format!("b{i}")), &quiet())
            .await
            .unwrap();
        made.push(m);
    }
    // Ages: b0 40 days, b1 30, b2 20, b3 2, b4 1.
    let aged: Vec<Manifest> = made
        .iter()
        .zip([40, 30, 20, 2, 1])
        .map(|(m, d)| age(&s, m, d))
        .collect();
    let list = s.backups.list().await.unwrap();
    let labels: Vec<_> = list.iter().map(|m| m.label.clone().unwrap()).collect();
    assert_eq!(labels, ["b4", "b3", "b2", "b1", "b0"], "newest first");

    // A leftover: data without a manifest, two hours old; and a fresh one (a backup in flight).
    let old = s.dir.path().join("store/backups/20200101T000000Z-000000");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("data.gz"), b"partial").unwrap();
    let status = std::process::Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(old.join("data.gz"))
        .status()
        .unwrap();
    assert!(status.success());
    let fresh = s.dir.path().join("store/backups/29990101T000000Z-000000");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::write(fresh.join("data.gz"), b"in flight").unwrap();

    assert!(matches!(
        s.backups
            .prune(&PrunePolicy {
                keep_last: 0,
                keep_within: None,
                dry_run: false
            })
            .await,
        Err(BackupError::KeepNothing)
    ));

    // Dry run: reports, deletes nothing.
    let policy = PrunePolicy {
        keep_last: 2,
        keep_within: Some(Duration::from_secs(25 * 86400)),
        dry_run: true,
    };
    let files_before = stored_files(&s);
    let report = s.backups.prune(&policy).await.unwrap();
    let ids = |v: &[Manifest]| {
        v.iter()
            .map(|m| m.label.clone().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&report.kept), ["b4", "b3", "b2"]);
    assert_eq!(ids(&report.deleted), ["b1", "b0"]);
    assert_eq!(
        report.leftovers,
        ["backups/20200101T000000Z-000000/data.gz"]
    );
    assert_eq!(stored_files(&s), files_before);

    let report = s
        .backups
        .prune(&PrunePolicy {
            dry_run: false,
            ..policy
        })
        .await
        .unwrap();
    assert_eq!(ids(&report.deleted), ["b1", "b0"]);
    let left = s.backups.list().await.unwrap();
    assert_eq!(ids(&left), ["b4", "b3", "b2"]);
    let files = stored_files(&s);
    assert!(
        !files
            .iter()
            .any(|f| f.contains(&aged[0].id) || f.contains(&aged[1].id)),
        "{files:?}"
    );
    assert!(
        !files.iter().any(|f| f.contains("20200101T000000Z")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.contains("29990101T000000Z")),
        "in-flight data deleted"
    );

    // keep_last alone never deletes the newest.
    let report = s
        .backups
        .prune(&PrunePolicy {
            keep_last: 1,
            keep_within: None,
            dry_run: false,
        })
        .await
        .unwrap();
    assert_eq!(ids(&report.kept), ["b4"]);
    assert_eq!(ids(&s.backups.list().await.unwrap()), ["b4"]);
    s.backups.verify(&aged[4].id, &quiet()).await.unwrap();
}

#[tokio::test]
async fn unknown_and_invalid_ids() {
    let s = store().await;
    let err = s.backups.show("20261123T093012Z-abcdef").await.unwrap_err();
    assert!(matches!(err, BackupError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("ferry backup list"), "{err}");
    let err = s.backups.show("../../etc").await.unwrap_err();
    assert!(matches!(err, BackupError::BadId { .. }), "{err}");
}

#[tokio::test]
async fn a_backup_without_manifest_is_invisible() {
    let dir = tempfile::tempdir().unwrap();
    let url = db(dir.path()).await;
    let s = store().await;
    let m = s.backups.create(&url, None, &quiet()).await.unwrap();
    std::fs::remove_file(
        s.dir
            .path()
            .join("store/backups")
            .join(&m.id)
            .join("manifest.json"),
    )
    .unwrap();
    assert!(s.backups.list().await.unwrap().is_empty());
    let err = s.backups.restore(&m.id, &url, &quiet()).await.unwrap_err();
    assert!(matches!(err, BackupError::NotFound { .. }), "{err}");
}
