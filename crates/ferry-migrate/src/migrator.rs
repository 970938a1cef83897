//! The algorithm, written once for every database: lock, read the history, refuse what is
//! unsafe, apply or revert in order, record, unlock. Drivers supply the primitives.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::drivers::{self, Driver, HistoryRecord, Tool};
use crate::error::{MigrateError, Result};
use crate::source::{self, Migration};
use crate::{Direction, sql};

/// How a run behaves; everything has a safe default.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    pub lock_timeout: Duration,
    /// Who is applying, recorded in the history (`user@host`, or the CI's user and job).
    pub applied_by: String,
    /// Apply a pending migration whose version is below the newest applied one.
    pub allow_out_of_order: bool,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            lock_timeout: ferry_core::config::DEFAULT_LOCK_TIMEOUT,
            applied_by: "ferry".to_string(),
            allow_out_of_order: false,
        }
    }
}

/// How long each migration's statements wait for a lock on a table a long transaction holds
/// (distinct from [`MigrateOptions::lock_timeout`], the wait for ferry's own migration lock).
/// A migration that queues behind a long transaction would block every query on its table
/// behind it; with a timeout it gives up (rolled back, nothing recorded), pauses and tries again,
/// and after the last try names the sessions that held the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DdlLock {
    /// `None` waits forever (the database's own behaviour).
    pub timeout: Option<Duration>,
    /// Tries after the first one.
    pub retries: u32,
    /// The pause before the first retry; each later pause is twice the one before.
    pub pause: Duration,
}

impl Default for DdlLock {
    fn default() -> Self {
        Self {
            timeout: Some(ferry_core::config::DEFAULT_DDL_LOCK_TIMEOUT),
            retries: ferry_core::config::DEFAULT_DDL_LOCK_RETRIES,
            pause: Duration::from_secs(1),
        }
    }
}

/// Told about each migration as it runs (the CLI draws a progress bar with it).
pub trait Observer: Sync {
    fn started(&self, _label: &str, _direction: Direction, _index: usize, _total: usize) {}
    fn finished(&self, _label: &str, _direction: Direction, _elapsed: Duration) {}
}

/// An observer that does nothing.
pub struct Quiet;
impl Observer for Quiet {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Applied,
    Pending,
    /// Applied, but the file's checksum changed since.
    Modified,
    /// Applied, but no file for it exists here.
    Missing,
    /// Stopped part-way; blocks further runs until `repair`.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Applied => "applied",
            State::Pending => "pending",
            State::Modified => "modified",
            State::Missing => "missing",
            State::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MigrationStatus {
    pub version: i64,
    pub name: String,
    pub state: State,
    /// For an applied migration: whether its *recorded* down script is non-empty (that is what
    /// `down` runs). For a pending one: whether its file has a down.
    pub reversible: bool,
    pub applied_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub current_version: Option<i64>,
    pub migrations: Vec<MigrationStatus>,
}

/// One migration applied or reverted (or, in a dry run, that would be).
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub version: i64,
    pub name: String,
    pub duration_ms: u64,
    /// The SQL that ran or, in a dry run, would run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpReport {
    pub applied: Vec<Step>,
    pub current_version: Option<i64>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DownReport {
    pub reverted: Vec<Step>,
    pub current_version: Option<i64>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RedoReport {
    pub reverted: Vec<Step>,
    pub applied: Vec<Step>,
    pub current_version: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub version: i64,
    pub name: String,
    pub state: State,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ValidateReport {
    /// Number of migration files that loaded.
    pub files: usize,
    /// Whether the database was compared too.
    pub database_checked: bool,
    pub problems: Vec<Problem>,
    pub valid: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepairChange {
    pub version: i64,
    pub name: String,
    /// `cleared_failed` or `updated_checksum`.
    pub action: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepairReport {
    pub changes: Vec<RepairChange>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    /// `version` or the tool adopted from.
    pub source: String,
    pub recorded: Vec<Step>,
    pub current_version: Option<i64>,
}

/// One step of [`Migrator::round_trip_with`].
#[derive(Debug)]
pub enum RoundTrip<'a> {
    /// The migration was applied and recorded (the first time).
    Applied(&'a Step),
    /// Its down ran and its record is gone.
    Reverted(&'a Step),
    /// Its down failed with `error`. `rolled_back`: the database undid the attempt, so the
    /// migration is still applied and recorded; otherwise its record says failed and the
    /// schema is wherever the down stopped.
    DownFailed {
        migration: &'a Migration,
        error: &'a MigrateError,
        rolled_back: bool,
    },
    /// Applied and recorded again after its down.
    Reapplied(&'a Step),
}

/// Where `down` stops.
#[derive(Debug, Clone, Copy)]
pub enum DownTarget {
    /// Revert this many of the newest applied migrations.
    Steps(usize),
    /// Leave this version applied and revert everything above it (`0` reverts all).
    To(i64),
}

/// The migrations of one directory, and how to run them.
pub struct Migrator {
    migrations: Vec<Migration>,
    options: MigrateOptions,
    ddl_lock: DdlLock,
}

impl Migrator {
    /// Loads every migration in `dir`; any bad file is an error and nothing is run.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::new(
            source::load_dir(dir.as_ref())?,
            MigrateOptions::default(),
        ))
    }

    pub fn new(mut migrations: Vec<Migration>, options: MigrateOptions) -> Self {
        migrations.sort_by_key(|m| m.version);
        Self {
            migrations,
            options,
            ddl_lock: DdlLock::default(),
        }
    }

    pub fn with_options(mut self, options: MigrateOptions) -> Self {
        self.options = options;
        self
    }

    /// How long each migration waits for the locks its statements need, and how often it
    /// tries (default: 10 s, 3 retries).
    pub fn with_ddl_lock(mut self, ddl_lock: DdlLock) -> Self {
        self.ddl_lock = ddl_lock;
        self
    }

    pub fn migrations(&self) -> &[Migration] {
        &self.migrations
    }

    fn file(&self, version: i64) -> Option<&Migration> {
        self.migrations
            .binary_search_by_key(&version, |m| m.version)
            .ok()
            .map(|i| &self.migrations[i])
    }

    /// Connects to `url`, applies every pending migration, and disconnects: what an application
    /// calls at start-up.
    pub async fn run_up(&self, url: &ferry_core::DatabaseUrl) -> Result<UpReport> {
        let mut driver = drivers::connect(url).await?;
        let report = self.up(driver.as_mut(), None, false, &Quiet).await;
        driver.close().await?;
        report
    }

    /// The state of every migration, from the files and the history. Changes nothing.
    pub async fn status(&self, driver: &mut dyn Driver) -> Result<StatusReport> {
        let history = driver.history().await?;
        Ok(self.status_of(&history))
    }

    fn status_of(&self, history: &[HistoryRecord]) -> StatusReport {
        let mut rows: BTreeMap<i64, MigrationStatus> = BTreeMap::new();
        for m in &self.migrations {
            rows.insert(
                m.version,
                MigrationStatus {
                    version: m.version,
                    name: m.name.clone(),
                    state: State::Pending,
                    reversible: m.reversible(),
                    applied_at: None,
                },
            );
        }
        for h in history {
            let file = self.file(h.version);
            let state = if !h.success {
                State::Failed
            } else {
                match file {
                    None => State::Missing,
                    Some(f) if f.checksum != h.checksum => State::Modified,
                    Some(_) => State::Applied,
                }
            };
            rows.insert(
                h.version,
                MigrationStatus {
                    version: h.version,
                    name: h.name.clone(),
                    state,
                    reversible: h.down_sql.as_deref().is_some_and(|d| !sql::is_blank(d)),
                    applied_at: Some(h.applied_at),
                },
            );
        }
        StatusReport {
            current_version: current_version(history),
            migrations: rows.into_values().collect(),
        }
    }

    /// Applies pending migrations in order, up to and including `to` when given.
    /// A dry run takes no lock and changes nothing; it returns the SQL it would run.
    pub async fn up(
        &self,
        driver: &mut dyn Driver,
        to: Option<i64>,
        dry_run: bool,
        observer: &dyn Observer,
    ) -> Result<UpReport> {
        if dry_run {
            let history = driver.history().await?;
            let plan = self.up_plan(&history, to)?;
            return Ok(UpReport {
                applied: plan
                    .iter()
                    .map(|m| step(m.version, &m.name, 0, Some(m.up.clone())))
                    .collect(),
                current_version: current_version(&history),
                dry_run: true,
            });
        }
        self.up_with(driver, to, observer, async |_| true).await
    }

    /// Like [`up`](Self::up) (never a dry run), and calls `after` once each migration is applied
    /// and recorded, still holding the lock; when it returns `false` the run stops there. For a
    /// caller that inspects the database between migrations (`ferry compat check`): one lock and
    /// one history read for the whole run instead of one per migration.
    pub async fn up_with(
        &self,
        driver: &mut dyn Driver,
        to: Option<i64>,
        observer: &dyn Observer,
        mut after: impl AsyncFnMut(&Step) -> bool,
    ) -> Result<UpReport> {
        self.locked(driver, async |this, driver| {
            let history = driver.history().await?;
            let plan = this.up_plan(&history, to)?;
            let applied = this.apply_all(driver, &plan, observer, &mut after).await?;
            Ok(UpReport {
                applied,
                current_version: current_version(&driver.history().await?),
                dry_run: false,
            })
        })
        .await
    }

    /// Reverts applied migrations, newest first, running the down script recorded when each was
    /// applied. Refuses before reverting anything if one of them is irreversible.
    pub async fn down(
        &self,
        driver: &mut dyn Driver,
        target: DownTarget,
        dry_run: bool,
        observer: &dyn Observer,
    ) -> Result<DownReport> {
        if let DownTarget::Steps(0) = target {
            return Err(MigrateError::Invalid("--steps must be at least 1".into()));
        }
        if dry_run {
            let history = driver.history().await?;
            let plan = down_plan(&history, target)?;
            return Ok(DownReport {
                reverted: plan
                    .iter()
                    .map(|h| step(h.version, &h.name, 0, h.down_sql.clone()))
                    .collect(),
                current_version: current_version(&history),
                dry_run: true,
            });
        }
        self.down_with(driver, target, observer, async |_| true)
            .await
    }

    /// Like [`down`](Self::down) (never a dry run), and calls `after` once each migration is
    /// reverted, still holding the lock; when it returns `false` the run stops there.
    pub async fn down_with(
        &self,
        driver: &mut dyn Driver,
        target: DownTarget,
        observer: &dyn Observer,
        mut after: impl AsyncFnMut(&Step) -> bool,
    ) -> Result<DownReport> {
        if let DownTarget::Steps(0) = target {
            return Err(MigrateError::Invalid("--steps must be at least 1".into()));
        }
        self.locked(driver, async |this, driver| {
            let history = driver.history().await?;
            let plan = down_plan(&history, target)?;
            let reverted = this.revert_all(driver, &plan, observer, &mut after).await?;
            Ok(DownReport {
                reverted,
                current_version: current_version(&driver.history().await?),
                dry_run: false,
            })
        })
        .await
    }

    /// Applies pending migrations in order, up to and including `to`, and proves each pair on
    /// its own right after its up: apply N, revert N with its down, apply N again, then N + 1,
    /// all under one lock. `after` is told each step ([`RoundTrip`]) and stops the run by
    /// returning `false`. An irreversible migration is applied once. A down that fails is told
    /// to `after` instead of ending the run: when the database rolled it back (transactional
    /// DDL), N stays applied and recorded and the run goes on with N + 1; otherwise its record
    /// now says failed and the run ends there. Any other failure ends the run with its error
    /// (the observer says which migration started last, and in which direction).
    /// For `ferry compat check`, in a database that is thrown away.
    pub async fn round_trip_with(
        &self,
        driver: &mut dyn Driver,
        to: Option<i64>,
        observer: &dyn Observer,
        mut after: impl AsyncFnMut(RoundTrip<'_>) -> bool,
    ) -> Result<UpReport> {
        self.locked(driver, async |this, driver| {
            let history = driver.history().await?;
            let plan = this.up_plan(&history, to)?;
            let total = plan.len();
            let mut applied = Vec::with_capacity(total);
            for (i, m) in plan.iter().enumerate() {
                let Some(step) = this.apply_one(driver, m, observer, (i, total)).await? else {
                    continue;
                };
                let go_on = after(RoundTrip::Applied(&step)).await;
                applied.push(step);
                if !go_on {
                    break;
                }
                if !m.reversible() {
                    continue;
                }
                let record = this.record_for(m);
                match this.revert_one(driver, &record, observer, (i, total)).await {
                    Ok(Some(step)) => {
                        if !after(RoundTrip::Reverted(&step)).await {
                            break;
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        let rolled_back = matches!(
                            error,
                            MigrateError::Execute {
                                recorded_failed: false,
                                ..
                            }
                        );
                        let go_on = after(RoundTrip::DownFailed {
                            migration: m,
                            error: &error,
                            rolled_back,
                        })
                        .await;
                        if rolled_back && go_on {
                            continue;
                        }
                        break;
                    }
                }
                let Some(step) = this.apply_one(driver, m, observer, (i, total)).await? else {
                    continue;
                };
                if !after(RoundTrip::Reapplied(&step)).await {
                    break;
                }
            }
            Ok(UpReport {
                applied,
                current_version: current_version(&driver.history().await?),
                dry_run: false,
            })
        })
        .await
    }

    /// Reverts the newest applied migration and applies it again from its file.
    pub async fn redo(
        &self,
        driver: &mut dyn Driver,
        observer: &dyn Observer,
    ) -> Result<RedoReport> {
        self.locked(driver, async |this, driver| {
            let history = driver.history().await?;
            let plan = down_plan(&history, DownTarget::Steps(1))?;
            let Some(last) = plan.first() else {
                return Err(MigrateError::Invalid("nothing is applied, so there is nothing to redo".into()));
            };
            let file = this.file(last.version).ok_or_else(|| MigrateError::NoSuchMigration {
                version: last.version,
                problem: format!(
                    "({}) has no file in the migrations directory, so it could be reverted but not re-applied; \
                     nothing was changed",
                    last.name
                ),
            })?;
            let reverted = this.revert_all(driver, &plan, observer, &mut async |_| true).await?;
            let applied = this.apply_all(driver, &[file], observer, &mut async |_| true).await?;
            Ok(RedoReport {
                reverted,
                applied,
                current_version: current_version(&driver.history().await?),
            })
        })
        .await
    }

    /// Checks the files (they loaded, or this migrator would not exist) and, with a database,
    /// that applied migrations still match their files and none is failed.
    pub async fn validate(&self, driver: Option<&mut dyn Driver>) -> Result<ValidateReport> {
        let mut problems = Vec::new();
        let database_checked = driver.is_some();
        if let Some(driver) = driver {
            for s in self.status(driver).await?.migrations {
                let message = match s.state {
                    State::Modified => {
                        "applied with a different checksum; the file changed after it was applied"
                    }
                    State::Failed => {
                        "recorded as failed; fix the schema by hand, then run `ferry migrate repair`"
                    }
                    _ => continue,
                };
                problems.push(Problem {
                    version: s.version,
                    name: s.name,
                    state: s.state,
                    message: message.into(),
                });
            }
        }
        Ok(ValidateReport {
            files: self.migrations.len(),
            database_checked,
            valid: problems.is_empty(),
            problems,
        })
    }

    /// After a human fixed things by hand: clears failed records, and records the current
    /// checksum (and down script) of modified migrations. Returns exactly what it changed.
    pub async fn repair(&self, driver: &mut dyn Driver) -> Result<RepairReport> {
        self.locked(driver, async |this, driver| {
            let mut changes = Vec::new();
            for h in driver.history().await? {
                if !h.success {
                    driver.delete_record(h.version).await?;
                    changes.push(RepairChange {
                        version: h.version,
                        name: h.name.clone(),
                        action: "cleared_failed",
                        detail: "removed the failed record; the migration is pending again (if you finished it by \
                                 hand, run `ferry migrate baseline --version V` to record it as applied)"
                            .into(),
                    });
                    continue;
                }
                let Some(file) = this.file(h.version) else { continue };
                if file.checksum != h.checksum {
                    let updated = HistoryRecord {
                        name: file.name.clone(),
                        checksum: file.checksum.clone(),
                        down_sql: file.down.clone(),
                        down_transaction: file.down_transaction,
                        ..h.clone()
                    };
                    driver.update_record(&updated).await?;
                    changes.push(RepairChange {
                        version: h.version,
                        name: file.name.clone(),
                        action: "updated_checksum",
                        detail: format!(
                            "recorded checksum {} (was {}) and the file's current down script",
                            &file.checksum[..12],
                            &h.checksum[..h.checksum.len().min(12)]
                        ),
                    });
                }
            }
            Ok(RepairReport { changes })
        })
        .await
    }

    /// Records every migration up to `version` as applied without running it.
    pub async fn baseline_version(
        &self,
        driver: &mut dyn Driver,
        version: i64,
    ) -> Result<BaselineReport> {
        let chosen: BTreeSet<i64> = self
            .migrations
            .iter()
            .map(|m| m.version)
            .filter(|v| *v <= version)
            .collect();
        self.record_baseline(driver, chosen, "version".into()).await
    }

    /// Reads `tool`'s history table and records the same versions as applied.
    pub async fn baseline_from(
        &self,
        driver: &mut dyn Driver,
        tool: Tool,
    ) -> Result<BaselineReport> {
        let (versions, up_to) = drivers::adopted_versions(driver, tool).await?;
        let chosen: BTreeSet<i64> = if up_to {
            let max = versions.iter().copied().max().unwrap_or(i64::MIN);
            self.migrations
                .iter()
                .map(|m| m.version)
                .filter(|v| *v <= max)
                .collect()
        } else {
            versions
        };
        let missing: Vec<String> = chosen
            .iter()
            .filter(|v| self.file(**v).is_none())
            .map(|v| v.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(MigrateError::Adopt {
                tool: tool.to_string(),
                message: format!(
                    "{tool} recorded version{} {} as applied, but the migrations directory has no file for {}; \
                     point --migrations at the directory {tool} used",
                    if missing.len() == 1 { "" } else { "s" },
                    missing.join(", "),
                    if missing.len() == 1 { "it" } else { "them" },
                ),
            });
        }
        self.record_baseline(driver, chosen, tool.to_string()).await
    }

    async fn record_baseline(
        &self,
        driver: &mut dyn Driver,
        chosen: BTreeSet<i64>,
        source: String,
    ) -> Result<BaselineReport> {
        self.locked(driver, async |this, driver| {
            let history = driver.history().await?;
            refuse_failed(&history)?;
            let known: BTreeSet<i64> = history.iter().map(|h| h.version).collect();
            let mut recorded = Vec::new();
            for v in chosen.difference(&known) {
                let Some(m) = this.file(*v) else { continue };
                let mut record = this.record_for(m);
                record.applied_by = format!("{} (baseline from {source})", this.options.applied_by);
                driver.insert_record(&record).await?;
                recorded.push(step(m.version, &m.name, 0, None));
            }
            Ok(BaselineReport {
                source,
                recorded,
                current_version: current_version(&driver.history().await?),
            })
        })
        .await
    }

    /// Runs `body` holding the migration lock, with the history table present, and always
    /// releases the lock.
    async fn locked<T>(
        &self,
        driver: &mut dyn Driver,
        body: impl AsyncFnOnce(&Self, &mut dyn Driver) -> Result<T>,
    ) -> Result<T> {
        driver.lock(self.options.lock_timeout).await?;
        let result = match driver.ensure_history().await {
            Ok(()) => body(self, &mut *driver).await,
            Err(e) => Err(e),
        };
        if let Err(e) = driver.unlock().await {
            tracing::warn!(error = %e, "could not release the migration lock; it is released when the connection closes");
        }
        result
    }

    fn up_plan<'a>(
        &'a self,
        history: &[HistoryRecord],
        to: Option<i64>,
    ) -> Result<Vec<&'a Migration>> {
        refuse_failed(history)?;
        let drifted: Vec<String> = self
            .status_of(history)
            .migrations
            .iter()
            .filter(|s| s.state == State::Modified)
            .map(|s| format!("{}_{}", s.version, s.name))
            .collect();
        if !drifted.is_empty() {
            return Err(MigrateError::Drift { labels: drifted });
        }
        let known: BTreeSet<i64> = history.iter().map(|h| h.version).collect();
        let current = current_version(history);
        let plan: Vec<&Migration> = self
            .migrations
            .iter()
            .filter(|m| !known.contains(&m.version) && to.is_none_or(|t| m.version <= t))
            .collect();
        if let (Some(current), false) = (current, self.options.allow_out_of_order)
            && let Some(m) = plan.iter().find(|m| m.version < current)
        {
            return Err(MigrateError::OutOfOrder {
                label: m.label(),
                current,
            });
        }
        Ok(plan)
    }

    fn record_for(&self, m: &Migration) -> HistoryRecord {
        HistoryRecord {
            version: m.version,
            name: m.name.clone(),
            checksum: m.checksum.clone(),
            down_sql: m.down.clone(),
            down_transaction: m.down_transaction,
            applied_at: Utc::now(),
            execution_ms: 0,
            success: true,
            applied_by: self.options.applied_by.clone(),
        }
    }

    async fn apply_all(
        &self,
        driver: &mut dyn Driver,
        plan: &[&Migration],
        observer: &dyn Observer,
        after: &mut impl AsyncFnMut(&Step) -> bool,
    ) -> Result<Vec<Step>> {
        let mut done = Vec::with_capacity(plan.len());
        for (i, m) in plan.iter().enumerate() {
            let Some(step) = self.apply_one(driver, m, observer, (i, plan.len())).await? else {
                continue;
            };
            done.push(step);
            if let Some(last) = done.last()
                && !after(last).await
            {
                break;
            }
        }
        Ok(done)
    }

    /// Applies and records one migration; `None` when a concurrent run had applied it.
    async fn apply_one(
        &self,
        driver: &mut dyn Driver,
        m: &Migration,
        observer: &dyn Observer,
        (index, total): (usize, usize),
    ) -> Result<Option<Step>> {
        let label = m.label();
        observer.started(&label, Direction::Up, index, total);
        let started = Instant::now();
        let record = self.record_for(m);
        let atomic = driver.transactional_ddl() && m.up_transaction;
        let run = Run {
            script: &m.up,
            record: &record,
            label: &label,
            direction: Direction::Up,
            atomic,
        };
        if !self.run_one(driver, &run).await? {
            tracing::info!(migration = %label, "already applied by a concurrent run; skipped");
            return Ok(None);
        }
        let elapsed = started.elapsed();
        tracing::info!(migration = %label, ms = elapsed.as_millis() as u64, "applied");
        observer.finished(&label, Direction::Up, elapsed);
        Ok(Some(step(
            m.version,
            &m.name,
            elapsed.as_millis() as u64,
            None,
        )))
    }

    async fn revert_all(
        &self,
        driver: &mut dyn Driver,
        plan: &[HistoryRecord],
        observer: &dyn Observer,
        after: &mut impl AsyncFnMut(&Step) -> bool,
    ) -> Result<Vec<Step>> {
        let mut done = Vec::with_capacity(plan.len());
        for (i, h) in plan.iter().enumerate() {
            let Some(step) = self
                .revert_one(driver, h, observer, (i, plan.len()))
                .await?
            else {
                continue;
            };
            done.push(step);
            if let Some(last) = done.last()
                && !after(last).await
            {
                break;
            }
        }
        Ok(done)
    }

    /// Runs the recorded down script of `h` and removes its record; `None` when a concurrent
    /// run had reverted it.
    async fn revert_one(
        &self,
        driver: &mut dyn Driver,
        h: &HistoryRecord,
        observer: &dyn Observer,
        (index, total): (usize, usize),
    ) -> Result<Option<Step>> {
        let label = format!("{}_{}", h.version, h.name);
        let down = h.down_sql.as_deref().unwrap_or_default();
        observer.started(&label, Direction::Down, index, total);
        let started = Instant::now();
        let run = Run {
            script: down,
            record: h,
            label: &label,
            direction: Direction::Down,
            atomic: driver.transactional_ddl() && h.down_transaction,
        };
        if !self.run_one(driver, &run).await? {
            tracing::info!(migration = %label, "already reverted by a concurrent run; skipped");
            return Ok(None);
        }
        let elapsed = started.elapsed();
        tracing::info!(migration = %label, ms = elapsed.as_millis() as u64, "reverted");
        observer.finished(&label, Direction::Down, elapsed);
        Ok(Some(step(
            h.version,
            &h.name,
            elapsed.as_millis() as u64,
            None,
        )))
    }
}

/// One migration to apply or revert.
struct Run<'a> {
    script: &'a str,
    record: &'a HistoryRecord,
    label: &'a str,
    direction: Direction,
    /// Script and history change in one transaction (else: tracked).
    atomic: bool,
}

/// How one try of a migration ended, when it did not succeed.
enum Failure {
    /// It waited longer than the DDL lock timeout before anything took effect, and the history
    /// says what it said before: it can be tried again.
    LockWait(sqlx::Error),
    Other(MigrateError),
}

impl From<MigrateError> for Failure {
    fn from(e: MigrateError) -> Self {
        Failure::Other(e)
    }
}

impl Migrator {
    /// Applies or reverts one migration under the DDL lock timeout, trying again after a
    /// growing pause while it only waited for a lock; `Ok(false)` when a concurrent run had
    /// done it already. The last try watches who blocks it, to name them if it gives up.
    async fn run_one(&self, driver: &mut dyn Driver, run: &Run<'_>) -> Result<bool> {
        let ddl = self.ddl_lock;
        let tries = ddl.retries.saturating_add(1);
        let mut pause = ddl.pause;
        for attempt in 1..=tries {
            driver.set_ddl_lock_timeout(ddl.timeout).await?;
            let last = attempt == tries;
            let watching = last && ddl.timeout.is_some();
            if watching {
                driver.watch_blockers().await?;
            }
            let outcome = if run.atomic {
                atomic(driver, run).await
            } else {
                tracked(driver, run).await.map(|()| true)
            };
            let blockers = if watching {
                driver.blockers().await
            } else {
                Ok(Vec::new())
            };
            let source = match outcome {
                Ok(done) => return Ok(done),
                Err(Failure::Other(e)) => return Err(e),
                Err(Failure::LockWait(source)) => source,
            };
            let timeout = ddl.timeout.unwrap_or_default();
            if last {
                return Err(MigrateError::DdlLockTimeout {
                    label: run.label.to_string(),
                    direction: run.direction,
                    timeout,
                    attempts: tries,
                    blockers: blockers.unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "could not read who holds the lock");
                        Vec::new()
                    }),
                    source,
                });
            }
            tracing::warn!(
                migration = %run.label,
                attempt,
                timeout_ms = timeout.as_millis() as u64,
                pause_ms = pause.as_millis() as u64,
                "waited too long for a lock; nothing was changed, trying again after a pause"
            );
            tokio::time::sleep(pause).await;
            pause = pause.saturating_mul(2);
        }
        unreachable!("the last try returns")
    }
}

/// Script and history change in one transaction: any failure rolled both back, so a lock wait
/// can be tried again.
async fn atomic(driver: &mut dyn Driver, run: &Run<'_>) -> Result<bool, Failure> {
    let result = match run.direction {
        Direction::Up => driver.apply_atomic(run.script, run.record).await,
        Direction::Down => {
            driver
                .revert_atomic(run.script, run.record.version, run.label)
                .await
        }
    };
    match result {
        Ok(done) => Ok(done),
        Err(MigrateError::Execute { source, .. } | MigrateError::Database { source, .. })
            if drivers::is_lock_wait_timeout(driver.engine(), &source) =>
        {
            Err(Failure::LockWait(source))
        }
        Err(e) => Err(Failure::Other(e)),
    }
}

/// Runs a script the database cannot roll back: the history row says "unfinished" while it runs,
/// so a crash or an error leaves a `failed` record instead of a silent half-applied migration.
/// A lock wait on the script's first statement changed nothing: the row is put back as it was.
async fn tracked(driver: &mut dyn Driver, run: &Run<'_>) -> Result<(), Failure> {
    let record = run.record;
    match run.direction {
        Direction::Up => {
            driver
                .insert_record(&HistoryRecord {
                    success: false,
                    ..record.clone()
                })
                .await?
        }
        Direction::Down => {
            driver
                .set_success(record.version, false, record.execution_ms)
                .await?
        }
    }
    let started = Instant::now();
    if let Err(e) = driver.run_script(run.script).await {
        if e.completed == 0 && drivers::is_lock_wait_timeout(driver.engine(), &e.source) {
            match run.direction {
                Direction::Up => driver.delete_record(record.version).await?,
                Direction::Down => {
                    driver
                        .set_success(record.version, true, record.execution_ms)
                        .await?
                }
            }
            return Err(Failure::LockWait(e.source));
        }
        return Err(Failure::Other(MigrateError::Execute {
            label: run.label.to_string(),
            direction: run.direction,
            source: e.source,
            recorded_failed: true,
        }));
    }
    match run.direction {
        Direction::Up => {
            driver
                .set_success(record.version, true, started.elapsed().as_millis() as i64)
                .await?
        }
        Direction::Down => driver.delete_record(record.version).await?,
    }
    Ok(())
}

fn step(version: i64, name: &str, duration_ms: u64, sql: Option<String>) -> Step {
    Step {
        version,
        name: name.to_string(),
        duration_ms,
        sql,
    }
}

/// The highest successfully applied version.
fn current_version(history: &[HistoryRecord]) -> Option<i64> {
    history
        .iter()
        .filter(|h| h.success)
        .map(|h| h.version)
        .max()
}

fn refuse_failed(history: &[HistoryRecord]) -> Result<()> {
    match history.iter().find(|h| !h.success) {
        Some(h) => Err(MigrateError::FailedPresent {
            label: format!("{}_{}", h.version, h.name),
        }),
        None => Ok(()),
    }
}

fn down_plan(history: &[HistoryRecord], target: DownTarget) -> Result<Vec<HistoryRecord>> {
    refuse_failed(history)?;
    let newest_first = history.iter().filter(|h| h.success).rev();
    let plan: Vec<HistoryRecord> = match target {
        DownTarget::Steps(n) => newest_first.take(n).cloned().collect(),
        DownTarget::To(v) => newest_first
            .take_while(|h| h.version > v)
            .cloned()
            .collect(),
    };
    if let Some(h) = plan
        .iter()
        .find(|h| h.down_sql.as_deref().is_none_or(sql::is_blank))
    {
        return Err(MigrateError::Irreversible {
            label: format!("{}_{}", h.version, h.name),
        });
    }
    Ok(plan)
}
