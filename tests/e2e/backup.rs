//! `ferry backup ...` end to end on every engine, with the file store: the CI pre-deploy step
//! (create, JSON manifest), the DBA's restore after a failed release, and the refusals.

use ferry_e2e::{Kind, TestDb, example_migrations, run};
use serde_json::Value;

fn args<'a>(db: &'a TestDb, store: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let m = Box::leak(
        example_migrations()
            .to_string_lossy()
            .into_owned()
            .into_boxed_str(),
    );
    let mut v = rest.to_vec();
    v.extend([
        "--database-url",
        db.url.as_str(),
        "--store",
        store,
        "--migrations",
        m,
        "--output",
        "json",
    ]);
    v
}

fn store_url(db: &TestDb) -> String {
    format!("file://{}/store", db.path().display())
}

per_engine!(
    backup_before_a_release_and_restore_after_it_failed,
    a_flipped_byte_is_refused_and_the_target_is_untouched,
);

async fn backup_before_a_release_and_restore_after_it_failed(db: TestDb) {
    let p = db.path();
    let store = store_url(&db);
    run(
        p,
        &args(&db, &store, &["migrate", "up", "--to", "20240102000001"]),
    )
    .expect_code(0);
    db.exec(
        "INSERT INTO users (id, email) VALUES (1, 'ada@example.com'), (2, 'grace@example.com')",
    )
    .await;
    db.exec("INSERT INTO orders (id, user_id, total_cents) VALUES (1, 1, 4200)")
        .await;

    // The CI pre-deploy step.
    let m = run(
        p,
        &args(&db, &store, &["backup", "create", "--label", "release 1.4"]),
    )
    .expect_code(0)
    .json();
    for key in [
        "id",
        "created_at",
        "engine",
        "server_version",
        "database",
        "url",
        "schema_version",
        "label",
        "tool",
        "ferry_version",
        "raw_bytes",
        "compressed_bytes",
        "sha256",
        "duration_ms",
        "tables",
    ] {
        assert!(m.get(key).is_some(), "manifest lacks {key}: {m}");
    }
    let id = m["id"].as_str().unwrap().to_string();
    assert_eq!(m["schema_version"], 20240102000001i64);
    assert_eq!(m["label"], "release 1.4");
    let rows = |name: &str| {
        m["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"].as_str().unwrap().ends_with(name))
            .map(|t| t["rows"].as_i64().unwrap())
    };
    assert_eq!(rows("users"), Some(2));
    assert_eq!(rows("orders"), Some(1));
    assert!(!m["url"].as_str().unwrap().contains(":***@") || !db.url.contains("@"));

    let list = run(p, &args(&db, &store, &["backup", "list"]))
        .expect_code(0)
        .json();
    assert_eq!(list["backups"][0]["id"], id.as_str());
    let check = run(
        p,
        &args(&db, &store, &["backup", "verify", &id, "--restore-check"]),
    )
    .expect_code(0)
    .json();
    assert_eq!(check["ok"], true);
    assert!(check["restore_check"]["tables"].as_array().unwrap().len() >= 3);

    // The release goes wrong: a migration and some writes.
    run(p, &args(&db, &store, &["migrate", "up"])).expect_code(0);
    db.exec("CREATE TABLE made_after_backup (id INT)").await;
    db.exec("DELETE FROM orders").await;

    // Without a terminal and without --yes, restoring over the configured database is refused.
    let refused = run(p, &args(&db, &store, &["backup", "restore", &id])).expect_code(3);
    assert_eq!(refused.json()["error"]["kind"], "not_confirmed");
    assert!(db.has_table("made_after_backup").await);

    let r = run(p, &args(&db, &store, &["backup", "restore", &id, "--yes"]))
        .expect_code(0)
        .json();
    assert_eq!(r["schema_version"], 20240102000001i64);
    assert!(
        !db.has_table("made_after_backup").await,
        "restore must replace the contents entirely"
    );
    let mut c = db.connect().await;
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(orders, 1);
    drop(c);
    // ferry migrate agrees with the manifest: the newest migration is pending again.
    let st = run(p, &args(&db, &store, &["migrate", "status"]))
        .expect_code(0)
        .json();
    assert_eq!(st["current_version"], 20240102000001i64);
    assert_eq!(st["migrations"][2]["state"], "pending");
}

async fn a_flipped_byte_is_refused_and_the_target_is_untouched(db: TestDb) {
    let p = db.path();
    let store = store_url(&db);
    run(p, &args(&db, &store, &["migrate", "up"])).expect_code(0);
    let m = run(p, &args(&db, &store, &["backup", "create"]))
        .expect_code(0)
        .json();
    let id = m["id"].as_str().unwrap();
    db.exec("CREATE TABLE after_backup (id INT)").await;

    assert_eq!(m["compression"], "zstd", "the default compression: {m}");
    let data = p.join(format!("store/backups/{id}/data.zst"));
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&data, &bytes).unwrap();

    let v = run(p, &args(&db, &store, &["backup", "verify", id])).expect_code(3);
    assert_eq!(v.json()["error"]["kind"], "corrupt_backup");
    let r = run(p, &args(&db, &store, &["backup", "restore", id, "--yes"])).expect_code(3);
    assert!(r.stderr.contains(id), "{}", r.stderr);
    assert!(
        db.has_table("after_backup").await,
        "a corrupt backup touched the target"
    );
    assert!(db.has_table("users").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_to_another_database_needs_no_confirmation() {
    let (Some(src), Some(dst)) = (
        TestDb::new(Kind::Sqlite).await,
        TestDb::new(Kind::Sqlite).await,
    ) else {
        return;
    };
    let store = store_url(&src);
    run(src.path(), &args(&src, &store, &["migrate", "up"])).expect_code(0);
    let m = run(src.path(), &args(&src, &store, &["backup", "create"]))
        .expect_code(0)
        .json();
    let id = m["id"].as_str().unwrap();
    run(
        src.path(),
        &args(&src, &store, &["backup", "restore", id, "--to", &dst.url]),
    )
    .expect_code(0);
    assert!(dst.has_table("orders").await);
}

#[test]
fn prune_lists_without_yes_and_keeps_exactly_what_it_says() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let url = format!("sqlite://{}/app.db", p.display());
    let store = format!("file://{}/store", p.display());
    let m = example_migrations();
    let base = [
        "--database-url",
        url.as_str(),
        "--store",
        store.as_str(),
        "--migrations",
        m.to_str().unwrap(),
        "--output",
        "json",
    ];
    let with = |rest: &[&str]| -> Vec<String> {
        rest.iter()
            .chain(base.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let go = |rest: &[&str]| {
        let a = with(rest);
        run(p, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    go(&["migrate", "up"]).expect_code(0);
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            go(&["backup", "create"]).expect_code(0).json()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let dry = go(&["backup", "prune", "--keep-last", "2"])
        .expect_code(0)
        .json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["deleted"].as_array().unwrap().len(), 2);
    assert_eq!(
        go(&["backup", "list"]).expect_code(0).json()["backups"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let done = go(&["backup", "prune", "--keep-last", "2", "--yes"])
        .expect_code(0)
        .json();
    assert_eq!(done["dry_run"], false);
    let left: Vec<Value> = go(&["backup", "list"]).expect_code(0).json()["backups"]
        .as_array()
        .unwrap()
        .clone();
    let left: Vec<&str> = left.iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(left, vec![ids[3].as_str(), ids[2].as_str()]);
    go(&["backup", "prune", "--keep-last", "0"]).expect_code(2);
}
