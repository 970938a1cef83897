//! Command-line behaviour that needs no server: help, config precedence, bad input, exit codes.

use ferry_e2e::{example_migrations, fixture, run, write_migration};

#[test]
fn help_lists_the_migrate_commands_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["migrate", "--help"]).expect_code(0);
    for cmd in [
        "status", "up", "down", "redo", "validate", "repair", "baseline", "new",
    ] {
        assert!(
            out.stdout.contains(cmd),
            "`{cmd}` missing from help:\n{}",
            out.stdout
        );
    }
    let top = run(dir.path(), &["--help"]).expect_code(0);
    assert!(
        top.stdout.contains("3 refused by a safety check"),
        "{}",
        top.stdout
    );
}

#[test]
fn database_url_from_the_environment_is_not_shown_in_help() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry_e2e::ferry(dir.path())
        .env("DATABASE_URL", "postgres://app:hunter2@db/app")
        .args(["migrate", "--help"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &["migrate", "frobnicate"]).expect_code(2);
    run(
        dir.path(),
        &["migrate", "down", "--steps", "1", "--to", "3"],
    )
    .expect_code(2);
    run(dir.path(), &["migrate", "baseline"]).expect_code(2);
}

#[test]
fn missing_database_url_says_every_way_to_give_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &[
            "migrate",
            "status",
            "--migrations",
            example_migrations().to_str().unwrap(),
        ],
    )
    .expect_code(2);
    assert!(
        out.stderr.contains("--database-url") && out.stderr.contains("DATABASE_URL"),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_migration_directories_exit_2_naming_the_file_and_run_nothing() {
    for (dir_name, needle) in [
        ("bad_duplicate", ".up.sql"),
        ("bad_orphan_down", ".down.sql"),
        ("bad_name", ""),
        ("bad_utf8", ".sql"),
        ("bad_mixed", ".sql"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/x.db", dir.path().display());
        let m = fixture(dir_name);
        let out = run(
            dir.path(),
            &[
                "migrate",
                "up",
                "--database-url",
                &url,
                "--migrations",
                m.to_str().unwrap(),
            ],
        )
        .expect_code(2);
        assert!(out.stderr.contains(needle), "{dir_name}: {}", out.stderr);
        // Nothing ran: not even the history table was created.
        let st = run(
            dir.path(),
            &[
                "migrate",
                "status",
                "--database-url",
                &url,
                "--migrations",
                fixture("native").to_str().unwrap(),
                "--output",
                "json",
            ],
        )
        .expect_code(0);
        assert_eq!(
            st.json()["current_version"],
            serde_json::Value::Null,
            "{dir_name}"
        );
    }
}

#[test]
fn config_file_env_selection_and_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    write_migration(p, 1, "a", "CREATE TABLE a (id INT);", "DROP TABLE a;");
    std::fs::write(
        p.join("ferry.toml"),
        "default_env = \"dev\"\n[env.dev]\ndatabase_url = \"sqlite:dev.db\"\n\
         [env.other]\ndatabase_url = \"sqlite:${OTHER_DB}\"\n",
    )
    .unwrap();
    // File default env.
    run(p, &["migrate", "up"]).expect_code(0);
    assert!(p.join("dev.db").exists());
    // --env, with ${VAR} expansion.
    let out = ferry_e2e::ferry(p)
        .env("OTHER_DB", "other.db")
        .args(["--env", "other", "migrate", "up"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(p.join("other.db").exists());
    // DATABASE_URL beats the file; --database-url beats DATABASE_URL.
    let out = ferry_e2e::ferry(p)
        .env("DATABASE_URL", "sqlite:envvar.db")
        .args(["migrate", "up"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(p.join("envvar.db").exists());
    let out = ferry_e2e::ferry(p)
        .env("DATABASE_URL", "sqlite:envvar2.db")
        .args(["migrate", "up", "--database-url", "sqlite:flag.db"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(p.join("flag.db").exists() && !p.join("envvar2.db").exists());
    // An unset variable is a config error naming it.
    let out = run(p, &["--env", "other", "migrate", "status"]).expect_code(2);
    assert!(out.stderr.contains("OTHER_DB"), "{}", out.stderr);
    // An unknown environment lists the defined ones.
    let out = run(p, &["migrate", "status", "--env", "nope"]).expect_code(2);
    assert!(out.stderr.contains("dev, other"), "{}", out.stderr);
}

#[test]
fn passwords_never_appear_in_output() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: the connection error must not echo the password.
    let out = run(
        dir.path(),
        &[
            "migrate",
            "status",
            "--migrations",
            example_migrations().to_str().unwrap(),
            "--database-url",
            "postgres://app:hunter2@127.0.0.1:1/app",
            "--output",
            "json",
        ],
    )
    .expect_code(1);
    assert!(
        !out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"),
        "{out:?}"
    );
    assert!(out.stderr.contains("app:***@"), "{}", out.stderr);
    assert_eq!(out.json()["error"]["kind"], "connect");
}

#[test]
fn new_writes_a_native_pair_with_a_utc_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["migrate", "new", "add email", "--output", "json"],
    )
    .expect_code(0);
    let doc = out.json();
    let version = doc["version"].as_str().unwrap();
    assert_eq!(version.len(), 14);
    assert!(
        dir.path()
            .join(format!("migrations/{version}_add_email.up.sql"))
            .exists()
    );
    assert!(
        dir.path()
            .join(format!("migrations/{version}_add_email.down.sql"))
            .exists()
    );
}

#[test]
fn validate_without_a_database_checks_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &[
            "migrate",
            "validate",
            "--migrations",
            example_migrations().to_str().unwrap(),
        ],
    )
    .expect_code(0);
    assert!(out.stdout.contains("3 migration files"), "{}", out.stdout);
    run(
        dir.path(),
        &[
            "migrate",
            "validate",
            "--migrations",
            fixture("bad_duplicate").to_str().unwrap(),
        ],
    )
    .expect_code(2);
}
