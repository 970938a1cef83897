use ferry_backup::BackupError;
use ferry_core::DatabaseUrl;
use sqlx::{AssertSqlSafe, Connection, Row, SqliteConnection};

use crate::harness::{corrupt, quiet, store};

async fn conn(url: &DatabaseUrl) -> SqliteConnection {
    SqliteConnection::connect(&format!("{}?mode=rwc", url.expose()))
        .await
        .unwrap()
}

async fn exec(url: &DatabaseUrl, sql: &str) {
    let mut c = conn(url).await;
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
}

async fn texts(url: &DatabaseUrl, sql: &str) -> Vec<Option<String>> {
    let mut c = conn(url).await;
    let rows = sqlx::query(AssertSqlSafe(sql.to_string()))
        .fetch_all(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    rows.iter().map(|r| r.try_get(0).unwrap()).collect()
}

const SCHEMA: &str = r"
PRAGMA journal_mode = WAL;
CREATE TABLE kinds (id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, n NUMERIC, d TEXT);
INSERT INTO kinds (i, r, t, b, n, d) VALUES
 (9223372036854775807, 1.5e300, 'héllo 日本語 🚀', X'00FF10', 12345.6789, '2026-11-23T09:30:12Z'),
 (NULL, NULL, NULL, NULL, NULL, NULL),
 (-1, -0.0, '', X'', 0, '0001-01-01');
INSERT INTO kinds (t, b) VALUES (printf('%.*c', 2000000, 'x'), randomblob(500000));
CREATE TABLE audit (n INTEGER);
CREATE TRIGGER kinds_audit AFTER INSERT ON kinds BEGIN INSERT INTO audit VALUES (NEW.id); END;
CREATE VIEW big AS SELECT id FROM kinds WHERE length(t) > 10;
CREATE TABLE ferry_migrations (version INTEGER PRIMARY KEY, success BOOLEAN NOT NULL);
INSERT INTO ferry_migrations VALUES (5, 1), (6, 0);
";

#[derive(Default)]
struct Counting {
    last: std::sync::Mutex<Option<(ferry_backup::Phase, u64)>>,
}

impl ferry_backup::Progress for Counting {
    fn bytes(&self, phase: ferry_backup::Phase, done: u64, _total: Option<u64>, _rate: f64) {
        *self.last.lock().unwrap() = Some((phase, done));
    }
}

const FINGERPRINT: &str = "SELECT group_concat(id || ':' || quote(i) || quote(r) || quote(t) || hex(b) || quote(n) || quote(d), '#') FROM (SELECT * FROM kinds ORDER BY id)";

#[tokio::test]
async fn round_trip_and_restore_over_a_changed_file() {
    let dir = tempfile::tempdir().unwrap();
    let url =
        DatabaseUrl::parse(&format!("sqlite://{}", dir.path().join("app.db").display())).unwrap();
    exec(&url, SCHEMA).await;
    let before = texts(&url, FINGERPRINT).await;
    let s = store().await;
    let seen = std::sync::Arc::new(Counting::default());
    let observer: std::sync::Arc<dyn ferry_backup::Progress> = seen.clone();
    let m = s
        .backups
        .create(&url, Some("nightly"), &observer)
        .await
        .unwrap();
    let last = *seen.last.lock().unwrap();
    assert_eq!(
        last,
        Some((ferry_backup::Phase::Dump, m.raw_bytes)),
        "final progress report"
    );
    assert_eq!(m.engine, "sqlite");
    assert_eq!(m.tool, "sqlite VACUUM INTO");
    assert_eq!(m.schema_version, Some(5));
    assert_eq!(m.tables.iter().find(|t| t.name == "kinds").unwrap().rows, 4);
    s.backups.verify(&m.id, &quiet()).await.unwrap();
    let check = s
        .backups
        .verify_restore_check(&m.id, &url, &quiet())
        .await
        .unwrap();
    assert_eq!(check.tables, m.tables);

    exec(
        &url,
        "CREATE TABLE later (x); DELETE FROM kinds WHERE id = 1;",
    )
    .await;
    s.backups.restore(&m.id, &url, &quiet()).await.unwrap();
    assert_eq!(texts(&url, FINGERPRINT).await, before);
    assert!(
        texts(&url, "SELECT name FROM sqlite_schema WHERE name = 'later'")
            .await
            .is_empty()
    );
    exec(&url, "INSERT INTO kinds (i) VALUES (1)").await;
    assert_eq!(
        texts(&url, "SELECT CAST(count(*) AS TEXT) FROM audit").await,
        vec![Some("1".into())]
    );

    // A flipped byte: refused, the file untouched.
    corrupt(&s, &m.id);
    exec(&url, "CREATE TABLE after_corruption (x)").await;
    let err = s.backups.restore(&m.id, &url, &quiet()).await.unwrap_err();
    assert!(matches!(err, BackupError::Corrupt { .. }), "{err}");
    assert_eq!(
        texts(
            &url,
            "SELECT name FROM sqlite_schema WHERE name = 'after_corruption'"
        )
        .await,
        vec![Some("after_corruption".into())]
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("ferry-restore"))
        .collect();
    assert!(leftovers.is_empty(), "temporary restore file left behind");
}

#[tokio::test]
async fn missing_database_file_leaves_no_backup() {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::parse(&format!(
        "sqlite://{}",
        dir.path().join("none.db").display()
    ))
    .unwrap();
    let s = store().await;
    assert!(s.backups.create(&url, None, &quiet()).await.is_err());
    assert!(s.backups.list().await.unwrap().is_empty());
    assert!(
        !dir.path().join("none.db").exists(),
        "backup must not create the database"
    );
}
