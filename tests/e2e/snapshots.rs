//! Snapshots of what people read: help text, the status table, refusal messages. A change to
//! any of them shows up in review as a diff of `tests/e2e/snapshots/*.snap`
//! (`cargo insta review`, or `INSTA_UPDATE=always cargo test` to accept).

use ferry_e2e::{example_migrations, run, write_migration};

fn settings(dir: &std::path::Path) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("snapshots");
    s.set_prepend_module_to_snapshot(false);
    s.add_filter(&regex_escape(&dir.display().to_string()), "[DIR]");
    s.add_filter(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "[TIME]");
    s.add_filter(r"\(\d+ ms\)", "([N] ms)");
    s
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '/' || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

#[test]
fn help_texts() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    s.bind(|| {
        insta::assert_snapshot!(
            "help_top",
            run(dir.path(), &["--help"]).expect_code(0).stdout
        );
        insta::assert_snapshot!(
            "help_migrate",
            run(dir.path(), &["migrate", "--help"])
                .expect_code(0)
                .stdout
        );
        insta::assert_snapshot!(
            "help_migrate_down",
            run(dir.path(), &["migrate", "down", "--help"])
                .expect_code(0)
                .stdout
        );
        insta::assert_snapshot!(
            "help_compat_check",
            run(dir.path(), &["compat", "check", "--help"])
                .expect_code(0)
                .stdout
        );
    });
}

#[test]
fn status_table_and_refusals_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let url = format!("sqlite://{}/app.db", p.display());
    let m = example_migrations();
    let m = m.to_str().unwrap();
    let s = settings(p);
    s.bind(|| {
        let up = run(
            p,
            &[
                "migrate",
                "up",
                "--to",
                "20240102000001",
                "--database-url",
                &url,
                "--migrations",
                m,
            ],
        );
        insta::assert_snapshot!("up_human", up.expect_code(0).stdout);
        let st = run(
            p,
            &[
                "migrate",
                "status",
                "--database-url",
                &url,
                "--migrations",
                m,
            ],
        );
        insta::assert_snapshot!("status_human", st.expect_code(0).stdout);

        write_migration(p, 1, "a", "CREATE TABLE a (id INT);", "DROP TABLE a;");
        write_migration(p, 2, "b", "CREATE TABLE b (id INT);", "");
        let own = p.join("migrations");
        let own = own.to_str().unwrap();
        let url2 = format!("sqlite://{}/own.db", p.display());
        run(
            p,
            &[
                "migrate",
                "up",
                "--database-url",
                &url2,
                "--migrations",
                own,
            ],
        )
        .expect_code(0);
        let refused = run(
            p,
            &[
                "migrate",
                "down",
                "--database-url",
                &url2,
                "--migrations",
                own,
            ],
        )
        .expect_code(3);
        insta::assert_snapshot!("down_irreversible_error", refused.stderr);
        std::fs::write(
            p.join("migrations/1_a.up.sql"),
            "CREATE TABLE a (id BIGINT);",
        )
        .unwrap();
        let drift = run(
            p,
            &[
                "migrate",
                "up",
                "--database-url",
                &url2,
                "--migrations",
                own,
            ],
        )
        .expect_code(3);
        insta::assert_snapshot!("up_drift_error", drift.stderr);
    });
}
