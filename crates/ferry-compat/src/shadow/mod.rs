//! The dynamic proof in a shadow database that ferry creates and drops: apply the migrations up
//! to the base, snapshot the catalog, apply each new migration (snapshot after each), then revert
//! them one by one and require each down to restore the previous snapshot exactly, then apply
//! them again. Migrations run through `ferry_migrate::Migrator`, exactly as `ferry migrate` runs
//! them. It never touches the database it was pointed at: it creates its own on that server
//! (PostgreSQL, MySQL/MariaDB) or a temporary file (SQLite), and drops it afterwards.

mod mysql;
mod postgres;
mod sqlite;

use std::collections::BTreeMap;

use ferry_core::{DatabaseUrl, Engine};
use ferry_migrate::{DownTarget, MigrateOptions, Migration, Migrator, Quiet};

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

    async fn snapshot(&self) -> Result<Snapshot, CompatError> {
        let r = match self.engine {
            Engine::Postgres => postgres::snapshot(&self.url.for_driver()).await,
            Engine::Sqlite => sqlite::snapshot(&self.url.for_driver()).await,
            Engine::MySql => mysql::snapshot(&self.url.for_driver()).await,
        };
        r.map_err(shadow_err(
            "cannot read the shadow database's catalog",
            &self.url,
        ))
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

/// Runs the proof. Returns one [`Proof`] per new migration, in version order.
pub async fn prove(
    migrations: &[Migration],
    base_version: Option<i64>,
    server: &DatabaseUrl,
) -> Result<BTreeMap<i64, Proof>, CompatError> {
    let shadow = Shadow::create(server).await?;
    let result = run(&shadow, migrations, base_version).await;
    shadow.destroy().await;
    result
}

async fn run(
    shadow: &Shadow,
    migrations: &[Migration],
    base_version: Option<i64>,
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
    let mut driver = ferry_migrate::connect(&shadow.url).await?;
    if base_version.is_some() {
        migrator
            .up(driver.as_mut(), Some(base), false, &Quiet)
            .await?;
    }
    let base_snap = shadow.snapshot().await?;
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
        let snap = shadow.snapshot().await?;
        let prev = snaps.last().unwrap_or(&base_snap);
        proofs.entry(m.version).or_default().findings = incompatibilities(&base_snap, prev, &snap);
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
        driver.close().await?;
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
        let after = shadow.snapshot().await?;
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
    if clean && reverted_to < applied {
        for (i, m) in new.iter().enumerate().take(applied).skip(reverted_to) {
            let outcome = migrator
                .up(driver.as_mut(), Some(m.version), false, &Quiet)
                .await;
            let problem = match outcome {
                Err(e) => Some(format!("up fails when replayed after down: {e}")),
                Ok(_) => {
                    let snap = shadow.snapshot().await?;
                    (snap != snaps[i + 1]).then(|| {
                        "up replayed after down builds a different schema than the first time"
                            .to_string()
                    })
                }
            };
            if let Some(p) = problem {
                let rt = proofs
                    .entry(m.version)
                    .or_default()
                    .roundtrip
                    .get_or_insert(Roundtrip {
                        ok: Some(false),
                        differences: Vec::new(),
                    });
                rt.ok = Some(false);
                rt.differences.push(p);
                break;
            }
        }
    }
    driver.close().await?;
    Ok(proofs)
}
