//! Every migrate command on every engine, against real servers.

use ferry_e2e::{Kind, TestDb, example_migrations, fixture, run, write_migration};
use serde_json::Value;

fn args<'a>(db: &'a TestDb, m: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = rest.to_vec();
    v.extend([
        "--database-url",
        db.url.as_str(),
        "--migrations",
        m,
        "--output",
        "json",
    ]);
    v
}

fn versions(list: &Value) -> Vec<i64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["version"].as_i64().unwrap())
        .collect()
}

per_engine!(
    lifecycle_of_the_example_app,
    every_file_layout_applies_and_reverts,
    drift_is_refused_and_repair_records_it,
    down_runs_the_stored_script_after_the_files_are_gone,
    irreversible_migrations_stop_down_before_anything_runs,
    a_failing_migration_leaves_nothing_half_recorded,
    baseline_version_records_without_running,
    out_of_order_migrations_are_refused_unless_allowed,
);

async fn lifecycle_of_the_example_app(db: TestDb) {
    let m = example_migrations();
    let m = m.to_str().unwrap();
    let p = db.path();

    let st = run(p, &args(&db, m, &["migrate", "status"]))
        .expect_code(0)
        .json();
    assert_eq!(st["current_version"], Value::Null);
    assert!(
        st["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["state"] == "pending")
    );

    let dry = run(p, &args(&db, m, &["migrate", "up", "--dry-run"]))
        .expect_code(0)
        .json();
    assert_eq!(versions(&dry["applied"]).len(), 3);
    assert!(
        dry["applied"][0]["sql"]
            .as_str()
            .unwrap()
            .contains("CREATE TABLE users")
    );
    assert!(!db.has_table("users").await, "dry run changed the database");

    let up = run(
        p,
        &args(&db, m, &["migrate", "up", "--to", "20240102000001"]),
    )
    .expect_code(0)
    .json();
    assert_eq!(
        versions(&up["applied"]),
        vec![20240101000001, 20240102000001]
    );
    assert_eq!(up["current_version"], 20240102000001i64);
    let up = run(p, &args(&db, m, &["migrate", "up"]))
        .expect_code(0)
        .json();
    assert_eq!(versions(&up["applied"]), vec![20240103000001]);
    assert!(up["applied"][0]["duration_ms"].is_u64());
    // Nothing left: a second run is a no-op.
    let again = run(p, &args(&db, m, &["migrate", "up"]))
        .expect_code(0)
        .json();
    assert!(again["applied"].as_array().unwrap().is_empty());

    let st = run(p, &args(&db, m, &["migrate", "status"]))
        .expect_code(0)
        .json();
    for row in st["migrations"].as_array().unwrap() {
        assert_eq!(row["state"], "applied");
        assert_eq!(row["reversible"], true);
        let at = row["applied_at"].as_str().unwrap();
        assert!(chrono_like(at), "applied_at is not RFC 3339: {at}");
    }
    run(p, &args(&db, m, &["migrate", "validate"])).expect_code(0);

    db.exec("INSERT INTO users (id, email, display_name) VALUES (1, 'a@example.com', 'A')")
        .await;
    let redo = run(p, &args(&db, m, &["migrate", "redo"]))
        .expect_code(0)
        .json();
    assert_eq!(versions(&redo["reverted"]), vec![20240103000001]);
    assert_eq!(versions(&redo["applied"]), vec![20240103000001]);

    let down = run(p, &args(&db, m, &["migrate", "down"]))
        .expect_code(0)
        .json();
    assert_eq!(versions(&down["reverted"]), vec![20240103000001]);
    assert_eq!(down["current_version"], 20240102000001i64);
    let dry = run(
        p,
        &args(&db, m, &["migrate", "down", "--to", "0", "--dry-run"]),
    )
    .expect_code(0)
    .json();
    assert_eq!(
        versions(&dry["reverted"]),
        vec![20240102000001, 20240101000001]
    );
    assert!(db.has_table("orders").await, "dry run changed the database");
    let down = run(p, &args(&db, m, &["migrate", "down", "--to", "0"]))
        .expect_code(0)
        .json();
    assert_eq!(
        versions(&down["reverted"]),
        vec![20240102000001, 20240101000001]
    );
    assert_eq!(down["current_version"], Value::Null);
    assert!(!db.has_table("users").await && !db.has_table("orders").await);
    let none = run(p, &args(&db, m, &["migrate", "down"]))
        .expect_code(0)
        .json();
    assert!(none["reverted"].as_array().unwrap().is_empty());
}

fn chrono_like(s: &str) -> bool {
    s.len() >= 20
        && s.as_bytes()[4] == b'-'
        && s.contains('T')
        && (s.ends_with('Z') || s.contains('+'))
}

async fn every_file_layout_applies_and_reverts(db: TestDb) {
    // Each layout on its own database would be cleaner but slower; the layouts create the same
    // tables, so each is applied and fully reverted in turn on one database.
    for layout in ["native", "diesel", "flyway", "dbmate", "edge"] {
        let m = fixture(layout);
        let m = m.to_str().unwrap();
        let st = run(db.path(), &args(&db, m, &["migrate", "status"]))
            .expect_code(0)
            .json();
        let rows = st["migrations"].as_array().unwrap().clone();
        assert!(!rows.is_empty(), "{layout}: no migrations");
        let up = run(db.path(), &args(&db, m, &["migrate", "up"]))
            .expect_code(0)
            .json();
        assert_eq!(
            up["applied"].as_array().unwrap().len(),
            rows.len(),
            "{layout}"
        );
        // Revert down to (not past) the first irreversible migration, then clear the history so
        // the next layout starts clean.
        let st = run(db.path(), &args(&db, m, &["migrate", "status"]))
            .expect_code(0)
            .json();
        let rows = st["migrations"].as_array().unwrap();
        let irreversible: Vec<i64> = rows
            .iter()
            .filter(|r| r["reversible"] == false)
            .map(|r| r["version"].as_i64().unwrap())
            .collect();
        let floor = irreversible.iter().max().copied().unwrap_or(0);
        let to = floor.to_string();
        run(db.path(), &args(&db, m, &["migrate", "down", "--to", &to])).expect_code(0);
        if floor > 0 {
            let out = run(db.path(), &args(&db, m, &["migrate", "down"])).expect_code(3);
            assert!(out.stderr.contains("backup"), "{layout}: {}", out.stderr);
        }
        reset(&db).await;
    }
}

/// Drops every table the fixtures create and ferry's history.
async fn reset(db: &TestDb) {
    for t in [
        "ferry_migrations",
        "orders",
        "users",
        "posts",
        "comments",
        "tags",
        "accounts",
    ] {
        db.exec(&format!("DROP TABLE IF EXISTS {t}")).await;
    }
}

async fn drift_is_refused_and_repair_records_it(db: TestDb) {
    let p = db.path();
    write_migration(p, 1, "a", "CREATE TABLE a (id INT);\n", "DROP TABLE a;\n");
    write_migration(p, 2, "b", "CREATE TABLE b (id INT);\n", "DROP TABLE b;\n");
    let m = p.join("migrations");
    let m = m.to_str().unwrap();
    run(p, &args(&db, m, &["migrate", "up", "--to", "1"])).expect_code(0);
    // CRLF, a BOM and trailing whitespace are not a change.
    std::fs::write(
        p.join("migrations/1_a.up.sql"),
        "\u{feff}CREATE TABLE a (id INT);  \r\n\r\n",
    )
    .unwrap();
    run(p, &args(&db, m, &["migrate", "validate"])).expect_code(0);
    // A real edit is drift: validate and up refuse with exit 3, naming the migration.
    std::fs::write(
        p.join("migrations/1_a.up.sql"),
        "CREATE TABLE a (id BIGINT);\n",
    )
    .unwrap();
    let v = run(p, &args(&db, m, &["migrate", "validate"])).expect_code(3);
    assert_eq!(v.json()["problems"][0]["state"], "modified");
    let st = run(p, &args(&db, m, &["migrate", "status"]))
        .expect_code(0)
        .json();
    assert_eq!(st["migrations"][0]["state"], "modified");
    let out = run(p, &args(&db, m, &["migrate", "up"])).expect_code(3);
    assert!(
        out.stderr.contains("1_a") && out.stderr.contains("repair"),
        "{}",
        out.stderr
    );
    assert!(
        !db.has_table("b").await,
        "up ran although an applied migration drifted"
    );
    // Repair records the new checksum and says so; then up proceeds.
    let r = run(p, &args(&db, m, &["migrate", "repair"]))
        .expect_code(0)
        .json();
    assert_eq!(r["changes"][0]["action"], "updated_checksum");
    assert_eq!(r["changes"][0]["version"], 1);
    run(p, &args(&db, m, &["migrate", "validate"])).expect_code(0);
    run(p, &args(&db, m, &["migrate", "up"])).expect_code(0);
    assert!(db.has_table("b").await);
    let r = run(p, &args(&db, m, &["migrate", "repair"]))
        .expect_code(0)
        .json();
    assert!(r["changes"].as_array().unwrap().is_empty());
}

async fn down_runs_the_stored_script_after_the_files_are_gone(db: TestDb) {
    let p = db.path();
    write_migration(p, 1, "a", "CREATE TABLE a (id INT);", "DROP TABLE a;");
    write_migration(p, 2, "b", "CREATE TABLE b (id INT);", "DROP TABLE b;");
    let m = p.join("migrations");
    let m = m.to_str().unwrap();
    run(p, &args(&db, m, &["migrate", "up"])).expect_code(0);
    // The previous release's checkout: migration 2 does not exist there.
    std::fs::remove_file(p.join("migrations/2_b.up.sql")).unwrap();
    std::fs::remove_file(p.join("migrations/2_b.down.sql")).unwrap();
    let st = run(p, &args(&db, m, &["migrate", "status"]))
        .expect_code(0)
        .json();
    assert_eq!(st["migrations"][1]["state"], "missing");
    assert_eq!(st["migrations"][1]["reversible"], true);
    let down = run(p, &args(&db, m, &["migrate", "down"]))
        .expect_code(0)
        .json();
    assert_eq!(versions(&down["reverted"]), vec![2]);
    assert!(!db.has_table("b").await && db.has_table("a").await);
}

async fn irreversible_migrations_stop_down_before_anything_runs(db: TestDb) {
    let p = db.path();
    write_migration(p, 1, "a", "CREATE TABLE a (id INT);", "DROP TABLE a;");
    write_migration(p, 2, "b", "CREATE TABLE b (id INT);", "");
    write_migration(p, 3, "c", "CREATE TABLE c (id INT);", "DROP TABLE c;");
    // An empty (comments only) down is irreversible too.
    std::fs::write(p.join("migrations/2_b.down.sql"), "-- cannot be undone\n").unwrap();
    let m = p.join("migrations");
    let m = m.to_str().unwrap();
    run(p, &args(&db, m, &["migrate", "up"])).expect_code(0);
    let st = run(p, &args(&db, m, &["migrate", "status"]))
        .expect_code(0)
        .json();
    assert_eq!(st["migrations"][1]["reversible"], false);
    let out = run(p, &args(&db, m, &["migrate", "down", "--to", "0"])).expect_code(3);
    assert!(
        out.stderr.contains("2_b") && out.stderr.contains("ferry backup restore"),
        "{}",
        out.stderr
    );
    assert_eq!(out.json()["error"]["kind"], "irreversible");
    // Refused before anything ran: 3 is still there.
    assert!(db.has_table("c").await);
    run(p, &args(&db, m, &["migrate", "down"])).expect_code(0);
    assert!(!db.has_table("c").await && db.has_table("b").await);
}

async fn a_failing_migration_leaves_nothing_half_recorded(db: TestDb) {
    let p = db.path();
    write_migration(p, 1, "a", "CREATE TABLE a (id INT);", "DROP TABLE a;");
    write_migration(
        p,
        2,
        "broken",
        "CREATE TABLE b (id INT);\nINSERT INTO no_such_table VALUES (1);\n",
        "DROP TABLE b;",
    );
    write_migration(p, 3, "c", "CREATE TABLE c (id INT);", "DROP TABLE c;");
    let m = p.join("migrations");
    let m = m.to_str().unwrap();
    let out = run(p, &args(&db, m, &["migrate", "up"])).expect_code(1);
    assert!(out.stderr.contains("2_broken"), "{}", out.stderr);
    assert!(!db.has_table("c").await, "ran past a failure");
    let st = run(p, &args(&db, m, &["migrate", "status"]))
        .expect_code(0)
        .json();
    assert_eq!(st["migrations"][0]["state"], "applied");
    assert_eq!(st["current_version"], 1);
    match db.kind {
        // Transactional DDL: the table created before the failing statement is rolled back
        // and nothing is recorded.
        Kind::Sqlite | Kind::Postgres => {
            assert_eq!(st["migrations"][1]["state"], "pending");
            assert!(!db.has_table("b").await);
        }
        // MySQL commits DDL as it goes: the row says failed and blocks every further run.
        Kind::MySql => {
            assert!(out.stderr.contains("recorded as failed"), "{}", out.stderr);
            assert_eq!(st["migrations"][1]["state"], "failed");
            assert!(db.has_table("b").await);
            let blocked = run(p, &args(&db, m, &["migrate", "up"])).expect_code(3);
            assert_eq!(blocked.json()["error"]["kind"], "failed_migration");
            run(p, &args(&db, m, &["migrate", "down"])).expect_code(3);
            run(p, &args(&db, m, &["migrate", "validate"])).expect_code(3);
            // The human undoes the partial work, repairs, fixes the file, and goes on.
            db.exec("DROP TABLE b").await;
            let r = run(p, &args(&db, m, &["migrate", "repair"]))
                .expect_code(0)
                .json();
            assert_eq!(r["changes"][0]["action"], "cleared_failed");
        }
    }
    write_migration(
        p,
        2,
        "broken",
        "CREATE TABLE b (id INT);\n",
        "DROP TABLE b;",
    );
    run(p, &args(&db, m, &["migrate", "up"])).expect_code(0);
    assert!(db.has_table("b").await && db.has_table("c").await);
}

async fn baseline_version_records_without_running(db: TestDb) {
    let p = db.path();
    // The database already has the schema of 1 and 2, built by hand or another tool.
    db.exec("CREATE TABLE a (id INT)").await;
    db.exec("CREATE TABLE b (id INT)").await;
    write_migration(p, 1, "a", "CREATE TABLE a (id INT);", "DROP TABLE a;");
    write_migration(p, 2, "b", "CREATE TABLE b (id INT);", "DROP TABLE b;");
    write_migration(p, 3, "c", "CREATE TABLE c (id INT);", "DROP TABLE c;");
    let m = p.join("migrations");
    let m = m.to_str().unwrap();
    let b = run(p, &args(&db, m, &["migrate", "baseline", "--version", "2"]))
        .expect_code(0)
        .json();
    assert_eq!(versions(&b["recorded"]), vec![1, 2]);
    let up = run(p, &args(&db, m, &["migrate", "up"]))
        .expect_code(0)
        .json();
    assert_eq!(versions(&up["applied"]), vec![3]);
    // Baselined migrations carry their down script, so they can be reverted like any other.
    run(p, &args(&db, m, &["migrate", "down", "--to", "0"])).expect_code(0);
    assert!(!db.has_table("a").await);
}

async fn out_of_order_migrations_are_refused_unless_allowed(db: TestDb) {
    let p = db.path();
    write_migration(p, 1, "a", "CREATE TABLE a (id INT);", "DROP TABLE a;");
    write_migration(p, 3, "c", "CREATE TABLE c (id INT);", "DROP TABLE c;");
    let m = p.join("migrations");
    let m = m.to_str().unwrap();
    run(p, &args(&db, m, &["migrate", "up"])).expect_code(0);
    // A branch merged late brings version 2.
    write_migration(p, 2, "b", "CREATE TABLE b (id INT);", "DROP TABLE b;");
    let out = run(p, &args(&db, m, &["migrate", "up"])).expect_code(3);
    assert_eq!(out.json()["error"]["kind"], "out_of_order");
    assert!(
        out.stderr.contains("2_b") && out.stderr.contains("--allow-out-of-order"),
        "{}",
        out.stderr
    );
    assert!(!db.has_table("b").await);
    let up = run(p, &args(&db, m, &["migrate", "up", "--allow-out-of-order"]))
        .expect_code(0)
        .json();
    assert_eq!(versions(&up["applied"]), vec![2]);
    assert_eq!(up["current_version"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_no_transaction_migrations_run_concurrent_index_builds() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    let p = db.path();
    write_migration(
        p,
        1,
        "t",
        "CREATE TABLE t (id INT, email TEXT);",
        "DROP TABLE t;",
    );
    // Several statements, one of which PostgreSQL refuses inside a transaction block.
    write_migration(
        p,
        2,
        "index_t",
        "-- ferry:no-transaction\nCREATE INDEX CONCURRENTLY t_id ON t (id);\nCREATE INDEX CONCURRENTLY t_email ON t (email);\n",
        "-- ferry:no-transaction\nDROP INDEX CONCURRENTLY t_email;\nDROP INDEX CONCURRENTLY t_id;\n",
    );
    let m = p.join("migrations");
    let m = m.to_str().unwrap();
    run(p, &args(&db, m, &["migrate", "up"])).expect_code(0);
    let mut c = db.connect().await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_indexes WHERE tablename = 't'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 2);
    run(p, &args(&db, m, &["migrate", "down"])).expect_code(0);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_indexes WHERE tablename = 't'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 0);

    // Without a transaction, a failure part-way cannot be rolled back: the record says failed.
    write_migration(
        p,
        3,
        "half",
        "-- ferry:no-transaction\nCREATE INDEX CONCURRENTLY t_id2 ON t (id);\nCREATE INDEX CONCURRENTLY bad ON no_such_table (id);\n",
        "DROP INDEX t_id2;",
    );
    let out = run(p, &args(&db, m, &["migrate", "up"])).expect_code(1);
    assert!(
        out.stderr.contains("3_half") && out.stderr.contains("recorded as failed"),
        "{}",
        out.stderr
    );
    let st = run(p, &args(&db, m, &["migrate", "status"]))
        .expect_code(0)
        .json();
    assert_eq!(st["migrations"][2]["state"], "failed");
    run(p, &args(&db, m, &["migrate", "up"])).expect_code(3);
}
