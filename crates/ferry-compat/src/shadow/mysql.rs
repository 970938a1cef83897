//! MySQL/MariaDB's `information_schema` as a snapshot, and temporary shadow databases. Every
//! value is cast to CHAR: information_schema columns are BLOB-typed on some versions.

use sqlx::{AssertSqlSafe, Connection, MySqlConnection};

use super::{Snapshot, catalog};

/// Each query returns (key, value, name, owner) rows; name and owner are the relation the
/// object belongs to (a table or view), empty for a routine or a check constraint. `{in:COL}`
/// filters a scoped snapshot to the relations it reads again (`TRUE` in a full one); check
/// constraints are always read whole (MySQL 8's `CHECK_CONSTRAINTS` names no table, and MariaDB
/// names checks per table, so a name alone would not say whose), routines never by a scoped one
/// (no scoped script changes them).
const QUERIES: &[&str] = &[
    "SELECT CAST(CONCAT('table ', TABLE_NAME) AS CHAR), CAST('' AS CHAR), CAST(TABLE_NAME AS CHAR), CAST(TABLE_NAME AS CHAR)
     FROM information_schema.TABLES
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' AND TABLE_NAME <> '{history}' AND {in:TABLE_NAME}",
    "SELECT CAST(CONCAT('sequence ', TABLE_NAME) AS CHAR), CAST('' AS CHAR), CAST(TABLE_NAME AS CHAR), CAST(TABLE_NAME AS CHAR)
     FROM information_schema.TABLES
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'SEQUENCE' AND {in:TABLE_NAME}",
    // MariaDB writes a nullable column without a default as the string NULL.
    "SELECT CAST(CONCAT('column ', TABLE_NAME, '.', COLUMN_NAME) AS CHAR),
            CAST(CONCAT(COLUMN_TYPE, '|', IF(IS_NULLABLE = 'NO', 'NOT NULL', ''), '|',
                 IF(COLUMN_DEFAULT IS NULL OR COLUMN_DEFAULT = 'NULL', '', COLUMN_DEFAULT)) AS CHAR),
            CAST(TABLE_NAME AS CHAR), CAST(TABLE_NAME AS CHAR)
     FROM information_schema.COLUMNS
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> '{history}' AND {in:TABLE_NAME}",
    "SELECT CAST(CONCAT('index ', TABLE_NAME, '.', INDEX_NAME) AS CHAR),
            CAST(CONCAT(IF(MAX(NON_UNIQUE) = 0, 'UNIQUE ', ''), GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX)) AS CHAR),
            CAST(TABLE_NAME AS CHAR), CAST(TABLE_NAME AS CHAR)
     FROM information_schema.STATISTICS
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> '{history}' AND {in:TABLE_NAME}
     GROUP BY TABLE_NAME, INDEX_NAME",
    "SELECT CAST(CONCAT('constraint ', TABLE_NAME, '.', CONSTRAINT_NAME) AS CHAR), CAST(CONSTRAINT_TYPE AS CHAR),
            CAST(TABLE_NAME AS CHAR), CAST(TABLE_NAME AS CHAR)
     FROM information_schema.TABLE_CONSTRAINTS
     WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME <> '{history}' AND {in:TABLE_NAME}",
    "SELECT CAST(CONCAT('foreign key ', TABLE_NAME, '.', CONSTRAINT_NAME) AS CHAR),
            CAST(CONCAT(REFERENCED_TABLE_NAME, ' ON UPDATE ', UPDATE_RULE, ' ON DELETE ', DELETE_RULE) AS CHAR),
            CAST(TABLE_NAME AS CHAR), CAST(TABLE_NAME AS CHAR)
     FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE() AND {in:TABLE_NAME}",
    "SELECT CAST(CONCAT('check ', CONSTRAINT_NAME) AS CHAR), CAST(CHECK_CLAUSE AS CHAR), CAST('' AS CHAR), CAST('' AS CHAR)
     FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE()",
    "SELECT CAST(CONCAT('view ', TABLE_NAME) AS CHAR), CAST(VIEW_DEFINITION AS CHAR),
            CAST(TABLE_NAME AS CHAR), CAST(TABLE_NAME AS CHAR)
     FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE() AND {in:TABLE_NAME}",
    "SELECT CAST(CONCAT('function ', ROUTINE_NAME) AS CHAR),
            CAST(CONCAT(ROUTINE_TYPE, ' ', COALESCE(DTD_IDENTIFIER, ''), ' ', COALESCE(ROUTINE_DEFINITION, '')) AS CHAR),
            CAST('' AS CHAR), CAST('' AS CHAR)
     FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE() AND {none}",
    // A trigger belongs to its table (and moves with it when the table is renamed).
    "SELECT CAST(CONCAT('trigger ', EVENT_OBJECT_TABLE, '.', TRIGGER_NAME) AS CHAR),
            CAST(CONCAT(ACTION_TIMING, ' ', EVENT_MANIPULATION, ' ', ACTION_STATEMENT) AS CHAR),
            CAST(EVENT_OBJECT_TABLE AS CHAR), CAST(EVENT_OBJECT_TABLE AS CHAR)
     FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() AND {in:EVENT_OBJECT_TABLE}",
];

/// The referenced table of a `foreign key` row's value.
fn referenced(value: &str) -> Option<&str> {
    value.rsplit_once(" ON UPDATE ").map(|(t, _)| t)
}

/// What a MySQL/MariaDB snapshot key drags along ([`catalog`]): a rename updates the foreign
/// keys of other tables that reference the table; the text of a view or trigger is kept as it
/// was written (a view that names a renamed table is broken, which its columns show).
const RULES: catalog::Rules = catalog::Rules {
    view: "view ",
    trigger: None,
    foreign_key: ("foreign key ", referenced),
    always: &["check "],
};

/// [`QUERIES`] as one statement: one round trip per snapshot, prepared once per connection.
/// `{history}` is ferry's own history table, which is not part of the schema compared.
static FULL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let mut sql = QUERIES
        .join("\nUNION ALL\n")
        .replace("{history}", ferry_migrate::HISTORY_TABLE)
        .replace("{none}", "TRUE");
    fill(&mut sql, |_| "TRUE".into());
    sql
});

/// Replaces each `{in:COL}` with `f(COL)`; returns how many there were.
fn fill(sql: &mut String, f: impl Fn(&str) -> String) -> usize {
    let mut n = 0;
    while let Some(at) = sql.find("{in:") {
        let end = at + sql[at..].find('}').expect("closing brace");
        let col = sql[at + 4..end].to_string();
        sql.replace_range(at..=end, &f(&col));
        n += 1;
    }
    n
}

/// The statement of a scoped snapshot reading `n` names ([`catalog::Reach::padded`]), and how
/// many times the names are bound.
fn scoped_sql(n: usize) -> (String, usize) {
    let marks = vec!["?"; n].join(", ");
    let mut sql = QUERIES
        .join("\nUNION ALL\n")
        .replace("{history}", ferry_migrate::HISTORY_TABLE)
        .replace("{none}", "FALSE");
    let times = fill(&mut sql, |col| format!("{col} IN ({marks})"));
    (sql, times)
}

/// The connection snapshots and old queries use, kept open for the whole shadow run.
pub async fn connect(url: &str) -> Result<MySqlConnection, sqlx::Error> {
    MySqlConnection::connect(url).await
}

/// Reads the whole schema.
pub async fn full(
    catalog: &mut catalog::Catalog,
    conn: &mut MySqlConnection,
) -> Result<Snapshot, sqlx::Error> {
    let rows: Vec<catalog::Row> = sqlx::query_as(AssertSqlSafe(FULL.as_str()))
        .fetch_all(&mut *conn)
        .await?;
    Ok(catalog.full(rows))
}

/// Reads again only what a script with `scope` can have changed ([`catalog::Catalog::reach`]);
/// everything else is as the last snapshot read it.
pub async fn scoped(
    catalog: &mut catalog::Catalog,
    conn: &mut MySqlConnection,
    scope: &super::scope::Scope,
) -> Result<Snapshot, sqlx::Error> {
    let Some(reach) = catalog.reach(scope, &RULES) else {
        return Ok(catalog.current());
    };
    let names = reach.padded();
    let (sql, times) = scoped_sql(names.len());
    let mut query = sqlx::query_as(AssertSqlSafe(sql));
    for _ in 0..times {
        for name in &names {
            query = query.bind(*name);
        }
    }
    let rows: Vec<catalog::Row> = query.fetch_all(&mut *conn).await?;
    Ok(catalog.scoped(&reach, &RULES, rows))
}
