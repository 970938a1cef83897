//! The dynamic proof against real databases: SQLite always, PostgreSQL and MariaDB from
//! ferry-testkit's servers (fails under CI=true when unreachable, says SKIPPED elsewhere).

use ferry_compat::{CheckOptions, DatabaseUrl, Engine, Report, Rule, check};
use ferry_migrate::Migration;
use ferry_testkit::db::Kind;

use crate::{BASE_UP, m, server};

async fn run(engine: Engine, url: &DatabaseUrl, new: Vec<Migration>) -> Report {
    let mut all = vec![m(1, "base", BASE_UP, Some("DROP TABLE users;"))];
    all.extend(new);
    let options = CheckOptions {
        shadow_url: Some(url.clone()),
        ..CheckOptions::new(engine)
    };
    check(&all, Some(1), &options).await.expect("check runs")
}

async fn common_cases(engine: Engine, url: &DatabaseUrl) {
    // A correct pair proves out.
    let r = run(
        engine,
        url,
        vec![m(
            2,
            "add_bio",
            "ALTER TABLE users ADD COLUMN bio TEXT;\nCREATE INDEX users_email_idx ON users (email);",
            Some(if engine == Engine::MySql {
                "DROP INDEX users_email_idx ON users;\nALTER TABLE users DROP COLUMN bio;"
            } else {
                "DROP INDEX users_email_idx;\nALTER TABLE users DROP COLUMN bio;"
            }),
        )],
    )
    .await;
    let r0 = &r.migrations[0];
    assert_eq!(r0.roundtrip.ok, Some(true), "{r:#?}");
    assert!(r.compatible, "{r:#?}");

    // A down that forgets an index.
    let r = run(
        engine,
        url,
        vec![m(
            2,
            "add_index",
            "CREATE INDEX users_age_idx ON users (age);",
            Some("SELECT 1;"),
        )],
    )
    .await;
    let rt = &r.migrations[0].roundtrip;
    assert_eq!(rt.ok, Some(false), "{r:#?}");
    assert!(
        rt.differences
            .iter()
            .any(|d| d.contains("users_age_idx") && d.contains("down")),
        "{rt:?}"
    );
    assert!(!r.compatible);

    // An irreversible migration is reported as such.
    let r = run(
        engine,
        url,
        vec![m(
            2,
            "add_col",
            "ALTER TABLE users ADD COLUMN x TEXT;",
            None,
        )],
    )
    .await;
    let rt = &r.migrations[0].roundtrip;
    assert_eq!(rt.ok, Some(false));
    assert!(rt.differences[0].contains("irreversible"), "{rt:?}");

    // An up that fails on the real database.
    let r = run(
        engine,
        url,
        vec![m(
            2,
            "broken",
            "ALTER TABLE no_such_table ADD COLUMN x TEXT;",
            Some("SELECT 1;"),
        )],
    )
    .await;
    assert!(
        r.migrations[0]
            .findings
            .iter()
            .any(|f| f.rule == Rule::ShadowApplyFailed),
        "{r:#?}"
    );
    assert!(!r.compatible);

    // Two migrations: each down is checked against the schema before its own up.
    let r = run(
        engine,
        url,
        vec![
            m(
                2,
                "a",
                "CREATE TABLE tags (id INTEGER PRIMARY KEY);",
                Some("DROP TABLE tags;"),
            ),
            m(
                3,
                "b",
                "CREATE TABLE notes (id INTEGER PRIMARY KEY);",
                Some("SELECT 1;"),
            ),
        ],
    )
    .await;
    assert_eq!(r.migrations[1].roundtrip.ok, Some(false), "{r:#?}");
    assert!(
        r.migrations[1]
            .roundtrip
            .differences
            .iter()
            .any(|d| d.contains("table notes"))
    );
}

#[tokio::test]
async fn sqlite_shadow_proves_roundtrips() {
    let (_db, url) = server(Kind::Sqlite).await.expect("sqlite needs no server");
    common_cases(Engine::Sqlite, &url).await;
    each_pair_on_its_own(Engine::Sqlite, &url).await;
}

/// Each pair is proven right after its own up, so one bad down hides no other verdict: five
/// migrations with an inexact down, an irreversible one and a down that fails on the database
/// in the middle, and every one gets its own verdict. On PostgreSQL and SQLite the failed down
/// is rolled back and the proof goes on in the same database; MySQL cannot roll it back, so the
/// proof goes on in a new one (and says so).
async fn each_pair_on_its_own(engine: Engine, url: &DatabaseUrl) {
    let drop_index = if engine == Engine::MySql {
        "DROP INDEX users_email_idx ON users;"
    } else {
        "DROP INDEX users_email_idx;"
    };
    let r = run(
        engine,
        url,
        vec![
            m(
                2,
                "forgets_index",
                "CREATE INDEX users_age_idx ON users (age);",
                Some("SELECT 1;"),
            ),
            m(
                3,
                "irreversible",
                "CREATE TABLE a (id INTEGER PRIMARY KEY);",
                None,
            ),
            m(
                4,
                "bad_down",
                "CREATE TABLE b (id INTEGER PRIMARY KEY);",
                Some("DROP TABLE no_such_table;"),
            ),
            m(
                5,
                "good",
                "ALTER TABLE users ADD COLUMN nick VARCHAR(20);",
                Some("ALTER TABLE users DROP COLUMN nick;"),
            ),
            m(
                6,
                "good_index",
                "CREATE INDEX users_email_idx ON users (email);",
                Some(drop_index),
            ),
        ],
    )
    .await;
    let rt: Vec<_> = r.migrations.iter().map(|m| &m.roundtrip).collect();
    assert_eq!(rt.len(), 5, "{r:#?}");
    assert_eq!(rt[0].ok, Some(false), "{r:#?}");
    assert!(
        rt[0]
            .differences
            .iter()
            .any(|d| d.contains("users_age_idx") && d.contains("still exists")),
        "{r:#?}"
    );
    assert_eq!(rt[1].ok, Some(false));
    assert!(rt[1].differences[0].contains("irreversible"), "{r:#?}");
    assert_eq!(rt[2].ok, Some(false), "{r:#?}");
    let failed = &rt[2].differences[0];
    assert!(
        failed.contains("the down script fails") && failed.to_lowercase().contains("no_such_table"),
        "the database's own error: {failed}"
    );
    assert_eq!(
        failed.contains("new shadow database"),
        engine == Engine::MySql,
        "only MySQL cannot roll a failed down back: {failed}"
    );
    assert_eq!(rt[3].ok, Some(true), "{r:#?}");
    assert_eq!(rt[4].ok, Some(true), "{r:#?}");
    for m in &r.migrations[3..] {
        assert!(m.compatible, "{r:#?}");
    }
    assert!(
        r.migrations
            .iter()
            .all(|m| m.findings.iter().all(|f| f.rule != Rule::ShadowApplyFailed)),
        "{r:#?}"
    );
}

/// On PostgreSQL the snapshot after a table, view or index statement re-reads only the
/// relations it can change; in debug builds each such snapshot is checked against a full one
/// and a difference panics. These migrations make the scoped reads follow renames into the
/// views, foreign keys, owned sequences and SQL-body functions that name a relation.
#[tokio::test]
async fn postgres_scoped_snapshots_follow_what_a_statement_drags_along() {
    let Some((_db, url)) = server(Kind::Postgres).await else {
        return;
    };
    let steps: &[(&str, &str, &str)] = &[
        (
            "orders",
            "CREATE TABLE orders (id serial PRIMARY KEY, user_id integer REFERENCES users (id), \
             total integer NOT NULL DEFAULT 0);\nCREATE INDEX orders_user ON orders (user_id);",
            "DROP TABLE orders;",
        ),
        (
            "view",
            "CREATE VIEW order_totals AS SELECT user_id, sum(total) AS total FROM orders GROUP BY user_id;",
            "DROP VIEW order_totals;",
        ),
        (
            "rename_column",
            "ALTER TABLE orders RENAME COLUMN total TO total_cents;",
            "ALTER TABLE orders RENAME COLUMN total_cents TO total;",
        ),
        (
            "rename_users",
            "ALTER TABLE users RENAME TO members;",
            "ALTER TABLE members RENAME TO users;",
        ),
        (
            "rename_index",
            "ALTER INDEX orders_user RENAME TO orders_by_user;",
            "ALTER INDEX orders_by_user RENAME TO orders_user;",
        ),
        (
            "function",
            "CREATE FUNCTION order_count() RETURNS bigint LANGUAGE sql \
             BEGIN ATOMIC SELECT count(*) FROM orders; END;",
            "DROP FUNCTION order_count();",
        ),
        (
            "rename_orders",
            "ALTER TABLE orders RENAME TO purchases;",
            "ALTER TABLE purchases RENAME TO orders;",
        ),
        (
            // Renames the primary-key constraint too.
            "rename_pkey",
            "ALTER INDEX orders_pkey RENAME TO purchases_pkey;",
            "ALTER INDEX purchases_pkey RENAME TO orders_pkey;",
        ),
        (
            "index_concurrently",
            "-- ferry:no-transaction\nCREATE INDEX CONCURRENTLY purchases_total ON purchases (total_cents);",
            "-- ferry:no-transaction\nDROP INDEX CONCURRENTLY purchases_total;",
        ),
        (
            "archive",
            "CREATE TABLE archive AS SELECT * FROM purchases;\nCOMMENT ON TABLE archive IS 'old rows';",
            "DROP TABLE archive;",
        ),
        (
            "qty",
            "ALTER TABLE purchases ADD COLUMN qty smallint, ADD COLUMN note text DEFAULT 'none';",
            "ALTER TABLE purchases DROP COLUMN qty, DROP COLUMN note;",
        ),
        (
            "widen_qty",
            "ALTER TABLE purchases ALTER COLUMN qty TYPE integer, ALTER COLUMN note SET NOT NULL;",
            "ALTER TABLE purchases ALTER COLUMN qty TYPE smallint, ALTER COLUMN note DROP NOT NULL;",
        ),
        (
            "check",
            "ALTER TABLE purchases ADD CONSTRAINT qty_positive CHECK (qty > 0);\nDROP INDEX orders_by_user;",
            "CREATE INDEX orders_by_user ON purchases (user_id);\n\
             ALTER TABLE purchases DROP CONSTRAINT qty_positive;",
        ),
    ];
    prove_steps(Engine::Postgres, &url, steps).await;
}

/// Proves each (name, up, down) step in turn and requires every round trip to be exact; in
/// debug builds every scoped snapshot on the way is compared with a full one.
async fn prove_steps(engine: Engine, url: &DatabaseUrl, steps: &[(&str, &str, &str)]) {
    let mut new = Vec::new();
    for (i, (name, up, down)) in steps.iter().enumerate() {
        let mut mig = m(2 + i as i64, name, up, Some(down));
        mig.up_transaction = !up.starts_with("-- ferry:no-transaction");
        mig.down_transaction = !down.starts_with("-- ferry:no-transaction");
        new.push(mig);
    }
    let r = run(engine, url, new).await;
    for mig in &r.migrations {
        assert_eq!(mig.roundtrip.ok, Some(true), "{}: {r:#?}", mig.name);
        assert!(
            mig.findings
                .iter()
                .all(|f| f.rule != Rule::ShadowApplyFailed),
            "{r:#?}"
        );
    }
    assert_eq!(r.migrations.len(), steps.len());
}

/// MySQL/MariaDB's scoped snapshots: a view's columns follow its tables (a view over a view
/// too), a rename moves a table's triggers and rewrites the foreign keys that reference it,
/// data changes read nothing again, and check constraints (which MySQL 8 does not file under a
/// table) are read whole.
#[tokio::test]
async fn mysql_scoped_snapshots_follow_what_a_statement_drags_along() {
    let Some((_db, url)) = server(Kind::MySql).await else {
        return;
    };
    let steps: &[(&str, &str, &str)] = &[
        (
            "orders",
            "CREATE TABLE orders (id INTEGER AUTO_INCREMENT PRIMARY KEY, user_id INTEGER, \
             total INTEGER NOT NULL DEFAULT 0, note VARCHAR(20), \
             CONSTRAINT orders_user FOREIGN KEY (user_id) REFERENCES users (id), \
             CONSTRAINT note_short CHECK (CHAR_LENGTH(note) < 10));\n\
             CREATE INDEX orders_total ON orders (total);",
            "DROP TABLE orders;",
        ),
        (
            "view",
            "CREATE VIEW order_totals AS SELECT user_id, SUM(total) AS total FROM orders GROUP BY user_id;",
            "DROP VIEW order_totals;",
        ),
        (
            "view_of_view",
            "CREATE VIEW big_totals AS SELECT user_id, total FROM order_totals;",
            "DROP VIEW big_totals;",
        ),
        (
            "widen_total",
            "ALTER TABLE orders MODIFY total BIGINT NOT NULL DEFAULT 0;",
            "ALTER TABLE orders MODIFY total INTEGER NOT NULL DEFAULT 0;",
        ),
        (
            "rename_column",
            "ALTER TABLE orders RENAME COLUMN total TO total_cents;",
            "ALTER TABLE orders RENAME COLUMN total_cents TO total;",
        ),
        (
            "trigger",
            "CREATE TRIGGER orders_note BEFORE INSERT ON orders FOR EACH ROW SET NEW.note = 'x';",
            "DROP TRIGGER orders_note;",
        ),
        (
            "rename_users",
            "RENAME TABLE users TO members;",
            "RENAME TABLE members TO users;",
        ),
        (
            "rename_orders",
            "ALTER TABLE orders RENAME TO purchases;",
            "ALTER TABLE purchases RENAME TO orders;",
        ),
        (
            "qty",
            "ALTER TABLE purchases ADD COLUMN qty SMALLINT, ADD CONSTRAINT qty_positive CHECK (qty > 0), \
             ADD INDEX purchases_qty (qty);",
            "ALTER TABLE purchases DROP INDEX purchases_qty, DROP CONSTRAINT qty_positive, DROP COLUMN qty;",
        ),
        (
            "drop_index",
            "DROP INDEX orders_total ON purchases;",
            "CREATE INDEX orders_total ON purchases (total_cents);",
        ),
        (
            "data",
            "SET foreign_key_checks = 0;\nINSERT INTO purchases (user_id, total_cents) VALUES (NULL, 5);\n\
             SET foreign_key_checks = 1;",
            "DELETE FROM purchases;",
        ),
        (
            "copies",
            "CREATE TABLE archive LIKE purchases;\nCREATE TABLE snap AS SELECT id, total_cents FROM purchases;",
            "DROP TABLE archive, snap;",
        ),
    ];
    prove_steps(Engine::MySql, &url, steps).await;
}

/// SQLite's scoped snapshots: indexes and triggers belong to their `tbl_name`, a view's columns
/// follow its tables (a view over a view, `SELECT *` too), and `ALTER TABLE … RENAME` rewrites
/// the text of the views and triggers that name the table or column and other tables' foreign
/// keys. SQLite writes a renamed name quoted, so the names a rename and its down rewrite are
/// written quoted here, or the round trip would differ in the quotes.
#[tokio::test]
async fn sqlite_scoped_snapshots_follow_what_a_statement_drags_along() {
    let (_db, url) = server(Kind::Sqlite).await.expect("sqlite needs no server");
    let steps: &[(&str, &str, &str)] = &[
        (
            "orders",
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users (id), \
             total INTEGER NOT NULL DEFAULT 0);\nCREATE INDEX orders_user ON \"orders\" (user_id);",
            "DROP TABLE orders;",
        ),
        (
            "views",
            "CREATE VIEW order_totals AS SELECT user_id, \"total\" FROM \"orders\";\n\
             CREATE VIEW everything AS SELECT * FROM \"orders\";",
            "DROP VIEW everything;\nDROP VIEW order_totals;",
        ),
        (
            "view_of_view",
            "CREATE VIEW big AS SELECT * FROM order_totals;",
            "DROP VIEW big;",
        ),
        (
            "trigger",
            // A trigger on a table that no foreign key ties to `users`: only its text names it.
            "CREATE TABLE audit_log (id INTEGER PRIMARY KEY, user_id INTEGER);\n\
             CREATE TRIGGER audit_touch AFTER INSERT ON audit_log BEGIN \
             UPDATE \"users\" SET age = age WHERE id = NEW.user_id; END;\n\
             CREATE TRIGGER orders_audit AFTER INSERT ON \"orders\" BEGIN \
             UPDATE \"users\" SET age = age WHERE id = NEW.user_id; END;",
            "DROP TRIGGER orders_audit;\nDROP TRIGGER audit_touch;\nDROP TABLE audit_log;",
        ),
        (
            "rename_column",
            "ALTER TABLE orders RENAME COLUMN total TO total_cents;",
            "ALTER TABLE orders RENAME COLUMN total_cents TO total;",
        ),
        (
            "rename_users",
            "ALTER TABLE users RENAME TO members;",
            "ALTER TABLE members RENAME TO users;",
        ),
        (
            "rename_orders",
            "ALTER TABLE orders RENAME TO purchases;",
            "ALTER TABLE purchases RENAME TO orders;",
        ),
        (
            "qty",
            "ALTER TABLE purchases ADD COLUMN qty INTEGER;",
            "ALTER TABLE purchases DROP COLUMN qty;",
        ),
        (
            "drop_index",
            "DROP INDEX orders_user;",
            "CREATE INDEX orders_user ON \"purchases\" (user_id);",
        ),
        (
            "data",
            "INSERT INTO purchases (user_id, total_cents) VALUES (NULL, 5);",
            "DELETE FROM purchases;",
        ),
        (
            "tags",
            "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT);",
            "DROP TABLE tags;",
        ),
        (
            "rebuild_tags",
            "PRAGMA foreign_keys = OFF;\nCREATE TABLE tags_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '');\n\
             INSERT INTO tags_new (id, name) SELECT id, COALESCE(name, '') FROM tags;\nDROP TABLE tags;\n\
             ALTER TABLE tags_new RENAME TO tags;\nPRAGMA foreign_keys = ON;",
            "CREATE TABLE tags_old (id INTEGER PRIMARY KEY, name TEXT);\n\
             INSERT INTO tags_old (id, name) SELECT id, name FROM tags;\nDROP TABLE tags;\n\
             ALTER TABLE tags_old RENAME TO tags;",
        ),
    ];
    prove_steps(Engine::Sqlite, &url, steps).await;
}

#[tokio::test]
async fn postgres_shadow_proves_roundtrips_and_finds_what_the_parser_cannot_see() {
    let Some((_db, url)) = server(Kind::Postgres).await else {
        return;
    };
    common_cases(Engine::Postgres, &url).await;
    each_pair_on_its_own(Engine::Postgres, &url).await;

    // A down that forgets a default and a type.
    let r = run(
        Engine::Postgres,
        &url,
        vec![m(
            2,
            "widen",
            "ALTER TABLE users ALTER COLUMN email TYPE varchar(200);\nALTER TABLE users ALTER COLUMN age SET DEFAULT 0;",
            Some("SELECT 1;"),
        )],
    )
    .await;
    let rt = &r.migrations[0].roundtrip;
    assert_eq!(rt.ok, Some(false));
    assert!(
        rt.differences
            .iter()
            .any(|d| d.contains("column users.email")),
        "{rt:?}"
    );
    assert!(
        rt.differences
            .iter()
            .any(|d| d.contains("column users.age")),
        "{rt:?}"
    );

    // A down that forgets a constraint.
    let r = run(
        Engine::Postgres,
        &url,
        vec![m(
            2,
            "check_age",
            "ALTER TABLE users ADD CONSTRAINT users_age_check CHECK (age >= 0) NOT VALID;",
            Some("SELECT 1;"),
        )],
    )
    .await;
    let rt = &r.migrations[0].roundtrip;
    assert_eq!(rt.ok, Some(false));
    assert!(
        rt.differences
            .iter()
            .any(|d| d.contains("constraint users.users_age_check")),
        "{rt:?}"
    );

    // SQL built at run time hides a drop from the parser (a constant string it reads); the
    // shadow database sees it.
    let r = run(
        Engine::Postgres,
        &url,
        vec![m(
            2,
            "sneaky",
            "DO $$ BEGIN EXECUTE format('ALTER TABLE users DROP COLUMN %I', 'age'); END $$;",
            Some("ALTER TABLE users ADD COLUMN age integer;"),
        )],
    )
    .await;
    let f = &r.migrations[0].findings;
    assert!(
        f.iter()
            .any(|f| f.rule == Rule::ShadowObjectRemoved && f.object == "users.age"),
        "{r:#?}"
    );
    assert!(!r.compatible);
    assert_eq!(r.migrations[0].roundtrip.ok, Some(true), "{r:#?}");
}

#[tokio::test]
async fn mysql_shadow_proves_roundtrips_and_sees_modify_drop_a_default() {
    let Some((_db, url)) = server(Kind::MySql).await else {
        return;
    };
    common_cases(Engine::MySql, &url).await;
    each_pair_on_its_own(Engine::MySql, &url).await;

    let r = run(
        Engine::MySql,
        &url,
        vec![m(
            2,
            "modify",
            "ALTER TABLE users MODIFY status VARCHAR(20) NOT NULL;",
            Some("ALTER TABLE users MODIFY status VARCHAR(20) NOT NULL DEFAULT 'active';"),
        )],
    )
    .await;
    let m0 = &r.migrations[0];
    // The static layer names it (with a line); the proof confirms it without a duplicate.
    assert_eq!(
        m0.findings.iter().map(|f| f.rule).collect::<Vec<_>>(),
        [Rule::DropDefault],
        "{r:#?}"
    );
    assert_eq!(m0.roundtrip.ok, Some(true), "{r:#?}");
}

/// With a kept base, two checks of the same history at once both work (the first time both
/// find no base and build it; one keeps its copy, the other drops its own), a later check
/// copies the base, and every verdict is the one a check without a kept base gives. `ferry
/// compat clean`'s library call removes the base.
async fn kept_base_cases(engine: Engine, url: &DatabaseUrl) {
    let dir = tempfile::tempdir().unwrap();
    // A history no other run has: its base does not exist yet.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let unique = format!("t_{}_{nanos}", std::process::id());
    let mut all = vec![
        m(1, "base", BASE_UP, Some("DROP TABLE users;")),
        m(
            2,
            "unique",
            &format!("CREATE TABLE {unique} (id INTEGER PRIMARY KEY);"),
            Some(&format!("DROP TABLE {unique};")),
        ),
        m(
            3,
            "add_nick",
            "ALTER TABLE users ADD COLUMN nick VARCHAR(20);",
            Some("ALTER TABLE users DROP COLUMN nick;"),
        ),
        m(
            4,
            "forgets_index",
            "CREATE INDEX users_age_idx ON users (age);",
            Some("SELECT 1;"),
        ),
        m(
            5,
            "drops_email",
            "ALTER TABLE users DROP COLUMN email;",
            None,
        ),
    ];
    all.reverse();
    let plain = CheckOptions {
        shadow_url: Some(url.clone()),
        ..CheckOptions::new(engine)
    };
    let kept = CheckOptions {
        kept_base: Some(ferry_compat::KeptBase::new(dir.path().to_path_buf())),
        ..plain.clone()
    };
    let verdicts = |r: &Report| -> Vec<(i64, bool, Option<bool>, Vec<Rule>)> {
        r.migrations
            .iter()
            .map(|m| {
                (
                    m.version,
                    m.compatible,
                    m.roundtrip.ok,
                    m.findings.iter().map(|f| f.rule).collect(),
                )
            })
            .collect()
    };
    let expected = verdicts(&check(&all, Some(2), &plain).await.expect("plain check"));
    assert_eq!(
        expected.iter().map(|(_, _, ok, _)| *ok).collect::<Vec<_>>(),
        [Some(true), Some(false), Some(false)],
        "{expected:?}"
    );
    let (a, b) =
        futures_util::future::join(check(&all, Some(2), &kept), check(&all, Some(2), &kept)).await;
    assert_eq!(verdicts(&a.expect("first of two at once")), expected);
    assert_eq!(verdicts(&b.expect("second of two at once")), expected);
    // Warm: the base is there and is copied; twice at once again.
    let (a, b) =
        futures_util::future::join(check(&all, Some(2), &kept), check(&all, Some(2), &kept)).await;
    assert_eq!(verdicts(&a.expect("warm")), expected);
    assert_eq!(verdicts(&b.expect("warm")), expected);
    // Another base version is another base.
    let above_1 = check(&all, Some(1), &kept).await.expect("base 1");
    assert_eq!(above_1.migrations.len(), 4);
    let kept_base = kept.kept_base.as_ref().unwrap();
    let removed = ferry_compat::clean_kept_bases(url, kept_base)
        .await
        .expect("clean");
    assert!(removed.len() >= 2, "both bases are removed: {removed:?}");
    assert!(
        removed.iter().all(|r| r.contains("ferry_base_")),
        "{removed:?}"
    );
    // After clean the next check builds the base again.
    let again = check(&all, Some(2), &kept).await.expect("after clean");
    assert_eq!(verdicts(&again), expected);
    ferry_compat::clean_kept_bases(url, kept_base)
        .await
        .expect("clean");
}

#[tokio::test]
async fn postgres_kept_base_serves_checks_at_once() {
    let Some((_db, url)) = server(Kind::Postgres).await else {
        return;
    };
    kept_base_cases(Engine::Postgres, &url).await;
}

#[tokio::test]
async fn sqlite_kept_base_serves_checks_at_once() {
    let (_db, url) = server(Kind::Sqlite).await.expect("sqlite needs no server");
    kept_base_cases(Engine::Sqlite, &url).await;
}
