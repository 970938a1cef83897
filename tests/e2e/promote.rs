//! `ferry artifact push`, `ferry promote`, `ferry releases`, `ferry rollback` through the binary,
//! with file stores: one central store and one location per environment.

use std::path::Path;

use ferry_e2e::Outcome;
use serde_json::Value;

/// A Monday and a Friday, for freeze windows (production's default freezes Fri–Sun).
const MONDAY: &str = "2026-11-23T10:00:00Z";
const FRIDAY: &str = "2026-11-27T10:00:00Z";

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("ferry.toml"),
        format!(
            "[store]\nurl = \"file://{0}/central\"\n\
             [env.dev]\nartifacts = \"file://{0}/envs/dev\"\n\
             [env.staging]\nartifacts = \"file://{0}/envs/staging\"\nrequires = \"dev\"\n\
             [env.production]\nartifacts = \"file://{0}/envs/production\"\nrequires = \"staging\"\n",
            p.display()
        ),
    )
    .unwrap();
    dir
}

fn ferry(dir: &Path, now: &str, args: &[&str]) -> Outcome {
    let out = ferry_e2e::ferry(dir)
        .env("FERRY_NOW", now)
        .env("FERRY_ACTOR", "ci-bot")
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

fn push(dir: &Path, version: &str, bytes: &[u8]) -> String {
    let file = dir.join(format!("app-{version}.tar"));
    std::fs::write(&file, bytes).unwrap();
    let out = ferry(
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

fn live(dir: &Path, env: &str) -> Value {
    ferry(dir, MONDAY, &["releases", "--env", env])
        .expect_code(0)
        .json()
}

#[test]
fn promote_through_three_environments_and_roll_back() {
    let dir = setup();
    let p = dir.path();
    let v1 = push(p, "1.0.0", b"release one");
    let digest1 = v1.split_once('@').unwrap().1.to_string();
    assert!(digest1.starts_with("sha256:"));
    // Pushing the same bytes again stores nothing new.
    let again = ferry(
        p,
        MONDAY,
        &[
            "artifact",
            "push",
            p.join("app-1.0.0.tar").to_str().unwrap(),
            "--name",
            "app",
            "--version",
            "1.0.0",
        ],
    )
    .expect_code(0)
    .json();
    assert_eq!(again["stored"], false);

    // Stage skipping is refused.
    let skip = ferry(p, MONDAY, &["promote", &v1, "--to", "staging"]).expect_code(3);
    assert_eq!(skip.json()["error"]["kind"], "not_live_in_required");

    for env in ["dev", "staging", "production"] {
        let r = ferry(
            p,
            MONDAY,
            &["promote", &v1, "--to", env, "--reason", "release 1"],
        )
        .expect_code(0)
        .json();
        assert_eq!(r["digest"], digest1.as_str(), "{env}: {r}");
        let rel = live(p, env);
        assert_eq!(rel["live"]["digest"], digest1.as_str());
        // The bytes at the environment's location are the artifact's, not a rebuild.
        let hex = digest1.trim_start_matches("sha256:");
        let stored = walk_find(&p.join("envs").join(env), hex)
            .expect("artifact in the environment's location");
        assert_eq!(std::fs::read(stored).unwrap(), b"release one");
    }

    let v2 = push(p, "1.1.0", b"release two");
    let digest2 = v2.split_once('@').unwrap().1.to_string();
    for env in ["dev", "staging", "production"] {
        ferry(p, MONDAY, &["promote", &v2, "--to", env]).expect_code(0);
    }
    let rel = live(p, "production");
    assert_eq!(rel["live"]["digest"], digest2.as_str());
    assert_eq!(rel["previous"]["digest"], digest1.as_str());
    for key in [
        "seq", "digest", "name", "version", "action", "status", "actor", "at", "reason",
    ] {
        assert!(
            rel["history"][0].get(key).is_some(),
            "history lacks {key}: {rel}"
        );
    }
    assert_eq!(rel["history"][0]["actor"], "ci-bot");

    // Production is frozen on Fridays, but a rollback is never blocked.
    let v3 = push(p, "1.2.0", b"release three");
    ferry(p, MONDAY, &["promote", &v3, "--to", "dev"]).expect_code(0);
    ferry(p, MONDAY, &["promote", &v3, "--to", "staging"]).expect_code(0);
    let frozen = ferry(p, FRIDAY, &["promote", &v3, "--to", "production"]).expect_code(3);
    assert_eq!(frozen.json()["error"]["kind"], "frozen");
    let rb = ferry(
        p,
        FRIDAY,
        &[
            "rollback",
            "--env",
            "production",
            "--reason",
            "error rate up",
        ],
    )
    .expect_code(0)
    .json();
    assert_eq!(rb["digest"], digest1.as_str());
    let rel = live(p, "production");
    assert_eq!(rel["live"]["digest"], digest1.as_str());
    assert_eq!(rel["history"][0]["action"], "rollback");
    let bad = rel["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["digest"] == digest2.as_str())
        .unwrap();
    assert_eq!(bad["status"], "bad");

    // An override needs a reason and is recorded.
    ferry(
        p,
        FRIDAY,
        &["promote", &v3, "--to", "production", "--override-freeze"],
    )
    .expect_code(2);
    let forced = ferry(
        p,
        FRIDAY,
        &[
            "promote",
            &v3,
            "--to",
            "production",
            "--override-freeze",
            "--reason",
            "hotfix",
        ],
    )
    .expect_code(0)
    .json();
    assert!(
        forced["reason"].as_str().unwrap().contains("hotfix"),
        "{forced}"
    );
}

#[test]
fn tampered_bytes_are_refused_and_nothing_is_recorded() {
    let dir = setup();
    let p = dir.path();
    let v1 = push(p, "1.0.0", b"the real bytes");
    let hex = v1.split_once("sha256:").unwrap().1.to_string();
    let stored = walk_find(&p.join("central"), &hex).expect("artifact in the central store");
    std::fs::write(&stored, b"the evil bytes").unwrap();
    let out = ferry(p, MONDAY, &["promote", &v1, "--to", "dev"]).expect_code(3);
    assert_eq!(out.json()["error"]["kind"], "tampered");
    assert_eq!(live(p, "dev")["live"], Value::Null);
}

fn walk_find(dir: &Path, needle: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = walk_find(&path, needle) {
                return Some(found);
            }
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains(needle))
            && !path.to_string_lossy().ends_with(".json")
        {
            return Some(path);
        }
    }
    None
}
