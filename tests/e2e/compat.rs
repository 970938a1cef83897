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
