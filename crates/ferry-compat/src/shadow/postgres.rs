//! PostgreSQL's catalog as a snapshot, and temporary shadow databases on a server. The only
//! SQL of ferry-compat lives in this module and its siblings.

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::Snapshot;

/// Each query returns (key, value) rows describing one kind of object in the current schema.
const QUERIES: &[&str] = &[
    "SELECT 'table ' || c.relname, '' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND c.relname <> 'ferry_migrations'",
    "SELECT 'column ' || c.relname || '.' || a.attname,
            format_type(a.atttypid, a.atttypmod) || '|' || CASE WHEN a.attnotnull THEN 'NOT NULL' ELSE '' END
            || '|' || COALESCE(pg_get_expr(d.adbin, d.adrelid), '')
     FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm') AND a.attnum > 0
       AND NOT a.attisdropped AND c.relname <> 'ferry_migrations'",
    "SELECT 'index ' || indexname, indexdef FROM pg_indexes
     WHERE schemaname = current_schema() AND tablename <> 'ferry_migrations'",
    "SELECT 'constraint ' || rel.relname || '.' || con.conname, pg_get_constraintdef(con.oid)
     FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid JOIN pg_namespace n ON n.oid = con.connamespace
     WHERE n.nspname = current_schema() AND rel.relname <> 'ferry_migrations'",
    "SELECT 'view ' || viewname, definition FROM pg_views WHERE schemaname = current_schema()",
    "SELECT 'view ' || matviewname, definition FROM pg_matviews WHERE schemaname = current_schema()",
    "SELECT 'function ' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', pg_get_functiondef(p.oid)
     FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = current_schema() AND p.prokind IN ('f', 'p')",
    "SELECT 'trigger ' || c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid)
     FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = current_schema() AND NOT t.tgisinternal",
    "SELECT 'enum ' || t.typname, string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
     FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid JOIN pg_namespace n ON n.oid = t.typnamespace
     WHERE n.nspname = current_schema() GROUP BY t.typname",
    "SELECT 'sequence ' || sequencename, data_type::text || ' increment ' || increment_by
     FROM pg_sequences WHERE schemaname = current_schema()",
];

/// The connection snapshots and old queries use, kept open for the whole shadow run.
pub async fn connect(url: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnection::connect(url).await
}

pub async fn snapshot(conn: &mut PgConnection) -> Result<Snapshot, sqlx::Error> {
    let mut snap = Snapshot::default();
    for q in QUERIES {
        let rows: Vec<(String, String)> = sqlx::query_as(*q).fetch_all(&mut *conn).await?;
        snap.0.extend(rows);
    }
    Ok(snap)
}

pub async fn create_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect(admin_url).await?;
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    conn.close().await
}

pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect(admin_url).await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    conn.close().await
}
