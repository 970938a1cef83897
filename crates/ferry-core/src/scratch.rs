//! Scratch databases on a server: created beside a real one for a check (backup's restore
//! check, compat's shadow proof, the test kit's per-test databases) and dropped afterwards.
//! The one place that creates and drops them, so there is one rule for each:
//!
//! - the name is quoted as an identifier of the engine;
//! - a drop ends the sessions still connected where the server can (`WITH (FORCE)`, which
//!   PostgreSQL has from version 13 on; older servers get a plain drop), so a check that left a
//!   connection behind does not leave its database behind too;
//! - the connection that created the database can be kept to drop it (a second connection costs
//!   a TLS handshake and a backend start); when the server closed it meanwhile, a new one is
//!   opened.
//!
//! SQLite needs none of this (a scratch database is a file), so it is not handled here.

use sqlx::{AssertSqlSafe, Connection, MySqlConnection, PgConnection};

use crate::{DatabaseUrl, Engine};

/// How a scratch database is made.
#[derive(Debug, Clone, Default)]
pub struct ScratchOptions {
    /// Drop a database of that name first (a name derived from a backup id, say, that an
    /// interrupted earlier check left behind).
    pub replace: bool,
    /// MySQL/MariaDB: the character set and collation (ignored unless both are plain words).
    pub charset: Option<(String, String)>,
    /// PostgreSQL: commits need not wait for the WAL flush (`synchronous_commit = off`); for a
    /// database that is thrown away.
    pub throwaway: bool,
    /// Keep the creating connection open to drop the database with it later.
    pub keep_connection: bool,
    /// PostgreSQL: a copy of this database (`CREATE DATABASE … TEMPLATE`), which must have no
    /// connections while it is copied ([`is_in_use`] tells that refusal apart).
    pub template: Option<String>,
}

/// A scratch database, until [`Scratch::drop`] drops it.
pub struct Scratch {
    server: DatabaseUrl,
    name: String,
    url: DatabaseUrl,
    kept: Option<Admin>,
}

enum Admin {
    Postgres(PgConnection),
    MySql(MySqlConnection),
}

/// The identifier `name`, quoted for `engine`.
pub fn quote_ident(engine: Engine, name: &str) -> String {
    match engine {
        Engine::MySql => format!("`{}`", name.replace('`', "``")),
        _ => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// The statement that drops database `name`, ending the sessions still connected where the
/// server can: `WITH (FORCE)` from PostgreSQL 13 (`server_version_num` 130000) on.
pub fn drop_sql(engine: Engine, name: &str, server_version_num: Option<i32>) -> String {
    let force = engine == Engine::Postgres && server_version_num.is_some_and(|v| v >= 130_000);
    format!(
        "DROP DATABASE IF EXISTS {}{}",
        quote_ident(engine, name),
        if force { " WITH (FORCE)" } else { "" }
    )
}

fn not_a_server() -> sqlx::Error {
    sqlx::Error::Configuration("a scratch database needs a PostgreSQL or MySQL server".into())
}

async fn pg_version(conn: &mut PgConnection) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(conn)
        .await
}

fn safe_word(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Scratch {
    /// Creates database `name` on the server of `server` (connecting to `server`'s database).
    pub async fn create(
        server: &DatabaseUrl,
        name: &str,
        options: &ScratchOptions,
    ) -> Result<Scratch, sqlx::Error> {
        let url = server
            .with_database(name)
            .map_err(|e| sqlx::Error::Configuration(e.to_string().into()))?;
        let engine = server.engine();
        let mut create = format!("CREATE DATABASE {}", quote_ident(engine, name));
        if let Some(template) = &options.template {
            if engine != Engine::Postgres {
                return Err(sqlx::Error::Configuration(
                    "only PostgreSQL copies a database from a template".into(),
                ));
            }
            create.push_str(&format!(" TEMPLATE {}", quote_ident(engine, template)));
        }
        let admin = match engine {
            Engine::Postgres => {
                let mut conn = PgConnection::connect(&server.for_driver()).await?;
                if options.replace {
                    let version = pg_version(&mut conn).await?;
                    let drop = drop_sql(engine, name, Some(version));
                    sqlx::raw_sql(AssertSqlSafe(drop))
                        .execute(&mut conn)
                        .await?;
                }
                sqlx::raw_sql(AssertSqlSafe(create))
                    .execute(&mut conn)
                    .await?;
                if options.throwaway {
                    // The setting of a database that is thrown away needs no flush to disk of
                    // its own: committed asynchronously, it costs no fsync (CREATE DATABASE
                    // and DROP DATABASE are flushed whatever this session says).
                    let off = format!(
                        "SET synchronous_commit = off; ALTER DATABASE {} SET synchronous_commit = off",
                        quote_ident(engine, name)
                    );
                    if let Err(e) = sqlx::raw_sql(AssertSqlSafe(off)).execute(&mut conn).await {
                        tracing::debug!(error = %e, "scratch: synchronous_commit not turned off");
                    }
                }
                Admin::Postgres(conn)
            }
            Engine::MySql => {
                let mut conn = MySqlConnection::connect(&server.for_driver()).await?;
                if options.replace {
                    let drop = drop_sql(engine, name, None);
                    sqlx::raw_sql(AssertSqlSafe(drop))
                        .execute(&mut conn)
                        .await?;
                }
                if let Some((charset, collation)) = &options.charset
                    && safe_word(charset)
                    && safe_word(collation)
                {
                    create.push_str(&format!(" CHARACTER SET {charset} COLLATE {collation}"));
                }
                sqlx::raw_sql(AssertSqlSafe(create))
                    .execute(&mut conn)
                    .await?;
                Admin::MySql(conn)
            }
            Engine::Sqlite => return Err(not_a_server()),
        };
        let kept = if options.keep_connection {
            Some(admin)
        } else {
            close(admin).await;
            None
        };
        Ok(Scratch {
            server: server.clone(),
            name: name.to_string(),
            url,
            kept,
        })
    }

    /// The scratch database's URL (the server's, with the scratch database's name).
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database, over the kept connection when there is one and it still works.
    pub async fn drop(self) -> Result<(), sqlx::Error> {
        let engine = self.server.engine();
        match self.kept {
            Some(Admin::Postgres(mut conn)) => {
                let dropped = async {
                    let version = pg_version(&mut conn).await?;
                    sqlx::raw_sql(AssertSqlSafe(drop_sql(engine, &self.name, Some(version))))
                        .execute(&mut conn)
                        .await
                }
                .await;
                match dropped {
                    Ok(_) => return conn.close().await,
                    Err(e) => {
                        tracing::debug!(error = %e, "scratch: dropping over a new connection")
                    }
                }
            }
            Some(Admin::MySql(mut conn)) => {
                match sqlx::raw_sql(AssertSqlSafe(drop_sql(engine, &self.name, None)))
                    .execute(&mut conn)
                    .await
                {
                    Ok(_) => return conn.close().await,
                    Err(e) => {
                        tracing::debug!(error = %e, "scratch: dropping over a new connection")
                    }
                }
            }
            None => {}
        }
        drop_database(&self.server, &self.name).await
    }
}

async fn close(admin: Admin) {
    let closed = match admin {
        Admin::Postgres(c) => c.close().await,
        Admin::MySql(c) => c.close().await,
    };
    if let Err(e) = closed {
        tracing::debug!(error = %e, "scratch: closing the creating connection");
    }
}

/// Drops database `name` on the server of `server` over a new connection (the rule of
/// [`drop_sql`]).
pub async fn drop_database(server: &DatabaseUrl, name: &str) -> Result<(), sqlx::Error> {
    let engine = server.engine();
    match engine {
        Engine::Postgres => {
            let mut conn = PgConnection::connect(&server.for_driver()).await?;
            let version = pg_version(&mut conn).await?;
            sqlx::raw_sql(AssertSqlSafe(drop_sql(engine, name, Some(version))))
                .execute(&mut conn)
                .await?;
            conn.close().await
        }
        Engine::MySql => {
            let mut conn = MySqlConnection::connect(&server.for_driver()).await?;
            sqlx::raw_sql(AssertSqlSafe(drop_sql(engine, name, None)))
                .execute(&mut conn)
                .await?;
            conn.close().await
        }
        Engine::Sqlite => Err(not_a_server()),
    }
}

/// Drops database `name` on the server of `server` only if no session is connected to it
/// (no `WITH (FORCE)`): `Ok(false)`, changing nothing, when one is ([`is_in_use`]).
pub async fn drop_unused(server: &DatabaseUrl, name: &str) -> Result<bool, sqlx::Error> {
    let engine = server.engine();
    let sql = drop_sql(engine, name, None);
    let result = match engine {
        Engine::Postgres => {
            let mut conn = PgConnection::connect(&server.for_driver()).await?;
            let r = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await;
            let _ = conn.close().await;
            r.map(drop)
        }
        Engine::MySql => {
            let mut conn = MySqlConnection::connect(&server.for_driver()).await?;
            let r = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await;
            let _ = conn.close().await;
            r.map(drop)
        }
        Engine::Sqlite => return Err(not_a_server()),
    };
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_in_use(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The SQLSTATE of a database error, if it is one.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}

/// PostgreSQL refused to copy, rename or drop a database because sessions are connected to it
/// (`55006`, "source database … is being accessed by other users"): worth another try once
/// they are gone.
pub fn is_in_use(e: &sqlx::Error) -> bool {
    sqlstate(e).as_deref() == Some("55006")
}

/// PostgreSQL: the database named does not exist (`3D000`).
pub fn is_missing(e: &sqlx::Error) -> bool {
    sqlstate(e).as_deref() == Some("3D000")
}

/// A database of that name exists already: `42P04` on PostgreSQL, or, when two sessions
/// create or rename to the same name at the same moment, the catalog's own unique index
/// (`23505` on `pg_database_datname_index`), which the existence check did not see yet.
pub fn is_duplicate(e: &sqlx::Error) -> bool {
    match sqlstate(e).as_deref() {
        Some("42P04") => true,
        Some("23505") => e
            .as_database_error()
            .and_then(|d| d.constraint())
            .is_some_and(|c| c == "pg_database_datname_index"),
        _ => false,
    }
}

/// PostgreSQL: closes database `from` to connections for good and renames it to `to`, the
/// step that makes a finished database visible under its final name. While a session is still
/// connected to `from` (the one that filled it may still be ending) PostgreSQL refuses the
/// rename ([`is_in_use`]); the caller tries again.
pub async fn seal(server: &DatabaseUrl, from: &str, to: &str) -> Result<(), sqlx::Error> {
    let engine = server.engine();
    if engine != Engine::Postgres {
        return Err(sqlx::Error::Configuration(
            "only PostgreSQL databases are sealed and renamed".into(),
        ));
    }
    let mut conn = PgConnection::connect(&server.for_driver()).await?;
    let sql = format!(
        "ALTER DATABASE {from} WITH ALLOW_CONNECTIONS false; ALTER DATABASE {from} RENAME TO {to}",
        from = quote_ident(engine, from),
        to = quote_ident(engine, to)
    );
    let result = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await;
    let _ = conn.close().await;
    result.map(drop)
}

/// The databases on the server of `server` whose names start with `prefix`, newest first
/// (PostgreSQL: by oid, which grows as databases are created; MySQL: by name).
pub async fn list(server: &DatabaseUrl, prefix: &str) -> Result<Vec<String>, sqlx::Error> {
    let mut names: Vec<String> = match server.engine() {
        Engine::Postgres => {
            let mut conn = PgConnection::connect(&server.for_driver()).await?;
            let names =
                sqlx::query_scalar("SELECT datname::text FROM pg_database ORDER BY oid DESC")
                    .fetch_all(&mut conn)
                    .await;
            let _ = conn.close().await;
            names?
        }
        Engine::MySql => {
            let mut conn = MySqlConnection::connect(&server.for_driver()).await?;
            let names = sqlx::query_scalar(
                "SELECT CAST(schema_name AS CHAR) FROM information_schema.schemata ORDER BY 1 DESC",
            )
            .fetch_all(&mut conn)
            .await;
            let _ = conn.close().await;
            names?
        }
        Engine::Sqlite => return Err(not_a_server()),
    };
    names.retain(|n: &String| n.starts_with(prefix));
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn force_only_where_the_server_has_it() {
        assert_eq!(
            drop_sql(Engine::Postgres, "s", Some(130_000)),
            "DROP DATABASE IF EXISTS \"s\" WITH (FORCE)"
        );
        assert_eq!(
            drop_sql(Engine::Postgres, "s", Some(120_017)),
            "DROP DATABASE IF EXISTS \"s\""
        );
        assert_eq!(
            drop_sql(Engine::Postgres, "s", None),
            "DROP DATABASE IF EXISTS \"s\""
        );
        assert_eq!(
            drop_sql(Engine::MySql, "a`b", Some(130_000)),
            "DROP DATABASE IF EXISTS `a``b`"
        );
    }
}
