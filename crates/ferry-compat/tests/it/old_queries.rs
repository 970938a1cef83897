//! The previous version's queries, prepared in the shadow database after each new migration, on
//! real PostgreSQL, MariaDB and SQLite.

use ferry_compat::{CheckOptions, Class, DatabaseUrl, Engine, OldQuery, Report, Rule, check};
use ferry_migrate::Migration;
use ferry_testkit::db::Kind;

use crate::{BASE_UP, server};

/// A migration with a down script.
fn m(version: i64, name: &str, up: &str, down: &str) -> Migration {
    crate::m(version, name, up, Some(down))
}

/// `$n` on PostgreSQL, `?` elsewhere: the parameter syntax each driver's users write.
fn p(engine: Engine, n: usize) -> String {
    match engine {
        Engine::Postgres => format!("${n}"),
        _ => "?".to_string(),
    }
}

fn q(source: &str, sql: String, columns: Option<&[&str]>) -> OldQuery {
    OldQuery {
        source: source.to_string(),
        sql,
        columns: columns.map(|c| c.iter().map(|s| s.to_string()).collect()),
    }
}

fn queries(engine: Engine) -> Vec<OldQuery> {
    vec![
        q(
            "queries.sql:1",
            format!("SELECT id, email FROM users WHERE id = {}", p(engine, 1)),
            None,
        ),
        q(
            "queries.sql:3",
            format!(
                "UPDATE users SET age = {} WHERE id = {}",
                p(engine, 1),
                p(engine, 2)
            ),
            None,
        ),
        q(
            ".sqlx/query-all.json",
            format!("SELECT * FROM users WHERE email = {}", p(engine, 1)),
            Some(&["id", "email", "status", "age"]),
        ),
        q(
            ".sqlx/query-insert.json",
            format!(
                "INSERT INTO users (id, email) VALUES ({}, {})",
                p(engine, 1),
                p(engine, 2)
            ),
            Some(&[]),
        ),
    ]
}

async fn run(engine: Engine, url: &DatabaseUrl, new: Vec<Migration>, old: Vec<OldQuery>) -> Report {
    let mut all = vec![m(1, "base", BASE_UP, "DROP TABLE users;")];
    all.extend(new);
    let options = CheckOptions {
        shadow_url: Some(url.clone()),
        old_queries: old,
        ..CheckOptions::new(engine)
    };
    check(&all, Some(1), &options).await.expect("check runs")
}

fn rules(r: &Report, i: usize) -> Vec<(Rule, String)> {
    r.migrations[i]
        .findings
        .iter()
        .map(|f| (f.rule, f.object.clone()))
        .collect()
}

async fn cases(engine: Engine, url: &DatabaseUrl) {
    // Additive migrations: every old query still prepares, parameters and all.
    let r = run(
        engine,
        url,
        vec![
            m(
                2,
                "add_bio",
                "ALTER TABLE users ADD COLUMN bio VARCHAR(200);",
                "ALTER TABLE users DROP COLUMN bio;",
            ),
            m(
                3,
                "tags",
                "CREATE TABLE tags (id INTEGER PRIMARY KEY, name VARCHAR(50));",
                "DROP TABLE tags;",
            ),
        ],
        queries(engine),
    )
    .await;
    assert!(r.compatible, "{r:#?}");
    assert!(r.migrations.iter().all(|m| m.findings.is_empty()), "{r:#?}");

    // A dropped column: the static rule is allowed, but the old UPDATE (which sets it) and the
    // old SELECT * (whose result the previous version decodes) break, after migration 3 only.
    let r = run(
        engine,
        url,
        vec![
            m(
                2,
                "add_bio",
                "ALTER TABLE users ADD COLUMN bio VARCHAR(200);",
                "ALTER TABLE users DROP COLUMN bio;",
            ),
            m(
                3,
                "drop_age",
                "-- ferry:allow drop-column nobody reads age any more\nALTER TABLE users DROP COLUMN age;",
                "ALTER TABLE users ADD COLUMN age INTEGER;",
            ),
        ],
        queries(engine),
    )
    .await;
    assert!(!r.compatible, "{r:#?}");
    assert!(
        r.migrations[0].compatible && r.migrations[0].findings.is_empty(),
        "{r:#?}"
    );
    let m3 = &r.migrations[1];
    assert!(!m3.compatible);
    let fails = m3
        .findings
        .iter()
        .find(|f| f.rule == Rule::OldQueryFails)
        .unwrap_or_else(|| panic!("no old-query-fails: {r:#?}"));
    assert_eq!(fails.object, "queries.sql:3");
    assert_eq!(fails.class, Class::Breaking);
    assert_eq!(fails.line, 0);
    assert!(!fails.allowed);
    let db_error = match engine {
        Engine::Postgres => "column \"age\" of relation \"users\" does not exist",
        Engine::MySql => "Unknown column 'age'",
        Engine::Sqlite => "no such column: age",
    };
    assert!(fails.message.contains(db_error), "{}", fails.message);
    assert!(fails.message.contains("3_drop_age"), "{}", fails.message);
    assert!(fails.hint.contains("expand/contract"), "{}", fails.hint);
    let cols = m3
        .findings
        .iter()
        .find(|f| f.rule == Rule::OldQueryColumnsChanged)
        .unwrap_or_else(|| panic!("no old-query-columns-changed: {r:#?}"));
    assert_eq!(cols.object, ".sqlx/query-all.json");
    assert!(cols.message.contains("age"), "{}", cols.message);
    // The queries that still work are not reported.
    assert_eq!(
        rules(&r, 1)
            .iter()
            .filter(|(rule, _)| matches!(rule, Rule::OldQueryFails | Rule::OldQueryColumnsChanged))
            .count(),
        2,
        "{r:#?}"
    );

    // The same allowed, with a reason: compatible again.
    let r = run(
        engine,
        url,
        vec![m(
            2,
            "drop_age",
            "-- ferry:allow drop-column nobody reads age any more\n\
             -- ferry:allow old-query-fails the age update went away in v7\n\
             -- ferry:allow old-query-columns-changed v7 selects columns by name\n\
             ALTER TABLE users DROP COLUMN age;",
            "ALTER TABLE users ADD COLUMN age INTEGER;",
        )],
        queries(engine),
    )
    .await;
    assert!(r.compatible, "{r:#?}");
    assert!(r.migrations[0].findings.iter().all(|f| f.allowed), "{r:#?}");

    // A query that is wrong before any new migration is the query file's problem: reported once,
    // on the first migration, not breaking; the valid ones are still checked.
    let mut old = queries(engine);
    old.push(q(
        "queries.sql:9",
        "SELECT nickname FROM users".to_string(),
        None,
    ));
    let r = run(
        engine,
        url,
        vec![
            m(
                2,
                "add_nickname",
                "ALTER TABLE users ADD COLUMN nickname VARCHAR(50);",
                "ALTER TABLE users DROP COLUMN nickname;",
            ),
            m(
                3,
                "drop_table",
                "-- ferry:allow drop-table users moved\nDROP TABLE users;",
                BASE_UP,
            ),
        ],
        old,
    )
    .await;
    let invalid: Vec<_> = r
        .migrations
        .iter()
        .flat_map(|m| &m.findings)
        .filter(|f| f.rule == Rule::OldQueryInvalidAtBase)
        .collect();
    assert_eq!(invalid.len(), 1, "{r:#?}");
    assert_eq!(invalid[0].object, "queries.sql:9");
    assert_eq!(invalid[0].class, Class::Unparsed);
    assert!(
        invalid[0].message.contains("nickname"),
        "{}",
        invalid[0].message
    );
    assert_eq!(
        r.migrations[0].findings.len(),
        1,
        "only the invalid query on migration 2: {r:#?}"
    );
    assert!(r.migrations[0].compatible, "{r:#?}");
    // Every valid query fails once the table is gone, each reported once.
    let gone: Vec<String> = rules(&r, 1)
        .into_iter()
        .filter(|(rule, _)| *rule == Rule::OldQueryFails)
        .map(|(_, o)| o)
        .collect();
    assert_eq!(gone.len(), 4, "{r:#?}");
    assert!(!r.migrations[1].compatible);
}

/// A long release is proven in several shadow databases at once (one per core, at most three):
/// each later one starts where the parts before it end. A query broken in the first part is
/// reported once, on its migration; a down that forgets an index in the last part fails only
/// there.
async fn long_release(engine: Engine, url: &DatabaseUrl) {
    let n = 30;
    let mut new = Vec::new();
    for i in 0..n {
        let v = 2 + i as i64;
        new.push(match i {
            3 => m(
                v,
                "drop_age",
                "-- ferry:allow drop-column the new version no longer reads age\n\
                 ALTER TABLE users DROP COLUMN age;",
                "ALTER TABLE users ADD COLUMN age INTEGER;",
            ),
            26 => m(
                v,
                "index_email",
                "CREATE INDEX users_email_idx ON users (email);",
                "SELECT 1;",
            ),
            _ => m(
                v,
                &format!("add_c{i}"),
                &format!("ALTER TABLE users ADD COLUMN c{i} VARCHAR(10);"),
                &format!("ALTER TABLE users DROP COLUMN c{i};"),
            ),
        });
    }
    let r = run(engine, url, new, queries(engine)).await;
    assert_eq!(r.migrations.len(), n);
    let broken: Vec<(usize, Rule, String)> = r
        .migrations
        .iter()
        .enumerate()
        .flat_map(|(i, m)| {
            m.findings
                .iter()
                .map(move |f| (i, f.rule, f.object.clone()))
        })
        .filter(|(_, rule, _)| matches!(rule, Rule::OldQueryFails | Rule::OldQueryColumnsChanged))
        .collect();
    assert_eq!(
        broken,
        [
            (3, Rule::OldQueryFails, "queries.sql:3".to_string()),
            (
                3,
                Rule::OldQueryColumnsChanged,
                ".sqlx/query-all.json".to_string()
            ),
        ],
        "{r:#?}"
    );
    let forgot = &r.migrations[26].roundtrip;
    assert_eq!(forgot.ok, Some(false), "{r:#?}");
    assert!(
        forgot
            .differences
            .iter()
            .any(|d| d.contains("users_email_idx")),
        "{forgot:#?}"
    );
    for (i, m) in r.migrations.iter().enumerate() {
        if i > 26 {
            assert_eq!(m.roundtrip.ok, Some(true), "{}: {r:#?}", m.name);
        }
    }
    // The downs stop at the first that does not restore the schema; with two or more databases,
    // the first part's downs run in another one and are proven as well.
    let parts = ferry_compat::shadow_parts(n, None);
    for m in r.migrations[..parts[0].end]
        .iter()
        .filter(|m| m.name != "index_email")
    {
        if parts.len() > 1 {
            assert_eq!(m.roundtrip.ok, Some(true), "{}: {r:#?}", m.name);
        } else {
            assert_ne!(m.roundtrip.ok, Some(false), "{}: {r:#?}", m.name);
        }
    }
}

#[tokio::test]
async fn sqlite_long_release() {
    let (_db, url) = server(Kind::Sqlite).await.expect("sqlite needs no server");
    long_release(Engine::Sqlite, &url).await;
}

#[tokio::test]
async fn postgres_long_release() {
    let Some((_db, url)) = server(Kind::Postgres).await else {
        return;
    };
    long_release(Engine::Postgres, &url).await;
}

#[tokio::test]
async fn sqlite_old_queries() {
    let (_db, url) = server(Kind::Sqlite).await.expect("sqlite needs no server");
    cases(Engine::Sqlite, &url).await;
}

#[tokio::test]
async fn postgres_old_queries() {
    let Some((_db, url)) = server(Kind::Postgres).await else {
        return;
    };
    cases(Engine::Postgres, &url).await;
}

#[tokio::test]
async fn mysql_old_queries() {
    let Some((_db, url)) = server(Kind::MySql).await else {
        return;
    };
    cases(Engine::MySql, &url).await;
}

#[tokio::test]
async fn old_queries_without_a_shadow_database_are_an_error() {
    let options = CheckOptions {
        old_queries: queries(Engine::Sqlite),
        ..CheckOptions::new(Engine::Sqlite)
    };
    let e = check(
        &[m(1, "base", BASE_UP, "DROP TABLE users;")],
        None,
        &options,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("--shadow-url"), "{e}");
}
