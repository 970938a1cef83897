//! MySQL/MariaDB's `information_schema` as a snapshot, and temporary shadow databases. Every
//! value is cast to CHAR: information_schema columns are BLOB-typed on some versions.

use sqlx::{AssertSqlSafe, Connection, MySqlConnection};

use super::Snapshot;

const QUERIES: &[&str] = &[
    "SELECT CAST(CONCAT('table ', TABLE_NAME) AS CHAR), CAST('' AS CHAR) FROM information_schema.TABLES
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' AND TABLE_NAME <> '{history}'",
    "SELECT CAST(CONCAT('sequence ', TABLE_NAME) AS CHAR), CAST('' AS CHAR) FROM information_schema.TABLES
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'SEQUENCE'",
    // MariaDB writes a nullable column without a default as the string NULL.
    "SELECT CAST(CONCAT('column ', TABLE_NAME, '.', COLUMN_NAME) AS CHAR),
            CAST(CONCAT(COLUMN_TYPE, '|', IF(IS_NULLABLE = 'NO', 'NOT NULL', ''), '|',
                 IF(COLUMN_DEFAULT IS NULL OR COLUMN_DEFAULT = 'NULL', '', COLUMN_DEFAULT)) AS CHAR)
     FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> '{history}'",
    "SELECT CAST(CONCAT('index ', TABLE_NAME, '.', INDEX_NAME) AS CHAR),
            CAST(CONCAT(IF(MAX(NON_UNIQUE) = 0, 'UNIQUE ', ''), GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX)) AS CHAR)
     FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> '{history}'
     GROUP BY TABLE_NAME, INDEX_NAME",
    "SELECT CAST(CONCAT('constraint ', TABLE_NAME, '.', CONSTRAINT_NAME) AS CHAR), CAST(CONSTRAINT_TYPE AS CHAR)
     FROM information_schema.TABLE_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME <> '{history}'",
    "SELECT CAST(CONCAT('foreign key ', TABLE_NAME, '.', CONSTRAINT_NAME) AS CHAR),
            CAST(CONCAT(REFERENCED_TABLE_NAME, ' ON UPDATE ', UPDATE_RULE, ' ON DELETE ', DELETE_RULE) AS CHAR)
     FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE()",
    "SELECT CAST(CONCAT('check ', CONSTRAINT_NAME) AS CHAR), CAST(CHECK_CLAUSE AS CHAR)
     FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE()",
    "SELECT CAST(CONCAT('view ', TABLE_NAME) AS CHAR), CAST(VIEW_DEFINITION AS CHAR)
     FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE()",
    "SELECT CAST(CONCAT('function ', ROUTINE_NAME) AS CHAR),
            CAST(CONCAT(ROUTINE_TYPE, ' ', COALESCE(DTD_IDENTIFIER, ''), ' ', COALESCE(ROUTINE_DEFINITION, '')) AS CHAR)
     FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()",
    "SELECT CAST(CONCAT('trigger ', EVENT_OBJECT_TABLE, '.', TRIGGER_NAME) AS CHAR),
            CAST(CONCAT(ACTION_TIMING, ' ', EVENT_MANIPULATION, ' ', ACTION_STATEMENT) AS CHAR)
     FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()",
];

/// [`QUERIES`] as one statement: one round trip per snapshot, prepared once per connection.
/// `{history}` is ferry's own history table, which is not part of the schema compared.
static SNAPSHOT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    QUERIES
        .join("\nUNION ALL\n")
        .replace("{history}", ferry_migrate::HISTORY_TABLE)
});

/// The connection snapshots and old queries use, kept open for the whole shadow run.
pub async fn connect(url: &str) -> Result<MySqlConnection, sqlx::Error> {
    MySqlConnection::connect(url).await
}

pub async fn snapshot(conn: &mut MySqlConnection) -> Result<Snapshot, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(SNAPSHOT.as_str()))
        .fetch_all(&mut *conn)
        .await?;
    Ok(Snapshot(rows.into_iter().collect()))
}
