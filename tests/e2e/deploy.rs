//! `ferry deploy`, `ferry deploy status` and the schema-aware `ferry rollback` through the
//! binary, on every engine (MariaDB for the tracked, non-transactional path), with a file
//! store and small real HTTP hosts: a good release goes live, a breaking migration is refused
//! and the schema is unchanged, an unhealthy host or a failing smoke check rolls everything
//! back (artifact on every host, migration, schema and data), an irreversible migration
//! restores the backup or stops naming it, a second deploy is refused naming the holder, a
//! killed deploy is `interrupted` and `ferry rollback` undoes it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_e2e::fleet::Fleet;
use ferry_e2e::haproxy::Haproxy;
use ferry_e2e::traffic::Traffic;
use ferry_e2e::{Kind, Outcome, TestDb};
use serde_json::Value;

per_engine!(
    a_good_release_goes_live_with_its_migration,
    a_breaking_migration_is_refused_and_the_schema_is_unchanged,
    an_unhealthy_host_rolls_everything_back,
    a_failing_smoke_check_rolls_everything_back,
    an_irreversible_migration_restores_the_backup_when_allowed,
    an_irreversible_migration_without_restore_stops_naming_the_backup,
    a_second_deploy_is_refused_naming_the_holder,
    a_killed_deploy_is_interrupted_and_rollback_undoes_it,
    rollback_after_a_good_deploy_restores_artifact_and_schema,
);

const V1: &str = "1.0.0";
const V2: &str = "2.0.0";

/// The migration every test's first release brings.
const M1: (&str, &str) = (
    "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL);",
    "DROP TABLE items;",
);

/// One test's world: a database, a store, hosts, a ferry.toml.
struct World {
    db: TestDb,
    hosts: Option<Fleet>,
    extra: String,
    /// The body of `[store]`: a directory unless a test says otherwise.
    store: String,
}

impl World {
    fn p(&self) -> &Path {
        self.db.path()
    }

    /// Writes ferry.toml for `dev` with the given extra keys.
    fn write_config(&self) {
        let p = self.p();
        let mut t = format!(
            "[migrations]\ndir = \"migrations\"\n[store]\n{4}\n\
             [env.dev]\ndatabase_url = \"{1}\"\nartifacts = \"file://{0}/envs/dev\"\n{2}\n{3}\n",
            p.display(),
            self.db.url,
            self.hosts
                .as_ref()
                .map(|h| format!(
                    "deploy_command = \"{}\"\n{}health_timeout_seconds = 2\n",
                    h.deploy_command(),
                    // A test that needs the hosts to settle says how long.
                    if self.extra.contains("settle_seconds") {
                        ""
                    } else {
                        "settle_seconds = 0\n"
                    }
                ))
                .unwrap_or_default(),
            self.extra,
            self.store,
        );
        if let Some(h) = &self.hosts {
            t.push_str(&h.hosts_toml("dev"));
        }
        std::fs::write(p.join("ferry.toml"), t).unwrap();
    }

    fn ferry(&self, args: &[&str]) -> Outcome {
        ferry_at(self.p(), args)
    }

    fn push(&self, version: &str) -> String {
        let file = self.p().join(format!("app-{version}.tar"));
        std::fs::write(&file, format!("the app, release {version}")).unwrap();
        let out = self
            .ferry(&[
                "artifact",
                "push",
                file.to_str().unwrap(),
                "--name",
                "app",
                "--version",
                version,
            ])
            .expect_code(0)
            .json();
        out["reference"].as_str().unwrap().to_string()
    }

    fn deploy(&self, reference: &str) -> Outcome {
        self.ferry(&["deploy", "--env", "dev", "--artifact", reference])
    }

    fn live_version(&self) -> Value {
        self.ferry(&["releases", "--env", "dev"])
            .expect_code(0)
            .json()["live"]["version"]
            .clone()
    }

    /// Release 2's migration in most tests: a reversible column.
    fn add_price(&self) {
        self.migration(
            20240102000001,
            "add_price",
            "ALTER TABLE items ADD COLUMN price INTEGER;",
            "ALTER TABLE items DROP COLUMN price;",
        );
    }

    fn migration(&self, version: i64, name: &str, up: &str, down: &str) {
        ferry_e2e::write_migration(self.p(), version, name, up, down);
    }
}

fn ferry_at(dir: &Path, args: &[&str]) -> Outcome {
    ferry_with(dir, args, &[])
}

/// [`ferry_at`] with more environment variables.
fn ferry_with(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Outcome {
    let out = ferry_e2e::ferry(dir)
        .env("FERRY_ACTOR", "ci-bot")
        .envs(env.iter().copied())
        .args(args)
        .args(["--output", "json"])
        .output()
        .expect("run ferry");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `None` (after a loud SKIPPED) when the fleet's python3 is missing outside CI.
async fn world(db: TestDb, hosts: usize, extra: &str) -> Option<World> {
    let hosts = match hosts {
        0 => None,
        n => Some(Fleet::start(n, "0.0.0")?),
    };
    let store = format!("url = \"file://{}/store\"", db.path().display());
    let w = World {
        db,
        hosts,
        extra: extra.to_string(),
        store,
    };
    w.migration(20240101000001, "create_items", M1.0, M1.1);
    w.write_config();
    Some(w)
}

/// Every host runs `version`.
fn assert_all_on(fleet: &Fleet, version: &str) {
    for h in fleet.hosts() {
        assert_eq!(fleet.version(&h.name), version, "host {}", h.name);
    }
}

/// Release 1 live with its migration and a row of data.
async fn first_release(w: &World) -> String {
    let v1 = w.push(V1);
    let d = w.deploy(&v1).expect_code(0).json();
    assert_eq!(d["status"], "succeeded", "{d}");
    w.db.exec("INSERT INTO items (id, name) VALUES (1, 'first'), (2, 'second')")
        .await;
    if let Some(h) = &w.hosts {
        assert_all_on(h, V1);
    }
    v1
}

/// The schema (tables, columns, indexes), the applied migrations and the rows of `items`, as
/// text, for before/after comparisons.
async fn snapshot(db: &TestDb) -> String {
    use sqlx::{AssertSqlSafe, Row};
    let schema = match db.kind {
        Kind::Sqlite => {
            "SELECT type || ' ' || name || ' ' || COALESCE(sql, '') FROM sqlite_master \
             WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
        }
        Kind::Postgres => {
            "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || \
             COALESCE(column_default, '') FROM information_schema.columns \
             WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
        }
        Kind::MySql => {
            "SELECT CONCAT(table_name, '.', column_name, ' ', column_type, ' ', is_nullable, ' ', \
             IFNULL(column_default, '')) FROM information_schema.columns \
             WHERE table_schema = DATABASE() ORDER BY table_name, ordinal_position"
        }
    };
    let indexes = match db.kind {
        Kind::Sqlite => "SELECT 'none'",
        Kind::Postgres => {
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY indexname"
        }
        Kind::MySql => {
            "SELECT CONCAT(table_name, ' ', index_name, ' ', column_name) FROM information_schema.statistics \
             WHERE table_schema = DATABASE() ORDER BY table_name, index_name, seq_in_index"
        }
    };
    let mut c = db.connect().await;
    let mut out = String::new();
    for q in [
        schema,
        indexes,
        "SELECT CAST(version AS CHAR(20)) FROM ferry_migrations ORDER BY version",
        "SELECT CAST(id AS CHAR(20)) || ':' || name FROM items ORDER BY id",
    ] {
        let q = if db.kind == Kind::MySql {
            q.replace(
                "CAST(id AS CHAR(20)) || ':' || name",
                "CONCAT(id, ':', name)",
            )
        } else {
            q.replace("AS CHAR(20)", "AS TEXT")
        };
        let rows = sqlx::query(AssertSqlSafe(q.clone()))
            .fetch_all(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"));
        for r in rows {
            let v: String = r.try_get(0).unwrap_or_else(|_| {
                let b: Vec<u8> = r.get(0);
                String::from_utf8_lossy(&b).into_owned()
            });
            out.push_str(&v);
            out.push('\n');
        }
        out.push_str("--\n");
    }
    out
}

fn step<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {d}"))
}

fn rollback_step<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["rollback"]["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no rollback in {d}"))
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no rollback step {name} in {d}"))
}

async fn a_good_release_goes_live_with_its_migration(db: TestDb) {
    let Some(w) = world(db, 2, "").await else {
        return;
    };
    let v1 = w.push(V1);
    // A dry run changes nothing and says what would happen.
    let plan = w
        .ferry(&["deploy", "--env", "dev", "--artifact", &v1, "--dry-run"])
        .expect_code(0)
        .json();
    assert_eq!(plan["status"], "planned", "{plan}");
    assert!(
        step(&plan, "migrate")["detail"]
            .as_str()
            .unwrap()
            .contains("20240101000001_create_items")
    );
    assert!(!w.db.has_table("items").await, "a dry run migrated");
    assert!(w.live_version().is_null());

    let d = w.deploy(&v1).expect_code(0).json();
    for key in [
        "env",
        "artifact",
        "version",
        "status",
        "backup_id",
        "steps",
        "rollback",
    ] {
        assert!(d.get(key).is_some(), "no {key} in {d}");
    }
    assert_eq!(d["status"], "succeeded");
    assert_eq!(d["version"], V1);
    assert!(d["rollback"].is_null());
    assert!(
        d["backup_id"].is_string(),
        "a pending migration takes a backup: {d}"
    );
    let names: Vec<&str> = d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "gates",
            "pre_deploy",
            "compat",
            "backup",
            "migrate",
            "promote",
            "rollout",
            "smoke",
            "post_deploy"
        ]
    );
    for s in d["steps"].as_array().unwrap() {
        for key in ["name", "status", "duration_ms", "detail"] {
            assert!(s.get(key).is_some(), "no {key} in {s}");
        }
    }
    assert!(w.db.has_table("items").await);
    assert_eq!(w.live_version(), V1);
    assert_all_on(w.hosts.as_ref().unwrap(), V1);
    // The release records the schema it runs against and the backup.
    let rel = w.ferry(&["releases", "--env", "dev"]).expect_code(0).json();
    assert_eq!(rel["live"]["schema_version"], 20240101000001i64);
    assert_eq!(rel["live"]["backup_id"], d["backup_id"]);

    // A second release with nothing to migrate takes no backup.
    let v2 = w.push(V2);
    let d2 = w.deploy(&v2).expect_code(0).json();
    assert!(d2["backup_id"].is_null(), "{d2}");
    assert_eq!(step(&d2, "backup")["status"], "skipped");
    assert_all_on(w.hosts.as_ref().unwrap(), V2);

    let st = w
        .ferry(&["deploy", "status", "--env", "dev"])
        .expect_code(0)
        .json();
    assert_eq!(st["live"]["version"], V2);
    assert_eq!(st["lock"]["state"], "free");
    assert_eq!(st["deploys"][0]["status"], "succeeded");
    assert_eq!(st["deploys"][0]["actor"], "ci-bot");
    assert_eq!(st["deploys"][1]["version"], V1);
}

async fn a_breaking_migration_is_refused_and_the_schema_is_unchanged(db: TestDb) {
    let Some(w) = world(db, 0, "").await else {
        return;
    };
    first_release(&w).await;
    let before = snapshot(&w.db).await;
    w.migration(
        20240102000001,
        "drop_name",
        "ALTER TABLE items DROP COLUMN name;",
        "ALTER TABLE items ADD COLUMN name VARCHAR(100) NOT NULL DEFAULT '';",
    );
    let v2 = w.push(V2);
    let out = w.deploy(&v2).expect_code(3);
    let d = out.json();
    assert_eq!(d["status"], "refused", "{d}");
    assert_eq!(step(&d, "compat")["status"], "refused");
    assert!(
        step(&d, "compat")["detail"]
            .as_str()
            .unwrap()
            .contains("items.name"),
        "{d}"
    );
    assert!(d["backup_id"].is_null());
    assert!(d["rollback"].is_null());
    assert_eq!(snapshot(&w.db).await, before);
    assert_eq!(w.live_version(), V1);
}

async fn an_unhealthy_host_rolls_everything_back(db: TestDb) {
    let Some(w) = world(db, 2, "").await else {
        return;
    };
    first_release(&w).await;
    let before = snapshot(&w.db).await;
    w.add_price();
    let hosts = w.hosts.as_ref().unwrap();
    // Release 2 makes the hosts that run it unhealthy.
    for h in hosts.hosts() {
        hosts.break_on_deploy(&h.name, V2);
    }
    let v2 = w.push(V2);
    let d = w.deploy(&v2).expect_code(1).json();
    assert_eq!(d["status"], "rolled_back", "{d}");
    assert_eq!(step(&d, "migrate")["status"], "succeeded");
    assert_eq!(step(&d, "rollout")["status"], "failed");
    for s in ["rollout", "promote", "migrate"] {
        assert_eq!(rollback_step(&d, s)["status"], "succeeded", "{s}: {d}");
    }
    assert_all_on(hosts, V1);
    assert_eq!(w.live_version(), V1);
    assert_eq!(snapshot(&w.db).await, before);
    let rel = w.ferry(&["releases", "--env", "dev"]).expect_code(0).json();
    let bad = rel["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["version"] == V2)
        .unwrap();
    assert_eq!(bad["status"], "bad");
}

async fn a_failing_smoke_check_rolls_everything_back(db: TestDb) {
    let Some(w) = world(
        db,
        1,
        "[[env.dev.smoke]]\nname = \"no-poison\"\nsql = \"SELECT COUNT(*) FROM items WHERE name = 'poison'\"\nexpect = \"0\"\n",
    ).await else { return };
    first_release(&w).await;
    let before = snapshot(&w.db).await;
    w.migration(
        20240102000001,
        "poison",
        "ALTER TABLE items ADD COLUMN note VARCHAR(20);\nINSERT INTO items (id, name) VALUES (99, 'poison');",
        "DELETE FROM items WHERE id = 99;\nALTER TABLE items DROP COLUMN note;",
    );
    let v2 = w.push(V2);
    let d = w.deploy(&v2).expect_code(1).json();
    assert_eq!(d["status"], "rolled_back", "{d}");
    assert_eq!(step(&d, "smoke")["status"], "failed");
    assert!(
        step(&d, "smoke")["detail"]
            .as_str()
            .unwrap()
            .contains("no-poison")
    );
    assert_eq!(rollback_step(&d, "migrate")["status"], "succeeded");
    assert_all_on(w.hosts.as_ref().unwrap(), V1);
    assert_eq!(w.live_version(), V1);
    assert_eq!(snapshot(&w.db).await, before);
}

/// A release whose migration has no down, and whose smoke check fails.
async fn irreversible_world(db: TestDb, restore: bool) -> (World, String) {
    let w = world(
        db,
        0,
        &format!(
            "restore_on_failure = {restore}\n[[env.dev.smoke]]\nname = \"no-audit\"\nsql = \"SELECT COUNT(*) FROM items WHERE name = 'audit'\"\nexpect = \"0\"\n"
        ),
    )
    .await
    .expect("a world without hosts needs no python3");
    first_release(&w).await;
    let before = snapshot(&w.db).await;
    w.migration(
        20240102000001,
        "audit",
        "CREATE TABLE audit (id INTEGER PRIMARY KEY);\nINSERT INTO items (id, name) VALUES (50, 'audit');",
        "",
    );
    (w, before)
}

async fn an_irreversible_migration_restores_the_backup_when_allowed(db: TestDb) {
    let (w, before) = irreversible_world(db, true).await;
    let v2 = w.push(V2);
    // The application stays connected through the deploy: the restore ends its session
    // (PostgreSQL swaps the restored database in by a rename, which needs it to itself).
    let app = w.db.connect().await;
    let d = w.deploy(&v2).expect_code(1).json();
    drop(app);
    assert_eq!(d["status"], "rolled_back", "{d}");
    assert_eq!(rollback_step(&d, "migrate")["status"], "failed");
    let restore = rollback_step(&d, "restore");
    assert_eq!(restore["status"], "succeeded", "{d}");
    assert!(
        restore["detail"]
            .as_str()
            .unwrap()
            .contains(d["backup_id"].as_str().unwrap())
    );
    assert_eq!(w.live_version(), V1);
    assert_eq!(snapshot(&w.db).await, before);
}

async fn an_irreversible_migration_without_restore_stops_naming_the_backup(db: TestDb) {
    let (w, before) = irreversible_world(db, false).await;
    let v2 = w.push(V2);
    let out = w.deploy(&v2).expect_code(1);
    let d = out.json();
    assert_eq!(d["status"], "failed", "{d}");
    let id = d["backup_id"].as_str().unwrap().to_string();
    let message = d["message"].as_str().unwrap();
    assert!(
        message.contains(&id) && message.contains("DBA"),
        "{message}"
    );
    assert!(out.stderr.contains(&id), "{}", out.stderr);
    // The artifact went back; the schema is the DBA's call.
    assert_eq!(w.live_version(), V1);
    assert!(w.db.has_table("audit").await);
    let st = w
        .ferry(&["deploy", "status", "--env", "dev"])
        .expect_code(0)
        .json();
    assert_eq!(st["deploys"][0]["status"], "failed");
    assert_eq!(st["deploys"][0]["undo_pending"], true);
    // `ferry rollback` refuses without the backup, naming it, then restores it when told to.
    let refused = w.ferry(&["rollback", "--env", "dev"]).expect_code(3);
    assert!(refused.stderr.contains(&id), "{}", refused.stderr);
    assert!(
        w.db.has_table("audit").await,
        "a refused rollback changed the schema"
    );
    let r = w
        .ferry(&["rollback", "--env", "dev", "--restore-backup", &id])
        .expect_code(0)
        .json();
    assert_eq!(r["schema"]["restored_backup"], id.as_str(), "{r}");
    assert_eq!(snapshot(&w.db).await, before);
    assert_eq!(w.live_version(), V1);
}

/// A `pre_deploy` hook that waits until the test creates `go`, so a deploy can be held open.
fn gated_hook(dir: &Path) -> String {
    format!(
        "pre_deploy = \"touch {0}/started; while [ ! -e {0}/go ]; do sleep 0.05; done\"\n",
        dir.display()
    )
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn_deploy(dir: &Path, reference: &str, actor: &str) -> std::process::Child {
    std::process::Command::new(ferry_e2e::ferry_bin())
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("FERRY_ENV")
        .env("FERRY_ACTOR", actor)
        .args([
            "deploy",
            "--env",
            "dev",
            "--artifact",
            reference,
            "--output",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ferry deploy")
}

async fn a_second_deploy_is_refused_naming_the_holder(db: TestDb) {
    let dir: PathBuf = db.path().to_path_buf();
    let Some(w) = world(db, 0, &gated_hook(&dir)).await else {
        return;
    };
    second_deploy_is_refused(&w).await;
}

/// The deploy lock as a lease in a central store on S3 (moto, whose conditional PUT is as
/// atomic as S3's): the deploy records and the lock live in the bucket, and a second deploy
/// while one runs is refused naming the holder.
#[tokio::test(flavor = "multi_thread")]
async fn on_an_s3_store_a_second_deploy_is_refused_naming_the_holder() {
    let Some(db) = TestDb::new(Kind::Sqlite).await else {
        return;
    };
    let Some(server) = ferry_e2e::s3::Server::start(ferry_e2e::s3::Kind::Moto) else {
        return;
    };
    server.create_bucket("ferry").await;
    let dir: PathBuf = db.path().to_path_buf();
    let Some(mut w) = world(db, 0, &gated_hook(&dir)).await else {
        return;
    };
    w.store = format!(
        "url = \"s3://ferry/central\"\nendpoint = \"{}\"\nregion = \"{}\"",
        server.endpoint(),
        server.options(None).region.unwrap()
    );
    w.write_config();
    second_deploy_is_refused(&w).await;
    // The lock and the deployment records are objects in the bucket, and the lock is free.
    let listed = server
        .client()
        .list_objects_v2()
        .bucket("ferry")
        .prefix("central/deploys/dev/")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert!(
        keys.iter()
            .any(|k| k.starts_with("central/deploys/dev/lock/")),
        "{keys:?}"
    );
    assert!(
        keys.len() >= 3,
        "the lock and two deployment records: {keys:?}"
    );
    assert!(
        !dir.join("store").exists(),
        "the deploy wrote to the local directory instead of S3"
    );
    let st = w
        .ferry(&["deploy", "status", "--env", "dev"])
        .expect_code(0)
        .json();
    assert_eq!(st["lock"]["state"], "free", "{st}");
    assert_eq!(st["deploys"][0]["status"], "succeeded", "{st}");
}

/// Release 1 goes live; then a deploy of release 2 holds the lock (waiting in its
/// `pre_deploy` hook) while a second one is refused naming it and records nothing.
async fn second_deploy_is_refused(w: &World) {
    let dir = w.p().to_path_buf();
    std::fs::write(dir.join("go"), "").unwrap();
    first_release(w).await;
    std::fs::remove_file(dir.join("go")).unwrap();
    let _ = std::fs::remove_file(dir.join("started"));
    let v2 = w.push(V2);
    let first = spawn_deploy(&dir, &v2, "first-runner");
    wait_for("the first deploy to hold the lock", || {
        dir.join("started").exists()
    });

    let out = w.deploy(&v2).expect_code(3);
    let d = out.json();
    assert_eq!(d["status"], "refused", "{d}");
    let detail = step(&d, "gates")["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("first-runner"), "{detail}");
    assert!(detail.contains(&format!("pid {}", first.id())), "{detail}");
    assert!(
        d["seq"].is_null(),
        "a refused deploy recorded something: {d}"
    );

    std::fs::write(dir.join("go"), "").unwrap();
    let done = first.wait_with_output().unwrap();
    assert_eq!(
        done.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(w.live_version(), V2);
}

async fn a_killed_deploy_is_interrupted_and_rollback_undoes_it(db: TestDb) {
    let Some(w) = world(db, 2, "").await else {
        return;
    };
    first_release(&w).await;
    let before = snapshot(&w.db).await;
    w.add_price();
    let hosts = w.hosts.as_ref().unwrap();
    // The first host's deploy of release 2 hangs until the test lets it go.
    hosts.block_deploy("h1", V2);
    let v2 = w.push(V2);
    let mut child = spawn_deploy(w.p(), &v2, "doomed-runner");
    wait_for("the deploy to reach its rollout", || {
        hosts.deploy_blocked("h1")
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    hosts.unblock("h1");

    let st = w
        .ferry(&["deploy", "status", "--env", "dev"])
        .expect_code(0)
        .json();
    assert_eq!(st["deploys"][0]["status"], "interrupted", "{st}");
    assert_eq!(st["deploys"][0]["stopped_at"], "rollout");
    assert_eq!(st["deploys"][0]["undo_pending"], true);
    assert_eq!(st["lock"]["state"], "stale", "{st}");
    // The release was recorded and its migration applied before the kill.
    assert_eq!(w.live_version(), V2);

    let r = w.ferry(&["rollback", "--env", "dev"]).expect_code(0).json();
    assert_eq!(r["undid"], st["deploys"][0]["seq"], "{r}");
    assert_eq!(w.live_version(), V1);
    assert_all_on(hosts, V1);
    assert_eq!(snapshot(&w.db).await, before);
    let st = w
        .ferry(&["deploy", "status", "--env", "dev"])
        .expect_code(0)
        .json();
    assert_eq!(st["lock"]["state"], "free");
    assert_eq!(st["deploys"][0]["kind"], "rollback");
    assert_eq!(st["deploys"][1]["undo_pending"], false);
}

async fn rollback_after_a_good_deploy_restores_artifact_and_schema(db: TestDb) {
    let Some(w) = world(db, 2, "").await else {
        return;
    };
    first_release(&w).await;
    let before = snapshot(&w.db).await;
    w.add_price();
    let v2 = w.push(V2);
    w.deploy(&v2).expect_code(0);
    assert_all_on(w.hosts.as_ref().unwrap(), V2);
    assert_ne!(snapshot(&w.db).await, before);

    let r = w.ferry(&["rollback", "--env", "dev"]).expect_code(0).json();
    assert_eq!(r["version"], V1, "{r}");
    assert_eq!(r["action"], "rollback");
    assert_eq!(
        r["schema"]["reverted"],
        serde_json::json!(["20240102000001_add_price"])
    );
    assert_eq!(w.live_version(), V1);
    assert_all_on(w.hosts.as_ref().unwrap(), V1);
    assert_eq!(snapshot(&w.db).await, before);
}

/// `[git] tag = true`: a successful deploy tags the commit ferry runs in with the release
/// version and moves `live` (and `last_live` to where `live` was), through the real binary and
/// the real `git`.
#[tokio::test(flavor = "multi_thread")]
async fn a_good_deploy_tags_the_commit_and_moves_live() {
    let Some(db) = TestDb::new(Kind::Sqlite).await else {
        return;
    };
    let Some(w) = world(db, 0, "[git]\ntag = true").await else {
        return;
    };
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=ferry-test",
                "-c",
                "user.email=t@example.invalid",
            ])
            .args(args)
            .current_dir(w.p())
            .output()
            .expect("run git (apt-get install git)");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["commit", "-q", "--allow-empty", "-m", "release one"]);
    let one = git(&["rev-parse", "HEAD"]);

    let v1 = w.push(V1);
    let d = w.deploy(&v1).expect_code(0).json();
    assert_eq!(step(&d, "git")["status"], "succeeded", "{d}");
    assert_eq!(git(&["rev-parse", &format!("{V1}^{{commit}}")]), one);
    assert_eq!(git(&["rev-parse", "live^{commit}"]), one);

    git(&["commit", "-q", "--allow-empty", "-m", "release two"]);
    let two = git(&["rev-parse", "HEAD"]);
    let v2 = w.push(V2);
    let d = w.deploy(&v2).expect_code(0).json();
    assert_eq!(step(&d, "git")["status"], "succeeded", "{d}");
    assert_eq!(git(&["rev-parse", &format!("{V2}^{{commit}}")]), two);
    assert_eq!(git(&["rev-parse", "live^{commit}"]), two);
    assert_eq!(git(&["rev-parse", "last_live^{commit}"]), one);
    assert_eq!(
        git(&["rev-parse", &format!("{V1}^{{commit}}")]),
        one,
        "an earlier release's tag stays where it was"
    );
}

/// `ferry deploy` of `reference` while 4 clients send requests through `haproxy` the whole
/// time; panics naming them if any request failed.
async fn deploy_under_traffic(
    w: &World,
    haproxy: &Haproxy,
    reference: &str,
    during: &str,
) -> Outcome {
    let traffic = Traffic::start(format!("{}/", haproxy.url()), 4);
    let (dir, reference) = (w.p().to_path_buf(), reference.to_string());
    let out = tokio::task::spawn_blocking(move || {
        ferry_at(&dir, &["deploy", "--env", "dev", "--artifact", &reference])
    })
    .await
    .unwrap();
    traffic.assert_none_failed(during, 20).await;
    out
}

/// `ferry deploy` with the load balancer section: 4 hosts behind a real HAProxy in batches of
/// 2, a client sending requests through it the whole time. A release with a migration goes
/// live with no failed request; a release that turns a host unhealthy rolls back (hosts,
/// artifact, migration) with no failed request either, and every host is back in traffic on
/// the previous release.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_haproxy_a_deploy_and_its_rollback_fail_no_request() {
    let Some(db) = TestDb::new(Kind::Sqlite).await else {
        return;
    };
    let Some(mut w) = world(
        db,
        4,
        "batch_size = 2\nsettle_seconds = 0.6\ndrain_seconds = 10\n",
    )
    .await
    else {
        return;
    };
    let Some(haproxy) = Haproxy::start(w.hosts.as_ref().unwrap(), "app") else {
        return;
    };
    w.extra.push_str(&haproxy.load_balancer_toml("dev"));
    w.write_config();
    let hosts = w.hosts.as_ref().unwrap();
    // A restarted host answers 503 for a moment; settle waits it out.
    hosts.set_warmup_ms(200);
    first_release(&w).await;

    // Release 2 brings a migration and goes out under traffic.
    w.add_price();
    let v2 = w.push(V2);
    let d = deploy_under_traffic(&w, &haproxy, &v2, "a good deploy")
        .await
        .expect_code(0)
        .json();
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(step(&d, "rollout")["status"], "succeeded", "{d}");
    assert_all_on(hosts, V2);
    for h in hosts.hosts() {
        assert_eq!(haproxy.status(&h.name), "UP", "{} back in traffic", h.name);
        assert_eq!(hosts.deploys(&h.name), [V1, V2], "{}", h.name);
    }
    assert_eq!(w.live_version(), V2);

    // Release 3 migrates again and turns h3 unhealthy: the second batch halts and
    // everything comes back, still under traffic.
    let before = snapshot(&w.db).await;
    w.migration(
        20240103000001,
        "add_stock",
        "ALTER TABLE items ADD COLUMN stock INTEGER;",
        "ALTER TABLE items DROP COLUMN stock;",
    );
    const V3: &str = "3.0.0";
    hosts.break_on_deploy("h3", V3);
    let v3 = w.push(V3);
    let d = deploy_under_traffic(&w, &haproxy, &v3, "a deploy and its rollback")
        .await
        .expect_code(1)
        .json();
    assert_eq!(d["status"], "rolled_back", "{d}");
    assert_eq!(step(&d, "rollout")["status"], "failed", "{d}");
    assert!(
        step(&d, "rollout")["detail"]
            .as_str()
            .unwrap()
            .contains("h3"),
        "{d}"
    );
    for s in ["rollout", "promote", "migrate"] {
        assert_eq!(rollback_step(&d, s)["status"], "succeeded", "{s}: {d}");
    }
    // Every host that received release 3 got release 2 back, and is in traffic again.
    assert_all_on(hosts, V2);
    for h in hosts.hosts() {
        assert_eq!(haproxy.status(&h.name), "UP", "{} back in traffic", h.name);
        assert_eq!(hosts.deploys(&h.name), [V1, V2, V3, V2], "{}", h.name);
    }
    assert_eq!(w.live_version(), V2);
    assert_eq!(snapshot(&w.db).await, before);
}

/// `ferry deploy`'s compat step keeps its shadow base as `ferry compat check` does (SQLite: a
/// file in the temporary directory, here the test's own), in a dry run too, and the deploy
/// after it copies that base instead of building another.
#[tokio::test]
async fn the_compat_step_keeps_the_shadow_base_as_compat_check_does() {
    let Some(db) = TestDb::new(Kind::Sqlite).await else {
        return;
    };
    let Some(w) = world(db, 0, "").await else {
        return;
    };
    let tmp = w.p().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let bases = tmp.join("ferry-compat-bases");
    let go = |args: &[&str]| ferry_with(w.p(), args, &[("TMPDIR", &tmp)]);
    let kept = || -> Vec<String> {
        let mut files: Vec<String> = std::fs::read_dir(&bases)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    };
    let v1 = w.push(V1);
    go(&["deploy", "--env", "dev", "--artifact", &v1]).expect_code(0);
    let before = kept();
    w.add_price();
    let v2 = w.push(V2);
    let plan = go(&["deploy", "--env", "dev", "--artifact", &v2, "--dry-run"])
        .expect_code(0)
        .json();
    assert_eq!(plan["status"], "planned", "{plan}");
    let after_plan = kept();
    let new: Vec<&String> = after_plan.iter().filter(|f| !before.contains(f)).collect();
    assert_eq!(
        new.len(),
        1,
        "the dry run's compat step keeps one base: {after_plan:?}"
    );
    assert!(
        new[0].starts_with("ferry_base_") && new[0].ends_with(".db"),
        "{new:?}"
    );
    let d = go(&["deploy", "--env", "dev", "--artifact", &v2])
        .expect_code(0)
        .json();
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(step(&d, "compat")["status"], "succeeded", "{d}");
    assert_eq!(
        kept(),
        after_plan,
        "the deploy copies the base the dry run kept"
    );
}
