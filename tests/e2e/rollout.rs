//! `ferry rollout` and `ferry smoke` through the binary: a file store, real fleet hosts (and
//! HAProxy), SQLite for smoke's SQL.

use std::path::Path;

use ferry_e2e::Outcome;
use ferry_e2e::fleet::Fleet;
use ferry_e2e::haproxy::Haproxy;
use serde_json::Value;

const MONDAY: &str = "2026-11-23T10:00:00Z";
const FRIDAY: &str = "2026-11-27T10:00:00Z";

fn ferry(dir: &Path, now: &str, args: &[&str]) -> Outcome {
    let out = ferry_e2e::ferry(dir)
        .env("FERRY_NOW", now)
        .env("FERRY_ACTOR", "ci-bot")
        .args(args)
        .output()
        .expect("run ferry");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn json(dir: &Path, now: &str, args: &[&str]) -> Outcome {
    let mut a = args.to_vec();
    a.extend(["--output", "json"]);
    ferry(dir, now, &a)
}

/// `ferry.toml` with a central store, `dev` and `production` (requires dev) over `fleet`, and
/// `extra` keys (and tables) in dev's section.
fn setup(fleet: &Fleet, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let env = |name: &str, more: &str| {
        format!(
            "[env.{name}]\nartifacts = \"file://{p}/envs/{name}\"\ndatabase_url = \"sqlite://{p}/{name}.db?mode=rwc\"\n\
             deploy_command = \"{deploy}\"\nsettle_seconds = 0\n{more}\n{hosts}",
            p = p.display(),
            deploy = fleet.deploy_command(),
            hosts = fleet.hosts_toml(name),
        )
    };
    std::fs::write(
        p.join("ferry.toml"),
        format!(
            "[store]\nurl = \"file://{}/central\"\n{}{}",
            p.display(),
            env("dev", extra),
            env("production", "requires = \"dev\"\n")
        ),
    )
    .unwrap();
    dir
}

fn push(dir: &Path, version: &str) -> String {
    let file = dir.join(format!("app-{version}.tar"));
    std::fs::write(&file, format!("release {version}")).unwrap();
    let out = json(
        dir,
        MONDAY,
        &[
            "artifact",
            "push",
            file.to_str().unwrap(),
            "--name",
            "app",
            "--version",
            version,
        ],
    )
    .expect_code(0)
    .json();
    out["reference"].as_str().unwrap().to_string()
}

fn host<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .unwrap()
}

#[test]
fn rollout_promotes_rolls_the_hosts_and_records_it_with_the_release() {
    let Some(fleet) = Fleet::start(2, "0.9.0") else {
        return;
    };
    let dir = setup(&fleet, "batch_size = 1\n");
    let p = dir.path();
    push(p, "1.0.0");
    let out = json(
        p,
        MONDAY,
        &[
            "rollout",
            "--env",
            "dev",
            "--artifact",
            "app@1.0.0",
            "--reason",
            "first",
        ],
    )
    .expect_code(0);
    let r = out.json();
    for key in ["env", "artifact", "version", "status", "hosts", "stopped"] {
        assert!(r.get(key).is_some(), "{key}: {r}");
    }
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["version"], "1.0.0");
    assert!(r["artifact"].as_str().unwrap().starts_with("app@sha256:"));
    assert_eq!(r["stopped"], 0);
    for h in ["h1", "h2"] {
        let x = host(&r, h);
        for key in [
            "name",
            "status",
            "before_version",
            "after_version",
            "duration_ms",
            "detail",
        ] {
            assert!(x.get(key).is_some(), "{key}: {x}");
        }
        assert_eq!(x["status"], "deployed");
        assert_eq!(x["before_version"], "0.9.0");
        assert_eq!(x["after_version"], "1.0.0");
        assert_eq!(fleet.version(h), "1.0.0");
    }

    // Promoted on the way, and the rollout is in the history next to its release.
    let rel = json(p, MONDAY, &["releases", "--env", "dev"])
        .expect_code(0)
        .json();
    assert_eq!(rel["live"]["version"], "1.0.0");
    let rollouts = rel["live"]["rollouts"].as_array().unwrap();
    assert_eq!(rollouts.len(), 1);
    assert_eq!(rollouts[0]["status"], "succeeded");
    assert_eq!(rollouts[0]["actor"], "ci-bot");
    assert_eq!(rollouts[0]["reason"], "first");
    assert_eq!(rollouts[0]["hosts"][0]["status"], "deployed");
    let human = ferry(p, MONDAY, &["releases", "--env", "dev"])
        .expect_code(0)
        .stdout;
    assert!(
        human.contains("rollouts:") && human.contains("2/2"),
        "{human}"
    );

    // Again: already live (nothing promoted), every host unchanged, a second record.
    let r = json(
        p,
        MONDAY,
        &["rollout", "--env", "dev", "--artifact", "app@1.0.0"],
    )
    .expect_code(0)
    .json();
    assert_eq!(host(&r, "h1")["status"], "unchanged");
    assert_eq!(fleet.deploys("h1"), ["1.0.0"]);
    let rel = json(p, MONDAY, &["releases", "--env", "dev"])
        .expect_code(0)
        .json();
    assert_eq!(rel["history"].as_array().unwrap().len(), 1);
    assert_eq!(rel["live"]["rollouts"].as_array().unwrap().len(), 2);

    // Human output: a summary table.
    push(p, "1.1.0");
    let human = ferry(
        p,
        MONDAY,
        &["rollout", "--env", "dev", "--artifact", "app@1.1.0"],
    )
    .expect_code(0)
    .stdout;
    assert!(
        human.contains("HOST") && human.contains("deployed") && human.contains("succeeded"),
        "{human}"
    );
}

#[test]
fn the_gates_of_promote_refuse_a_rollout_with_exit_3_and_touch_no_host() {
    let Some(fleet) = Fleet::start(1, "0.9.0") else {
        return;
    };
    let dir = setup(&fleet, "");
    let p = dir.path();
    push(p, "1.0.0");
    // Stage order: never live in dev.
    let r = json(
        p,
        MONDAY,
        &["rollout", "--env", "production", "--artifact", "app@1.0.0"],
    )
    .expect_code(3);
    let r = r.json();
    assert_eq!(r["status"], "refused");
    assert!(r["detail"].as_str().unwrap().contains("dev"), "{r}");
    assert_eq!(host(&r, "h1")["status"], "not_reached");
    json(
        p,
        MONDAY,
        &["rollout", "--env", "dev", "--artifact", "app@1.0.0"],
    )
    .expect_code(0);
    // Production's default freeze: Fridays.
    let r = json(
        p,
        FRIDAY,
        &["rollout", "--env", "production", "--artifact", "app@1.0.0"],
    )
    .expect_code(3)
    .json();
    assert_eq!(r["status"], "refused");
    assert!(r["detail"].as_str().unwrap().contains("freeze"), "{r}");
    assert_eq!(
        fleet.deploys("h1"),
        ["1.0.0"],
        "only dev's rollout deployed"
    );
    let rel = json(p, MONDAY, &["releases", "--env", "production"])
        .expect_code(0)
        .json();
    assert!(rel["live"].is_null());
}

#[test]
fn a_halted_rollout_exits_1_and_says_which_host_and_why() {
    let Some(fleet) = Fleet::start(3, "0.9.0") else {
        return;
    };
    fleet.fail_deploy("h2", 4);
    let dir = setup(&fleet, "batch_size = 1\n");
    let p = dir.path();
    push(p, "1.0.0");
    let r = json(
        p,
        MONDAY,
        &["rollout", "--env", "dev", "--artifact", "app@1.0.0"],
    )
    .expect_code(1)
    .json();
    assert_eq!(r["status"], "halted");
    assert_eq!(host(&r, "h1")["status"], "deployed");
    assert_eq!(host(&r, "h2")["status"], "failed");
    assert!(
        host(&r, "h2")["detail"]
            .as_str()
            .unwrap()
            .contains("exited with status 4")
    );
    assert_eq!(host(&r, "h3")["status"], "not_reached");
    let rel = json(p, MONDAY, &["releases", "--env", "dev"])
        .expect_code(0)
        .json();
    assert_eq!(rel["live"]["rollouts"][0]["status"], "halted");
}

#[test]
fn a_dry_run_prints_the_plan_and_changes_nothing() {
    let Some(fleet) = Fleet::start(3, "0.9.0") else {
        return;
    };
    let Some(haproxy) = Haproxy::start(&fleet, "app") else {
        return;
    };
    let dir = setup(
        &fleet,
        &format!(
            "batch_size = 2\ntestbed = \"h2\"\ntestbed_soak_seconds = 10\n{}",
            haproxy.load_balancer_toml("dev")
        ),
    );
    let p = dir.path();
    push(p, "1.0.0");
    let human = ferry(
        p,
        MONDAY,
        &[
            "rollout",
            "--env",
            "dev",
            "--artifact",
            "app@1.0.0",
            "--dry-run",
        ],
    )
    .expect_code(0)
    .stdout;
    assert!(
        human.contains("dry run") && human.contains("would promote"),
        "{human}"
    );
    assert!(
        human.contains("test bed: h2") && human.contains("batch 1: h1, h3"),
        "{human}"
    );
    assert!(
        human.contains(&format!("{}/h1 1.0.0", fleet.root().display())),
        "{human}"
    );
    let r = json(
        p,
        MONDAY,
        &[
            "rollout",
            "--env",
            "dev",
            "--artifact",
            "app@1.0.0",
            "--dry-run",
        ],
    )
    .expect_code(0)
    .json();
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["plan"]["gathered"][0]["load_balancer"], "UP");
    for h in ["h1", "h2", "h3"] {
        assert!(fleet.deploys(h).is_empty());
        assert_eq!(haproxy.status(h), "UP");
    }
    let rel = json(p, MONDAY, &["releases", "--env", "dev"])
        .expect_code(0)
        .json();
    assert!(rel["live"].is_null(), "nothing promoted: {rel}");
}

#[test]
fn fleet_config_errors_exit_2_and_name_the_key() {
    let Some(fleet) = Fleet::start(1, "0.9.0") else {
        return;
    };
    for (extra, key) in [
        ("testbed = \"h7\"\n", "env.dev.testbed"),
        ("batch_size = 0\n", "env.dev.batch_size"),
        ("batch_size = \"120%\"\n", "env.dev.batch_size"),
        (
            "[env.dev.load_balancer]\nadmin = \"unix:///run/haproxy/admin.sock\"\n",
            "env.dev.load_balancer.backend",
        ),
        (
            "testbed = \"h1\"\ntestbed_soak_seconds = 1\n",
            "env.dev.testbed_soak_seconds",
        ),
    ] {
        let dir = setup(&fleet, extra);
        let p = dir.path();
        for args in [
            vec!["rollout", "--env", "dev", "--artifact", "app@1.0.0"],
            vec!["smoke", "--env", "dev"],
        ] {
            let out = json(p, MONDAY, &args).expect_code(2);
            assert!(out.stderr.contains(key), "{key}: {}", out.stderr);
        }
        assert!(fleet.deploys("h1").is_empty());
    }
}

#[test]
fn smoke_runs_every_check_and_exits_1_when_one_fails() {
    let Some(fleet) = Fleet::start(1, "0.9.0") else {
        return;
    };
    let port = fleet.host("h1").port;
    let dir = setup(&fleet, "");
    let p = dir.path();
    let db = p.join("dev.db");
    std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("CREATE TABLE orders (id INT); INSERT INTO orders VALUES (1);")
        .status()
        .map(|s| assert!(s.success()))
        .unwrap_or_else(|_| {
            // Without the sqlite3 shell, ferry itself makes the table.
            ferry_e2e::write_migration(
                p,
                1,
                "orders",
                "CREATE TABLE orders (id INT); INSERT INTO orders VALUES (1);",
                "DROP TABLE orders;",
            );
            ferry(p, MONDAY, &["migrate", "up", "--env", "dev"]).expect_code(0);
        });
    let cfg = std::fs::read_to_string(p.join("ferry.toml")).unwrap();
    let checks = format!(
        "[[env.dev.smoke]]\nname = \"home\"\nhttp = \"http://127.0.0.1:{port}/\"\ncontains = \"h1\"\n\
         [[env.dev.smoke]]\nname = \"orders\"\nsql = \"SELECT count(*) > 0 FROM orders\"\nexpect = \"true\"\n"
    );
    std::fs::write(p.join("ferry.toml"), format!("{cfg}{checks}")).unwrap();
    let r = json(p, MONDAY, &["smoke", "--env", "dev"])
        .expect_code(0)
        .json();
    assert_eq!(r["passed"], true);
    assert_eq!(r["checks"][1]["kind"], "sql");
    let human = ferry(p, MONDAY, &["smoke", "--env", "dev"])
        .expect_code(0)
        .stdout;
    assert!(human.contains("all 2 smoke check(s) passed"), "{human}");
    assert!(!human.contains('\u{1b}'), "no colour without a terminal");

    let failing = "[[env.dev.smoke]]\nname = \"write\"\nsql = \"DELETE FROM orders\"\n";
    std::fs::write(p.join("ferry.toml"), format!("{cfg}{checks}{failing}")).unwrap();
    let r = json(p, MONDAY, &["smoke", "--env", "dev"])
        .expect_code(1)
        .json();
    assert_eq!(r["passed"], false);
    assert_eq!(r["checks"][0]["passed"], true);
    assert_eq!(r["checks"][2]["passed"], false);
    let r = json(p, MONDAY, &["smoke", "--env", "dev"])
        .expect_code(1)
        .json();
    assert_eq!(r["checks"][1]["passed"], true, "the DELETE changed nothing");
}
