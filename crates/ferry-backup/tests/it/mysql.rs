use ferry_backup::{BackupError, Options};

use ferry_testkit::db::{Kind, TestDb};

use crate::harness::{corrupt, fake_tool_dir, quiet, store, store_with, stored_files};

const SCHEMA: &str = r#"
CREATE TABLE kinds (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    ti TINYINT, i INT, bi BIGINT UNSIGNED, dec1 DECIMAL(30,10), f FLOAT, d DOUBLE, b BOOLEAN,
    txt LONGTEXT, vc VARCHAR(50), bin VARBINARY(20), blb LONGBLOB, js JSON,
    dt DATE, tm TIME(6), dtm DATETIME(6), ts TIMESTAMP NULL, yr YEAR, en ENUM('a','b'), bits BIT(8)
) DEFAULT CHARSET = utf8mb4;
INSERT INTO kinds (ti, i, bi, dec1, f, d, b, txt, vc, bin, blb, js, dt, tm, dtm, ts, yr, en, bits) VALUES
 (-128, 2147483647, 18446744073709551615, 12345678901234567890.0123456789, 1.5, 1e308, TRUE,
  'héllo wörld 日本語 🚀', 'x''y', X'00FF10', X'DEADBEEF', '{"a": [1, null]}',
  '2026-02-28', '838:59:59.000000', '1999-12-31 23:59:59.999999', '2026-11-23 09:30:12', 2026, 'b', b'10101010'),
 (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO kinds (txt, blb) VALUES (REPEAT('large row ', 100000), REPEAT(X'DEADBEEF', 100000));
CREATE TABLE audit (n INT);
CREATE TRIGGER kinds_audit AFTER INSERT ON kinds FOR EACH ROW INSERT INTO audit VALUES (NEW.id);
CREATE PROCEDURE answer() SELECT 42;
CREATE TABLE ferry_migrations (version BIGINT PRIMARY KEY, success BOOLEAN NOT NULL);
INSERT INTO ferry_migrations VALUES (1, TRUE), (2, TRUE), (3, FALSE);
"#;

async fn fingerprint(db: &TestDb) -> Vec<Option<String>> {
    let mut out = db
        .texts(
            "SELECT CAST(MD5(GROUP_CONCAT(MD5(CONCAT_WS('|', id, ti, i, bi, dec1, f, d, b, txt, vc, HEX(bin), HEX(blb), js, dt, tm, dtm, ts, yr, en, bits+0, ISNULL(txt))) ORDER BY id SEPARATOR '#')) AS CHAR) FROM kinds",
        )
        .await;
    out.extend(
        db.texts("SELECT CAST(COUNT(*) AS CHAR) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()")
            .await,
    );
    out.extend(
        db.texts("SELECT CAST(COUNT(*) AS CHAR) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()")
            .await,
    );
    out
}

#[tokio::test]
async fn round_trip_restores_everything_and_replaces_later_changes() {
    let Some(db) = TestDb::new(Kind::MySql).await else {
        return;
    };
    db.exec(SCHEMA).await;
    let before = fingerprint(&db).await;
    let s = store().await;
    let m = s
        .backups
        .create(&db.database_url(), None, &quiet())
        .await
        .unwrap();
    assert_eq!(m.engine, "mysql");
    assert_eq!(m.schema_version, Some(2));
    assert_eq!(m.tables.iter().find(|t| t.name == "kinds").unwrap().rows, 3);
    assert_eq!(m.tables.iter().find(|t| t.name == "audit").unwrap().rows, 0);
    s.backups.verify(&m.id, &quiet()).await.unwrap();
    let check = s
        .backups
        .verify_restore_check(&m.id, &db.database_url(), &quiet())
        .await
        .unwrap();
    assert_eq!(check.tables, m.tables);

    db.exec("CREATE TABLE later (x INT); DELETE FROM kinds WHERE id = 1; DROP PROCEDURE answer;")
        .await;
    s.backups
        .restore(&m.id, &db.database_url(), &quiet())
        .await
        .unwrap();
    assert_eq!(fingerprint(&db).await, before);
    assert!(
        db.texts("SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'later'")
            .await
            .is_empty(),
        "a table created after the backup must be gone"
    );
    db.exec("INSERT INTO kinds (i) VALUES (7)").await;
    assert_eq!(
        db.texts("SELECT CAST(COUNT(*) AS CHAR) FROM audit").await,
        vec![Some("1".into())]
    );
    drop(db);
}

#[tokio::test]
async fn a_flipped_byte_is_refused_and_the_target_untouched() {
    let Some(db) = TestDb::new(Kind::MySql).await else {
        return;
    };
    db.exec("CREATE TABLE t (x INT); INSERT INTO t VALUES (1), (2);")
        .await;
    let s = store().await;
    let m = s
        .backups
        .create(&db.database_url(), None, &quiet())
        .await
        .unwrap();
    db.exec("CREATE TABLE after_backup (y INT);").await;
    corrupt(&s, &m.id);
    let err = s
        .backups
        .restore(&m.id, &db.database_url(), &quiet())
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::Corrupt { .. }), "{err}");
    assert_eq!(
        db.texts("SELECT CAST(COUNT(*) AS CHAR) FROM after_backup")
            .await,
        vec![Some("0".into())]
    );
    drop(db);
}

#[tokio::test]
async fn failing_or_missing_dump_tool_leaves_no_backup() {
    let Some(db) = TestDb::new(Kind::MySql).await else {
        return;
    };
    let fake = fake_tool_dir(&["mariadb-dump", "mysqldump"]);
    let s = store_with(Options {
        tool_search_path: Some(fake.path().as_os_str().to_owned()),
        ..Options::default()
    })
    .await;
    let err = s
        .backups
        .create(&db.database_url(), None, &quiet())
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::ToolFailed { .. }), "{err}");
    assert!(s.backups.list().await.unwrap().is_empty());
    assert!(stored_files(&s).is_empty());

    let empty = tempfile::tempdir().unwrap();
    let s = store_with(Options {
        tool_search_path: Some(empty.path().as_os_str().to_owned()),
        ..Options::default()
    })
    .await;
    let err = s
        .backups
        .create(&db.database_url(), None, &quiet())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("mariadb-client"), "{err}");
    assert!(stored_files(&s).is_empty());
    drop(db);
}
