//! The all-or-nothing shape of a PostgreSQL restore: a new database beside the target, loaded
//! and checked, then swapped in by renames.
//!
//! 1. The new database `ferry_new_<random>_<target>` is created like the target (owner,
//!    encoding, collation and ctype, locale provider, tablespace), from `template0`.
//! 2. It is loaded (`load.rs`) while the target keeps serving; once the stream's checksum
//!    passed, its tables and row counts are compared with the manifest. Then the target's
//!    database-level settings, privileges, connection limit and comment are copied (after the
//!    load, so a `default_transaction_read_only` cannot stop it).
//! 3. The swap: connections to the target are refused (`ALLOW_CONNECTIONS false`), its
//!    sessions ended (`pg_terminate_backend`, only with `end_sessions`; without it the restore
//!    refuses while any remain), `target` is renamed to `ferry_old_<random>_<target>` and the
//!    new database to `target`. If the second rename fails, the first is undone.
//! 4. The old database is dropped, or kept (`keep_old`) with connections allowed again.
//!
//! Any failure before step 3 drops the new database and the target is exactly as it was. Every
//! statement runs on a connection to the server's maintenance database (`postgres`, or
//! `template1` when the target is `postgres`), never on the target or the new database, which
//! `ALTER DATABASE … RENAME` requires.

use std::time::Duration;

use ferry_core::DatabaseUrl;
use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use super::load::{Load, Owners};
use super::{connect, quote_ident, server_version, tables_of};
use crate::engine::{RestoreInput, RestoreRequest, Restored, Tool, db, with_database};
use crate::error::{BackupError, Result};

/// Longest PostgreSQL identifier, in bytes.
const NAME_MAX: usize = 63;

/// How long sessions that are already disconnecting get before a restore without
/// `end_sessions` refuses (a client's `close` reaches the server a moment before its backend
/// leaves `pg_stat_activity`).
const GRACE: Duration = Duration::from_secs(2);

fn failed(request: &RestoreRequest<'_>, message: String) -> BackupError {
    BackupError::RestoreFailed {
        id: request.id.to_string(),
        target: request.target.redacted(),
        message,
    }
}

/// The maintenance database's URL on the target's server.
fn admin_url(target: &DatabaseUrl) -> Result<DatabaseUrl> {
    let maintenance = if target.database_name() == "postgres" {
        "template1"
    } else {
        "postgres"
    };
    with_database(target, maintenance)
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `prefix` + `name`, cut to [`NAME_MAX`] bytes on a character boundary.
fn derived_name(prefix: &str, name: &str) -> String {
    let mut out = format!("{prefix}{name}");
    let mut cut = out.len().min(NAME_MAX);
    while !out.is_char_boundary(cut) {
        cut -= 1;
    }
    out.truncate(cut);
    out
}

/// Sessions on database `name` other than this one: how many, and a few of their
/// `user@application` for the message.
async fn sessions(conn: &mut PgConnection, url: &DatabaseUrl, name: &str) -> Result<(i64, String)> {
    let rows = sqlx::query(
        "SELECT usename::text, application_name FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid() ORDER BY backend_start",
    )
    .bind(name)
    .fetch_all(&mut *conn)
    .await
    .map_err(db(url, "listing the target's sessions"))?;
    let who: Vec<String> = rows
        .iter()
        .take(3)
        .map(|r| {
            let user: Option<String> = r.try_get(0).ok().flatten();
            let app: Option<String> = r.try_get(1).ok().flatten();
            match app.filter(|a| !a.is_empty()) {
                Some(a) => format!("{}@{a}", user.unwrap_or_default()),
                None => user.unwrap_or_default(),
            }
        })
        .collect();
    let detail = if who.is_empty() {
        String::new()
    } else {
        format!(
            " ({}{})",
            who.join(", "),
            if rows.len() > 3 { ", …" } else { "" }
        )
    };
    Ok((rows.len() as i64, detail))
}

/// Refuses when sessions on the target remain after [`GRACE`] and the caller may not end them.
async fn refuse_if_sessions(
    conn: &mut PgConnection,
    url: &DatabaseUrl,
    request: &RestoreRequest<'_>,
) -> Result<()> {
    let name = request.target.database_name();
    let started = std::time::Instant::now();
    loop {
        let (n, detail) = sessions(conn, url, &name).await?;
        if n == 0 {
            return Ok(());
        }
        if started.elapsed() >= GRACE {
            return Err(BackupError::SessionsOpen {
                target: request.target.redacted(),
                sessions: n,
                detail,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Refuses a restore that would have to end sessions it may not end, before anything is read.
pub(crate) async fn preflight(request: &RestoreRequest<'_>) -> Result<()> {
    if request.target.database_name().is_empty() {
        return Err(failed(
            request,
            "the URL names no database; add /DBNAME".into(),
        ));
    }
    if request.options.end_sessions {
        return Ok(());
    }
    let admin = admin_url(request.target)?;
    let mut conn = connect(&admin).await?;
    let result = refuse_if_sessions(&mut conn, &admin, request).await;
    let _ = conn.close().await;
    result
}

/// The target database's properties, as `pg_database` has them on this server version.
struct Props(serde_json::Map<String, Value>);

impl Props {
    fn text(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }
}

async fn props(conn: &mut PgConnection, url: &DatabaseUrl, name: &str) -> Result<Option<Props>> {
    // to_jsonb: the columns differ between versions (datlocprovider from 15, daticulocale
    // renamed datlocale in 17), and a missing key is simply absent.
    let row: Option<String> = sqlx::query_scalar(
        "SELECT (to_jsonb(d) || jsonb_build_object(\
            'owner', pg_get_userbyid(d.datdba)::text, \
            'encoding_name', pg_encoding_to_char(d.encoding)::text, \
            'tablespace', (SELECT spcname::text FROM pg_tablespace WHERE oid = d.dattablespace), \
            'comment', shobj_description(d.oid, 'pg_database')))::text \
         FROM pg_database d WHERE datname = $1",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db(url, "reading the target database's properties"))?;
    let Some(text) = row else {
        return Ok(None);
    };
    match serde_json::from_str(&text) {
        Ok(Value::Object(m)) => Ok(Some(Props(m))),
        _ => Err(BackupError::Internal(format!(
            "the properties of database {name} are not a JSON object"
        ))),
    }
}

fn create_sql(new: &str, props: Option<&Props>) -> String {
    let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(new));
    let Some(p) = props else {
        return sql;
    };
    if let Some(owner) = p.text("owner") {
        sql.push_str(&format!(" OWNER {}", quote_ident(owner)));
    }
    if let Some(enc) = p.text("encoding_name") {
        sql.push_str(&format!(" ENCODING {}", literal(enc)));
    }
    if let Some(c) = p.text("datcollate") {
        sql.push_str(&format!(" LC_COLLATE {}", literal(c)));
    }
    if let Some(c) = p.text("datctype") {
        sql.push_str(&format!(" LC_CTYPE {}", literal(c)));
    }
    let locale = p.text("datlocale").or_else(|| p.text("daticulocale"));
    match p.text("datlocprovider") {
        Some("i") => {
            sql.push_str(" LOCALE_PROVIDER icu");
            if let Some(l) = locale {
                sql.push_str(&format!(" ICU_LOCALE {}", literal(l)));
            }
        }
        Some("b") => {
            sql.push_str(" LOCALE_PROVIDER builtin");
            if let Some(l) = locale {
                sql.push_str(&format!(" BUILTIN_LOCALE {}", literal(l)));
            }
        }
        _ => {}
    }
    if let Some(ts) = p.text("tablespace").filter(|t| *t != "pg_default") {
        sql.push_str(&format!(" TABLESPACE {}", quote_ident(ts)));
    }
    sql
}

/// GUCs whose value is a list that `ALTER … SET` takes unquoted (`pg_dump`'s
/// `variable_is_guc_list_quote`).
const LIST_GUCS: &[&str] = &[
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// `ALTER DATABASE … SET` for one `name=value` of `pg_db_role_setting`.
fn set_clause(setting: &str) -> Option<String> {
    let (name, value) = setting.split_once('=')?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return None;
    }
    if LIST_GUCS.contains(&name.to_ascii_lowercase().as_str()) {
        // Stored as the list's own text (`"$user", public`), which is valid SQL when every
        // item is a plain or double-quoted identifier.
        let plain = value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _,$\"".contains(c));
        return plain.then(|| format!("SET {name} = {value}"));
    }
    Some(format!("SET {name} = {}", literal(value)))
}

/// What `pg_dump` leaves out without `--create`, copied from `target` to `new` after the load:
/// per-database (and per-role-in-database) settings, privileges, connection limit, comment.
async fn copy_database_level(
    conn: &mut PgConnection,
    url: &DatabaseUrl,
    target: &str,
    new: &str,
    props: &Props,
) -> Result<()> {
    let mut statements = Vec::new();
    let settings = sqlx::query(
        "SELECT r.rolname::text, s.setconfig FROM pg_db_role_setting s \
         LEFT JOIN pg_roles r ON r.oid = s.setrole \
         WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = $1)",
    )
    .bind(target)
    .fetch_all(&mut *conn)
    .await
    .map_err(db(url, "reading the target database's settings"))?;
    for row in settings {
        let role: Option<String> = row.try_get(0).map_err(db(url, "reading settings"))?;
        let config: Vec<String> = row.try_get(1).map_err(db(url, "reading settings"))?;
        for c in config {
            let Some(clause) = set_clause(&c) else {
                tracing::warn!(
                    setting = c,
                    "database setting not copied to the restored database"
                );
                continue;
            };
            statements.push(match &role {
                Some(r) => format!(
                    "ALTER ROLE {} IN DATABASE {} {clause}",
                    quote_ident(r),
                    quote_ident(new)
                ),
                None => format!("ALTER DATABASE {} {clause}", quote_ident(new)),
            });
        }
    }
    if props.0.get("datacl").is_some_and(|v| !v.is_null()) {
        let grants = sqlx::query(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, \
                    a.privilege_type, a.is_grantable \
             FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = $1",
        )
        .bind(target)
        .fetch_all(&mut *conn)
        .await
        .map_err(db(url, "reading the target database's privileges"))?;
        statements.push(format!(
            "REVOKE ALL ON DATABASE {} FROM PUBLIC",
            quote_ident(new)
        ));
        for g in grants {
            let grantee: String = g.try_get(0).map_err(db(url, "reading privileges"))?;
            let privilege: String = g.try_get(1).map_err(db(url, "reading privileges"))?;
            let grantable: bool = g.try_get(2).map_err(db(url, "reading privileges"))?;
            if !privilege
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == ' ')
            {
                continue;
            }
            statements.push(format!(
                "GRANT {privilege} ON DATABASE {} TO {grantee}{}",
                quote_ident(new),
                if grantable { " WITH GRANT OPTION" } else { "" }
            ));
        }
    }
    if let Some(limit) = props.0.get("datconnlimit").and_then(Value::as_i64)
        && limit >= 0
    {
        statements.push(format!(
            "ALTER DATABASE {} CONNECTION LIMIT {limit}",
            quote_ident(new)
        ));
    }
    if let Some(comment) = props.text("comment") {
        statements.push(format!(
            "COMMENT ON DATABASE {} IS {}",
            quote_ident(new),
            literal(comment)
        ));
    }
    for s in statements {
        sqlx::raw_sql(AssertSqlSafe(s))
            .execute(&mut *conn)
            .await
            .map_err(db(url, "copying the target's database-level settings"))?;
    }
    Ok(())
}

/// Loads `input` into the empty database `into`, waits for the stream's checksum, and compares
/// the tables and row counts with the manifest.
pub(crate) async fn load_verified(
    request: &RestoreRequest<'_>,
    into: &DatabaseUrl,
    pg_restore: &Tool,
    input: RestoreInput,
) -> Result<usize> {
    let owners = Owners {
        no_owner: request.options.no_owner,
        role: request.options.role.clone(),
    };
    let load = Load {
        id: request.id,
        pg_restore,
        url: into,
        jobs: request.options.jobs(),
        owners: &owners,
    };
    let (loaded, verified) = tokio::join!(load.run(input.stream), input.verified);
    let loaded = match (loaded, verified) {
        // A damaged object is the cause of whatever else failed.
        (_, Err(e @ BackupError::Corrupt { .. })) => return Err(e),
        (Err(e), _) | (Ok(_), Err(e)) => return Err(e),
        (Ok(loaded), Ok(())) => loaded,
    };
    let tables = tables_of(into, loaded.rows.as_ref()).await?;
    let differences = crate::compare_tables(request.tables, &tables);
    if !differences.is_empty() {
        return Err(failed(
            request,
            format!(
                "the restored database differs from the manifest: {}",
                differences.join("; ")
            ),
        ));
    }
    Ok(loaded.jobs)
}

async fn exec(
    conn: &mut PgConnection,
    url: &DatabaseUrl,
    sql: String,
    doing: &'static str,
) -> Result<()> {
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(db(url, doing))
}

fn in_use(e: &BackupError) -> bool {
    matches!(e, BackupError::Database { source: sqlx::Error::Database(d), .. }
        if d.code().as_deref() == Some("55006"))
}

/// Restores into a new database and swaps it in for `request.target`.
pub(crate) async fn restore(
    request: &RestoreRequest<'_>,
    pg_restore: &Tool,
    input: RestoreInput,
) -> Result<Restored> {
    let target = request.target;
    let name = target.database_name();
    preflight(request).await?;
    let admin = admin_url(target)?;
    let mut conn = connect(&admin).await?;
    let (_, version) = server_version(&mut conn, &admin).await?;
    let props = props(&mut conn, &admin, &name).await?;
    let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let new = derived_name(&format!("ferry_new_{tag}_"), &name);
    let old = derived_name(&format!("ferry_old_{tag}_"), &name);
    let new_url = with_database(target, &new)?;
    exec(
        &mut conn,
        &admin,
        create_sql(&new, props.as_ref()),
        "creating the database to restore into",
    )
    .await?;
    tracing::info!(database = new, "restoring into a new database");

    let unchanged = "; the target was left unchanged";
    // The admin connection idles through the load; a server that closes idle sessions would
    // take it away, so the steps after the load open a fresh one when needed.
    let prepared = async {
        let jobs = load_verified(request, &new_url, pg_restore, input).await?;
        if conn.ping().await.is_err() {
            conn = connect(&admin).await?;
        }
        if let Some(p) = &props {
            copy_database_level(&mut conn, &admin, &name, &new, p).await?;
        }
        Ok::<usize, BackupError>(jobs)
    }
    .await;
    let jobs = match prepared {
        Ok(jobs) => jobs,
        Err(e) => {
            if conn.ping().await.is_err()
                && let Ok(c) = connect(&admin).await
            {
                conn = c;
            }
            drop_unfinished(&mut conn, &admin, &new, version).await;
            let _ = conn.close().await;
            return Err(with_suffix(e, unchanged));
        }
    };

    let names = Names {
        target: &name,
        new: &new,
        old: &old,
    };
    let result = swap(request, &mut conn, &admin, &names, version, props.is_some()).await;
    let outcome = match result {
        Ok(ended) => {
            let mut restored = Restored {
                kept_old: None,
                sessions_ended: ended,
                jobs,
            };
            if props.is_some() {
                if request.options.keep_old {
                    let allow = format!(
                        "ALTER DATABASE {} ALLOW_CONNECTIONS true",
                        quote_ident(&old)
                    );
                    if let Err(e) =
                        exec(&mut conn, &admin, allow, "reopening the old database").await
                    {
                        tracing::warn!(error = %e, "the kept database still refuses connections");
                    }
                    restored.kept_old = Some(old.clone());
                } else {
                    let sql = ferry_core::scratch::drop_sql(
                        ferry_core::Engine::Postgres,
                        &old,
                        Some(version),
                    );
                    if let Err(e) =
                        exec(&mut conn, &admin, sql, "dropping the replaced database").await
                    {
                        tracing::warn!(error = %e, database = old, "the replaced database was kept: it could not be dropped");
                        restored.kept_old = Some(old.clone());
                    }
                }
            }
            Ok(restored)
        }
        Err(e) => {
            drop_unfinished(&mut conn, &admin, &new, version).await;
            Err(with_suffix(e, unchanged))
        }
    };
    let _ = conn.close().await;
    outcome
}

/// The three names of a swap.
struct Names<'a> {
    target: &'a str,
    new: &'a str,
    old: &'a str,
}

/// Drops the new database of a restore that did not complete (warning when it cannot).
async fn drop_unfinished(conn: &mut PgConnection, admin: &DatabaseUrl, new: &str, version: i32) {
    let sql = ferry_core::scratch::drop_sql(ferry_core::Engine::Postgres, new, Some(version));
    if let Err(e) = exec(conn, admin, sql, "dropping the unfinished restore").await {
        tracing::warn!(error = %e, database = new, "the unfinished restore's database was not dropped");
    }
}

/// Renames `target` away and `new` into its place; on failure, the target is as it was.
async fn swap(
    request: &RestoreRequest<'_>,
    conn: &mut PgConnection,
    admin: &DatabaseUrl,
    names: &Names<'_>,
    version: i32,
    exists: bool,
) -> Result<u64> {
    let Names { target, new, old } = *names;
    // From PostgreSQL 14 on, pg_terminate_backend can wait for the backend to be gone.
    let terminate = if version >= 140_000 {
        "pg_terminate_backend(pid, 5000)"
    } else {
        "pg_terminate_backend(pid)"
    };
    let rename = |from: &str, to: &str| {
        format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote_ident(from),
            quote_ident(to)
        )
    };
    if !exists {
        exec(
            conn,
            admin,
            rename(new, target),
            "renaming the restored database",
        )
        .await?;
        return Ok(0);
    }
    let allow = |yes: bool| {
        format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS {yes}",
            quote_ident(target)
        )
    };
    exec(
        conn,
        admin,
        allow(false),
        "closing the target to new connections",
    )
    .await?;
    let mut ended = 0u64;
    let moved = async {
        let mut attempt = 0u32;
        loop {
            if request.options.end_sessions {
                let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT count(*) FILTER (WHERE {terminate}) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()"
                )))
                .bind(target)
                .fetch_one(&mut *conn)
                .await
                .map_err(db(admin, "ending the target's sessions"))?;
                ended += n as u64;
            } else {
                refuse_if_sessions(conn, admin, request).await?;
            }
            match exec(conn, admin, rename(target, old), "renaming the target away").await {
                Ok(()) => return Ok(()),
                Err(e) if in_use(&e) && attempt < 20 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
    .await;
    if let Err(e) = moved {
        let _ = exec(conn, admin, allow(true), "reopening the target").await;
        return Err(e);
    }
    if let Err(e) = exec(
        conn,
        admin,
        rename(new, target),
        "renaming the restored database into place",
    )
    .await
    {
        let back = exec(conn, admin, rename(old, target), "renaming the target back").await;
        let _ = exec(conn, admin, allow(true), "reopening the target").await;
        return match back {
            Ok(()) => Err(e),
            Err(b) => Err(BackupError::RestoreFailed {
                id: request.id.to_string(),
                target: request.target.redacted(),
                message: format!(
                    "{e}; renaming the original back failed too ({b}): it is now database {old}, \
                     and the restored copy is {new}; rename one of them to {target} by hand"
                ),
            }),
        };
    }
    Ok(ended)
}

/// `e` with `suffix` appended to a restore failure's message (other errors say enough).
fn with_suffix(e: BackupError, suffix: &str) -> BackupError {
    match e {
        BackupError::RestoreFailed {
            id,
            target,
            message,
        } if !message.ends_with(suffix) => BackupError::RestoreFailed {
            id,
            target,
            message: format!("{message}{suffix}"),
        },
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_fit_and_keep_their_prefix() {
        let long = "x".repeat(80);
        let n = derived_name("ferry_new_abcdef_", &long);
        assert_eq!(n.len(), NAME_MAX);
        assert!(n.starts_with("ferry_new_abcdef_"));
        let n = derived_name("ferry_new_abcdef_", &"é".repeat(40));
        assert!(n.len() <= NAME_MAX && n.starts_with("ferry_new_abcdef_"));
    }

    #[test]
    fn settings_are_quoted_or_refused() {
        assert_eq!(
            set_clause("work_mem=64MB").as_deref(),
            Some("SET work_mem = '64MB'")
        );
        assert_eq!(
            set_clause("search_path=\"$user\", public").as_deref(),
            Some("SET search_path = \"$user\", public")
        );
        assert_eq!(set_clause("search_path=a; DROP TABLE t"), None);
        assert_eq!(
            set_clause("app.note=it's").as_deref(),
            Some("SET app.note = 'it''s'")
        );
        assert_eq!(set_clause("bad name=1"), None);
    }

    #[test]
    fn create_copies_the_target() {
        let p: Value = serde_json::json!({
            "owner": "app", "encoding_name": "UTF8", "datcollate": "C.UTF-8",
            "datctype": "C.UTF-8", "datlocprovider": "c", "tablespace": "pg_default"
        });
        let Value::Object(m) = p else { unreachable!() };
        let sql = create_sql("n", Some(&Props(m)));
        assert_eq!(
            sql,
            "CREATE DATABASE \"n\" TEMPLATE template0 OWNER \"app\" ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'"
        );
    }
}
