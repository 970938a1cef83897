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
    let mut new = Vec::new();
    for (i, (name, up, down)) in steps.iter().enumerate() {
        let mut mig = m(2 + i as i64, name, up, Some(down));
        mig.up_transaction = !up.starts_with("-- ferry:no-transaction");
        mig.down_transaction = !down.starts_with("-- ferry:no-transaction");
        new.push(mig);
    }
    let r = run(Engine::Postgres, &url, new).await;
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

#[tokio::test]
async fn postgres_shadow_proves_roundtrips_and_finds_what_the_parser_cannot_see() {
    let Some((_db, url)) = server(Kind::Postgres).await else {
        return;
    };
    common_cases(Engine::Postgres, &url).await;

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
