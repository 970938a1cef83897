//! A migration must not queue behind a long transaction (and take its table down with it):
//! with `--ddl-lock-timeout` it gives up, changes and records nothing, names the session that
//! holds the lock, and succeeds once that session commits.
//!
//! The blocker is a real session holding a lock on the table; the waits are ferry's own
//! (bounded by the timeout), nothing here sleeps.

use std::time::{Duration, Instant};

use ferry_e2e::{Kind, Outcome, TestDb, run, write_migration};
use sqlx::{Connection, MySqlConnection, PgConnection};

per_engine!([postgres, mysql] gives_up_names_the_blocker_records_nothing_then_succeeds);

fn ferry(db: &TestDb, rest: &[&str]) -> Outcome {
    let m = db.path().join("migrations");
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

/// A session in an open transaction that has used `accounts`, so it holds a lock an
/// `ALTER TABLE accounts` must wait for; and the id the server knows it by.
enum Blocker {
    Postgres(PgConnection),
    MySql(MySqlConnection),
}

impl Blocker {
    async fn hold(db: &TestDb) -> (Blocker, i64) {
        match db.kind {
            Kind::Postgres => {
                let mut c = PgConnection::connect(&db.url).await.expect("connect");
                sqlx::raw_sql(
                    "SET application_name = 'nightly_report'; BEGIN; SELECT count(*) FROM accounts;",
                )
                .execute(&mut c)
                .await
                .expect("hold a lock on accounts");
                let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                    .fetch_one(&mut c)
                    .await
                    .expect("pid");
                (Blocker::Postgres(c), pid.into())
            }
            Kind::MySql => {
                let mut c = MySqlConnection::connect(&db.url).await.expect("connect");
                sqlx::raw_sql("BEGIN; INSERT INTO accounts (id) VALUES (1);")
                    .execute(&mut c)
                    .await
                    .expect("hold a lock on accounts");
                let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
                    .fetch_one(&mut c)
                    .await
                    .expect("connection id");
                (Blocker::MySql(c), id as i64)
            }
            Kind::Sqlite => unreachable!("SQLite has no table locks held by a session"),
        }
    }

    async fn commit(self) {
        match self {
            Blocker::Postgres(mut c) => {
                sqlx::raw_sql("COMMIT")
                    .execute(&mut c)
                    .await
                    .expect("commit");
                c.close().await.expect("close");
            }
            Blocker::MySql(mut c) => {
                sqlx::raw_sql("COMMIT")
                    .execute(&mut c)
                    .await
                    .expect("commit");
                c.close().await.expect("close");
            }
        }
    }
}

async fn gives_up_names_the_blocker_records_nothing_then_succeeds(db: TestDb) {
    let p = db.path();
    write_migration(
        p,
        1,
        "accounts",
        "CREATE TABLE accounts (id INT);\n",
        "DROP TABLE accounts;\n",
    );
    ferry(&db, &["migrate", "up"]).expect_code(0);
    write_migration(
        p,
        2,
        "add_note",
        "ALTER TABLE accounts ADD COLUMN note VARCHAR(50);\n",
        "ALTER TABLE accounts DROP COLUMN note;\n",
    );

    let (blocker, blocker_id) = Blocker::hold(&db).await;
    let started = Instant::now();
    let out = ferry(
        &db,
        &[
            "migrate",
            "up",
            "--ddl-lock-timeout",
            "1s",
            "--ddl-lock-retries",
            "1",
        ],
    )
    .expect_code(1);
    let waited = started.elapsed();
    let err = &out.json()["error"];
    assert_eq!(err["kind"], "ddl_lock_timeout", "{}", out.stderr);
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("migration 2_add_note"),
        "names the migration: {message}"
    );
    assert!(message.contains("2 tries"), "{message}");
    assert!(
        message.contains(&format!("session {blocker_id}")),
        "names the blocking session {blocker_id}: {message}"
    );
    if db.kind == Kind::Postgres {
        assert!(
            message.contains("nightly_report") && message.contains("idle in transaction"),
            "{message}"
        );
        assert!(message.contains("transaction open"), "{message}");
    }
    assert!(
        message.contains("Nothing was changed or recorded"),
        "{message}"
    );
    // Two tries of 1 s and a pause of 1 s between them, not the default 10 s or forever.
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(9),
        "gave up after {waited:?}"
    );

    // Nothing recorded: the migration is pending, not failed, and the column is not there.
    let st = ferry(&db, &["migrate", "status"]).expect_code(0).json();
    let states: Vec<(i64, String)> = st["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["version"].as_i64().unwrap(),
                m["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![(1, "applied".to_string()), (2, "pending".to_string())]
    );

    blocker.commit().await;
    let up = ferry(&db, &["migrate", "up", "--ddl-lock-timeout", "1s"])
        .expect_code(0)
        .json();
    assert_eq!(up["applied"][0]["version"], 2, "{up}");
    assert_eq!(up["current_version"], 2);
    db.exec("INSERT INTO accounts (id, note) VALUES (2, 'after')")
        .await;
}
