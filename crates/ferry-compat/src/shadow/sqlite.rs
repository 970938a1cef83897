//! SQLite's catalog as a snapshot. Table text is not compared (a rebuilt table is written
//! differently but may be the same table); its columns and foreign keys are.

use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, Connection, SqliteConnection};

use super::Snapshot;

const QUERIES: &[&str] = &[
    "SELECT 'table ' || name, '' FROM sqlite_master
     WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> '{history}'",
    "SELECT type || ' ' || name, COALESCE(sql, '') FROM sqlite_master
     WHERE type IN ('index', 'view', 'trigger') AND name NOT LIKE 'sqlite_%' AND tbl_name <> '{history}'",
    "SELECT 'column ' || m.name || '.' || p.name,
            p.type || '|' || CASE WHEN p.\"notnull\" THEN 'NOT NULL' ELSE '' END || '|' || COALESCE(p.dflt_value, '')
     FROM sqlite_master m JOIN pragma_table_info(m.name) p
     WHERE m.type IN ('table', 'view') AND m.name NOT LIKE 'sqlite_%' AND m.name <> '{history}'",
    "SELECT 'constraint ' || m.name || '.fk_' || f.\"from\", 'REFERENCES ' || f.\"table\" || '(' || COALESCE(f.\"to\", '') || ')'
     FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) f
     WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
];

/// [`QUERIES`] as one statement: one round trip per snapshot, prepared once per connection.
/// `{history}` is ferry's own history table, which is not part of the schema compared.
static SNAPSHOT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    QUERIES
        .join("\nUNION ALL\n")
        .replace("{history}", ferry_migrate::HISTORY_TABLE)
});

/// The connection snapshots and old queries use, kept open for the whole shadow run.
pub async fn connect(url: &str) -> Result<SqliteConnection, sqlx::Error> {
    SqliteConnection::connect_with(&SqliteConnectOptions::from_str(url)?).await
}

pub async fn snapshot(conn: &mut SqliteConnection) -> Result<Snapshot, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(SNAPSHOT.as_str()))
        .fetch_all(&mut *conn)
        .await?;
    // Whitespace in stored DDL text is not a difference.
    Ok(Snapshot(
        rows.into_iter()
            .map(|(k, v)| (k, v.split_whitespace().collect::<Vec<_>>().join(" ")))
            .collect(),
    ))
}
