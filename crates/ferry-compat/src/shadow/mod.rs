//! The dynamic proof in a shadow database that ferry creates and drops: apply the migrations up
//! to the base, snapshot the catalog, apply each new migration (snapshot after each), then revert
//! them one by one and require each down to restore the previous snapshot exactly, then apply
//! them again. Migrations run through `ferry_migrate::Migrator`, exactly as `ferry migrate` runs
//! them. After the base and after each new migration it also prepares the previous version's
//! queries (never executing them). It never touches the database it was pointed at: it creates
//! its own on that server (PostgreSQL, MySQL/MariaDB) or a temporary file (SQLite), and drops it
//! afterwards. The SQL it sends itself lives only in the per-engine modules.

mod mysql;
mod postgres;
mod sqlite;

use std::collections::BTreeMap;

use ferry_core::{DatabaseUrl, Engine};
use ferry_migrate::{DownTarget, MigrateOptions, Migration, Migrator, Quiet};

use crate::queries::OldQuery;
use crate::rules::Rule;
use crate::types::{Change, compare};
use crate::{CompatError, Finding, Roundtrip};

/// Catalog objects: key (`column users.email`) → description.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot(pub BTreeMap<String, String>);

/// What the shadow run found for one migration.
#[derive(Debug, Default)]
pub struct Proof {
    pub findings: Vec<Finding>,
    pub roundtrip: Option<Roundtrip>,
}

struct Shadow {
    engine: Engine,
    url: DatabaseUrl,
    admin: String,
    name: String,
    file: Option<std::path::PathBuf>,
}

/// Unique per process and call, short enough for MySQL's 64-character names, and safe to splice
/// into `CREATE DATABASE` (digits and underscores only).
fn unique_name() -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("ferry_shadow_{}_{n}_{nanos}", std::process::id())
}

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    format!("{}/{db}{query}", &base[..host_end])
}

fn shadow_err(context: &str, url: &DatabaseUrl) -> impl FnOnce(sqlx::Error) -> CompatError {
    let context = format!("{context} ({})", url.redacted());
    move |source| CompatError::Shadow {
        context,
        source: Box::new(source),
    }
}

impl Shadow {
    async fn create(server: &DatabaseUrl) -> Result<Shadow, CompatError> {
        let name = unique_name();
        match server.engine() {
            Engine::Sqlite => {
                let file = std::env::temp_dir().join(format!("{name}.db"));
                let url = DatabaseUrl::parse(&format!("sqlite:{}", file.display()))?;
                Ok(Shadow {
                    engine: Engine::Sqlite,
                    url,
                    admin: String::new(),
                    name,
                    file: Some(file),
                })
            }
            engine => {
                let admin = server.for_driver();
                let created = match engine {
                    Engine::Postgres => postgres::create_database(&admin, &name).await,
                    _ => mysql::create_database(&admin, &name).await,
                };
                created.map_err(shadow_err("cannot create the shadow database", server))?;
                let url = DatabaseUrl::parse(&with_database(server.expose(), &name))?;
                Ok(Shadow {
                    engine,
                    url,
                    admin,
                    name,
                    file: None,
                })
            }
        }
    }

    /// The one connection that reads the catalog and prepares old queries for the whole run
    /// (a connection per snapshot cost more than the snapshot itself).
    async fn inspector(&self) -> Result<Inspector, CompatError> {
        let url = self.url.for_driver();
        let r = match self.engine {
            Engine::Postgres => postgres::connect(&url).await.map(Conn::Pg),
            Engine::MySql => mysql::connect(&url).await.map(Conn::MySql),
            Engine::Sqlite => sqlite::connect(&url).await.map(Conn::Sqlite),
        };
        let conn = r.map_err(shadow_err(
            "cannot connect to the shadow database",
            &self.url,
        ))?;
        Ok(Inspector {
            conn,
            snapshots: Default::default(),
            prepares: Default::default(),
        })
    }

    async fn destroy(self) {
        let result = match self.engine {
            Engine::Postgres => postgres::drop_database(&self.admin, &self.name).await,
            Engine::MySql => mysql::drop_database(&self.admin, &self.name).await,
            Engine::Sqlite => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(database = %self.name, error = %e, "compat: could not drop the shadow database");
        }
        if let Some(f) = self.file {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", f.display()));
            }
        }
    }
}

/// A connection to the shadow database for catalog snapshots and for preparing old queries,
/// with the time spent in each (reported as a `tracing` event: where a slow check goes).
struct Inspector {
    conn: Conn,
    snapshots: (u32, std::time::Duration),
    prepares: (u32, std::time::Duration),
}

enum Conn {
    Pg(sqlx::PgConnection),
    MySql(sqlx::MySqlConnection),
    Sqlite(sqlx::SqliteConnection),
}

/// The outcome of preparing one old query: its result columns, or the database's error.
type Prepared = Result<Vec<String>, String>;

impl Inspector {
    async fn snapshot(&mut self, url: &DatabaseUrl) -> Result<Snapshot, CompatError> {
        let start = std::time::Instant::now();
        let r = match &mut self.conn {
            Conn::Pg(c) => postgres::snapshot(c).await,
            Conn::MySql(c) => mysql::snapshot(c).await,
            Conn::Sqlite(c) => sqlite::snapshot(c).await,
        };
        self.snapshots.0 += 1;
        self.snapshots.1 += start.elapsed();
        r.map_err(shadow_err("cannot read the shadow database's catalog", url))
    }

    /// Prepares (never executes) each query against the current schema. A database error is
    /// the query's outcome; anything else (I/O, protocol) fails the run.
    async fn prepare(
        &mut self,
        queries: &[&OldQuery],
        url: &DatabaseUrl,
    ) -> Result<Vec<Prepared>, CompatError> {
        let start = std::time::Instant::now();
        let r = match &mut self.conn {
            Conn::Pg(c) => prepare_all(c, queries).await,
            Conn::MySql(c) => prepare_all(c, queries).await,
            Conn::Sqlite(c) => prepare_all(c, queries).await,
        };
        self.prepares.0 += queries.len() as u32;
        self.prepares.1 += start.elapsed();
        r.map_err(shadow_err("cannot prepare the old queries", url))
    }

    async fn close(self) {
        tracing::debug!(
            snapshots = self.snapshots.0,
            snapshot_ms = self.snapshots.1.as_millis() as u64,
            prepares = self.prepares.0,
            prepare_ms = self.prepares.1.as_millis() as u64,
            "compat: shadow inspection"
        );
        let r = match self.conn {
            Conn::Pg(c) => sqlx::Connection::close(c).await,
            Conn::MySql(c) => sqlx::Connection::close(c).await,
            Conn::Sqlite(c) => sqlx::Connection::close(c).await,
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, "compat: closing the inspection connection");
        }
    }
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

/// The previous version's queries during the forward pass: which still prepare, and what they
/// return.
struct OldQueries<'q> {
    /// Queries that prepared at the base and after every migration so far, with the result
    /// columns the previous version decodes (sqlx queries only).
    live: Vec<(&'q OldQuery, Option<Vec<String>>)>,
}

impl<'q> OldQueries<'q> {
    /// Prepares every query at the base. Those that fail there are the query file's fault, not a
    /// migration's: one non-breaking finding each, returned for the first new migration.
    async fn at_base(
        queries: &'q [OldQuery],
        inspector: &mut Inspector,
        url: &DatabaseUrl,
    ) -> Result<(Self, Vec<Finding>), CompatError> {
        let all: Vec<&OldQuery> = queries.iter().collect();
        let outcomes = inspector.prepare(&all, url).await?;
        let mut live = Vec::new();
        let mut invalid = Vec::new();
        for (q, outcome) in all.into_iter().zip(outcomes) {
            match outcome {
                Ok(columns) => {
                    // What the previous version decodes: sqlx's recorded columns that the base
                    // schema really returns (a stale .sqlx file is not a migration's fault).
                    let decoded = q
                        .columns
                        .as_ref()
                        .map(|c| c.iter().filter(|n| columns.contains(n)).cloned().collect());
                    live.push((q, decoded));
                }
                Err(e) => invalid.push(finding(
                    Rule::OldQueryInvalidAtBase,
                    q.source.clone(),
                    format!(
                        "old query {} does not prepare even on the schema before the new                          migrations, so it was not checked: {e}",
                        q.source
                    ),
                )),
            }
        }
        Ok((OldQueries { live }, invalid))
    }

    /// Prepares the queries still live after `label` was applied; the ones that no longer
    /// prepare (or lost a result column) become breaking findings and are not tried again.
    async fn after(
        &mut self,
        label: &str,
        inspector: &mut Inspector,
        url: &DatabaseUrl,
    ) -> Result<Vec<Finding>, CompatError> {
        if self.live.is_empty() {
            return Ok(Vec::new());
        }
        let queries: Vec<&OldQuery> = self.live.iter().map(|(q, _)| *q).collect();
        let outcomes = inspector.prepare(&queries, url).await?;
        let mut findings = Vec::new();
        let mut still = Vec::new();
        for ((q, decoded), outcome) in std::mem::take(&mut self.live).into_iter().zip(outcomes) {
            match outcome {
                Err(e) => findings.push(finding(
                    Rule::OldQueryFails,
                    q.source.clone(),
                    format!(
                        "old query {} no longer prepares after {label}: {e}",
                        q.source
                    ),
                )),
                Ok(columns) => {
                    let gone: Vec<&String> = decoded
                        .iter()
                        .flatten()
                        .filter(|n| !columns.contains(n))
                        .collect();
                    if gone.is_empty() {
                        still.push((q, decoded));
                    } else {
                        let gone: Vec<&str> = gone.iter().map(|s| s.as_str()).collect();
                        findings.push(finding(
                            Rule::OldQueryColumnsChanged,
                            q.source.clone(),
                            format!(
                                "old query {} still prepares after {label}, but no longer returns                                  {}, which the previous version decodes",
                                q.source,
                                gone.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        self.live = still;
        Ok(findings)
    }
}

fn finding(rule: Rule, object: String, message: String) -> Finding {
    Finding {
        rule,
        class: rule.class(),
        severity: rule.severity(),
        object,
        line: 0,
        message,
        hint: rule.hint().to_string(),
        allowed: false,
        reason: None,
    }
}

/// `column t.c` → `t.c`; `function f(int)` → `f(int)`.
fn object_of(key: &str) -> (&str, &str) {
    key.split_once(' ').unwrap_or(("", key))
}

/// Objects of `base` (what the previous version can rely on) that `before` → `after` removed or
/// changed incompatibly.
pub fn incompatibilities(base: &Snapshot, before: &Snapshot, after: &Snapshot) -> Vec<Finding> {
    let mut out = Vec::new();
    for (key, old) in &before.0 {
        if !base.0.contains_key(key) {
            continue;
        }
        let (kind, object) = object_of(key);
        if !matches!(
            kind,
            "table" | "column" | "view" | "function" | "enum" | "sequence"
        ) {
            continue;
        }
        match after.0.get(key) {
            None => out.push(finding(
                Rule::ShadowObjectRemoved,
                object.to_string(),
                format!("{kind} {object} exists before the migration and not after it"),
            )),
            Some(new) if new != old => {
                if let Some(why) = incompatible_change(kind, old, new) {
                    out.push(finding(
                        Rule::ShadowObjectChanged,
                        object.to_string(),
                        format!("{kind} {object} {why}"),
                    ));
                }
            }
            Some(_) => {}
        }
    }
    out
}

fn incompatible_change(kind: &str, old: &str, new: &str) -> Option<String> {
    match kind {
        "column" => {
            let mut o = old.splitn(3, '|');
            let mut n = new.splitn(3, '|');
            let (ot, on, od) = (o.next()?, o.next()?, o.next().unwrap_or(""));
            let (nt, nn, nd) = (n.next()?, n.next()?, n.next().unwrap_or(""));
            let mut why = Vec::new();
            if matches!(compare(ot, nt), Change::Narrow | Change::EnumDrop(_)) {
                why.push(format!("changes type from {ot} to {nt}"));
            }
            if on.is_empty() && !nn.is_empty() {
                why.push("becomes NOT NULL".to_string());
            }
            if !od.is_empty() && nd.is_empty() {
                why.push(format!("loses its default {od}"));
            }
            (!why.is_empty()).then(|| why.join(", "))
        }
        "enum" => {
            let nv: Vec<&str> = new.split(',').collect();
            let gone: Vec<&str> = old.split(',').filter(|v| !nv.contains(v)).collect();
            (!gone.is_empty()).then(|| format!("loses values {}", gone.join(", ")))
        }
        _ => None,
    }
}

/// What down left different from the snapshot before up.
pub fn differences(before: &Snapshot, after_down: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (key, old) in &before.0 {
        match after_down.0.get(key) {
            None => out.push(format!(
                "{key} missing: the up removed it and this needs to be undone in down.sql"
            )),
            Some(new) if new != old => out.push(format!(
                "{key} differs: was `{old}`, after down `{new}`; this needs to be undone in down.sql"
            )),
            Some(_) => {}
        }
    }
    for key in after_down.0.keys().filter(|k| !before.0.contains_key(*k)) {
        out.push(format!(
            "{key} still exists after down: down.sql must drop what up created"
        ));
    }
    out
}

/// Whether a query that prepared on `before` may fail to prepare on `after`. Only additions
/// that cannot change how an existing name resolves are safe to skip: new tables, views,
/// indexes, constraints, triggers, sequences and types, and the columns of a table or view the
/// same migration created. A new column on an existing table can make an unqualified name in a
/// join ambiguous, and a new function can make a call ambiguous, so they count; so does any
/// removal or change, and a migration the snapshot sees nothing of (it may have changed what
/// the snapshot does not record).
pub fn may_break_queries(before: &Snapshot, after: &Snapshot) -> bool {
    if before == after {
        return true;
    }
    if before.0.iter().any(|(k, v)| after.0.get(k) != Some(v)) {
        return true;
    }
    after
        .0
        .keys()
        .filter(|k| !before.0.contains_key(*k))
        .any(|key| match object_of(key) {
            ("column", object) => {
                let relation = object.rsplit_once('.').map_or(object, |(t, _)| t);
                let created = |kind: &str| {
                    let k = format!("{kind} {relation}");
                    after.0.contains_key(&k) && !before.0.contains_key(&k)
                };
                !(created("table") || created("view"))
            }
            (
                "table" | "view" | "index" | "constraint" | "trigger" | "sequence" | "enum"
                | "check",
                _,
            ) => false,
            (kind, _) => !kind.starts_with("foreign"),
        })
}

/// Remembers which migration a multi-step `up` started last, to attribute its error.
#[derive(Default)]
struct LastStarted(std::sync::Mutex<String>);

impl ferry_migrate::Observer for LastStarted {
    fn started(&self, label: &str, _: ferry_migrate::Direction, _: usize, _: usize) {
        if let Ok(mut last) = self.0.lock() {
            *last = label.to_string();
        }
    }
}

fn replay_problem(proofs: &mut BTreeMap<i64, Proof>, version: i64, problem: String) {
    let rt = proofs
        .entry(version)
        .or_default()
        .roundtrip
        .get_or_insert(Roundtrip {
            ok: Some(false),
            differences: Vec::new(),
        });
    rt.ok = Some(false);
    rt.differences.push(problem);
}

/// Where the schema after a replay differs from the first pass: `forward[0]` is the schema
/// before the first replayed migration and `forward[i + 1]` the one after migration `i`. Each
/// differing key goes to the last migration that touched it in the first pass (the one whose
/// up built it), or to the last migration when none did. Returns (migration index, keys).
pub fn replay_differences(forward: &[Snapshot], replayed: &Snapshot) -> Vec<(usize, Vec<String>)> {
    let Some(last) = forward.last() else {
        return Vec::new();
    };
    let n = forward.len() - 1;
    let mut keys: Vec<&String> = last
        .0
        .keys()
        .filter(|k| replayed.0.get(*k) != last.0.get(*k))
        .chain(replayed.0.keys().filter(|k| !last.0.contains_key(*k)))
        .collect();
    keys.sort();
    keys.dedup();
    let mut by: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for key in keys {
        let owner = (0..n)
            .rev()
            .find(|&i| forward[i].0.get(key) != forward[i + 1].0.get(key))
            .unwrap_or(n.saturating_sub(1));
        by.entry(owner).or_default().push(key.clone());
    }
    by.into_iter().collect()
}

/// Runs the proof. Returns one [`Proof`] per new migration, in version order.
pub async fn prove(
    migrations: &[Migration],
    base_version: Option<i64>,
    server: &DatabaseUrl,
    old_queries: &[OldQuery],
) -> Result<BTreeMap<i64, Proof>, CompatError> {
    let shadow = Shadow::create(server).await?;
    let result = run(&shadow, migrations, base_version, old_queries).await;
    shadow.destroy().await;
    result
}

async fn run(
    shadow: &Shadow,
    migrations: &[Migration],
    base_version: Option<i64>,
    old_queries: &[OldQuery],
) -> Result<BTreeMap<i64, Proof>, CompatError> {
    let mut driver = ferry_migrate::connect(&shadow.url).await?;
    // After the driver: it creates SQLite's file.
    let mut inspector = shadow.inspector().await?;
    let start = std::time::Instant::now();
    let result = run_with(
        shadow,
        &mut driver,
        &mut inspector,
        migrations,
        base_version,
        old_queries,
    )
    .await;
    tracing::debug!(
        total_ms = start.elapsed().as_millis() as u64,
        "compat: shadow run"
    );
    inspector.close().await;
    let closed = driver.close().await;
    let proofs = result?;
    closed?;
    Ok(proofs)
}

async fn run_with(
    shadow: &Shadow,
    driver: &mut Box<dyn ferry_migrate::Driver>,
    inspector: &mut Inspector,
    migrations: &[Migration],
    base_version: Option<i64>,
    old_queries: &[OldQuery],
) -> Result<BTreeMap<i64, Proof>, CompatError> {
    let migrator = Migrator::new(migrations.to_vec(), MigrateOptions::default());
    let base = base_version.unwrap_or(0);
    let new: Vec<&Migration> = migrator
        .migrations()
        .iter()
        .filter(|m| m.version > base)
        .collect();
    let mut proofs: BTreeMap<i64, Proof> =
        new.iter().map(|m| (m.version, Proof::default())).collect();
    let url = &shadow.url;
    if base_version.is_some() {
        migrator
            .up(driver.as_mut(), Some(base), false, &Quiet)
            .await?;
    }
    let base_snap = inspector.snapshot(url).await?;
    let (mut queries, invalid) = OldQueries::at_base(old_queries, inspector, url).await?;
    if let Some(first) = new.first() {
        proofs.entry(first.version).or_default().findings = invalid;
    }
    // Up, one at a time, snapshot after each.
    let mut snaps = vec![base_snap.clone()];
    let mut applied = 0;
    let mut failed = None;
    for m in &new {
        if let Err(e) = migrator
            .up(driver.as_mut(), Some(m.version), false, &Quiet)
            .await
        {
            let proof = proofs.entry(m.version).or_default();
            proof.findings.push(finding(
                Rule::ShadowApplyFailed,
                m.label(),
                format!("{} fails on a real database: {e}", m.label()),
            ));
            failed = Some(m.label());
            break;
        }
        let snap = inspector.snapshot(url).await?;
        let prev = snaps.last().unwrap_or(&base_snap);
        let mut found = incompatibilities(&base_snap, prev, &snap);
        if may_break_queries(prev, &snap) {
            found.extend(queries.after(&m.label(), inspector, url).await?);
        }
        proofs.entry(m.version).or_default().findings.extend(found);
        snaps.push(snap);
        applied += 1;
    }
    if let Some(label) = failed {
        // The history now holds a failed record that blocks every down; nothing more to prove.
        for proof in proofs.values_mut() {
            proof.roundtrip = Some(Roundtrip {
                ok: None,
                differences: vec![format!(
                    "not proven: {label} failed to apply in the shadow database"
                )],
            });
        }
        return Ok(proofs);
    }
    // Down, newest first: each must restore the snapshot before its up.
    let mut reverted_to = applied;
    let mut clean = true;
    for i in (0..applied).rev() {
        let m = new[i];
        let proof = proofs.entry(m.version).or_default();
        if m.down.is_none() {
            proof.roundtrip = Some(Roundtrip {
                ok: Some(false),
                differences: vec![format!(
                    "{} is irreversible: it has no down script, so a failed release cannot roll it back",
                    m.label()
                )],
            });
            break;
        }
        let target = if i == 0 { base } else { new[i - 1].version };
        if let Err(e) = migrator
            .down(driver.as_mut(), DownTarget::To(target), false, &Quiet)
            .await
        {
            proof.roundtrip = Some(Roundtrip {
                ok: Some(false),
                differences: vec![format!("the down script fails: {e}")],
            });
            break;
        }
        let after = inspector.snapshot(url).await?;
        let diffs = differences(&snaps[i], &after);
        proof.roundtrip = Some(Roundtrip {
            ok: Some(diffs.is_empty()),
            differences: diffs,
        });
        reverted_to = i;
        if after != snaps[i] {
            // Later downs would be compared against a schema that is already wrong, and a
            // replay would only trip over what this down left behind.
            clean = false;
            break;
        }
    }
    // Replay: after clean downs, the reverted migrations must apply again, to the same schema.
    // One snapshot after the whole replay, not one per step: the replay is rarely wrong, and
    // when it is, the forward snapshots say which migration owns each differing object.
    // One `up` for the whole replay too (the lock and history reads are per call).
    if clean && reverted_to < applied {
        let last = LastStarted::default();
        let outcome = migrator
            .up(
                driver.as_mut(),
                Some(new[applied - 1].version),
                false,
                &last,
            )
            .await;
        if let Err(e) = outcome {
            let label = last.0.lock().map(|l| l.clone()).unwrap_or_default();
            let failed = new
                .iter()
                .find(|m| m.label() == label)
                .unwrap_or(&new[applied - 1]);
            replay_problem(
                &mut proofs,
                failed.version,
                format!("up fails when replayed after down: {e}"),
            );
        } else {
            let snap = inspector.snapshot(url).await?;
            for (i, keys) in replay_differences(&snaps[reverted_to..=applied], &snap) {
                replay_problem(
                    &mut proofs,
                    new[reverted_to + i].version,
                    format!(
                        "up replayed after down builds a different schema than the first time: {}",
                        keys.join(", ")
                    ),
                );
            }
        }
    }
    Ok(proofs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(pairs: &[(&str, &str)]) -> Snapshot {
        Snapshot(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn only_safe_additions_skip_preparing_old_queries() {
        let base = snap(&[("table users", ""), ("column users.id", "integer||")]);
        let new_table = snap(&[
            ("table users", ""),
            ("column users.id", "integer||"),
            ("table tags", ""),
            ("column tags.id", "integer||"),
            ("index tags_pkey", "CREATE UNIQUE INDEX …"),
            ("foreign key tags.fk", "users"),
        ]);
        assert!(!may_break_queries(&base, &new_table));
        let new_column = snap(&[
            ("table users", ""),
            ("column users.id", "integer||"),
            ("column users.name", "text||"),
        ]);
        assert!(may_break_queries(&base, &new_column), "ambiguity in joins");
        let changed = snap(&[("table users", ""), ("column users.id", "bigint||")]);
        assert!(may_break_queries(&base, &changed));
        let dropped = snap(&[("table users", "")]);
        assert!(may_break_queries(&base, &dropped));
        let function = snap(&[
            ("table users", ""),
            ("column users.id", "integer||"),
            ("function f(integer)", "…"),
        ]);
        assert!(may_break_queries(&base, &function), "overloads");
        assert!(may_break_queries(&base, &base), "unseen changes");
    }

    #[test]
    fn replay_differences_go_to_the_migration_that_built_the_object() {
        let s0 = snap(&[("table a", "")]);
        let s1 = snap(&[("table a", ""), ("index a_x", "x")]);
        let s2 = snap(&[("table a", ""), ("index a_x", "x"), ("table b", "")]);
        assert!(replay_differences(&[s0.clone(), s1.clone(), s2.clone()], &s2).is_empty());
        let replayed = snap(&[("table a", ""), ("index a_x", "y"), ("table b", "")]);
        assert_eq!(
            replay_differences(&[s0.clone(), s1.clone(), s2.clone()], &replayed),
            [(0, vec!["index a_x".to_string()])]
        );
        let extra = snap(&[
            ("table a", ""),
            ("index a_x", "x"),
            ("table b", ""),
            ("table c", ""),
        ]);
        assert_eq!(
            replay_differences(&[s0, s1, s2], &extra),
            [(1, vec!["table c".to_string()])]
        );
    }
}
