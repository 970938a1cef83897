use ferry_backup::{BackupError, Options};

use ferry_testkit::db::{Kind, TestDb};

use crate::harness::{corrupt, fake_tool_dir, quiet, store, store_with, stored_files};

const SCHEMA: &str = r#"
CREATE TABLE kinds (
    id bigserial PRIMARY KEY,
    i2 smallint, i4 integer, i8 bigint,
    num numeric(30, 10), real4 real, dbl double precision,
    ok boolean, txt text, vc varchar(20), ch char(3),
    bin bytea, js jsonb, uid uuid,
    d date, t time, ts timestamp, tstz timestamptz, iv interval,
    arr integer[]
);
INSERT INTO kinds (i2, i4, i8, num, real4, dbl, ok, txt, vc, ch, bin, js, uid, d, t, ts, tstz, iv, arr) VALUES
 (-32768, 2147483647, -9223372036854775808, 12345678901234567890.0123456789, 1.5, 'NaN', true,
  'héllo wörld 日本語 🚀', 'x', 'abc', '\x00ff10'::bytea, '{"a": [1, null]}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '2026-02-28', '23:59:59.999999', '1999-12-31 23:59:59', '2026-11-23 09:30:12+02', '1 year 2 days 03:04:05', '{1,2,3}'),
 (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (0, 0, 0, -0.0000000001, '-Infinity', 1e308, false, '', '', '   ', ''::bytea, 'null', NULL,
  '0001-01-01', '00:00', 'infinity', '-infinity', '-1 mon', '{}');
INSERT INTO kinds (txt, bin) SELECT repeat('large row ', 200000), decode(repeat('deadbeef', 100000), 'hex');
CREATE SCHEMA billing;
CREATE TABLE billing.invoices (id serial PRIMARY KEY, total numeric(12,2) NOT NULL, updated_at timestamptz);
CREATE FUNCTION billing.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := '2000-01-01 00:00:00+00'; RETURN NEW; END $$;
CREATE TRIGGER invoices_touch BEFORE INSERT OR UPDATE ON billing.invoices
    FOR EACH ROW EXECUTE FUNCTION billing.touch();
INSERT INTO billing.invoices (total) SELECT g FROM generate_series(1, 1000) g;
CREATE SEQUENCE billing.numbers START 500;
SELECT nextval('billing.numbers'), nextval('billing.numbers');
CREATE VIEW billing.big AS SELECT * FROM billing.invoices WHERE total > 900;
CREATE TABLE ferry_migrations (version bigint PRIMARY KEY, success boolean NOT NULL);
INSERT INTO ferry_migrations VALUES (20240101000000, true), (20240202000000, true), (20240303000000, false);
"#;

/// A fingerprint of the data that a faithful restore reproduces.
async fn fingerprint(db: &TestDb) -> Vec<Option<String>> {
    let mut out = db
        .texts("SELECT md5(string_agg(k::text, '|' ORDER BY id)) FROM kinds k")
        .await;
    out.extend(
        db.texts("SELECT md5(string_agg(i::text, '|' ORDER BY id)) FROM billing.invoices i")
            .await,
    );
    out.extend(
        db.texts("SELECT last_value::text FROM billing.numbers")
            .await,
    );
    out.extend(db.texts("SELECT count(*)::text FROM billing.big").await);
    out.extend(
        db.texts("SELECT last_value::text || is_called::text FROM kinds_id_seq")
            .await,
    );
    out.extend(
        db.texts("SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension")
            .await,
    );
    out
}

async fn available_extension(db: &TestDb) -> Option<String> {
    db.texts(
        "SELECT name::text FROM pg_available_extensions WHERE name IN ('citext', 'pgcrypto') ORDER BY name LIMIT 1",
    )
    .await
    .into_iter()
    .next()
    .flatten()
}

#[tokio::test]
async fn round_trip_restores_everything_and_replaces_later_changes() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    db.exec(SCHEMA).await;
    let ext = available_extension(&db).await;
    if let Some(ext) = &ext {
        db.exec(&format!("CREATE EXTENSION {ext}")).await;
        if ext == "citext" {
            db.exec("CREATE TABLE emails (e citext PRIMARY KEY); INSERT INTO emails VALUES ('A@x.org');")
                .await;
        } else {
            db.exec("CREATE TABLE digests (h bytea); INSERT INTO digests VALUES (digest('x', 'sha256'));")
                .await;
        }
    } else {
        eprintln!("note: neither citext nor pgcrypto is available; extension not exercised");
    }
    let before = fingerprint(&db).await;
    let s = store().await;
    let m = s
        .backups
        .create(&db.database_url(), Some("before v2"), &quiet())
        .await
        .unwrap();
    assert_eq!(m.engine, "postgres");
    assert_eq!(m.schema_version, Some(20240202000000));
    assert_eq!(m.label.as_deref(), Some("before v2"));
    assert!(m.tool.starts_with("pg_dump "), "{}", m.tool);
    assert!(m.raw_bytes > m.compressed_bytes, "{m:?}");
    let invoices = m
        .tables
        .iter()
        .find(|t| t.name == "billing.invoices")
        .unwrap();
    assert_eq!(invoices.rows, 1000);
    assert_eq!(
        m.tables
            .iter()
            .find(|t| t.name == "public.kinds")
            .unwrap()
            .rows,
        4
    );
    assert_eq!(s.backups.list().await.unwrap(), vec![m.clone()]);
    assert_eq!(s.backups.show(&m.id).await.unwrap(), m);
    s.backups.verify(&m.id, &quiet()).await.unwrap();
    let check = s
        .backups
        .verify_restore_check(&m.id, &db.database_url(), &quiet())
        .await
        .unwrap();
    assert_eq!(check.tables, m.tables);

    // Change the database after the backup, then restore over it.
    db.exec(
        "CREATE TABLE later (x int); INSERT INTO billing.invoices (total) VALUES (1);
         DELETE FROM kinds WHERE id = 1; CREATE SCHEMA extra; DROP VIEW billing.big;",
    )
    .await;
    s.backups
        .restore(&m.id, &db.database_url(), &quiet())
        .await
        .unwrap();
    assert_eq!(fingerprint(&db).await, before);
    assert_eq!(
        db.texts("SELECT to_regclass('public.later')::text").await,
        vec![None],
        "a table created after the backup must be gone"
    );
    assert!(
        db.texts("SELECT nspname::text FROM pg_namespace WHERE nspname = 'extra'")
            .await
            .is_empty()
    );
    // The trigger survived the round trip.
    db.exec("INSERT INTO billing.invoices (total) VALUES (5)")
        .await;
    assert_eq!(
        db.texts("SELECT updated_at::date::text FROM billing.invoices ORDER BY id DESC LIMIT 1")
            .await,
        vec![Some("2000-01-01".into())]
    );
    // Restore into another database on the server (--to).
    let copy = db.sibling("copy").await;
    s.backups.restore(&m.id, &copy, &quiet()).await.unwrap();
    drop(db);
}

#[tokio::test]
async fn a_flipped_byte_is_refused_and_the_target_untouched() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    db.exec("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 5000);")
        .await;
    let s = store().await;
    let m = s
        .backups
        .create(&db.database_url(), None, &quiet())
        .await
        .unwrap();
    db.exec("CREATE TABLE after_backup (y int); INSERT INTO after_backup VALUES (1);")
        .await;
    corrupt(&s, &m.id);
    let err = s.backups.verify(&m.id, &quiet()).await.unwrap_err();
    assert!(matches!(err, BackupError::Corrupt { .. }), "{err}");
    let err = s
        .backups
        .restore(&m.id, &db.database_url(), &quiet())
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::Corrupt { .. }), "{err}");
    assert_eq!(
        db.texts("SELECT count(*)::text FROM after_backup").await,
        vec![Some("1".into())]
    );
    assert_eq!(
        db.texts("SELECT count(*)::text FROM t").await,
        vec![Some("5000".into())]
    );
    drop(db);
}

#[tokio::test]
async fn failing_or_missing_pg_dump_leaves_no_backup() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    db.exec("CREATE TABLE t (x int);").await;
    let fake = fake_tool_dir(&["pg_dump"]);
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
    let text = err.to_string();
    assert!(matches!(err, BackupError::ToolFailed { .. }), "{text}");
    assert!(text.contains("fake dump failed"), "{text}");
    assert!(!text.contains("hunter2"), "password leaked: {text}");
    assert!(s.backups.list().await.unwrap().is_empty());
    assert!(stored_files(&s).is_empty(), "{:?}", stored_files(&s));

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
    assert!(err.to_string().contains("postgresql-client"), "{err}");
    assert!(s.backups.list().await.unwrap().is_empty());
    assert!(stored_files(&s).is_empty());
    drop(db);
}

#[tokio::test]
async fn a_tool_older_than_the_server_is_refused() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pg_dump");
    std::fs::write(&path, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = store_with(Options {
        tool_search_path: Some(dir.path().as_os_str().to_owned()),
        ..Options::default()
    })
    .await;
    let err = s
        .backups
        .create(&db.database_url(), None, &quiet())
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::ToolTooOld { .. }), "{err}");
    assert!(stored_files(&s).is_empty());
    drop(db);
}
