//! Servers that hang or push back, through the real binary: an S3 endpoint and a registry that
//! accept connections and never answer, and a registry that throttles (429 with `Retry-After`)
//! or keeps failing (503) in front of a real `docker-registry`. Every command must end, with
//! exit 1 and a message that names the operation and the tries, within a bound derived from the
//! configured timeouts; a throttled one must wait as asked and then succeed.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_core::config::Network;
use ferry_e2e::faults::{Fault, Proxy, Silent};
use ferry_e2e::registry::Registry;
use ferry_e2e::{Kind, Outcome, TestDb};

/// What the tests configure in `[store]`: one-second timeouts, two retries (three tries).
const NETWORK: Network = Network {
    connect_timeout: Duration::from_secs(1),
    read_timeout: Duration::from_secs(1),
    retries: 2,
};
const STORE_SECTION: &str = "connect_timeout = \"1s\"\nread_timeout = \"1s\"\nretries = 2\n";
/// Starting the binary, dumping a small SQLite database, a loaded machine.
const SLACK: Duration = Duration::from_secs(15);
const MONDAY: &str = "2026-11-23T10:00:00Z";

fn run(dir: &Path, env: &[(&str, String)], args: &[&str]) -> (Outcome, Duration) {
    let mut cmd = ferry_e2e::ferry(dir);
    cmd.env("FERRY_NOW", MONDAY)
        .env("FERRY_ACTOR", "ci-bot")
        .env("DOCKER_CONFIG", dir.join("docker"))
        .env("AWS_ACCESS_KEY_ID", ferry_e2e::s3::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", ferry_e2e::s3::SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let out = cmd
        .args(args)
        .args(["--output", "json"])
        .output()
        .expect("run ferry");
    let took = started.elapsed();
    (
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        took,
    )
}

fn error_message(out: &Outcome) -> String {
    out.json()["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {}", out.stdout))
        .to_string()
}

/// Exit 1 naming `operation` and three tries, after at least three read timeouts and within
/// the configured worst case.
fn assert_timed_out(what: &str, out: &Outcome, took: Duration, operation: &str) {
    assert_eq!(
        out.code, 1,
        "{what}: expected exit 1, got {}\nstdout:\n{}\nstderr:\n{}",
        out.code, out.stdout, out.stderr
    );
    let message = error_message(out);
    assert!(
        message.contains(operation) && message.contains("after 3 attempts"),
        "{what}: {message}"
    );
    assert!(
        message.to_lowercase().contains("timeout") || message.to_lowercase().contains("timed out"),
        "{what}: the message does not say it timed out: {message}"
    );
    let bound = NETWORK.worst_case() + SLACK;
    assert!(took < bound, "{what}: took {took:?}, more than {bound:?}");
    assert!(
        took >= NETWORK.read_timeout * 3,
        "{what}: took {took:?}, less than three read timeouts: it did not wait for the server"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_s3_server_fails_every_store_command_within_its_timeouts() {
    let Some(db) = TestDb::new(Kind::Sqlite).await else {
        return;
    };
    db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
    let silent = Silent::start();
    let p = db.path().to_path_buf();
    std::fs::create_dir(p.join("docker")).unwrap();
    std::fs::write(
        p.join("ferry.toml"),
        format!(
            "[store]\nurl = \"s3://backups/app\"\n{STORE_SECTION}\
             [env.dev]\nartifacts = \"s3://artifacts/dev\"\n"
        ),
    )
    .unwrap();
    let env = [("AWS_ENDPOINT_URL", silent.endpoint())];
    let digest = format!("sha256:{}", "ab".repeat(32));
    let promote = format!("app@{digest}");
    let commands: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "backup create",
            vec!["backup", "create", "--database-url", &db.url],
            "PutObject",
        ),
        ("backup list", vec!["backup", "list"], "ListObjectsV2"),
        (
            "backup restore",
            vec![
                "backup",
                "restore",
                "20260101T000000Z-abcdef",
                "--yes",
                "--database-url",
                &db.url,
            ],
            "GetObject",
        ),
        (
            "promote",
            vec!["promote", &promote, "--to", "dev"],
            "Object",
        ),
        (
            "releases",
            vec!["releases", "--env", "dev"],
            "ListObjectsV2",
        ),
    ];
    // At once: each spends its time waiting on the silent server.
    std::thread::scope(|scope| {
        let handles: Vec<_> = commands
            .iter()
            .map(|(what, args, operation)| {
                let (p, env) = (&p, &env);
                scope.spawn(move || {
                    let (out, took) = run(p, env, args);
                    assert_timed_out(what, &out, took, operation);
                })
            })
            .collect();
        for h in handles {
            h.join().expect("a command's checks failed");
        }
    });
    // Three tries each: the retries really went to the server.
    assert!(
        silent.accepted() >= 3 * commands.len(),
        "only {} connections for {} commands",
        silent.accepted(),
        commands.len()
    );
}

/// `ferry.toml` with one environment, dev, in `host`'s repository `app-dev`.
fn oci_setup(host: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir(p.join("docker")).unwrap();
    std::fs::write(
        p.join("ferry.toml"),
        format!(
            "[store]\nurl = \"file://{}/central\"\n{STORE_SECTION}\
             [env.dev]\nartifacts = \"oci://{host}/app-dev\"\n",
            p.display()
        ),
    )
    .unwrap();
    dir
}

#[test]
fn a_throttling_registry_is_retried_after_the_pause_it_asks_for() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let image = reg.push_image("app-build", "1.0.0", 32 * 1024);
    let upstream = reg.host().parse().unwrap();
    // The first two connections are told to come back in a second.
    let proxy = Proxy::start(upstream, |n| {
        (n < 2).then(|| Fault::Answer {
            status: 429,
            headers: vec![("Retry-After".into(), "1".into())],
        })
    });
    let dir = oci_setup(&proxy.host());
    let reference = format!("{}/app-build@{}", proxy.host(), image.digest);
    let (out, took) = run(dir.path(), &[], &["promote", &reference, "--to", "dev"]);
    let out = out.expect_code(0);
    assert_eq!(
        out.json()["digest"],
        image.digest.as_str(),
        "{}",
        out.stdout
    );
    assert_eq!(proxy.faults(), 2, "both throttled answers were used");
    assert!(
        took >= Duration::from_secs(2),
        "took {took:?}: ferry did not wait the second each 429 asked for"
    );
    assert_eq!(
        reg.resolve("app-dev", "dev").as_deref(),
        Some(image.digest.as_str())
    );
}

#[test]
fn a_registry_that_keeps_failing_fails_the_promotion_after_its_retries() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let image = reg.push_image("app-build", "1.0.0", 32 * 1024);
    let proxy = Proxy::start(reg.host().parse().unwrap(), |_| {
        Some(Fault::Answer {
            status: 503,
            headers: vec![],
        })
    });
    let dir = oci_setup(&proxy.host());
    let reference = format!("{}/app-build@{}", proxy.host(), image.digest);
    let (out, took) = run(dir.path(), &[], &["promote", &reference, "--to", "dev"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let message = error_message(&out);
    assert!(
        message.contains("503") && message.contains("after 3 attempts"),
        "{message}"
    );
    assert_eq!(proxy.faults(), 3, "one try and two retries: {message}");
    let bound = NETWORK.worst_case() + SLACK;
    assert!(took < bound, "took {took:?}, more than {bound:?}");
    assert_eq!(reg.resolve("app-dev", "dev"), None);
}

#[test]
fn a_silent_registry_fails_the_promotion_within_its_timeouts() {
    let silent = Silent::start();
    let dir = oci_setup(&silent.host());
    let reference = format!("{}/app-build@sha256:{}", silent.host(), "cd".repeat(32));
    let (out, took) = run(dir.path(), &[], &["promote", &reference, "--to", "dev"]);
    assert_timed_out("promote from a silent registry", &out, took, "app-build");
    assert!(silent.accepted() >= 3, "{} connections", silent.accepted());
}
