//! PostgreSQL: transactional DDL, a session-level advisory lock polled until `--lock-timeout`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_core::{DatabaseUrl, Engine};
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use super::{Blocker, BoxFut, Conn, Driver, ScriptError, ScriptFut, Tx, connect_error};
use crate::MigrateError;
use crate::error::{Result, db};

/// One key for every ferry run on a database (advisory locks are per database), mixed with the
/// schema so that two schemas of one database migrate independently.
const LOCK_KEY: &str = "hashtext('ferry_migrations:' || current_schema())";

/// The sessions that block backend `$1`, as `pg_stat_activity` describes them.
const BLOCKERS: &str = "SELECT a.pid::int8, a.usename::text, a.application_name, a.state,
        EXTRACT(EPOCH FROM now() - a.xact_start)::float8
    FROM pg_stat_activity a WHERE a.pid = ANY(pg_blocking_pids($1)) ORDER BY a.xact_start";

/// How often the watcher asks who blocks the migration.
const WATCH_EVERY: Duration = Duration::from_millis(50);

pub struct Postgres {
    conn: PgConnection,
    url: String,
    /// For the watcher's own connection.
    full_url: DatabaseUrl,
    watch: Option<Watch>,
    /// The DDL lock timeout in ms (0: none), to restore after a CONCURRENTLY statement.
    ddl_ms: u128,
}

/// A task on a second connection that polls `pg_blocking_pids` for this session while a
/// migration runs: once the migration's statement gives up, it no longer waits, and nothing
/// says any more who it waited for.
struct Watch {
    task: tokio::task::JoinHandle<()>,
    seen: Arc<Mutex<Vec<Blocker>>>,
}

impl Postgres {
    pub async fn connect(url: &DatabaseUrl) -> Result<Self> {
        let conn = PgConnection::connect(&url.for_driver())
            .await
            .map_err(connect_error(url))?;
        Ok(Self {
            conn,
            url: url.redacted(),
            full_url: url.clone(),
            watch: None,
            ddl_ms: 0,
        })
    }
}

/// `SET lock_timeout` in milliseconds; 0 waits forever.
async fn set_lock_timeout(conn: &mut PgConnection, ms: u128) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(AssertSqlSafe(format!("SET lock_timeout = {ms}")))
        .execute(conn)
        .await
        .map(drop)
}

fn blockers_from(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<Blocker>, sqlx::Error> {
    rows.iter()
        .map(|r| {
            Ok(Blocker {
                id: r.try_get(0)?,
                user: r.try_get(1)?,
                application: r.try_get(2)?,
                state: r.try_get(3)?,
                transaction_seconds: r.try_get(4)?,
            })
        })
        .collect()
}

impl Driver for Postgres {
    fn engine(&self) -> Engine {
        Engine::Postgres
    }

    fn transactional_ddl(&self) -> bool {
        true
    }

    fn lock(&mut self, timeout: Duration) -> BoxFut<'_, ()> {
        Box::pin(async move {
            // Polled, not waited for in `pg_advisory_lock`: a session blocked in that statement
            // holds a snapshot, and `CREATE INDEX CONCURRENTLY` in the lock holder's migration
            // waits for every older snapshot, so the holder would wait for its waiters and
            // PostgreSQL would end the cycle with "deadlock detected". Between two polls a
            // waiter runs no statement and holds no snapshot.
            let deadline = tokio::time::Instant::now() + timeout;
            let mut pause = Duration::from_millis(10);
            loop {
                let got: bool = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT pg_try_advisory_lock({LOCK_KEY})"
                )))
                .fetch_one(&mut self.conn)
                .await
                .map_err(db("taking the migration lock"))?;
                if got {
                    return Ok(());
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Err(MigrateError::LockTimeout {
                        url: self.url.clone(),
                        timeout,
                    });
                }
                tokio::time::sleep(pause.min(deadline - now)).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
        })
    }

    fn unlock(&mut self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "SELECT pg_advisory_unlock({LOCK_KEY})"
            )))
            .execute(&mut self.conn)
            .await
            .map(drop)
            .map_err(db("releasing the migration lock"))
        })
    }

    fn begin(&mut self) -> BoxFut<'_, Tx<'_>> {
        Box::pin(async move {
            self.conn
                .begin()
                .await
                .map(Tx::Postgres)
                .map_err(db("starting a transaction"))
        })
    }

    /// One statement at a time, because PostgreSQL runs a multi-statement simple query as one
    /// implicit transaction, where `CREATE INDEX CONCURRENTLY` is refused.
    ///
    /// A `CONCURRENTLY` statement waits without the DDL lock timeout: its waits (for older
    /// transactions) block no query, and giving up part-way leaves an invalid index behind,
    /// which a retry would trip over.
    fn run_script<'a>(&'a mut self, sql: &'a str) -> ScriptFut<'a> {
        Box::pin(async move {
            for (completed, (_, stmt)) in crate::sql::split_statements(sql).into_iter().enumerate()
            {
                let unbounded =
                    self.ddl_ms > 0 && stmt.to_ascii_uppercase().contains("CONCURRENTLY");
                let failed = |source| ScriptError { source, completed };
                if unbounded {
                    set_lock_timeout(&mut self.conn, 0).await.map_err(failed)?;
                }
                sqlx::raw_sql(AssertSqlSafe(stmt))
                    .execute(&mut self.conn)
                    .await
                    .map_err(failed)?;
                if unbounded {
                    set_lock_timeout(&mut self.conn, self.ddl_ms)
                        .await
                        .map_err(failed)?;
                }
            }
            Ok(())
        })
    }

    fn connection(&mut self) -> Conn<'_> {
        Conn::Postgres(&mut self.conn)
    }

    fn set_ddl_lock_timeout(&mut self, timeout: Option<Duration>) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let ms = timeout.map_or(0, |t| t.as_millis().max(1));
            self.ddl_ms = ms;
            set_lock_timeout(&mut self.conn, ms)
                .await
                .map_err(db("setting lock_timeout"))
        })
    }

    fn watch_blockers(&mut self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut self.conn)
                .await
                .map_err(db("reading the backend pid"))?;
            // Best effort: without a second connection the error just names no one.
            let mut side = match PgConnection::connect(&self.full_url.for_driver()).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open a connection to watch for blocking sessions");
                    return Ok(());
                }
            };
            let seen = Arc::new(Mutex::new(Vec::new()));
            let noted = seen.clone();
            let task = tokio::spawn(async move {
                loop {
                    match sqlx::query(BLOCKERS).bind(pid).fetch_all(&mut side).await {
                        Ok(rows) => {
                            if let Ok(b) = blockers_from(&rows)
                                && !b.is_empty()
                                && let Ok(mut noted) = noted.lock()
                            {
                                *noted = b;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "watching for blocking sessions");
                            return;
                        }
                    }
                    tokio::time::sleep(WATCH_EVERY).await;
                }
            });
            self.watch = Some(Watch { task, seen });
            Ok(())
        })
    }

    fn blockers(&mut self) -> BoxFut<'_, Vec<Blocker>> {
        Box::pin(async move {
            let Some(watch) = self.watch.take() else {
                return Ok(Vec::new());
            };
            watch.task.abort();
            let _ = watch.task.await;
            Ok(watch.seen.lock().map(|b| b.clone()).unwrap_or_default())
        })
    }

    fn close(self: Box<Self>) -> BoxFut<'static, ()> {
        Box::pin(async move {
            self.conn
                .close()
                .await
                .map_err(db("closing the connection"))
        })
    }
}
