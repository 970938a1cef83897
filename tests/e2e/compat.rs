//! `ferry compat check` through the binary: the verdict as an exit code and the JSON contract.

use ferry_e2e::{Kind, TestDb, run, write_migration};

per_engine!(compat_check_blocks_breaking_changes_and_bad_downs);

async fn compat_check_blocks_breaking_changes_and_bad_downs(db: TestDb) {
    let p = db.path();
    write_migration(
        p,
        1,
        "users",
        "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(255));",
        "DROP TABLE users;",
    );
    let m = p.join("migrations");
    let m = m.to_str().unwrap();
    let args = |rest: &[&'static str]| -> Vec<String> {
        rest.iter()
            .map(|s| s.to_string())
            .chain(
                [
                    "--database-url",
                    db.url.as_str(),
                    "--migrations",
                    m,
                    "--output",
                    "json",
                ]
                .map(String::from),
            )
            .collect()
    };
    let go = |rest: &[&'static str]| {
        let a = args(rest);
        run(p, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    go(&["migrate", "up"]).expect_code(0);

    // A nullable column is compatible; the pending migration is checked, the applied one is the base.
    write_migration(
        p,
        2,
        "add_name",
        "ALTER TABLE users ADD COLUMN name VARCHAR(100);",
        "ALTER TABLE users DROP COLUMN name;",
    );
    let ok = go(&["compat", "check"]).expect_code(0).json();
    assert_eq!(ok["compatible"], true, "{ok}");
    assert_eq!(ok["migrations"].as_array().unwrap().len(), 1);
    let m2 = &ok["migrations"][0];
    for key in ["version", "name", "compatible", "findings", "roundtrip"] {
        assert!(m2.get(key).is_some(), "lacks {key}: {m2}");
    }
    assert_eq!(m2["roundtrip"]["ok"], true, "{m2}");

    // Dropping a column the previous version reads is breaking: exit 3, naming the object and line.
    write_migration(
        p,
        3,
        "drop_email",
        "-- cleanup\nALTER TABLE users DROP COLUMN email;",
        "ALTER TABLE users ADD COLUMN email VARCHAR(255);",
    );
    let bad = go(&["compat", "check"]).expect_code(3).json();
    assert_eq!(bad["compatible"], false);
    let f = bad["migrations"][1]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "drop-column")
        .cloned();
    let f = f.unwrap_or_else(|| panic!("no drop-column finding: {bad}"));
    for key in [
        "rule", "class", "severity", "object", "line", "message", "hint", "allowed",
    ] {
        assert!(f.get(key).is_some(), "finding lacks {key}: {f}");
    }
    assert_eq!(f["class"], "breaking");
    assert_eq!(f["line"], 2);

    // Allowed with a reason: reported, but compatible again.
    write_migration(
        p,
        3,
        "drop_email",
        "-- ferry:allow drop-column email moved to accounts two releases ago\nALTER TABLE users DROP COLUMN email;",
        "ALTER TABLE users ADD COLUMN email VARCHAR(255);",
    );
    let allowed = go(&["compat", "check"]).expect_code(0).json();
    assert_eq!(allowed["compatible"], true, "{allowed}");

    // --from checks everything above a version.
    let all = go(&["compat", "check", "--from", "0"])
        .expect_code(0)
        .json();
    assert_eq!(all["migrations"].as_array().unwrap().len(), 3);

    if db.kind == Kind::Sqlite {
        // A down that forgets to drop an index: the round trip does not restore the schema.
        write_migration(
            p,
            4,
            "index_name",
            "CREATE INDEX users_name ON users (name);",
            "SELECT 1;",
        );
        let rt = go(&["compat", "check"]).expect_code(3).json();
        let last = rt["migrations"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["roundtrip"]["ok"], false, "{last}");
        assert!(
            !last["roundtrip"]["differences"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }
}

per_engine!(compat_check_prepares_the_previous_versions_queries);

/// `--old-queries` with a committed sqlx offline directory (`.sqlx/query-<hash>.json`, as
/// `cargo sqlx prepare` writes it) and a `queries.sql` beside it.
async fn compat_check_prepares_the_previous_versions_queries(db: TestDb) {
    let p = db.path();
    let engine = match db.kind {
        Kind::Sqlite => "sqlite",
        Kind::Postgres => "postgres",
        Kind::MySql => "mysql",
    };
    let fixture = ferry_e2e::repo_root().join("tests/fixtures/old-queries");
    let queries = fixture.join(engine);
    let queries = queries.to_str().unwrap();
    write_migration(
        p,
        1,
        "users",
        "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(255), name VARCHAR(100));",
        "DROP TABLE users;",
    );
    let m = p.join("migrations");
    let m = m.to_str().unwrap();
    let go = |rest: &[&str]| {
        let mut a: Vec<&str> = rest.to_vec();
        a.extend([
            "--database-url",
            db.url.as_str(),
            "--migrations",
            m,
            "--output",
            "json",
        ]);
        run(p, &a)
    };
    go(&["migrate", "up"]).expect_code(0);
    let check = ["compat", "check", "--old-queries", queries];

    // Additive: a nullable column and a new table break no old query. The query that is wrong
    // even on the deployed schema is reported once, as not checked, and fails nothing.
    write_migration(
        p,
        2,
        "add_bio_and_audit",
        "ALTER TABLE users ADD COLUMN bio VARCHAR(200);\nCREATE TABLE audit (id INT PRIMARY KEY, what VARCHAR(100));",
        "DROP TABLE audit;\nALTER TABLE users DROP COLUMN bio;",
    );
    let ok = go(&check).expect_code(0).json();
    assert_eq!(ok["compatible"], true, "{ok}");
    let findings = ok["migrations"][0]["findings"].as_array().unwrap().clone();
    assert_eq!(findings.len(), 1, "{ok}");
    let invalid = &findings[0];
    assert_eq!(invalid["rule"], "old-query-invalid-at-base", "{ok}");
    assert_eq!(invalid["class"], "unparsed");
    assert!(
        invalid["object"]
            .as_str()
            .unwrap()
            .ends_with("queries.sql:5"),
        "{invalid}"
    );
    assert!(
        invalid["message"].as_str().unwrap().contains("nickname"),
        "{invalid}"
    );

    // A rename the static layer is told to allow: without the old queries it passes; with them,
    // the two sqlx queries and the hand-written one that use `email` no longer prepare: exit 3,
    // each named, with the database's own error.
    write_migration(
        p,
        3,
        "rename_email",
        "-- ferry:allow rename-column the mailer moved to email_address\n\
         -- ferry:allow shadow-object-removed same rename\n\
         ALTER TABLE users RENAME COLUMN email TO email_address;",
        "ALTER TABLE users RENAME COLUMN email_address TO email;",
    );
    let without = go(&["compat", "check"]).expect_code(0).json();
    assert_eq!(without["compatible"], true, "{without}");
    let bad = go(&check).expect_code(3).json();
    assert_eq!(bad["compatible"], false, "{bad}");
    assert_eq!(bad["migrations"][0]["compatible"], true, "{bad}");
    let m3 = &bad["migrations"][1];
    assert_eq!(m3["compatible"], false, "{bad}");
    let fails: Vec<&serde_json::Value> = m3["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == "old-query-fails")
        .collect();
    assert_eq!(fails.len(), 3, "{bad}");
    let select_hash = match db.kind {
        Kind::Postgres => "b4a3b0ae9c157a5a6b7922189cfa08a41627c4cc8b8921632a0ecce482001ecd",
        _ => "4732e139a227bb9e861078c56bbad9b4f2e73f35e445b37992c4e4f184439377",
    };
    let sqlx = fails
        .iter()
        .find(|f| {
            f["object"]
                .as_str()
                .unwrap()
                .ends_with(&format!(".sqlx/query-{select_hash}.json"))
        })
        .unwrap_or_else(|| panic!("the sqlx SELECT is not reported: {bad}"));
    // The database's own words: for the SELECT exactly; the INSERT's differ a little per
    // engine (`… of relation "users" does not exist`, `table users has no column named email`).
    let (select_error, any_error) = match db.kind {
        Kind::Postgres => (
            "column \"email\" does not exist (code 42703)",
            "column \"email\"",
        ),
        Kind::MySql => ("Unknown column 'email'", "Unknown column 'email'"),
        Kind::Sqlite => ("no such column: email", "column"),
    };
    assert!(
        sqlx["message"].as_str().unwrap().contains(select_error),
        "{sqlx}"
    );
    for f in &fails {
        assert_eq!(f["class"], "breaking");
        assert_eq!(f["severity"], "error");
        assert_eq!(f["allowed"], false);
        let message = f["message"].as_str().unwrap();
        assert!(
            message.contains(any_error) && message.contains("email"),
            "{f}"
        );
        assert!(
            f["hint"].as_str().unwrap().contains("expand/contract"),
            "{f}"
        );
    }
    assert!(
        sqlx["message"].as_str().unwrap().contains("3_rename_email"),
        "{sqlx}"
    );
    assert!(
        fails
            .iter()
            .any(|f| f["object"].as_str().unwrap().ends_with("queries.sql:2")),
        "{bad}"
    );

    // Bad input is exit 2, naming the file: missing, or written by sqlx for another database.
    let missing = p.join("no-such-queries.sql");
    let out = go(&[
        "compat",
        "check",
        "--old-queries",
        missing.to_str().unwrap(),
    ])
    .expect_code(2);
    assert!(
        out.stdout.contains("no-such-queries.sql") || out.stderr.contains("no-such-queries.sql"),
        "{out:?}"
    );
    let other = fixture.join(if db.kind == Kind::Postgres {
        "mysql"
    } else {
        "postgres"
    });
    let out = go(&["compat", "check", "--old-queries", other.to_str().unwrap()]).expect_code(2);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains(".sqlx/query-") && text.contains("sqlx wrote it for"),
        "{text}"
    );
}

#[test]
fn old_queries_without_any_database_say_what_to_pass() {
    let dir = tempfile::tempdir().unwrap();
    let migrations = ferry_e2e::example_migrations();
    let out = run(
        dir.path(),
        &[
            "compat",
            "check",
            "--old-queries",
            "queries.sql",
            "--migrations",
            migrations.to_str().unwrap(),
        ],
    )
    .expect_code(2);
    assert!(
        out.stderr
            .contains("old queries are prepared against a real database")
            && out.stderr.contains("--shadow-url"),
        "{out:?}"
    );
}

/// A loose file beside diesel's migration folders is a warning that names it (stderr, and
/// `warnings` in JSON) for `migrate status`, `migrate up` and `compat check`; the same file
/// beside native `.up.sql` files is still refused (exit 2).
#[tokio::test]
async fn a_loose_file_beside_diesel_folders_is_a_warning_not_a_refusal() {
    let Some(db) = TestDb::new(Kind::Sqlite).await else {
        return;
    };
    let p = db.path();
    let m = p.join("diesel");
    for (dir, up, down) in [
        (
            "2024-01-01-120000_create_users",
            "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT);",
            "DROP TABLE users;",
        ),
        (
            "2024-01-02-120000_add_name",
            "ALTER TABLE users ADD COLUMN name TEXT;",
            "ALTER TABLE users DROP COLUMN name;",
        ),
    ] {
        std::fs::create_dir_all(m.join(dir)).unwrap();
        std::fs::write(m.join(dir).join("up.sql"), up).unwrap();
        std::fs::write(m.join(dir).join("down.sql"), down).unwrap();
    }
    std::fs::write(
        m.join("data_oauth_github.sql"),
        "INSERT INTO oauth_apps (name) VALUES ('github');\n",
    )
    .unwrap();
    let m = m.to_str().unwrap();
    let go = |rest: &[&str], dir: &str| {
        let mut a: Vec<&str> = rest.to_vec();
        a.extend(["--database-url", db.url.as_str(), "--migrations", dir]);
        run(p, &a)
    };
    let json = ["--output", "json"];
    for cmd in [
        &["migrate", "status"][..],
        &["migrate", "up", "--to", "20240101120000"],
        &["compat", "check"],
    ] {
        let out = go(&[cmd, &json[..]].concat(), m).expect_code(0);
        assert!(
            out.stderr.contains("warning:") && out.stderr.contains("data_oauth_github.sql"),
            "{cmd:?}: {}",
            out.stderr
        );
        let doc = out.json();
        let warnings = doc["warnings"]
            .as_array()
            .unwrap_or_else(|| panic!("{doc}"));
        assert_eq!(warnings.len(), 1, "{cmd:?}: {doc}");
        assert!(
            warnings[0]
                .as_str()
                .unwrap()
                .contains("data_oauth_github.sql"),
            "{doc}"
        );
    }
    // Human output: the warning on stderr, the result on stdout.
    let out = go(&["migrate", "status"], m).expect_code(0);
    assert!(
        out.stderr.contains("data_oauth_github.sql"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stdout.contains("data_oauth_github.sql"),
        "{}",
        out.stdout
    );
    // Without a loose file the list is there, and empty.
    std::fs::remove_file(p.join("diesel/data_oauth_github.sql")).unwrap();
    let doc = go(&["migrate", "status", "--output", "json"], m)
        .expect_code(0)
        .json();
    assert_eq!(doc["warnings"], serde_json::json!([]), "{doc}");

    // In a native directory the same file is a misnamed migration: refused.
    write_migration(
        p,
        1,
        "users",
        "CREATE TABLE t (id INTEGER);",
        "DROP TABLE t;",
    );
    std::fs::write(p.join("migrations/data_oauth_github.sql"), "SELECT 1;\n").unwrap();
    let native = p.join("migrations");
    let out = go(&["migrate", "status"], native.to_str().unwrap()).expect_code(2);
    assert!(
        out.stderr.contains("data_oauth_github.sql"),
        "{}",
        out.stderr
    );
}

/// `compat check` keeps a base (SQLite: a file in the temporary directory, here one of the
/// test's own) that the next check copies, `--no-keep-base` keeps nothing, and `compat clean`
/// removes every kept base, with its JSON result.
#[tokio::test]
async fn compat_clean_removes_the_kept_bases() {
    let Some(db) = TestDb::new(Kind::Sqlite).await else {
        return;
    };
    let p = db.path();
    let tmp = p.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let bases = tmp.join("ferry-compat-bases");
    write_migration(
        p,
        1,
        "users",
        "CREATE TABLE users (id INTEGER PRIMARY KEY);",
        "DROP TABLE users;",
    );
    write_migration(
        p,
        2,
        "add_name",
        "ALTER TABLE users ADD COLUMN name TEXT;",
        "ALTER TABLE users DROP COLUMN name;",
    );
    let go = |rest: &[&str]| {
        let mut a: Vec<&str> = rest.to_vec();
        a.extend(["--database-url", db.url.as_str(), "--output", "json"]);
        let out = ferry_e2e::ferry(p)
            .env("TMPDIR", &tmp)
            .args(&a)
            .output()
            .unwrap();
        ferry_e2e::Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    let kept = || -> Vec<String> {
        std::fs::read_dir(&bases)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let no_base = go(&["compat", "check", "--from", "1", "--no-keep-base"]).expect_code(0);
    assert_eq!(no_base.json()["migrations"][0]["roundtrip"]["ok"], true);
    assert!(
        kept().is_empty(),
        "--no-keep-base keeps nothing: {:?}",
        kept()
    );
    for _ in 0..2 {
        let ok = go(&["compat", "check", "--from", "1"])
            .expect_code(0)
            .json();
        assert_eq!(ok["migrations"][0]["roundtrip"]["ok"], true, "{ok}");
        let files = kept();
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(
            files[0].starts_with("ferry_base_") && files[0].ends_with(".db"),
            "{files:?}"
        );
    }
    let cleaned = go(&["compat", "clean"]).expect_code(0).json();
    assert_eq!(cleaned["removed"].as_array().unwrap().len(), 1, "{cleaned}");
    assert!(
        cleaned["server"]
            .as_str()
            .unwrap()
            .contains("ferry-compat-bases"),
        "{cleaned}"
    );
    assert!(kept().is_empty());
    let again = go(&["compat", "clean"]).expect_code(0).json();
    assert_eq!(again["removed"], serde_json::json!([]), "{again}");
}
