//! `ferry_migrations`, written once for every engine: create, read, insert, update, delete, and
//! the atomic apply/revert (script and history change in one transaction). What differs between
//! engines is a small table, [`Dialect`]: the DDL, the placeholder style, how to ask whether a
//! table exists, and how to spell a cast to text. The functions are generic over sqlx's
//! `Database`; [`Conn`] and [`Tx`] say which engine a driver's connection is, and `on_engine!`
//! picks the instance.
//!
//! Other crates read the schema version through [`current_version`] instead of their own query.

use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use sqlx::{
    AssertSqlSafe, Database, Decode, Encode, Executor, IntoArguments, MySql, MySqlConnection,
    PgConnection, Postgres, Row, Sqlite, SqliteConnection, Transaction, Type,
};

use super::HistoryRecord;

/// The history table's name, the same on every engine.
pub const HISTORY_TABLE: &str = "ferry_migrations";

/// `ferry_migrations` columns in the order every query selects and inserts them.
const COLUMNS: &str = "version, name, checksum, down_sql, down_transaction, applied_at, execution_ms, success, applied_by";

/// A connection of one of the three engines, outside any transaction.
pub enum Conn<'a> {
    Postgres(&'a mut PgConnection),
    MySql(&'a mut MySqlConnection),
    Sqlite(&'a mut SqliteConnection),
}

impl<'a> From<&'a mut PgConnection> for Conn<'a> {
    fn from(c: &'a mut PgConnection) -> Self {
        Conn::Postgres(c)
    }
}
impl<'a> From<&'a mut MySqlConnection> for Conn<'a> {
    fn from(c: &'a mut MySqlConnection) -> Self {
        Conn::MySql(c)
    }
}
impl<'a> From<&'a mut SqliteConnection> for Conn<'a> {
    fn from(c: &'a mut SqliteConnection) -> Self {
        Conn::Sqlite(c)
    }
}

/// A write transaction a driver opened (see `Driver::begin`), in which a script and its history
/// change commit together.
pub enum Tx<'a> {
    Postgres(Transaction<'a, Postgres>),
    MySql(Transaction<'a, MySql>),
    Sqlite(Transaction<'a, Sqlite>),
}

/// Runs `$body` with `$c` bound to the engine's connection (or transaction) and `D` to its sqlx
/// `Database`.
macro_rules! on_engine {
    ($kind:ident, $value:expr, $c:ident => $body:expr) => {
        match $value {
            $kind::Postgres($c) => {
                #[allow(dead_code)]
                type D = sqlx::Postgres;
                $body
            }
            $kind::MySql($c) => {
                #[allow(dead_code)]
                type D = sqlx::MySql;
                $body
            }
            $kind::Sqlite($c) => {
                #[allow(dead_code)]
                type D = sqlx::Sqlite;
                $body
            }
        }
    };
}
pub(crate) use on_engine;

/// What differs between engines in the history's SQL.
pub trait Dialect: Database {
    /// Creates the history table if it does not exist.
    const CREATE: &'static str;
    /// One parameter (a table name); one BIGINT column, non-zero when the table exists.
    const TABLE_EXISTS: &'static str;
    /// The type a cast to text names.
    const TEXT: &'static str;
    /// The `n`th (1-based) bind parameter.
    fn param(n: usize) -> String;
}

impl Dialect for Postgres {
    const CREATE: &'static str = "CREATE TABLE IF NOT EXISTS ferry_migrations (
        version BIGINT PRIMARY KEY,
        name TEXT NOT NULL,
        checksum TEXT NOT NULL,
        down_sql TEXT,
        down_transaction BOOLEAN NOT NULL DEFAULT TRUE,
        applied_at TIMESTAMPTZ NOT NULL,
        execution_ms BIGINT NOT NULL,
        success BOOLEAN NOT NULL,
        applied_by TEXT NOT NULL
    )";
    const TABLE_EXISTS: &'static str =
        "SELECT CAST(CASE WHEN to_regclass($1) IS NULL THEN 0 ELSE 1 END AS BIGINT)";
    const TEXT: &'static str = "TEXT";
    fn param(n: usize) -> String {
        format!("${n}")
    }
}

impl Dialect for MySql {
    const CREATE: &'static str = "CREATE TABLE IF NOT EXISTS ferry_migrations (
        version BIGINT NOT NULL PRIMARY KEY,
        name VARCHAR(255) NOT NULL,
        checksum CHAR(64) NOT NULL,
        down_sql LONGTEXT NULL,
        down_transaction BOOLEAN NOT NULL DEFAULT TRUE,
        applied_at DATETIME(6) NOT NULL,
        execution_ms BIGINT NOT NULL,
        success BOOLEAN NOT NULL,
        applied_by VARCHAR(255) NOT NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";
    const TABLE_EXISTS: &'static str = "SELECT COUNT(*) FROM information_schema.tables \
        WHERE table_schema = DATABASE() AND table_name = ?";
    const TEXT: &'static str = "CHAR";
    fn param(_: usize) -> String {
        "?".into()
    }
}

impl Dialect for Sqlite {
    const CREATE: &'static str = "CREATE TABLE IF NOT EXISTS ferry_migrations (
        version INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        checksum TEXT NOT NULL,
        down_sql TEXT,
        down_transaction BOOLEAN NOT NULL DEFAULT TRUE,
        applied_at TEXT NOT NULL,
        execution_ms INTEGER NOT NULL,
        success BOOLEAN NOT NULL,
        applied_by TEXT NOT NULL
    )";
    const TABLE_EXISTS: &'static str =
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?";
    const TEXT: &'static str = "TEXT";
    fn param(_: usize) -> String {
        "?".into()
    }
}

/// `n` placeholders, comma-separated.
fn params<DB: Dialect>(n: usize) -> String {
    (1..=n).map(DB::param).collect::<Vec<_>>().join(", ")
}

/// The history's queries for one engine. The bounds, stated once here, are what every engine
/// satisfies; nothing outside this module names them.
pub(crate) struct Sql<DB>(PhantomData<DB>);

type SqlResult<T> = std::result::Result<T, sqlx::Error>;

impl<DB> Sql<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    bool: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    String: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    Option<String>: for<'q> Encode<'q, DB>,
    DateTime<Utc>: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
{
    pub(crate) async fn create(conn: &mut DB::Connection) -> SqlResult<()> {
        sqlx::raw_sql(DB::CREATE).execute(conn).await.map(drop)
    }

    pub(crate) async fn table_exists(conn: &mut DB::Connection, table: &str) -> SqlResult<bool> {
        let row = sqlx::query::<DB>(DB::TABLE_EXISTS)
            .bind(table.to_string())
            .fetch_one(conn)
            .await?;
        Ok(row.try_get::<i64, _>(0usize)? != 0)
    }

    /// Every row, by version; empty when the table does not exist.
    pub(crate) async fn read(conn: &mut DB::Connection) -> SqlResult<Vec<HistoryRecord>> {
        if !Self::table_exists(&mut *conn, HISTORY_TABLE).await? {
            return Ok(Vec::new());
        }
        let rows = sqlx::query::<DB>(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM {HISTORY_TABLE} ORDER BY version"
        )))
        .fetch_all(conn)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(HistoryRecord {
                    version: row.try_get(0usize)?,
                    name: row.try_get(1usize)?,
                    checksum: row.try_get(2usize)?,
                    down_sql: row.try_get(3usize)?,
                    down_transaction: row.try_get(4usize)?,
                    applied_at: row.try_get(5usize)?,
                    execution_ms: row.try_get(6usize)?,
                    success: row.try_get(7usize)?,
                    applied_by: row.try_get(8usize)?,
                })
            })
            .collect()
    }

    /// The highest successfully applied version; `None` when nothing is, or without the table.
    pub(crate) async fn current_version(conn: &mut DB::Connection) -> SqlResult<Option<i64>> {
        if !Self::table_exists(&mut *conn, HISTORY_TABLE).await? {
            return Ok(None);
        }
        let row = sqlx::query::<DB>(AssertSqlSafe(format!(
            "SELECT MAX(version) FROM {HISTORY_TABLE} WHERE success"
        )))
        .fetch_one(conn)
        .await?;
        row.try_get::<Option<i64>, _>(0usize)
    }

    async fn exists(conn: &mut DB::Connection, version: i64) -> SqlResult<bool> {
        let row = sqlx::query::<DB>(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {HISTORY_TABLE} WHERE version = {}",
            DB::param(1)
        )))
        .bind(version)
        .fetch_one(conn)
        .await?;
        Ok(row.try_get::<i64, _>(0usize)? > 0)
    }

    pub(crate) async fn insert(conn: &mut DB::Connection, r: &HistoryRecord) -> SqlResult<()> {
        sqlx::query::<DB>(AssertSqlSafe(format!(
            "INSERT INTO {HISTORY_TABLE} ({COLUMNS}) VALUES ({})",
            params::<DB>(9)
        )))
        .bind(r.version)
        .bind(r.name.clone())
        .bind(r.checksum.clone())
        .bind(r.down_sql.clone())
        .bind(r.down_transaction)
        .bind(r.applied_at)
        .bind(r.execution_ms)
        .bind(r.success)
        .bind(r.applied_by.clone())
        .execute(conn)
        .await
        .map(drop)
    }

    pub(crate) async fn delete(conn: &mut DB::Connection, version: i64) -> SqlResult<()> {
        sqlx::query::<DB>(AssertSqlSafe(format!(
            "DELETE FROM {HISTORY_TABLE} WHERE version = {}",
            DB::param(1)
        )))
        .bind(version)
        .execute(conn)
        .await
        .map(drop)
    }

    pub(crate) async fn set_success(
        conn: &mut DB::Connection,
        version: i64,
        success: bool,
        execution_ms: i64,
    ) -> SqlResult<()> {
        sqlx::query::<DB>(AssertSqlSafe(format!(
            "UPDATE {HISTORY_TABLE} SET success = {}, execution_ms = {} WHERE version = {}",
            DB::param(1),
            DB::param(2),
            DB::param(3)
        )))
        .bind(success)
        .bind(execution_ms)
        .bind(version)
        .execute(conn)
        .await
        .map(drop)
    }

    /// Records a migration's current file contents (after a human fixed a drift).
    pub(crate) async fn update(conn: &mut DB::Connection, r: &HistoryRecord) -> SqlResult<()> {
        sqlx::query::<DB>(AssertSqlSafe(format!(
            "UPDATE {HISTORY_TABLE} SET name = {}, checksum = {}, down_sql = {}, down_transaction = {} \
             WHERE version = {}",
            DB::param(1),
            DB::param(2),
            DB::param(3),
            DB::param(4),
            DB::param(5)
        )))
        .bind(r.name.clone())
        .bind(r.checksum.clone())
        .bind(r.down_sql.clone())
        .bind(r.down_transaction)
        .bind(r.version)
        .execute(conn)
        .await
        .map(drop)
    }

    /// Runs a query whose columns are all cast to text (other tools' history tables).
    pub(crate) async fn text_rows(
        conn: &mut DB::Connection,
        sql: &str,
    ) -> SqlResult<Vec<Vec<Option<String>>>> {
        let rows = sqlx::query::<DB>(AssertSqlSafe(sql.to_string()))
            .fetch_all(conn)
            .await?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.try_get::<Option<String>, _>(i))
                    .collect()
            })
            .collect()
    }

    /// Runs a script (several statements) outside a transaction; on failure, says how many of
    /// its statements had completed (zero: the script changed nothing).
    pub(crate) async fn run_counted(
        conn: &mut DB::Connection,
        script: &str,
    ) -> std::result::Result<(), super::ScriptError> {
        use futures_util::TryStreamExt;
        let mut results = sqlx::raw_sql(AssertSqlSafe(script.to_string())).execute_many(conn);
        let mut completed = 0;
        loop {
            match results.try_next().await {
                Ok(Some(_)) => completed += 1,
                Ok(None) => return Ok(()),
                Err(source) => return Err(super::ScriptError { source, completed }),
            }
        }
    }

    /// In `tx`: unless `record`'s version is already there (another run got there first, and
    /// `Ok(false)` changes nothing), runs `script` and inserts `record` (with its execution time),
    /// then commits. A failing script is `Err(Script(..))`, and the transaction rolls back.
    pub(crate) async fn apply(
        mut tx: Transaction<'_, DB>,
        script: &str,
        record: &HistoryRecord,
    ) -> std::result::Result<bool, AtomicError> {
        if Self::exists(&mut *tx, record.version)
            .await
            .map_err(around("reading ferry_migrations"))?
        {
            return Ok(false);
        }
        let started = std::time::Instant::now();
        sqlx::raw_sql(AssertSqlSafe(script.to_string()))
            .execute(&mut *tx)
            .await
            .map_err(AtomicError::Script)?;
        let record = HistoryRecord {
            execution_ms: started.elapsed().as_millis() as i64,
            ..record.clone()
        };
        Self::insert(&mut *tx, &record)
            .await
            .map_err(around("recording the migration"))?;
        tx.commit()
            .await
            .map_err(around("committing the migration"))?;
        Ok(true)
    }

    /// In `tx`: unless the row of `version` is gone already (`Ok(false)`), runs `script` and
    /// deletes that row, then commits.
    pub(crate) async fn revert(
        mut tx: Transaction<'_, DB>,
        script: &str,
        version: i64,
    ) -> std::result::Result<bool, AtomicError> {
        if !Self::exists(&mut *tx, version)
            .await
            .map_err(around("reading ferry_migrations"))?
        {
            return Ok(false);
        }
        sqlx::raw_sql(AssertSqlSafe(script.to_string()))
            .execute(&mut *tx)
            .await
            .map_err(AtomicError::Script)?;
        Self::delete(&mut *tx, version)
            .await
            .map_err(around("recording the revert"))?;
        tx.commit().await.map_err(around("committing the revert"))?;
        Ok(true)
    }
}

/// How an atomic apply or revert failed: in the script (rolled back) or around it.
#[derive(Debug)]
pub(crate) enum AtomicError {
    Script(sqlx::Error),
    History(&'static str, sqlx::Error),
}

/// Maps a history error inside an atomic apply or revert, saying what ferry was doing.
fn around(context: &'static str) -> impl FnOnce(sqlx::Error) -> AtomicError {
    move |e| AtomicError::History(context, e)
}

/// How `D` spells a cast of `expr` to text.
pub(crate) fn cast_text<D: Dialect>(expr: &str) -> String {
    format!("CAST({expr} AS {})", D::TEXT)
}

/// The highest successfully applied version in `ferry_migrations` on `conn` (inside whatever
/// transaction it has open), `None` when nothing is applied or the table does not exist. What a
/// backup records as its schema version, and what `ferry compat check` takes as its base.
pub async fn current_version<'a>(conn: impl Into<Conn<'a>>) -> SqlResult<Option<i64>> {
    on_engine!(Conn, conn.into(), c => Sql::<D>::current_version(c).await)
}
