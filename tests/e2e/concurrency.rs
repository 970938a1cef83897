//! Races, held locks and killed runs against real servers: what "every migration is applied
//! exactly once however many runs race" and "a migration and its history row either both happen
//! or the row says failed" mean when real `ferry` processes collide or die.
//!
//! Waits here are on conditions the test can observe (a process exited, the server reports a
//! backend in `pg_sleep`), each bounded by a deadline; nothing sleeps and hopes.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use ferry_e2e::{Kind, Outcome, TestDb, ferry_bin, run, write_migration};
use serde_json::Value;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, MySqlConnection, PgConnection, SqliteConnection};

per_engine!(
    many_concurrent_up_runs_apply_each_migration_exactly_once,
    lock_timeout_is_a_clear_error_not_a_second_run,
);

fn migrations_dir(db: &TestDb) -> PathBuf {
    db.path().join("migrations")
}

/// `ferry <rest> --database-url .. --migrations <db dir>/migrations --output json`, run to the end.
fn ferry(db: &TestDb, rest: &[&str]) -> Outcome {
    let m = migrations_dir(db);
    let mut args = rest.to_vec();
    args.extend([
        "--database-url",
        &db.url,
        "--migrations",
        m.to_str().unwrap(),
        "--output",
        "json",
    ]);
    run(db.path(), &args)
}

/// The same command as [`ferry`], started and left running.
fn spawn_ferry(db: &TestDb, rest: &[&str]) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(ferry_bin());
    cmd.current_dir(db.path())
        .args(rest)
        .arg("--database-url")
        .arg(&db.url)
        .arg("--migrations")
        .arg(migrations_dir(db))
        .args(["--output", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A failing assertion must not leave a ferry holding the lock behind.
        .kill_on_drop(true);
    // The variables `ferry_e2e::ferry` clears, so the environment cannot change what runs.
    for var in ferry_e2e::scrubbed() {
        cmd.env_remove(var);
    }
    cmd.spawn().expect("spawn ferry")
}

fn outcome(out: Output) -> Outcome {
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn versions(list: &Value) -> Vec<i64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["version"].as_i64().unwrap())
        .collect()
}

fn states(status: &Value) -> Vec<(i64, String)> {
    status["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["version"].as_i64().unwrap(),
                m["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const MIGRATIONS: i64 = 20;
const RUNS: usize = 8;

async fn many_concurrent_up_runs_apply_each_migration_exactly_once(db: TestDb) {
    write_race_migrations(&db, None);
    race(&db).await;
}

/// The race of [`many_concurrent_up_runs_apply_each_migration_exactly_once`] with a
/// no-transaction `CREATE INDEX CONCURRENTLY` in the middle, after a migration slow enough that
/// every other run is waiting for the lock when the index is built. The index build waits for
/// every snapshot older than it, so a waiter that held one while it waited (as one blocked in
/// `SELECT pg_advisory_lock(..)` does) would deadlock with the lock holder.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_up_runs_with_create_index_concurrently_on_postgres() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    write_race_migrations(
        &db,
        Some((
            "-- ferry:no-transaction\nCREATE INDEX CONCURRENTLY t2_id ON t2 (id);\nINSERT INTO applied_log (v) VALUES (5);\n",
            "DROP INDEX CONCURRENTLY t2_id;\n",
        )),
    );
    race(&db).await;
    let mut c = db.connect().await;
    let valid: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE c.relname = 't2_id' AND i.indisvalid",
    )
    .fetch_one(&mut c)
    .await
    .expect("read pg_index");
    let _ = c.close().await;
    assert_eq!(valid, 1, "the concurrent index is missing or invalid");
}

/// Writes the race's migrations: every up both creates a table (a second run of it fails) and
/// logs its number (a second run of it that somehow succeeded shows as a duplicate row).
/// `fifth`, when given, replaces migration 5 (it must log 5), and migration 4 then sleeps so
/// that every run is waiting for the lock when migration 5 runs.
fn write_race_migrations(db: &TestDb, fifth: Option<(&str, &str)>) {
    let p = db.path();
    write_migration(
        p,
        1,
        "log",
        "CREATE TABLE applied_log (v INT);\nINSERT INTO applied_log (v) VALUES (1);\n",
        "DROP TABLE applied_log;\n",
    );
    for n in 2..=MIGRATIONS {
        match (n, fifth) {
            (5, Some((up, down))) => write_migration(p, n, "concurrently", up, down),
            _ => {
                let pause = match (n, fifth) {
                    (4, Some(_)) => "SELECT pg_sleep(1);\n",
                    _ => "",
                };
                write_migration(
                    p,
                    n,
                    &format!("t{n}"),
                    &format!(
                        "CREATE TABLE t{n} (id INT);\n{pause}INSERT INTO applied_log (v) VALUES ({n});\n"
                    ),
                    &format!("DROP TABLE t{n};\n"),
                )
            }
        }
    }
}

/// Starts [`RUNS`] `migrate up` at once and checks that each migration ran exactly once and that
/// every run exited 0.
async fn race(db: &TestDb) {
    let started = Instant::now();
    let children: Vec<_> = (0..RUNS)
        .map(|_| spawn_ferry(db, &["migrate", "up", "--lock-timeout", "60s"]))
        .collect();
    // Each wait drains its own pipes, so no run blocks on a full pipe while another is awaited.
    let waits: Vec<_> = children
        .into_iter()
        .map(|c| tokio::spawn(c.wait_with_output()))
        .collect();
    // On PostgreSQL and MySQL the session lock serializes whole runs, so one run applies
    // everything; on SQLite the lock is per migration and the runs interleave (the split is
    // printed). Without the lock, or without SQLite's re-check under it, runs fail with
    // "table tN already exists" or a duplicate history row.
    let mut applied_by_runs = Vec::new();
    let mut per_run = Vec::new();
    for w in waits {
        let out = outcome(w.await.expect("join").expect("wait for ferry")).expect_code(0);
        let applied = versions(&out.json()["applied"]);
        per_run.push(applied.len());
        applied_by_runs.extend(applied);
    }
    eprintln!(
        "{RUNS} concurrent runs on {:?} finished in {:?}; migrations applied by each: {per_run:?}",
        db.kind,
        started.elapsed()
    );

    // Between them the runs applied every migration, and no migration twice.
    applied_by_runs.sort_unstable();
    assert_eq!(
        applied_by_runs,
        (1..=MIGRATIONS).collect::<Vec<_>>(),
        "versions reported applied by all runs"
    );

    let mut c = db.connect().await;
    let logged: Vec<i64> = sqlx::query_scalar("SELECT v FROM applied_log ORDER BY v")
        .fetch_all(&mut c)
        .await
        .expect("read applied_log");
    let _ = c.close().await;
    assert_eq!(
        logged,
        (1..=MIGRATIONS).collect::<Vec<_>>(),
        "each migration's INSERT ran exactly once"
    );

    let st = ferry(db, &["migrate", "status"]).expect_code(0).json();
    assert_eq!(st["current_version"], MIGRATIONS);
    let rows = states(&st);
    assert_eq!(rows.len(), MIGRATIONS as usize);
    assert!(rows.iter().all(|(_, s)| s == "applied"), "{rows:?}");
}

/// The migration lock, held by the test on its own connection as another ferry run would.
enum Holder {
    Postgres(PgConnection),
    MySql(MySqlConnection),
    /// An open `BEGIN IMMEDIATE` transaction with an uncommitted write.
    Sqlite(SqliteConnection),
}

/// The same key as the PostgreSQL driver's `LOCK_KEY`.
const PG_LOCK_KEY: &str = "hashtext('ferry_migrations:' || current_schema())";

impl Holder {
    async fn take(db: &TestDb) -> Holder {
        match db.kind {
            Kind::Postgres => {
                let mut c = PgConnection::connect(&db.url).await.expect("connect");
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT pg_advisory_lock({PG_LOCK_KEY})"
                )))
                .execute(&mut c)
                .await
                .expect("take the advisory lock");
                Holder::Postgres(c)
            }
            Kind::MySql => {
                let mut c = MySqlConnection::connect(&db.url).await.expect("connect");
                let got: Option<i64> =
                    sqlx::query_scalar("SELECT GET_LOCK(CONCAT('ferry:', SHA1(DATABASE())), 0)")
                        .fetch_one(&mut c)
                        .await
                        .expect("GET_LOCK");
                assert_eq!(got, Some(1), "the test could not take the lock itself");
                Holder::MySql(c)
            }
            Kind::Sqlite => {
                let options = SqliteConnectOptions::from_str(&db.url)
                    .expect("sqlite url")
                    .create_if_missing(true);
                let mut c = SqliteConnection::connect_with(&options)
                    .await
                    .expect("open sqlite");
                sqlx::raw_sql("CREATE TABLE holder (id INTEGER); BEGIN IMMEDIATE; INSERT INTO holder VALUES (1);")
                    .execute(&mut c)
                    .await
                    .expect("hold the write lock");
                Holder::Sqlite(c)
            }
        }
    }

    async fn release(self) {
        match self {
            Holder::Postgres(mut c) => {
                let released: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT pg_advisory_unlock({PG_LOCK_KEY})"
                )))
                .fetch_one(&mut c)
                .await
                .expect("release the advisory lock");
                assert!(released, "the test's advisory lock was not held any more");
                c.close().await.expect("close");
            }
            Holder::MySql(mut c) => {
                let released: Option<i64> =
                    sqlx::query_scalar("SELECT RELEASE_LOCK(CONCAT('ferry:', SHA1(DATABASE())))")
                        .fetch_one(&mut c)
                        .await
                        .expect("RELEASE_LOCK");
                assert_eq!(released, Some(1), "the test's lock was not held any more");
                c.close().await.expect("close");
            }
            Holder::Sqlite(mut c) => {
                sqlx::raw_sql("ROLLBACK")
                    .execute(&mut c)
                    .await
                    .expect("rollback");
                c.close().await.expect("close");
            }
        }
    }
}

async fn lock_timeout_is_a_clear_error_not_a_second_run(db: TestDb) {
    let p = db.path();
    write_migration(p, 1, "a", "CREATE TABLE a (id INT);\n", "DROP TABLE a;\n");
    write_migration(p, 2, "b", "CREATE TABLE b (id INT);\n", "DROP TABLE b;\n");

    let holder = Holder::take(&db).await;
    let started = Instant::now();
    let out = ferry(&db, &["migrate", "up", "--lock-timeout", "1s"]).expect_code(1);
    let waited = started.elapsed();
    let err = &out.json()["error"];
    assert_eq!(err["kind"], "lock_timeout", "{}", out.stderr);
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("lock") && message.contains("--lock-timeout"),
        "{message}"
    );
    // It waited for the lock (1s), and gave up instead of waiting for the default 60s.
    assert!(
        waited >= Duration::from_secs(1),
        "gave up before the timeout: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(30),
        "did not give up after --lock-timeout 1s: {waited:?}"
    );
    assert!(!db.has_table("a").await, "ran a migration without the lock");
    // status takes no lock: it works while another run holds it, and shows nothing applied.
    let st = ferry(&db, &["migrate", "status"]).expect_code(0).json();
    assert_eq!(
        states(&st),
        vec![(1, "pending".into()), (2, "pending".into())]
    );

    holder.release().await;
    let up = ferry(&db, &["migrate", "up", "--lock-timeout", "10s"])
        .expect_code(0)
        .json();
    assert_eq!(versions(&up["applied"]), vec![1, 2]);
    assert!(db.has_table("a").await && db.has_table("b").await);
}

/// Polls `probe` until it returns `Some`, failing after `deadline` with `what`. The child is
/// checked on every round so that a ferry that exited early fails the test with its output.
async fn wait_for<T, F: AsyncFnMut() -> Option<T>>(
    what: &str,
    deadline: Duration,
    child: Option<&mut tokio::process::Child>,
    mut probe: F,
) -> T {
    let until = Instant::now() + deadline;
    let mut child = child;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        if let Some(c) = child.as_deref_mut()
            && let Some(status) = c.try_wait().expect("try_wait")
        {
            panic!("ferry exited ({status}) before {what}");
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_in_the_middle_of_a_long_migration_on_postgres() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    let p = db.path();
    write_migration(
        p,
        1,
        "small",
        "CREATE TABLE small (id INT);\n",
        "DROP TABLE small;\n",
    );
    let body =
        "CREATE TABLE big (id INT);\nINSERT INTO big SELECT g FROM generate_series(1, 1000) g;\n";
    write_migration(
        p,
        2,
        "big",
        &format!("{body}SELECT pg_sleep(30);\n"),
        "DROP TABLE big;\n",
    );
    ferry(&db, &["migrate", "up", "--to", "1"]).expect_code(0);

    let mut watcher = PgConnection::connect(&db.url).await.expect("connect");
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&mut watcher)
        .await
        .expect("server version");
    // PostgreSQL does not look at the client's socket while a statement runs, so by default a
    // backend whose client was killed keeps sleeping until pg_sleep returns and the result
    // cannot be sent. `client_connection_check_interval` (PostgreSQL 14+) makes the server
    // check and abort, as a production server configured for it would. Older servers get the
    // same outcome from pg_terminate_backend below.
    let checks_client = version >= 140000;
    if checks_client {
        db.exec(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET client_connection_check_interval = 100', \
             current_database()); END $$",
        )
        .await;
    }

    let mut child = spawn_ferry(&db, &["migrate", "up"]);
    let backend: i32 = wait_for("ferry's backend is in pg_sleep", Duration::from_secs(20), Some(&mut child), async || {
        sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND wait_event = 'PgSleep'",
        )
        .fetch_optional(&mut watcher)
        .await
        .expect("read pg_stat_activity")
    })
    .await;

    // SIGKILL: no destructor, no rollback, no unlock from ferry's side.
    let killed_at = Instant::now();
    child.kill().await.expect("kill ferry");
    let status = child.wait().await.expect("wait for ferry");
    assert!(!status.success());
    if !checks_client {
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(backend)
            .execute(&mut watcher)
            .await
            .expect("terminate the orphaned backend");
    }
    wait_for(
        "the killed run's backend is gone",
        Duration::from_secs(20),
        None,
        async || {
            let alive: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
                    .bind(backend)
                    .fetch_one(&mut watcher)
                    .await
                    .expect("read pg_stat_activity");
            (!alive).then_some(())
        },
    )
    .await;
    eprintln!(
        "the killed run's backend was gone {:?} after the kill",
        killed_at.elapsed()
    );
    let _ = watcher.close().await;

    // The transaction that created and filled `big` was rolled back with its history row.
    assert!(
        !db.has_table("big").await,
        "a killed migration left its table behind"
    );
    assert!(db.has_table("small").await);
    let st = ferry(&db, &["migrate", "status"]).expect_code(0).json();
    assert_eq!(
        states(&st),
        vec![(1, "applied".into()), (2, "pending".into())]
    );
    assert_eq!(st["current_version"], 1);

    // The dead session's advisory lock went with it: a fixed migration applies at once.
    write_migration(p, 2, "big", body, "DROP TABLE big;\n");
    let up = ferry(&db, &["migrate", "up", "--lock-timeout", "5s"])
        .expect_code(0)
        .json();
    assert_eq!(versions(&up["applied"]), vec![2]);
    let mut c = db.connect().await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM big")
        .fetch_one(&mut c)
        .await
        .expect("count");
    let _ = c.close().await;
    assert_eq!(rows, 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_killed_mid_migration_shows_failed() {
    let Some(db) = TestDb::new(Kind::MySql).await else {
        return;
    };
    let p = db.path();
    write_migration(
        p,
        1,
        "small",
        "CREATE TABLE small (id INT);\n",
        "DROP TABLE small;\n",
    );
    write_migration(
        p,
        2,
        "big",
        "CREATE TABLE big (id INT);\nSELECT SLEEP(30);\n",
        "DROP TABLE big;\n",
    );
    ferry(&db, &["migrate", "up", "--to", "1"]).expect_code(0);

    let mut watcher = MySqlConnection::connect(&db.url).await.expect("connect");
    let mut child = spawn_ferry(&db, &["migrate", "up"]);
    let backend: i64 = wait_for("ferry's session is in SLEEP()", Duration::from_secs(20), Some(&mut child), async || {
        sqlx::query_scalar(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND ID <> CONNECTION_ID() \
             AND STATE = 'User sleep'",
        )
        .fetch_optional(&mut watcher)
        .await
        .expect("read the process list")
    })
    .await;

    child.kill().await.expect("kill ferry");
    assert!(!child.wait().await.expect("wait for ferry").success());
    // MariaDB, like PostgreSQL, does not notice a vanished client during SLEEP(); it would run
    // on for 30s. KILL ends the session as the server eventually would. "Unknown thread id"
    // means the server was faster.
    if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("KILL {backend}")))
        .execute(&mut watcher)
        .await
    {
        assert!(
            e.to_string().contains("Unknown thread"),
            "KILL {backend}: {e}"
        );
    }
    wait_for(
        "the killed run's session is gone",
        Duration::from_secs(20),
        None,
        async || {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?",
            )
            .bind(backend)
            .fetch_one(&mut watcher)
            .await
            .expect("read the process list");
            (n == 0).then_some(())
        },
    )
    .await;
    let _ = watcher.close().await;

    // MySQL committed the CREATE TABLE; the history row written before the script says so.
    assert!(db.has_table("big").await);
    let st = ferry(&db, &["migrate", "status"]).expect_code(0).json();
    assert_eq!(
        states(&st),
        vec![(1, "applied".into()), (2, "failed".into())]
    );
    assert_eq!(st["current_version"], 1);
    let blocked = ferry(&db, &["migrate", "up", "--lock-timeout", "5s"]).expect_code(3);
    assert_eq!(blocked.json()["error"]["kind"], "failed_migration");
    assert!(
        blocked.stderr.contains("2_big") && blocked.stderr.contains("repair"),
        "{}",
        blocked.stderr
    );

    // The human undoes the partial work, repairs, fixes the file and goes on.
    db.exec("DROP TABLE big").await;
    let r = ferry(&db, &["migrate", "repair"]).expect_code(0).json();
    assert_eq!(r["changes"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["changes"][0]["action"], "cleared_failed");
    assert_eq!(r["changes"][0]["version"], 2);
    let st = ferry(&db, &["migrate", "status"]).expect_code(0).json();
    assert_eq!(
        states(&st),
        vec![(1, "applied".into()), (2, "pending".into())]
    );
    write_migration(
        p,
        2,
        "big",
        "CREATE TABLE big (id INT);\n",
        "DROP TABLE big;\n",
    );
    let up = ferry(&db, &["migrate", "up", "--lock-timeout", "5s"])
        .expect_code(0)
        .json();
    assert_eq!(versions(&up["applied"]), vec![2]);
    assert!(db.has_table("big").await);
}
