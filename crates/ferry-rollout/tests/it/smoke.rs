//! `ferry_rollout::smoke::run` against real HTTP hosts and real databases.

use ferry_core::DatabaseUrl;
use ferry_rollout::SmokeCheck;
use ferry_rollout::smoke::{SmokeReport, run};
use ferry_testkit::db::{Kind, TestDb};
use ferry_testkit::fleet::Fleet;

use crate::OLD;

fn checks(body: &str) -> Vec<SmokeCheck> {
    crate::fleet_config(body).smoke
}

fn check<'a>(r: &'a SmokeReport, name: &str) -> &'a ferry_rollout::CheckReport {
    r.checks.iter().find(|c| c.name == name).unwrap()
}

async fn orders(db: &TestDb) {
    db.exec("CREATE TABLE orders (id INT PRIMARY KEY, total INT)")
        .await;
    db.exec("INSERT INTO orders VALUES (1, 10), (2, 20)").await;
}

async fn order_count(db: &TestDb) -> i64 {
    use sqlx::Row;
    let mut c = db.connect().await;
    let row = sqlx::query("SELECT count(*) AS n FROM orders")
        .fetch_one(&mut c)
        .await
        .unwrap();
    row.try_get::<i64, _>(0).unwrap()
}

/// HTTP and SQL checks on one database: passing ones, failing ones, a timeout, and writes the
/// read-only transaction refuses.
async fn smoke_on(kind: Kind, sleep_sql: &str) {
    let Some(fleet) = Fleet::start(1, OLD) else {
        return;
    };
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    orders(&db).await;
    let port = fleet.host("h1").port;
    let list = checks(&format!(
        "[[env.prod.smoke]]\nname = \"home page\"\nhttp = \"http://127.0.0.1:{port}/\"\ncontains = \"h1 {OLD}\"\n\
         [[env.prod.smoke]]\nname = \"missing page\"\nhttp = \"http://127.0.0.1:{port}/nope\"\n\
         [[env.prod.smoke]]\nname = \"404 expected\"\nhttp = \"http://127.0.0.1:{port}/nope\"\nstatus = 404\n\
         [[env.prod.smoke]]\nname = \"slow page\"\nhttp = \"http://127.0.0.1:{port}/slow?ms=5000\"\ntimeout_seconds = 0.5\n\
         [[env.prod.smoke]]\nname = \"orders readable\"\nsql = \"SELECT count(*) > 0 FROM orders\"\nexpect = \"true\"\n\
         [[env.prod.smoke]]\nname = \"order total\"\nsql = \"SELECT sum(total) FROM orders WHERE id = 2\"\nexpect = \"20\"\n\
         [[env.prod.smoke]]\nname = \"wrong count\"\nsql = \"SELECT count(*) FROM orders\"\nexpect = \"3\"\n\
         [[env.prod.smoke]]\nname = \"delete\"\nsql = \"DELETE FROM orders\"\n\
         [[env.prod.smoke]]\nname = \"insert\"\nsql = \"INSERT INTO orders VALUES (3, 30)\"\n\
         [[env.prod.smoke]]\nname = \"slow query\"\nsql = \"{sleep_sql}\"\ntimeout_seconds = 0.5\n"
    ));
    let url = DatabaseUrl::parse(&db.url).unwrap();
    let started = std::time::Instant::now();
    let report = run("prod", &list, Some(&url)).await;
    let elapsed = started.elapsed();

    assert!(!report.passed, "{report:#?}");
    assert_eq!(report.checks.len(), 10, "every check ran");
    assert_eq!(report.checks[0].name, "home page", "in configuration order");
    for name in [
        "home page",
        "404 expected",
        "orders readable",
        "order total",
    ] {
        assert!(check(&report, name).passed, "{name}: {report:#?}");
    }
    assert_eq!(check(&report, "home page").kind, "http");
    assert_eq!(check(&report, "orders readable").kind, "sql");
    assert_eq!(
        check(&report, "missing page").detail,
        "HTTP 404, expected 200"
    );
    assert_eq!(check(&report, "wrong count").detail, "got 2, expected 3");
    for name in ["slow page", "slow query"] {
        let c = check(&report, name);
        assert!(!c.passed && c.detail.contains("timed out"), "{c:#?}");
        assert!(c.latency_ms < 3000, "{c:#?}");
    }
    for name in ["delete", "insert"] {
        let c = check(&report, name);
        assert!(!c.passed, "{c:#?}");
        let d = c.detail.to_lowercase();
        assert!(
            d.contains("read-only") || d.contains("readonly") || d.contains("read only"),
            "{c:#?}"
        );
    }
    // In parallel: two 0.5 s timeouts and everything else well under the sum.
    assert!(elapsed.as_secs_f64() < 4.0, "{elapsed:?}");
    assert_eq!(order_count(&db).await, 2, "no check changed data");
    let json = serde_json::to_value(&report).unwrap();
    for key in ["env", "passed", "checks"] {
        assert!(json.get(key).is_some(), "{json}");
    }
    for key in ["name", "kind", "passed", "latency_ms", "detail"] {
        assert!(json["checks"][0].get(key).is_some(), "{json}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_on_postgres() {
    smoke_on(Kind::Postgres, "SELECT pg_sleep(5)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_on_sqlite() {
    // SQLite has no sleep: a recursive count that takes seconds.
    smoke_on(
        Kind::Sqlite,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000) SELECT count(*) FROM c",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_on_mysql() {
    smoke_on(Kind::MySql, "SELECT SLEEP(5)").await;
}

#[tokio::test]
async fn all_passing_and_no_database() {
    let Some(fleet) = Fleet::start(1, OLD) else {
        return;
    };
    let port = fleet.host("h1").port;
    let list = checks(&format!(
        "[[env.prod.smoke]]\nname = \"status\"\nhttp = \"http://127.0.0.1:{port}/_status\"\ncontains = \"ok\"\n"
    ));
    let report = run("prod", &list, None).await;
    assert!(report.passed, "{report:#?}");
    let list = checks("[[env.prod.smoke]]\nname = \"q\"\nsql = \"SELECT 1\"\n");
    let report = run("prod", &list, None).await;
    assert!(!report.passed);
    assert!(report.checks[0].detail.contains("no database URL"));

    // A SQLite file that does not exist is an empty database, and stays uncreated.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("absent.db");
    let url = DatabaseUrl::parse(&format!("sqlite://{}", file.display())).unwrap();
    let list = checks(
        "[[env.prod.smoke]]\nname = \"one\"\nsql = \"SELECT 1\"\nexpect = \"1\"\n         [[env.prod.smoke]]\nname = \"table\"\nsql = \"SELECT count(*) FROM orders\"\n",
    );
    let report = run("prod", &list, Some(&url)).await;
    assert!(report.checks[0].passed, "{report:#?}");
    assert!(
        report.checks[1].detail.contains("no such table"),
        "{report:#?}"
    );
    assert!(!file.exists());
}
