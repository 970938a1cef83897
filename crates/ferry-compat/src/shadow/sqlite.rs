//! SQLite's catalog as a snapshot. Table text is not compared (a rebuilt table is written
//! differently but may be the same table); its columns and foreign keys are.

use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, Connection, SqliteConnection};

use super::{Snapshot, catalog};

/// Each query returns (key, value, name, owner) rows: the object's own name and the relation
/// it belongs to (`tbl_name`: an index's or trigger's table, a table or view itself). `{in:COL}`
/// filters a scoped snapshot to the names it reads again (`TRUE` in a full one); SQLite
/// compares names without regard to (ASCII) case, and so does the filter.
const QUERIES: &[&str] = &[
    "SELECT 'table ' || name, '', name, name FROM sqlite_master
     WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> '{history}' AND {in:name}",
    "SELECT type || ' ' || name, COALESCE(sql, ''), name, tbl_name FROM sqlite_master
     WHERE type IN ('index', 'view', 'trigger') AND name NOT LIKE 'sqlite_%' AND tbl_name <> '{history}'
       AND ({in:name} OR {in:tbl_name})",
    "SELECT 'column ' || m.name || '.' || p.name,
            p.type || '|' || CASE WHEN p.\"notnull\" THEN 'NOT NULL' ELSE '' END || '|' || COALESCE(p.dflt_value, ''),
            m.name, m.name
     FROM sqlite_master m JOIN pragma_table_info(m.name) p
     WHERE m.type IN ('table', 'view') AND m.name NOT LIKE 'sqlite_%' AND m.name <> '{history}' AND {in:m.name}",
    "SELECT 'constraint ' || m.name || '.fk_' || f.\"from\", 'REFERENCES ' || f.\"table\" || '(' || COALESCE(f.\"to\", '') || ')',
            m.name, m.name
     FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) f
     WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND {in:m.name}",
];

/// The referenced table of a foreign key's value (`REFERENCES t(c)`).
fn referenced(value: &str) -> Option<&str> {
    value
        .strip_prefix("REFERENCES ")?
        .rsplit_once('(')
        .map(|(t, _)| t)
}

/// What a SQLite snapshot key drags along ([`catalog`]): `ALTER TABLE … RENAME` rewrites the
/// text of the views and triggers that name the table or column and the foreign keys of other
/// tables that reference it; an index or trigger belongs to its `tbl_name`.
const RULES: catalog::Rules = catalog::Rules {
    view: "view ",
    trigger: Some("trigger "),
    foreign_key: ("constraint ", referenced),
    always: &[],
};

fn statement(filter: impl Fn(&str) -> String) -> String {
    let mut sql = QUERIES
        .join("\nUNION ALL\n")
        .replace("{history}", ferry_migrate::HISTORY_TABLE);
    while let Some(at) = sql.find("{in:") {
        let end = at + sql[at..].find('}').expect("closing brace");
        let col = sql[at + 4..end].to_string();
        sql.replace_range(at..=end, &filter(&col));
    }
    sql
}

/// [`QUERIES`] as one statement: one round trip per snapshot, prepared once per connection.
/// `{history}` is ferry's own history table, which is not part of the schema compared.
static FULL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| statement(|_| "TRUE".into()));

/// The connection snapshots and old queries use, kept open for the whole shadow run.
pub async fn connect(url: &str) -> Result<SqliteConnection, sqlx::Error> {
    SqliteConnection::connect_with(&SqliteConnectOptions::from_str(url)?).await
}

type Rows = Vec<(String, String, String, String)>;

/// Whitespace in stored DDL text is not a difference.
fn normalized(rows: Rows) -> Vec<catalog::Row> {
    rows.into_iter()
        .map(|(k, v, name, owner)| {
            (
                k,
                v.split_whitespace().collect::<Vec<_>>().join(" "),
                name,
                owner,
            )
        })
        .collect()
}

/// Reads the whole schema.
pub async fn full(
    catalog: &mut catalog::Catalog,
    conn: &mut SqliteConnection,
) -> Result<Snapshot, sqlx::Error> {
    let rows: Rows = sqlx::query_as(AssertSqlSafe(FULL.as_str()))
        .fetch_all(&mut *conn)
        .await?;
    Ok(catalog.full(normalized(rows)))
}

/// Reads again only what a script with `scope` can have changed ([`catalog::Catalog::reach`]);
/// everything else is as the last snapshot read it. The names are numbered parameters (`?1`,
/// …), bound once and used by every filter ([`catalog::Reach::padded`]).
pub async fn scoped(
    catalog: &mut catalog::Catalog,
    conn: &mut SqliteConnection,
    scope: &super::scope::Scope,
) -> Result<Snapshot, sqlx::Error> {
    let Some(reach) = catalog.reach(scope, &RULES) else {
        return Ok(catalog.current());
    };
    let names = reach.padded();
    let marks: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
    let marks = marks.join(", ");
    let sql = statement(|col| format!("{col} COLLATE NOCASE IN ({marks})"));
    let mut query = sqlx::query_as(AssertSqlSafe(sql));
    for name in names {
        query = query.bind(name);
    }
    let rows: Rows = query.fetch_all(&mut *conn).await?;
    Ok(catalog.scoped(&reach, &RULES, normalized(rows)))
}
