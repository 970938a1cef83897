//! Every kind of data object ferry writes or ever wrote (zstd, gzip, and gzip under a manifest
//! without the `compression` key, as ferry wrote before zstd) restores, verifies and passes the
//! restore check.

use ferry_backup::{Backups, Compression, Manifest, Options, RestoreOptions};
use ferry_testkit::db::{Kind, TestDb};

use crate::harness::{data_file, quiet, store_with};

const ROWS: &str = "CREATE TABLE t (id int PRIMARY KEY, note text);
INSERT INTO t SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 20000) g;";

fn with(compression: Compression, level: Option<i32>) -> Options {
    Options {
        compression,
        compression_level: level,
        ..Options::default()
    }
}

async fn round_trip(db: &TestDb, backups: &Backups, m: &Manifest) {
    backups.verify(&m.id, &quiet()).await.unwrap();
    let check = backups
        .verify_restore_check(&m.id, &db.database_url(), &quiet())
        .await
        .unwrap();
    assert_eq!(check.tables, m.tables);
    db.exec("DELETE FROM t WHERE id > 10").await;
    let options = RestoreOptions {
        end_sessions: true,
        ..RestoreOptions::default()
    };
    backups
        .restore_with(&m.id, &db.database_url(), &options, &quiet())
        .await
        .unwrap();
    assert_eq!(
        db.texts("SELECT count(*)::text FROM t").await,
        vec![Some("20000".into())]
    );
}

#[tokio::test]
async fn zstd_and_gzip_backups_restore_verify_and_pass_the_restore_check() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    db.exec(ROWS).await;
    for (compression, level, file, magic) in [
        (
            Compression::Zstd,
            None,
            "data.zst",
            &[0x28u8, 0xb5, 0x2f, 0xfd][..],
        ),
        (
            Compression::Zstd,
            Some(9),
            "data.zst",
            &[0x28, 0xb5, 0x2f, 0xfd][..],
        ),
        (Compression::Gzip, None, "data.gz", &[0x1f, 0x8b][..]),
    ] {
        let s = store_with(with(compression, level)).await;
        let m = s
            .backups
            .create(&db.database_url(), None, &quiet())
            .await
            .unwrap();
        assert_eq!(m.compression, compression);
        let path = data_file(&s, &m.id);
        assert!(path.ends_with(file), "{}", path.display());
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes.starts_with(magic),
            "{compression:?}: not its magic number"
        );
        assert_eq!(bytes.len() as u64, m.compressed_bytes);
        round_trip(&db, &s.backups, &m).await;
    }
}

#[tokio::test]
async fn a_backup_in_the_format_of_the_previous_release_still_restores() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    db.exec(ROWS).await;
    let s = store_with(with(Compression::Gzip, Some(1))).await;
    let m = s
        .backups
        .create(&db.database_url(), None, &quiet())
        .await
        .unwrap();
    // The previous release wrote data.gz and a manifest without `compression`.
    let manifest = data_file(&s, &m.id).with_file_name("manifest.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("compression").unwrap();
    std::fs::write(&manifest, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    let shown = s.backups.show(&m.id).await.unwrap();
    assert_eq!(shown.compression, Compression::Gzip);
    // Read by a ferry whose default is zstd.
    let reader = crate::harness::reopen(&s, Options::default()).await;
    round_trip(&db, &reader, &shown).await;
}

#[tokio::test]
async fn a_level_out_of_range_is_refused_before_dumping() {
    let Some(db) = TestDb::new(Kind::Sqlite).await else {
        return;
    };
    db.exec("CREATE TABLE t (x int)").await;
    let s = store_with(with(Compression::Gzip, Some(12))).await;
    let err = s
        .backups
        .create(&db.database_url(), None, &quiet())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("0–9"), "{err}");
    assert!(s.backups.list().await.unwrap().is_empty());
}
