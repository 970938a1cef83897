//! The dynamic proof in a shadow database that ferry creates and drops: apply the migrations up
//! to the base, snapshot the catalog, apply each new migration (snapshot after each), then revert
//! them one by one and require each down to restore the previous snapshot exactly, then apply
//! them again. Migrations run through `ferry_migrate::Migrator`, exactly as `ferry migrate` runs
//! them. After the base and after each new migration it also prepares the previous version's
//! queries (never executing them). It never touches the database it was pointed at: it creates
//! its own on that server (PostgreSQL, MySQL/MariaDB) or a temporary file (SQLite), and drops it
//! afterwards. The SQL it sends itself lives only in the per-engine modules.
//!
//! Speed (`benches/compat.sh`): each pass is one run of the migrator (`up_with`/`down_with`);
//! on PostgreSQL a snapshot after a table, view or index script re-reads only what the script
//! can change ([`scope`]); and a long release is split between several shadow databases that
//! run at once ([`split`]), each proving a consecutive part. What a short release spends outside
//! the proof is cut too: the connections to a shadow database open at once, its snapshot
//! statements are planned while the base migrations run, the base snapshot and the old queries'
//! first prepare run at once on their own connections, and the connection that created the
//! database drops it.

mod database;
mod diff;
mod inspector;
mod mysql;
mod old_queries;
mod postgres;
mod probe;
pub mod scope;
mod split;
mod sqlite;

use std::collections::BTreeMap;

use ferry_core::{DatabaseUrl, Engine};
use ferry_migrate::{DownTarget, MigrateOptions, Migration, Migrator, Quiet};

use database::Shadow;
use diff::{diff, differences, finding, incompatibilities, may_break_queries, replay_differences};
use inspector::Inspector;
use old_queries::{OldQueries, changed_relations};
pub use split::split;

use crate::queries::OldQuery;
use crate::rules::Rule;
use crate::{CompatError, Finding, Roundtrip};

/// Catalog objects: key (`column users.email`) → description.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot(pub BTreeMap<String, String>);

/// A snapshot of `(key, description)` pairs, for the tests of the modules here.
#[cfg(test)]
fn snap(pairs: &[(&str, &str)]) -> Snapshot {
    Snapshot(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// What the shadow run found for one migration.
#[derive(Debug, Default)]
pub struct Proof {
    pub findings: Vec<Finding>,
    pub roundtrip: Option<Roundtrip>,
}

/// Remembers which migration a multi-step run started last, to attribute its error.
#[derive(Default)]
struct LastStarted(std::sync::Mutex<String>);

impl LastStarted {
    fn migration<'m>(&self, migrations: &[&'m Migration]) -> Option<&'m Migration> {
        let label = self.0.lock().ok()?.clone();
        migrations.iter().find(|m| m.label() == label).copied()
    }
}

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

/// Runs the proof. Returns one [`Proof`] per new migration, in version order.
pub async fn prove(
    migrations: &[Migration],
    base_version: Option<i64>,
    server: &DatabaseUrl,
    old_queries: &[OldQuery],
    parallel: Option<usize>,
) -> Result<BTreeMap<i64, Proof>, CompatError> {
    let base = base_version.unwrap_or(0);
    let new = migrations.iter().filter(|m| m.version > base).count();
    let parts = split(new, parallel).into_iter().map(|range| async move {
        let shadow = Shadow::create(server).await?;
        let result = run(&shadow, migrations, base_version, old_queries, range).await;
        shadow.destroy().await;
        result
    });
    let mut proofs = BTreeMap::new();
    for part in futures_util::future::join_all(parts).await {
        proofs.extend(part?);
    }
    Ok(proofs)
}

async fn run(
    shadow: &Shadow,
    migrations: &[Migration],
    base_version: Option<i64>,
    old_queries: &[OldQuery],
    range: std::ops::Range<usize>,
) -> Result<BTreeMap<i64, Proof>, CompatError> {
    // At once on a server (each connection is a round trip or three, and TLS); one after the
    // other for SQLite, whose file the driver creates.
    let with_queries = !old_queries.is_empty();
    let (driver, inspector) = match shadow.engine {
        Engine::Sqlite => {
            let driver = ferry_migrate::connect(&shadow.url).await;
            (driver, Inspector::open(shadow, with_queries).await)
        }
        _ => {
            futures_util::future::join(
                ferry_migrate::connect(&shadow.url),
                Inspector::open(shadow, with_queries),
            )
            .await
        }
    };
    let mut driver = driver?;
    let mut inspector = match inspector {
        Ok(inspector) => inspector,
        Err(e) => {
            let _ = driver.close().await;
            return Err(e);
        }
    };
    let start = std::time::Instant::now();
    let result = run_with(
        shadow,
        &mut driver,
        &mut inspector,
        migrations,
        base_version,
        old_queries,
        range.clone(),
    )
    .await;
    tracing::debug!(
        first = range.start,
        end = range.end,
        total_ms = start.elapsed().as_millis() as u64,
        "compat: shadow run"
    );
    inspector.close().await;
    let closed = driver.close().await;
    let proofs = result?;
    closed?;
    Ok(proofs)
}

/// Proves the new migrations `range` (indexes among those above the base) in one shadow
/// database: apply the base (and, for a later part, the new migrations before `range`), then
/// up, down and replay the part.
async fn run_with(
    shadow: &Shadow,
    driver: &mut Box<dyn ferry_migrate::Driver>,
    inspector: &mut Inspector,
    migrations: &[Migration],
    base_version: Option<i64>,
    old_queries: &[OldQuery],
    range: std::ops::Range<usize>,
) -> Result<BTreeMap<i64, Proof>, CompatError> {
    let migrator = Migrator::new(migrations.to_vec(), MigrateOptions::default());
    let base = base_version.unwrap_or(0);
    let above: Vec<&Migration> = migrator
        .migrations()
        .iter()
        .filter(|m| m.version > base)
        .collect();
    let new = &above[range.clone()];
    let mut proofs: BTreeMap<i64, Proof> =
        new.iter().map(|m| (m.version, Proof::default())).collect();
    let Some(newest) = new.last().map(|m| m.version) else {
        return Ok(proofs);
    };
    let index: BTreeMap<i64, usize> = new
        .iter()
        .enumerate()
        .map(|(i, m)| (m.version, i))
        .collect();
    // What each script can change: the snapshot after it re-reads only that (PostgreSQL).
    let engine = shadow.engine;
    let up_scope: Vec<Option<scope::Scope>> = new
        .iter()
        .map(|m| scope::relations(engine, &m.up))
        .collect();
    let down_scope: Vec<Option<scope::Scope>> = new
        .iter()
        .map(|m| m.down.as_deref().and_then(|d| scope::relations(engine, d)))
        .collect();
    let url = &shadow.url;
    // The base, while the inspector gets its statements ready.
    let apply_base = async {
        match base_version {
            Some(_) => migrator
                .up(driver.as_mut(), Some(base), false, &Quiet)
                .await
                .map(drop),
            None => Ok(()),
        }
    };
    futures_util::future::join(apply_base, inspector.warm())
        .await
        .0?;
    let all: Vec<&OldQuery> = old_queries.iter().collect();
    let (base_snap, prepared) = inspector.snapshot_and_prepare(url, &all).await?;
    let (mut queries, invalid) = OldQueries::at_base(engine, all, prepared);
    // A later part starts where the part before it ends. That part reports what its own
    // migrations break (an old query, a failure to apply); here they only set the start.
    let (floor, start_snap) = match range.start.checked_sub(1).map(|i| above[i]) {
        None => {
            proofs.entry(new[0].version).or_default().findings = invalid;
            (base, base_snap.clone())
        }
        Some(before) => {
            if let Err(e) = migrator
                .up(driver.as_mut(), Some(before.version), false, &Quiet)
                .await
            {
                for proof in proofs.values_mut() {
                    proof.roundtrip = Some(Roundtrip {
                        ok: None,
                        differences: vec![format!(
                            "not proven: a migration up to {} failed to apply in the shadow \
                             database: {e}",
                            before.label()
                        )],
                    });
                }
                return Ok(proofs);
            }
            let snap = inspector.snapshot(url, None).await?;
            queries.after(&before.label(), None, inspector, url).await?;
            (before.version, snap)
        }
    };

    // Up, in one run of the migrator (one lock, one history read), a snapshot after each.
    let mut snaps = vec![start_snap];
    let mut inspected: Result<(), CompatError> = Ok(());
    let last = LastStarted::default();
    let forward = migrator
        .up_with(driver.as_mut(), Some(newest), &last, async |step| {
            let label = format!("{}_{}", step.version, step.name);
            let r = async {
                let scope = up_scope[index[&step.version]].as_ref();
                let snap = inspector.snapshot(url, scope).await?;
                let prev = snaps.last().unwrap_or(&base_snap);
                let changes = diff(prev, &snap);
                let mut found = incompatibilities(&base_snap, &changes);
                inspector
                    .judge_views(url, &base_snap, &snap, &mut found)
                    .await?;
                if may_break_queries(&changes) {
                    let changed = changed_relations(engine, &changes);
                    found.extend(
                        queries
                            .after(&label, changed.as_ref(), inspector, url)
                            .await?,
                    );
                }
                proofs
                    .entry(step.version)
                    .or_default()
                    .findings
                    .extend(found);
                snaps.push(snap);
                Ok(())
            }
            .await;
            let ok = r.is_ok();
            inspected = r;
            ok
        })
        .await;
    std::mem::replace(&mut inspected, Ok(()))?;
    let applied = snaps.len() - 1;
    if let Err(e) = forward {
        let failed = last
            .migration(new)
            .unwrap_or(new[applied.min(new.len() - 1)]);
        proofs
            .entry(failed.version)
            .or_default()
            .findings
            .push(finding(
                Rule::ShadowApplyFailed,
                failed.label(),
                format!("{} fails on a real database: {e}", failed.label()),
            ));
        // The history may now hold a failed record that blocks every down; nothing more to
        // prove.
        for proof in proofs.values_mut() {
            proof.roundtrip = Some(Roundtrip {
                ok: None,
                differences: vec![format!(
                    "not proven: {} failed to apply in the shadow database",
                    failed.label()
                )],
            });
        }
        return Ok(proofs);
    }

    // Down, newest first, in one run of the migrator: each must restore the snapshot taken
    // before its up. It stops at the first that does not (later downs would be compared against
    // a schema that is already wrong, and a replay would only trip over what it left behind),
    // and it stops above the newest irreversible migration, which is reported as such.
    let irreversible = (0..applied).rev().find(|&i| !new[i].reversible());
    let target = match irreversible {
        Some(i) => new[i].version,
        None => floor,
    };
    let mut reverted_to = applied;
    let mut clean = true;
    if irreversible != Some(applied - 1) {
        let last = LastStarted::default();
        let backward = migrator
            .down_with(
                driver.as_mut(),
                DownTarget::To(target),
                &last,
                async |step| {
                    let i = index[&step.version];
                    let r = inspector.snapshot(url, down_scope[i].as_ref()).await;
                    let after = match r {
                        Ok(after) => after,
                        Err(e) => {
                            inspected = Err(e);
                            return false;
                        }
                    };
                    let diffs = differences(&snaps[i], &after);
                    reverted_to = i;
                    clean = diffs.is_empty();
                    proofs.entry(step.version).or_default().roundtrip = Some(Roundtrip {
                        ok: Some(clean),
                        differences: diffs,
                    });
                    clean
                },
            )
            .await;
        inspected?;
        if let Err(e) = backward {
            // Attributed to the migration whose down started last (the one after the last
            // that was reverted, when the observer saw nothing).
            let failed = last
                .migration(new)
                .unwrap_or(new[reverted_to.saturating_sub(1)]);
            proofs.entry(failed.version).or_default().roundtrip = Some(Roundtrip {
                ok: Some(false),
                differences: vec![format!("the down script fails: {e}")],
            });
            clean = false;
        }
    }
    if let Some(i) = irreversible
        && clean
    {
        let m = new[i];
        proofs.entry(m.version).or_default().roundtrip = Some(Roundtrip {
            ok: Some(false),
            differences: vec![format!(
                "{} is irreversible: it has no down script, so a failed release cannot roll it back",
                m.label()
            )],
        });
    }

    // Replay: after clean downs, the reverted migrations must apply again, to the same schema.
    // One snapshot after the whole replay, not one per step: the replay is rarely wrong, and
    // when it is, the forward snapshots say which migration owns each differing object.
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
            let failed = last.migration(new).unwrap_or(new[applied - 1]);
            replay_problem(
                &mut proofs,
                failed.version,
                format!("up fails when replayed after down: {e}"),
            );
        } else {
            let snap = inspector.snapshot(url, None).await?;
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
