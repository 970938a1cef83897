//! The inspector's connections to a shadow database: catalog snapshots (through the per-engine
//! modules) and preparing, never executing, the previous version's queries, with the time spent
//! in each.

use ferry_core::{DatabaseUrl, Engine};

use super::database::Shadow;

use super::database::shadow_err;
use super::diff::differences;
use super::{Snapshot, catalog, mysql, postgres, probe, scope, sqlite};
use crate::CompatError;
use crate::queries::OldQuery;

/// A connection to the shadow database for catalog snapshots and for preparing old queries,
/// with the time spent in each (reported as a `tracing` event: where a slow check goes).
pub(super) struct Inspector {
    conn: Conn,
    queries: Option<Conn>,
    /// The schema as last read, for snapshots scoped to what a migration changed.
    catalog: Catalog,
    snapshots: (u32, std::time::Duration),
    prepares: (u32, std::time::Duration),
}

/// The schema as last read, per engine: PostgreSQL's with its oids' owners, MySQL's and
/// SQLite's in [`catalog`].
#[derive(Default)]
pub(super) struct Catalog {
    pg: postgres::Catalog,
    other: catalog::Catalog,
}

pub(super) enum Conn {
    Pg(sqlx::PgConnection),
    MySql(sqlx::MySqlConnection),
    Sqlite(sqlx::SqliteConnection),
}

/// The outcome of preparing one old query: its result columns, or the database's error.
pub(super) type Prepared = Result<Vec<String>, String>;

impl Inspector {
    /// The connections that read the catalog and prepare old queries for the whole run (a
    /// connection per snapshot cost more than the snapshot itself). Two on a server, so that
    /// clearing the old queries' statements never evicts the snapshot's own prepared statements;
    /// one for SQLite, whose connection would prepare against the schema it last read (it reads
    /// it again when it runs a statement, as each snapshot does).
    pub(super) async fn open(
        shadow: &Shadow,
        with_queries: bool,
    ) -> Result<Inspector, CompatError> {
        let (conn, queries) = match with_queries && shadow.engine != Engine::Sqlite {
            true => {
                let (conn, queries) =
                    futures_util::future::join(connect(shadow), connect(shadow)).await;
                (conn?, Some(queries?))
            }
            false => (connect(shadow).await?, None),
        };
        Ok(Inspector {
            conn,
            queries,
            catalog: Default::default(),
            snapshots: Default::default(),
            prepares: Default::default(),
        })
    }

    /// The whole schema, or with `scope` only the relations a migration can have changed read
    /// again ([`scope::relations`]).
    pub(super) async fn snapshot(
        &mut self,
        url: &DatabaseUrl,
        scope: Option<&scope::Scope>,
    ) -> Result<Snapshot, CompatError> {
        read(
            &mut self.conn,
            &mut self.catalog,
            &mut self.snapshots,
            url,
            scope,
        )
        .await
    }

    /// The whole schema and the outcome of preparing `queries` on it: at once on a server,
    /// where they have a connection each.
    pub(super) async fn snapshot_and_prepare(
        &mut self,
        url: &DatabaseUrl,
        queries: &[&OldQuery],
    ) -> Result<(Snapshot, Vec<Prepared>), CompatError> {
        match &mut self.queries {
            Some(q) => {
                let (snap, prepared) = futures_util::future::join(
                    read(
                        &mut self.conn,
                        &mut self.catalog,
                        &mut self.snapshots,
                        url,
                        None,
                    ),
                    prepare_on(q, &mut self.prepares, queries, url),
                )
                .await;
                Ok((snap?, prepared?))
            }
            None => {
                let snap = self.snapshot(url, None).await?;
                Ok((snap, self.prepare(queries, url).await?))
            }
        }
    }

    /// Lets PostgreSQL judge the tables of `base` that are views in `after` ([`probe`]).
    pub(super) async fn judge_views(
        &mut self,
        url: &DatabaseUrl,
        base: &Snapshot,
        after: &Snapshot,
        found: &mut Vec<crate::Finding>,
    ) -> Result<(), CompatError> {
        match &mut self.conn {
            Conn::Pg(c) => probe::judge(c, base, after, found)
                .await
                .map_err(shadow_err("cannot probe the shadow database", url)),
            _ => Ok(()),
        }
    }

    /// Gets the snapshot statements ready ([`postgres::Catalog::warm`]).
    pub(super) async fn warm(&mut self) {
        if let Conn::Pg(c) = &mut self.conn {
            postgres::Catalog::warm(c).await;
        }
    }

    /// Prepares (never executes) each query against the current schema.
    pub(super) async fn prepare(
        &mut self,
        queries: &[&OldQuery],
        url: &DatabaseUrl,
    ) -> Result<Vec<Prepared>, CompatError> {
        let conn = self.queries.as_mut().unwrap_or(&mut self.conn);
        prepare_on(conn, &mut self.prepares, queries, url).await
    }

    pub(super) async fn close(self) {
        tracing::debug!(
            snapshots = self.snapshots.0,
            snapshot_ms = self.snapshots.1.as_millis() as u64,
            prepares = self.prepares.0,
            prepare_ms = self.prepares.1.as_millis() as u64,
            "compat: shadow inspection"
        );
        for conn in std::iter::once(self.conn).chain(self.queries) {
            let r = match conn {
                Conn::Pg(c) => sqlx::Connection::close(c).await,
                Conn::MySql(c) => sqlx::Connection::close(c).await,
                Conn::Sqlite(c) => sqlx::Connection::close(c).await,
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "compat: closing an inspection connection");
            }
        }
    }
}

/// One connection to the shadow database.
async fn connect(shadow: &Shadow) -> Result<Conn, CompatError> {
    let url = shadow.url.for_driver();
    let r = match shadow.engine {
        Engine::Postgres => postgres::connect(&url).await.map(Conn::Pg),
        Engine::MySql => mysql::connect(&url).await.map(Conn::MySql),
        Engine::Sqlite => sqlite::connect(&url).await.map(Conn::Sqlite),
    };
    r.map_err(shadow_err(
        "cannot connect to the shadow database",
        &shadow.url,
    ))
}

/// Reads the catalog on `conn` ([`Inspector::snapshot`]), counting the time in `stats`. In
/// debug builds (every test) a scoped snapshot is checked against a full one.
async fn read(
    conn: &mut Conn,
    known: &mut Catalog,
    stats: &mut (u32, std::time::Duration),
    url: &DatabaseUrl,
    scope: Option<&scope::Scope>,
) -> Result<Snapshot, CompatError> {
    let start = std::time::Instant::now();
    let other = &mut known.other;
    let r = match (&mut *conn, scope) {
        (Conn::Pg(c), Some(scope)) => known.pg.scoped(c, scope).await,
        (Conn::Pg(c), None) => known.pg.full(c).await,
        (Conn::MySql(c), Some(scope)) => mysql::scoped(other, c, scope).await,
        (Conn::MySql(c), None) => mysql::full(other, c).await,
        (Conn::Sqlite(c), Some(scope)) => sqlite::scoped(other, c, scope).await,
        (Conn::Sqlite(c), None) => sqlite::full(other, c).await,
    };
    stats.0 += 1;
    stats.1 += start.elapsed();
    let snap = r.map_err(shadow_err("cannot read the shadow database's catalog", url))?;
    if cfg!(debug_assertions)
        && let Some(scope) = scope
    {
        let mut fresh = catalog::Catalog::default();
        let full = match conn {
            Conn::Pg(c) => postgres::Catalog::default().full(c).await,
            Conn::MySql(c) => mysql::full(&mut fresh, c).await,
            Conn::Sqlite(c) => sqlite::full(&mut fresh, c).await,
        }
        .map_err(shadow_err("cannot read the shadow database's catalog", url))?;
        let wrong = differences(&full, &snap);
        assert!(
            wrong.is_empty(),
            "a snapshot scoped to {scope:?} differs from the full one: {wrong:#?}"
        );
    }
    Ok(snap)
}

/// Prepares (never executes) each query on `conn`, counting the time in `stats`. A database
/// error is the query's outcome; anything else (I/O, protocol) fails the run.
async fn prepare_on(
    conn: &mut Conn,
    stats: &mut (u32, std::time::Duration),
    queries: &[&OldQuery],
    url: &DatabaseUrl,
) -> Result<Vec<Prepared>, CompatError> {
    if queries.is_empty() {
        // Not even the statement cache is cleared: on SQLite, or without old queries, this is
        // the snapshot's connection.
        return Ok(Vec::new());
    }
    let start = std::time::Instant::now();
    let r = match conn {
        Conn::Pg(c) => prepare_all(c, queries).await,
        Conn::MySql(c) => prepare_all(c, queries).await,
        Conn::Sqlite(c) => prepare_all(c, queries).await,
    };
    stats.0 += queries.len() as u32;
    stats.1 += start.elapsed();
    r.map_err(shadow_err("cannot prepare the old queries", url))
}

/// `Executor::prepare` is PostgreSQL's Parse/Describe (extended protocol), MySQL's
/// COM_STMT_PREPARE, SQLite's `sqlite3_prepare_v3`: the server resolves every table, column,
/// function and type without running anything. sqlx caches prepared statements per SQL text and
/// would answer from the cache after the schema changed, so the cache is cleared (the
/// statements closed on the server) after every round.
async fn prepare_all<C>(conn: &mut C, queries: &[&OldQuery]) -> Result<Vec<Prepared>, sqlx::Error>
where
    C: sqlx::Connection,
    C::Database: sqlx::database::HasStatementCache,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
{
    use sqlx::{Column, Executor, SqlSafeStr, Statement};
    let mut out = Vec::with_capacity(queries.len());
    for q in queries {
        let sql = sqlx::AssertSqlSafe(q.sql.clone()).into_sql_str();
        match (&mut *conn).prepare(sql).await {
            Ok(stmt) => out.push(Ok(stmt
                .columns()
                .iter()
                .map(|c| c.name().to_string())
                .collect())),
            Err(sqlx::Error::Database(e)) => out.push(Err(match e.code() {
                Some(code) => format!("{} (code {code})", e.message()),
                None => e.message().to_string(),
            })),
            Err(e) => return Err(e),
        }
    }
    conn.clear_cached_statements().await?;
    Ok(out)
}
