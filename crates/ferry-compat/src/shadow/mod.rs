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

pub mod base;
mod catalog;
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
use ferry_migrate::{MigrateOptions, Migration, Migrator, Quiet, RoundTrip};

use database::Shadow;
use diff::{diff, differences, finding, incompatibilities, may_break_queries};
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
    kept: Option<&base::KeptBase>,
) -> Result<BTreeMap<i64, Proof>, CompatError> {
    let base = base_version.unwrap_or(0);
    let new = migrations.iter().filter(|m| m.version > base).count();
    let bases = base::Bases::new(server, kept, migrations, base_version);
    let bases = bases.as_ref();
    let parts = split(new, parallel).into_iter().map(|range| {
        let proof = Part {
            server,
            bases,
            migrations,
            base_version,
            old_queries,
        };
        async move { proof.prove(range).await }
    });
    let mut proofs = BTreeMap::new();
    for part in futures_util::future::join_all(parts).await {
        proofs.extend(part?);
    }
    Ok(proofs)
}

/// One consecutive part of the new migrations, proven in shadow databases of its own.
#[derive(Clone, Copy)]
struct Part<'a> {
    server: &'a DatabaseUrl,
    /// Copies of a kept base instead of applying the base in each shadow database.
    bases: Option<&'a base::Bases<'a>>,
    migrations: &'a [Migration],
    base_version: Option<i64>,
    old_queries: &'a [OldQuery],
}

/// How a shadow database's run ended.
enum Ended {
    /// Every migration of the range has its verdict, or none after a failed up can get one.
    Done,
    /// The database is no longer at a state the next migration can be proven from (a down
    /// that failed and could not be rolled back, a down that left the schema different, a
    /// replay that failed): go on in a new one, from the up of migration `index`.
    Rebuild { index: usize },
}

impl Part<'_> {
    /// Proves the new migrations `range` (indexes among those above the base): in one shadow
    /// database while every state stays usable, else in a new one from where the last stopped.
    async fn prove(
        self,
        range: std::ops::Range<usize>,
    ) -> Result<BTreeMap<i64, Proof>, CompatError> {
        let mut proofs = BTreeMap::new();
        let mut start = range.start;
        while start < range.end {
            let shadow = match self.bases {
                Some(bases) => bases.shadow().await?,
                None => Shadow::create(self.server).await?,
            };
            let ended = self.session(&shadow, start..range.end, &mut proofs).await;
            shadow.destroy().await;
            match ended? {
                Ended::Done => break,
                Ended::Rebuild { index } => start = index + 1,
            }
        }
        Ok(proofs)
    }

    /// Opens the connections to one shadow database and proves `range` there.
    async fn session(
        self,
        shadow: &Shadow,
        range: std::ops::Range<usize>,
        proofs: &mut BTreeMap<i64, Proof>,
    ) -> Result<Ended, CompatError> {
        // At once on a server (each connection is a round trip or three, and TLS); one after
        // the other for SQLite, whose file the driver creates.
        let with_queries = !self.old_queries.is_empty();
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
        let result = self
            .run_with(shadow, &mut driver, &mut inspector, range.clone(), proofs)
            .await;
        tracing::debug!(
            first = range.start,
            end = range.end,
            total_ms = start.elapsed().as_millis() as u64,
            "compat: shadow run"
        );
        inspector.close().await;
        let closed = driver.close().await;
        let ended = result?;
        closed?;
        Ok(ended)
    }

    /// Proves the new migrations `range` in one shadow database: apply the base (and the new
    /// migrations before `range`), then for each migration of the range up, snapshot, down,
    /// compare with the snapshot before its up, and up again.
    async fn run_with(
        self,
        shadow: &Shadow,
        driver: &mut Box<dyn ferry_migrate::Driver>,
        inspector: &mut Inspector,
        range: std::ops::Range<usize>,
        proofs: &mut BTreeMap<i64, Proof>,
    ) -> Result<Ended, CompatError> {
        let migrator = Migrator::new(self.migrations.to_vec(), MigrateOptions::default());
        let base = self.base_version.unwrap_or(0);
        let above: Vec<&Migration> = migrator
            .migrations()
            .iter()
            .filter(|m| m.version > base)
            .collect();
        let new = &above[range.clone()];
        let Some(newest) = new.last().map(|m| m.version) else {
            return Ok(Ended::Done);
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
            match self.base_version {
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
        let all: Vec<&OldQuery> = self.old_queries.iter().collect();
        let (base_snap, prepared) = inspector.snapshot_and_prepare(url, &all).await?;
        let (mut queries, invalid) = OldQueries::at_base(engine, all, prepared);
        // A later part (or a new database after a state that could not be used) starts where
        // the migrations before it end. Whoever proved those reports what they break (an old
        // query, a failure to apply); here they only set the start.
        let start_snap = match range.start.checked_sub(1).map(|i| above[i]) {
            None => {
                proofs.entry(new[0].version).or_default().findings = invalid;
                base_snap.clone()
            }
            Some(before) => {
                if let Err(e) = migrator
                    .up(driver.as_mut(), Some(before.version), false, &Quiet)
                    .await
                {
                    for m in new {
                        proofs.entry(m.version).or_default().roundtrip = Some(not_proven(format!(
                            "not proven: a migration up to {} failed to apply in the shadow \
                             database: {e}",
                            before.label()
                        )));
                    }
                    return Ok(Ended::Done);
                }
                let snap = inspector.snapshot(url, None).await?;
                queries.after(&before.label(), None, inspector, url).await?;
                snap
            }
        };

        // One run of the migrator (one lock, one history read) for the whole range: each
        // migration up, down and up again before the next.
        let mut current = start_snap;
        // The schema before the migration being proven, while its down and replay run.
        let mut before = current.clone();
        let mut inspected: Result<(), CompatError> = Ok(());
        let mut ended = Ended::Done;
        // The migration whose down ran and whose replay has not finished yet.
        let mut replaying: Option<usize> = None;
        let mut proven = 0;
        let last = LastStarted::default();
        let outcome = migrator
            .round_trip_with(driver.as_mut(), Some(newest), &last, async |step| {
                let r: Result<bool, CompatError> = async {
                    match step {
                        RoundTrip::Applied(step) => {
                            let i = index[&step.version];
                            let snap = inspector.snapshot(url, up_scope[i].as_ref()).await?;
                            let changes = diff(&current, &snap);
                            let mut found = incompatibilities(&base_snap, &changes);
                            inspector
                                .judge_views(url, &base_snap, &snap, &mut found)
                                .await?;
                            if may_break_queries(&changes) {
                                let changed = changed_relations(engine, &changes);
                                let label = new[i].label();
                                found.extend(
                                    queries
                                        .after(&label, changed.as_ref(), inspector, url)
                                        .await?,
                                );
                            }
                            let proof = proofs.entry(step.version).or_default();
                            proof.findings.extend(found);
                            before = std::mem::replace(&mut current, snap);
                            proven = i + 1;
                            if !new[i].reversible() {
                                proof.roundtrip = Some(Roundtrip {
                                    ok: Some(false),
                                    differences: vec![format!(
                                        "{} is irreversible: it has no down script, so a failed \
                                         release cannot roll it back",
                                        new[i].label()
                                    )],
                                });
                            }
                            Ok(true)
                        }
                        RoundTrip::Reverted(step) => {
                            let i = index[&step.version];
                            let snap = inspector.snapshot(url, down_scope[i].as_ref()).await?;
                            let diffs = differences(&before, &snap);
                            let clean = diffs.is_empty();
                            proofs.entry(step.version).or_default().roundtrip = Some(Roundtrip {
                                ok: Some(clean),
                                differences: diffs,
                            });
                            if clean {
                                replaying = Some(i);
                            } else {
                                // The schema is not the one the next migrations were written
                                // for: they go on from this one's up, in a new database.
                                tracing::info!(migration = %new[i].label(), "compat: down is inexact; the proof goes on in a new shadow database");
                                ended = Ended::Rebuild {
                                    index: range.start + i,
                                };
                            }
                            Ok(clean)
                        }
                        RoundTrip::DownFailed {
                            migration,
                            error,
                            rolled_back,
                        } => {
                            let i = index[&migration.version];
                            let mut message = format!("the down script fails: {error}");
                            if !rolled_back {
                                message.push_str(&format!(
                                    "; {} could not roll the failed down back, so the migrations \
                                     after it were proven in a new shadow database, from this \
                                     migration's up",
                                    engine_name(engine)
                                ));
                                ended = Ended::Rebuild {
                                    index: range.start + i,
                                };
                            }
                            proofs.entry(migration.version).or_default().roundtrip =
                                Some(Roundtrip {
                                    ok: Some(false),
                                    differences: vec![message],
                                });
                            Ok(rolled_back)
                        }
                        RoundTrip::Reapplied(step) => {
                            let i = index[&step.version];
                            replaying = None;
                            let snap = inspector.snapshot(url, up_scope[i].as_ref()).await?;
                            let keys: Vec<String> = diff(&current, &snap)
                                .iter()
                                .map(|(key, _, _)| key.to_string())
                                .collect();
                            if !keys.is_empty() {
                                replay_problem(
                                    proofs,
                                    step.version,
                                    format!(
                                        "up replayed after down builds a different schema than \
                                         the first time: {}",
                                        keys.join(", ")
                                    ),
                                );
                            }
                            current = snap;
                            Ok(true)
                        }
                    }
                }
                .await;
                match r {
                    Ok(go_on) => go_on,
                    Err(e) => {
                        inspected = Err(e);
                        false
                    }
                }
            })
            .await;
        inspected?;
        let Err(e) = outcome else {
            return Ok(ended);
        };
        if let Some(i) = replaying {
            // The down was exact, yet the up does not apply again: something the snapshot does
            // not see was left behind. The migrations after it go on from its first up.
            replay_problem(
                proofs,
                new[i].version,
                format!("up fails when replayed after down: {e}"),
            );
            return Ok(Ended::Rebuild {
                index: range.start + i,
            });
        }
        let failed = last
            .migration(new)
            .unwrap_or(new[proven.min(new.len() - 1)]);
        let proof = proofs.entry(failed.version).or_default();
        proof.findings.push(finding(
            Rule::ShadowApplyFailed,
            failed.label(),
            format!("{} fails on a real database: {e}", failed.label()),
        ));
        proof.roundtrip = Some(not_proven(format!(
            "not proven: {} failed to apply in the shadow database",
            failed.label()
        )));
        // The migrations after it were written for a schema that this one did not build.
        let at = index[&failed.version];
        for m in &new[at + 1..] {
            proofs.entry(m.version).or_default().roundtrip = Some(not_proven(format!(
                "not proven: {} before it failed to apply in the shadow database",
                failed.label()
            )));
        }
        Ok(Ended::Done)
    }
}

fn not_proven(why: String) -> Roundtrip {
    Roundtrip {
        ok: None,
        differences: vec![why],
    }
}

fn engine_name(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgres => "PostgreSQL",
        Engine::MySql => "MySQL/MariaDB",
        Engine::Sqlite => "SQLite",
    }
}
