//! A migration judged by its end state, by both layers at once (static analysis and the shadow
//! proof must agree): objects dropped and created again, and a table replaced by a
//! compatibility view, on real databases.

use ferry_compat::{CheckOptions, Class, DatabaseUrl, Engine, Report, Rule, check};
use ferry_migrate::Migration;
use ferry_testkit::db::Kind;

use crate::{m, server};

const PRODUCTS: &str = "CREATE TABLE products (id serial PRIMARY KEY, name text NOT NULL, \
                        tags text[] NOT NULL DEFAULT '{}', price numeric(10, 2) NOT NULL DEFAULT 0, \
                        note text);
CREATE VIEW cheap AS SELECT id, name, price FROM products WHERE price < 10;";

async fn run(engine: Engine, url: &DatabaseUrl, base: &str, new: Vec<Migration>) -> Report {
    let mut all = vec![m(1, "base", base, Some("SELECT 1;"))];
    all.extend(new);
    let options = CheckOptions {
        shadow_url: Some(url.clone()),
        ..CheckOptions::new(engine)
    };
    check(&all, Some(1), &options).await.expect("check runs")
}

fn rules(r: &Report) -> Vec<Rule> {
    r.migrations[0]
        .findings
        .iter()
        .filter(|f| f.class != Class::Unparsed)
        .map(|f| f.rule)
        .collect()
}

#[tokio::test]
async fn postgres_judges_by_the_end_state() {
    let Some((_db, url)) = server(Kind::Postgres).await else {
        return;
    };
    let pg = Engine::Postgres;

    // A compatibility view: the previous version still selects and inserts through it, and its
    // inserts get the table's defaults. Neither layer reports the rename or lost defaults.
    let r = run(
        pg,
        &url,
        PRODUCTS,
        vec![m(
            2,
            "rename_products",
            "ALTER TABLE products RENAME TO catalog_items;\n\
             CREATE VIEW products AS SELECT * FROM catalog_items;",
            Some("DROP VIEW products;\nALTER TABLE catalog_items RENAME TO products;"),
        )],
    )
    .await;
    assert!(r.compatible, "{r:#?}");
    assert!(r.migrations[0].findings.is_empty(), "{r:#?}");

    // The same with a view that leaves a column out: breaking, and the finding names it.
    let r = run(
        pg,
        &url,
        PRODUCTS,
        vec![m(
            2,
            "rename_products",
            "ALTER TABLE products RENAME TO catalog_items;\n\
             CREATE VIEW products AS SELECT id, name, tags, price FROM catalog_items;",
            Some("DROP VIEW products;\nALTER TABLE catalog_items RENAME TO products;"),
        )],
    )
    .await;
    assert!(!r.compatible, "{r:#?}");
    assert!(
        r.migrations[0]
            .findings
            .iter()
            .any(|f| f.object == "products.note" && f.class == Class::Breaking),
        "{r:#?}"
    );
    assert!(
        !r.migrations[0]
            .findings
            .iter()
            .any(|f| f.message.contains("loses its default")),
        "the view keeps the defaults: {r:#?}"
    );

    // A view dropped and created again with the same columns (and one more): compatible.
    let r = run(
        pg,
        &url,
        PRODUCTS,
        vec![m(
            2,
            "rebuild_cheap",
            "DROP VIEW cheap;\nCREATE VIEW cheap AS SELECT id, name, price, tags FROM products \
             WHERE price < 20;",
            Some("DROP VIEW cheap;\nCREATE VIEW cheap AS SELECT id, name, price FROM products WHERE price < 10;"),
        )],
    )
    .await;
    assert!(r.compatible, "{r:#?}");
    assert_eq!(rules(&r), [], "{r:#?}");

    // … and without a column the previous version reads: breaking, naming the column.
    let r = run(
        pg,
        &url,
        PRODUCTS,
        vec![m(
            2,
            "rebuild_cheap",
            "DROP VIEW cheap;\nCREATE VIEW cheap AS SELECT id, price FROM products;",
            Some("DROP VIEW cheap;\nCREATE VIEW cheap AS SELECT id, name, price FROM products WHERE price < 10;"),
        )],
    )
    .await;
    assert!(!r.compatible, "{r:#?}");
    let f = &r.migrations[0].findings;
    assert!(
        f.iter().any(|f| f.object == "cheap.name" && f.line == 2),
        "{f:#?}"
    );

    // A function dropped and created again with the same signature and return type.
    let r = run(
        pg,
        &url,
        "CREATE TABLE t (id int);\nCREATE FUNCTION f(a bigint) RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
        vec![m(
            2,
            "rebuild_f",
            "DROP FUNCTION f(bigint);\nCREATE FUNCTION f(a bigint) RETURNS int LANGUAGE sql \
             IMMUTABLE PARALLEL SAFE COST 5 AS $$ SELECT 2 $$;",
            Some("DROP FUNCTION f(bigint);\nCREATE FUNCTION f(a bigint) RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;"),
        )],
    )
    .await;
    assert!(r.compatible, "{r:#?}");
    assert_eq!(rules(&r), [], "{r:#?}");

    // A domain dropped and created again over the same base type with the same check:
    // compatible; with a constraint the previous version's values may fail, breaking.
    const EMAIL: &str = "CREATE TABLE t (id int);\n\
                         CREATE DOMAIN email AS varchar(100) CHECK (VALUE LIKE '%@%');";
    let domain = |up: &str| {
        m(
            2,
            "rebuild_email",
            up,
            Some(
                "DROP DOMAIN email;\nCREATE DOMAIN email AS varchar(100) CHECK (VALUE LIKE '%@%');",
            ),
        )
    };
    let r = run(
        pg,
        &url,
        EMAIL,
        vec![domain(
            "DROP DOMAIN email;\nCREATE DOMAIN email AS varchar(200) CHECK (VALUE LIKE '%@%');",
        )],
    )
    .await;
    assert!(r.compatible, "{r:#?}");
    assert_eq!(rules(&r), [], "{r:#?}");
    let r = run(
        pg,
        &url,
        EMAIL,
        vec![domain(
            "DROP DOMAIN email;\nCREATE DOMAIN email AS varchar(100) NOT NULL CHECK (VALUE LIKE '%@%');",
        )],
    )
    .await;
    assert!(!r.compatible, "{r:#?}");
    let f = &r.migrations[0].findings;
    assert!(
        f.iter().any(|f| f.rule == Rule::DropType
            && f.line == 2
            && f.message.contains("with NOT NULL")),
        "{f:#?}"
    );
    let mut gap = domain(
        "-- ferry:no-transaction\nDROP DOMAIN email;\n\
         CREATE DOMAIN email AS varchar(100) CHECK (VALUE LIKE '%@%');",
    );
    gap.up_transaction = false;
    let r = run(pg, &url, EMAIL, vec![gap]).await;
    assert!(!r.compatible, "{r:#?}");
    assert!(rules(&r).contains(&Rule::DropType), "{r:#?}");

    // Outside a transaction the gap is real: the drop stays a finding.
    let mut gap = m(
        2,
        "rebuild_cheap",
        "-- ferry:no-transaction\nDROP VIEW cheap;\nCREATE VIEW cheap AS SELECT id, name, price FROM products;",
        Some(
            "DROP VIEW cheap;\nCREATE VIEW cheap AS SELECT id, name, price FROM products WHERE price < 10;",
        ),
    );
    gap.up_transaction = false;
    let r = run(pg, &url, PRODUCTS, vec![gap]).await;
    assert!(!r.compatible, "{r:#?}");
    assert!(rules(&r).contains(&Rule::DropView), "{r:#?}");
}

#[tokio::test]
async fn sqlite_judges_a_recreated_view_by_its_end_state() {
    let Some((_db, url)) = server(Kind::Sqlite).await else {
        return;
    };
    let base = "CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL);\n\
                CREATE VIEW cheap AS SELECT id, name, price FROM products WHERE price < 10;";
    let down = "DROP VIEW cheap;\nCREATE VIEW cheap AS SELECT id, name, price FROM products WHERE price < 10;";
    let r = run(
        Engine::Sqlite,
        &url,
        base,
        vec![m(
            2,
            "rebuild_cheap",
            "DROP VIEW cheap;\nCREATE VIEW cheap AS SELECT id, name, price FROM products WHERE price < 20;",
            Some(down),
        )],
    )
    .await;
    assert!(r.compatible, "{r:#?}");
    assert_eq!(rules(&r), [], "{r:#?}");
    let r = run(
        Engine::Sqlite,
        &url,
        base,
        vec![m(
            2,
            "rebuild_cheap",
            "DROP VIEW cheap;\nCREATE VIEW cheap AS SELECT id, price FROM products;",
            Some(down),
        )],
    )
    .await;
    assert!(!r.compatible, "{r:#?}");
    assert!(
        r.migrations[0]
            .findings
            .iter()
            .any(|f| f.object == "cheap.name"),
        "{r:#?}"
    );
}
