//! The deployment itself: the steps in order, the record rewritten at each, and the automatic
//! rollback when a step from `migrate` on fails.

use std::time::Instant;

use chrono::Utc;
use ferry_backup::Quiet as QuietBackup;
use ferry_compat::CheckOptions;
use ferry_core::deploy::BackupPolicy;
use ferry_migrate::{Driver, MigrateError, Migrator, Quiet as QuietMigrate, State};
use ferry_promote::{
    DeployInfo, Planned, PromoteError, PromoteRequest, PromotionCheck, RollbackTarget,
};
use ferry_rollout::{RolloutRequest, RolloutStatus, Target};

use crate::error::{DeployError, Result};
use crate::lease::{Acquired, Holder, Lease};
use crate::{
    DeployObserver, DeployRequest, Deployer, Deployment, EnvTarget, Kind, Phase, ReleaseRef,
    RollbackSteps, Status, Step, StepStatus, Undo, hooks, record,
};

/// A run in progress: the record, the lock, the one database connection.
pub(crate) struct Run<'a> {
    pub dep: &'a Deployer,
    pub t: &'a EnvTarget,
    pub obs: &'a dyn DeployObserver,
    pub d: Deployment,
    pub lease: Option<Lease>,
    pub driver: Option<Box<dyn Driver>>,
    phase: Phase,
    started: Instant,
}

/// The deploy steps that change the environment (and after which a kill leaves something to
/// undo): the record is rewritten as each starts and ends.
const CHANGES: [&str; 5] = ["migrate", "promote", "rollout", "smoke", "post_deploy"];

/// A step's outcome: status and detail.
type Outcome = (StepStatus, String);

pub(crate) fn new_deployment(env: &str, kind: Kind, artifact: &str, actor: &str) -> Deployment {
    Deployment {
        env: env.to_string(),
        artifact: artifact.to_string(),
        version: None,
        status: Status::Running,
        backup_id: None,
        steps: Vec::new(),
        rollback: None,
        seq: None,
        kind,
        digest: None,
        actor: actor.to_string(),
        reason: None,
        dry_run: false,
        started_at: Utc::now(),
        finished_at: None,
        message: None,
        undo: Undo::default(),
    }
}

impl<'a> Run<'a> {
    pub(crate) fn new(
        dep: &'a Deployer,
        t: &'a EnvTarget,
        obs: &'a dyn DeployObserver,
        d: Deployment,
    ) -> Self {
        Run {
            dep,
            t,
            obs,
            d,
            lease: None,
            driver: None,
            phase: Phase::Deploy,
            started: Instant::now(),
        }
    }

    fn steps(&mut self) -> &mut Vec<Step> {
        match self.phase {
            Phase::Deploy => &mut self.d.steps,
            Phase::Rollback => {
                &mut self
                    .d
                    .rollback
                    .get_or_insert_with(RollbackSteps::default)
                    .steps
            }
        }
    }

    /// Starts a step: recorded as `running` (so a kill leaves it visible), told to the observer.
    pub(crate) async fn begin(&mut self, name: &str) -> Result<()> {
        if let Some(lost) = self.lease.as_ref().and_then(|l| l.lost()) {
            return Err(DeployError::LostLock {
                env: self.d.env.clone(),
                holder: lost,
            });
        }
        self.steps().push(Step {
            name: name.to_string(),
            status: StepStatus::Running,
            duration_ms: 0,
            detail: String::new(),
        });
        self.obs.step_started(self.phase, name);
        if self.phase == Phase::Rollback || CHANGES.contains(&name) {
            // Before anything changes, the record says which step is about to: a kill here
            // leaves it `running` at this step.
            self.save().await;
        }
        // A step's time is its own work, not the record write that announces it.
        self.started = Instant::now();
        Ok(())
    }

    /// Ends the current step; the record is rewritten when the step changed something (the
    /// steps before `migrate` change nothing, so their outcome is written with the next step
    /// that does, or at the end: a kill there leaves nothing to undo).
    pub(crate) async fn end(&mut self, (status, detail): Outcome) {
        let ms = self.started.elapsed().as_millis() as u64;
        let phase = self.phase;
        let step = {
            let steps = self.steps();
            let Some(step) = steps.last_mut() else { return };
            step.status = status;
            step.detail = detail;
            step.duration_ms = ms;
            step.clone()
        };
        self.obs.step_finished(phase, &step);
        if phase == Phase::Rollback || CHANGES.contains(&step.name.as_str()) {
            self.save().await;
        }
    }

    /// A step that is not run, recorded as such.
    /// (Nothing changes, so nothing is written until the next step that does.)
    pub(crate) async fn skip(&mut self, name: &str, why: impl Into<String>) -> Result<()> {
        if let Some(lost) = self.lease.as_ref().and_then(|l| l.lost()) {
            return Err(DeployError::LostLock {
                env: self.d.env.clone(),
                holder: lost,
            });
        }
        let step = Step {
            name: name.to_string(),
            status: StepStatus::Skipped,
            duration_ms: 0,
            detail: why.into(),
        };
        self.obs.step_started(self.phase, name);
        self.steps().push(step.clone());
        self.obs.step_finished(self.phase, &step);
        Ok(())
    }

    /// Rewrites the record, if there is one. A store hiccup here must not abandon a deploy
    /// half-way: it is logged, and the next write carries everything.
    pub(crate) async fn save(&mut self) {
        if self.d.seq.is_none() || self.d.dry_run {
            return;
        }
        if let Err(e) = record::update(&self.dep.store, &self.d).await {
            tracing::warn!(error = %e, "could not update the deployment record");
        }
    }

    /// Ends the run: final status, record, lock released.
    pub(crate) async fn finish(mut self, status: Status, message: Option<String>) -> Deployment {
        self.d.status = status;
        self.d.finished_at = Some(Utc::now());
        if message.is_some() {
            self.d.message = message;
        }
        self.save().await;
        if let Some(driver) = self.driver.take() {
            let _ = driver.close().await;
        }
        if let Some(lease) = self.lease.take()
            && let Err(e) = lease.release().await
        {
            tracing::warn!(error = %e, "could not release the deploy lock; it expires with its lease");
        }
        self.d
    }

    /// Takes the environment's lock and creates the record. `Err(deployment)`: refused.
    pub(crate) async fn lock(
        &mut self,
        command: &str,
    ) -> Result<std::result::Result<String, String>> {
        let holder = Holder::this_process(&self.d.actor, command);
        match Lease::acquire(self.dep.store.clone(), &self.d.env, holder, self.t.lease).await? {
            Acquired::Held(r) => Ok(Err(format!(
                "the deploy lock of `{}` is held by {} (lease until {}); nothing was changed",
                self.d.env,
                r.holder,
                r.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
            ))),
            Acquired::Taken { lease, took_over } => {
                self.lease = Some(lease);
                let mut note = String::from("deploy lock taken");
                if let Some((old, why)) = took_over {
                    let marked =
                        record::mark_interrupted(&self.dep.store, &self.d.env, &why, Utc::now())
                            .await?;
                    let seqs: Vec<String> = marked
                        .iter()
                        .filter_map(|d| d.seq.map(|s| s.to_string()))
                        .collect();
                    note = format!(
                        "took over the stale deploy lock of {old}: {why}{}",
                        if seqs.is_empty() {
                            String::new()
                        } else {
                            format!(
                                "; deployment {} marked interrupted (undo it with `ferry rollback --env {}`)",
                                seqs.join(", "),
                                self.d.env
                            )
                        }
                    );
                }
                // The lock's holder does not name the record: the lock holder writes the only
                // `running` one, so nothing is left to tie (and a deploy is one write cheaper).
                record::create(&self.dep.store, &mut self.d).await?;
                Ok(Ok(note))
            }
        }
    }

    /// The one connection to the environment's database, opened on first use.
    pub(crate) async fn driver(&mut self) -> Result<Option<&mut Box<dyn Driver>>> {
        let Some(url) = &self.t.database_url else {
            return Ok(None);
        };
        if self.driver.is_none() {
            self.driver = Some(ferry_migrate::connect(url).await?);
        }
        Ok(self.driver.as_mut())
    }
}

pub(crate) fn target_of(env: &str, r: &ReleaseRef) -> Target {
    Target {
        env: env.to_string(),
        name: r.name.clone(),
        version: r.host_version(),
        digest: r.digest.to_string(),
    }
}

/// What the migrations look like on the environment's database.
struct Pending {
    current: Option<i64>,
    labels: Vec<String>,
}

async fn pending(run: &mut Run<'_>) -> Result<std::result::Result<Option<Pending>, String>> {
    let migrator = Migrator::new(run.t.migrations.clone(), run.t.migrate.clone());
    let allow_out_of_order = run.t.migrate.allow_out_of_order;
    let Some(driver) = run.driver().await? else {
        return Ok(Ok(None));
    };
    let status = migrator.status(driver.as_mut()).await?;
    let mut labels = Vec::new();
    for m in &status.migrations {
        let label = format!("{}_{}", m.version, m.name);
        match m.state {
            State::Pending => {
                if let Some(cur) = status.current_version
                    && m.version < cur
                    && !allow_out_of_order
                {
                    return Ok(Err(format!(
                        "pending migration {label} is older than the applied {cur}; `ferry migrate status` shows it, and `ferry migrate up --allow-out-of-order` applies it by hand"
                    )));
                }
                labels.push(label);
            }
            State::Failed => {
                return Ok(Err(format!(
                    "migration {label} is recorded as failed; fix the schema by hand and run `ferry migrate repair` first"
                )));
            }
            State::Modified => {
                return Ok(Err(format!(
                    "applied migration {label} changed since it was applied; restore the file or run `ferry migrate repair`"
                )));
            }
            State::Applied | State::Missing => {}
        }
    }
    Ok(Ok(Some(Pending {
        current: status.current_version,
        labels,
    })))
}

fn promote_request(req: &DeployRequest, env: &str) -> PromoteRequest {
    PromoteRequest {
        reference: req.artifact.clone(),
        to: env.to_string(),
        reason: req.reason.clone(),
        override_freeze: false,
        actor: req.actor.clone(),
        now: req.now,
    }
}

/// The optional hook `name` as its own step: `None` when it is not configured (the step is
/// recorded as skipped); otherwise the step is begun, the hook run, and its outcome returned
/// for the caller to end the step with.
async fn hook_step(
    run: &mut Run<'_>,
    name: &str,
    cmd: Option<&str>,
) -> Result<Option<hooks::HookOutcome>> {
    let Some(cmd) = cmd else {
        run.skip(name, format!("no {name} hook")).await?;
        return Ok(None);
    };
    run.begin(name).await?;
    let t = run.t;
    Ok(Some(
        hooks::run(
            cmd,
            &t.work_dir,
            &release_vars(&run.d),
            t.deploy.hook_timeout(),
        )
        .await,
    ))
}

fn release_vars(d: &Deployment) -> Vec<(&'static str, String)> {
    vec![
        ("FERRY_ENV", d.env.clone()),
        ("FERRY_ARTIFACT", d.artifact.clone()),
        ("FERRY_VERSION", d.version.clone().unwrap_or_default()),
        (
            "FERRY_DIGEST",
            d.digest.map(|x| x.to_string()).unwrap_or_default(),
        ),
        (
            "FERRY_DEPLOY",
            d.seq.map(|s| s.to_string()).unwrap_or_default(),
        ),
        ("FERRY_BACKUP_ID", d.backup_id.clone().unwrap_or_default()),
    ]
}

fn compat_summary(report: &ferry_compat::Report) -> String {
    let mut bad = Vec::new();
    for m in report.migrations.iter().filter(|m| !m.compatible) {
        for f in m.findings.iter().filter(|f| f.fails(false)) {
            bad.push(format!(
                "{}_{} line {} [{}] {}: {} (safe way: {})",
                m.version,
                m.name,
                f.line,
                f.rule.id(),
                f.object,
                f.message,
                f.hint
            ));
        }
        for diff in &m.roundtrip.differences {
            bad.push(format!("{}_{}: {diff}", m.version, m.name));
        }
    }
    bad.join("; ")
}

/// Takes in what the gates found; returns the gates step's detail.
fn gate_detail(
    run: &mut Run<'_>,
    check: &PromotionCheck,
    live: Option<&ferry_promote::Release>,
    lock_note: Option<String>,
) -> String {
    run.d.artifact = format!("{}@{}", check.name, check.digest);
    run.d.version = check.version.clone();
    run.d.digest = Some(check.digest);
    run.d.undo.previous = live.map(ReleaseRef::of);
    let mut gate: Vec<String> = lock_note.into_iter().collect();
    let requires = run
        .dep
        .promoter
        .envs()
        .find(|e| e.name == run.d.env)
        .and_then(|e| e.requires.clone());
    gate.push(match requires {
        Some(env) => format!("was live in `{env}` first"),
        None => "no required environment".into(),
    });
    gate.push("not frozen".into());
    if check.already_live {
        gate.push(format!(
            "already live here (release {}): the steps run again, nothing new is recorded",
            check.seq
        ));
    }
    gate.join("; ")
}

pub(crate) async fn deploy(
    dep: &Deployer,
    req: DeployRequest,
    t: &EnvTarget,
    obs: &dyn DeployObserver,
) -> Result<Deployment> {
    let mut d = new_deployment(&t.env, Kind::Deploy, &req.artifact, &req.actor);
    d.reason = req.reason.clone();
    d.dry_run = req.dry_run;
    let mut run = Run::new(dep, t, obs, d);
    if req.dry_run {
        return dry_run(run, &req).await;
    }

    // 1. gates: the lock, then promote's checks.
    run.begin("gates").await?;
    let lock_note = match run.lock("deploy").await {
        Ok(Ok(note)) => note,
        Ok(Err(held)) => {
            run.end((StepStatus::Refused, held.clone())).await;
            return Ok(run.finish(Status::Refused, Some(held)).await);
        }
        Err(e) => {
            run.end((StepStatus::Failed, e.to_string())).await;
            return Err(e);
        }
    };
    let check = match dep
        .promoter
        .check_promotion(promote_request(&req, &t.env))
        .await
    {
        Ok(c) => c,
        Err(e) if e.is_refusal() => {
            let why = e.to_string();
            run.end((StepStatus::Refused, format!("{lock_note}; {why}")))
                .await;
            return Ok(run.finish(Status::Refused, Some(why)).await);
        }
        Err(e) => {
            run.end((StepStatus::Failed, e.to_string())).await;
            let d = run.finish(Status::Failed, Some(e.to_string())).await;
            tracing::error!(seq = ?d.seq, "deploy stopped at its gates");
            return Err(e.into());
        }
    };
    let live = match dep.promoter.releases(&t.env).await {
        Ok(r) => r.live,
        Err(e) => {
            run.end((StepStatus::Failed, e.to_string())).await;
            run.finish(Status::Failed, Some(e.to_string())).await;
            return Err(e.into());
        }
    };
    let gate = gate_detail(&mut run, &check, live.as_ref(), Some(lock_note));
    run.end((StepStatus::Succeeded, gate)).await;

    // 2. pre_deploy
    if let Some(out) = hook_step(&mut run, "pre_deploy", t.deploy.pre_deploy.as_deref()).await? {
        if !out.ok {
            run.end((StepStatus::Refused, out.detail.clone())).await;
            return Ok(run
                .finish(
                    Status::Refused,
                    Some(format!(
                        "the pre_deploy hook refused the deploy: {}",
                        out.detail
                    )),
                )
                .await);
        }
        run.end((StepStatus::Succeeded, out.detail)).await;
    }

    // 3. compat
    run.begin("compat").await?;
    let pend = match pending(&mut run).await {
        Ok(Ok(p)) => p,
        Ok(Err(why)) => {
            run.end((StepStatus::Refused, why.clone())).await;
            return Ok(run.finish(Status::Refused, Some(why)).await);
        }
        Err(e) => {
            let why = e.to_string();
            run.end((StepStatus::Failed, why.clone())).await;
            return Ok(run.finish(Status::Failed, Some(why)).await);
        }
    };
    let Some(pend) = pend else {
        run.end((
            StepStatus::Skipped,
            format!(
                "`{}` has no database_url: nothing to check or migrate",
                t.env
            ),
        ))
        .await;
        run.skip("backup", "no database").await?;
        run.skip("migrate", "no database").await?;
        return after_migrate(run, &req).await;
    };
    run.d.undo.schema_before = pend.current;
    if pend.labels.is_empty() {
        run.end((
            StepStatus::Skipped,
            format!(
                "nothing pending (schema at {})",
                pend.current
                    .map_or("nothing applied".into(), |v| v.to_string())
            ),
        ))
        .await;
    } else {
        let url = t.database_url.clone().expect("a database was connected");
        let options = CheckOptions {
            engine: url.engine(),
            strict: false,
            shadow_url: Some(url),
            old_queries: Vec::new(),
            parallel: None,
            kept_base: t.compat_base.clone(),
        };
        match ferry_compat::check(&t.migrations, pend.current, &options).await {
            Ok(report) if report.compatible => {
                let notes = report
                    .migrations
                    .iter()
                    .map(|m| format!("{}_{} compatible", m.version, m.name))
                    .collect::<Vec<_>>()
                    .join(", ");
                run.end((StepStatus::Succeeded, notes)).await;
            }
            Ok(report) => {
                let why = format!(
                    "breaking for the running version, nothing was changed: {}",
                    compat_summary(&report)
                );
                run.end((StepStatus::Refused, why.clone())).await;
                return Ok(run.finish(Status::Refused, Some(why)).await);
            }
            Err(e) => {
                let why = e.to_string();
                run.end((StepStatus::Failed, why.clone())).await;
                return Ok(run.finish(Status::Failed, Some(why)).await);
            }
        }
    }

    // 4. backup
    let policy = t.deploy.backup.unwrap_or_default();
    if pend.labels.is_empty() && policy != BackupPolicy::Always {
        run.skip(
            "backup",
            "nothing to migrate (backup = \"always\" would take one anyway)",
        )
        .await?;
    } else {
        run.begin("backup").await?;
        let url = t.database_url.clone().expect("a database was connected");
        let label = format!(
            "deploy {} {} {}",
            t.env,
            run.d.artifact,
            run.d.version.as_deref().unwrap_or("-"),
        );
        match dep
            .backups
            .create(&url, Some(&label), &QuietBackup::arc())
            .await
        {
            Ok(m) => {
                run.d.backup_id = Some(m.id.clone());
                run.end((
                    StepStatus::Succeeded,
                    format!(
                        "backup {} of {} ({} bytes compressed, schema {})",
                        m.id,
                        m.database,
                        m.compressed_bytes,
                        m.schema_version.map_or("empty".into(), |v| v.to_string())
                    ),
                ))
                .await;
            }
            Err(e) => {
                let why = e.to_string();
                run.end((StepStatus::Failed, why.clone())).await;
                return Ok(run
                    .finish(
                        Status::Failed,
                        Some(format!("the backup failed, so nothing was migrated: {why}")),
                    )
                    .await);
            }
        }
    }

    // 5. migrate
    if pend.labels.is_empty() {
        run.skip("migrate", "nothing pending").await?;
    } else {
        run.begin("migrate").await?;
        let store = dep.store.clone();
        let migrator = Migrator::new(t.migrations.clone(), t.migrate.clone());
        let result = {
            let Run { d, driver, .. } = &mut run;
            let driver = driver.as_mut().expect("connected for compat");
            migrator
                .up_with(driver.as_mut(), None, &QuietMigrate, async |step| {
                    // Each applied migration is in the record at once: a kill now still
                    // leaves exactly what to revert.
                    d.undo.applied.push(step.version);
                    if let Err(e) = record::update(&store, d).await {
                        tracing::warn!(error = %e, "could not update the deployment record");
                    }
                    true
                })
                .await
        };
        match result {
            Ok(report) => {
                let done = report
                    .applied
                    .iter()
                    .map(|s| format!("{}_{} ({} ms)", s.version, s.name, s.duration_ms))
                    .collect::<Vec<_>>()
                    .join(", ");
                run.end((
                    StepStatus::Succeeded,
                    format!(
                        "applied {done}; schema at {}",
                        report
                            .current_version
                            .map_or("nothing".into(), |v| v.to_string())
                    ),
                ))
                .await;
            }
            Err(e) => {
                let why = e.to_string();
                run.end((StepStatus::Failed, why.clone())).await;
                return Ok(roll_back(run, &req, format!("migrate failed: {why}")).await);
            }
        }
    }
    after_migrate(run, &req).await
}

/// Steps 6 to 8 (and git), with the automatic rollback on failure.
async fn after_migrate(mut run: Run<'_>, req: &DeployRequest) -> Result<Deployment> {
    let t = run.t;
    let dep = run.dep;
    // 6. promote
    run.begin("promote").await?;
    let schema_now = match run.driver().await {
        Ok(Some(driver)) => match driver.history().await {
            Ok(h) => h.iter().filter(|r| r.success).map(|r| r.version).max(),
            Err(e) => {
                let why = e.to_string();
                run.end((StepStatus::Failed, why.clone())).await;
                return Ok(roll_back(run, req, format!("promote failed: {why}")).await);
            }
        },
        Ok(None) => None,
        Err(e) => {
            let why = e.to_string();
            run.end((StepStatus::Failed, why.clone())).await;
            return Ok(roll_back(run, req, format!("promote failed: {why}")).await);
        }
    };
    let promoted = match dep
        .promoter
        .plan_promotion(promote_request(req, &t.env))
        .await
    {
        Ok(Planned::AlreadyLive(r)) => Ok((
            StepStatus::Skipped,
            format!("already live (release {}); nothing recorded", r.release.seq),
        )),
        Ok(Planned::Ready(plan)) => {
            let seq = plan.seq();
            let info = DeployInfo {
                schema_version: schema_now,
                backup_id: run.d.backup_id.clone(),
                deploy: run.d.seq,
            };
            match plan.with_deploy(info).commit().await {
                Ok(r) => {
                    run.d.undo.release_seq = Some(r.release.seq);
                    Ok((
                        StepStatus::Succeeded,
                        format!(
                            "release {} live in `{}` (schema {}{})",
                            r.release.seq,
                            t.env,
                            schema_now.map_or("-".into(), |v| v.to_string()),
                            run.d
                                .backup_id
                                .as_deref()
                                .map(|b| format!(", backup {b}"))
                                .unwrap_or_default()
                        ),
                    ))
                }
                Err(e) => {
                    // The record is written before the tag moves: it exists, undo it too.
                    if matches!(e, PromoteError::NotLive { .. }) {
                        run.d.undo.release_seq = Some(seq);
                    }
                    Err(e.to_string())
                }
            }
        }
        Err(e) => Err(e.to_string()),
    };
    match promoted {
        Ok(outcome) => run.end(outcome).await,
        Err(why) => {
            run.end((StepStatus::Failed, why.clone())).await;
            return Ok(roll_back(run, req, format!("promote failed: {why}")).await);
        }
    }

    // 7. rollout
    if t.fleet.hosts.is_empty() {
        run.skip("rollout", format!("`{}` has no hosts", t.env))
            .await?;
    } else {
        run.begin("rollout").await?;
        run.d.undo.rollout_started = true;
        run.save().await;
        let target = Target {
            env: t.env.clone(),
            name: run
                .d
                .artifact
                .split('@')
                .next()
                .unwrap_or_default()
                .to_string(),
            version: run.d.version.clone().unwrap_or_else(|| {
                run.d
                    .digest
                    .map(|x| x.hex()[..12].to_string())
                    .unwrap_or_default()
            }),
            digest: run.d.digest.map(|x| x.to_string()).unwrap_or_default(),
        };
        let previous = run.d.undo.previous.as_ref().map(|p| target_of(&t.env, p));
        let result = ferry_rollout::rollout(
            RolloutRequest {
                fleet: &t.fleet,
                target,
                previous,
                rollback: false,
                only_hosts: None,
                dry_run: false,
            },
            run.obs,
        )
        .await;
        match result {
            Ok(report) => {
                run.d.undo.hosts = report.deployed_hosts();
                let seq = run.d.undo.release_seq.or(run
                    .d
                    .undo
                    .previous
                    .as_ref()
                    .filter(|p| Some(p.digest) == run.d.digest)
                    .map(|p| p.seq));
                record_rollout(&run, seq, &report, false).await;
                let detail = rollout_detail(&report);
                if report.status == RolloutStatus::Succeeded {
                    run.end((StepStatus::Succeeded, detail)).await;
                } else {
                    run.end((StepStatus::Failed, detail.clone())).await;
                    return Ok(roll_back(run, req, format!("rollout failed: {detail}")).await);
                }
            }
            Err(e) => {
                let why = e.to_string();
                run.end((StepStatus::Failed, why.clone())).await;
                return Ok(roll_back(run, req, format!("rollout failed: {why}")).await);
            }
        }
    }

    // 8. smoke, post_deploy
    if t.fleet.smoke.is_empty() {
        run.skip("smoke", "no smoke checks").await?;
    } else {
        run.begin("smoke").await?;
        let report =
            ferry_rollout::smoke::run(&t.env, &t.fleet.smoke, t.database_url.as_ref()).await;
        let detail = report
            .checks
            .iter()
            .map(|c| {
                format!(
                    "{} {} ({} ms){}",
                    c.name,
                    if c.passed { "passed" } else { "FAILED" },
                    c.latency_ms,
                    if c.passed || c.detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", c.detail)
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        if report.passed {
            run.end((StepStatus::Succeeded, detail)).await;
        } else {
            run.end((StepStatus::Failed, detail.clone())).await;
            return Ok(roll_back(run, req, format!("smoke failed: {detail}")).await);
        }
    }
    if let Some(out) = hook_step(&mut run, "post_deploy", t.deploy.post_deploy.as_deref()).await? {
        if out.ok {
            run.end((StepStatus::Succeeded, out.detail)).await;
        } else {
            run.end((StepStatus::Failed, out.detail.clone())).await;
            return Ok(roll_back(run, req, format!("post_deploy failed: {}", out.detail)).await);
        }
    }

    // git: the release is live whatever happens here.
    if t.git_tag {
        run.begin("git").await?;
        let version = run.d.version.clone().unwrap_or_else(|| {
            run.d
                .digest
                .map(|x| x.hex()[..12].to_string())
                .unwrap_or_default()
        });
        match crate::git::tag_release(&t.work_dir, &version).await {
            Ok(done) => run.end((StepStatus::Succeeded, done)).await,
            Err(why) => {
                run.end((
                    StepStatus::Failed,
                    format!("{why} (the release is live; only the tags are missing)"),
                ))
                .await
            }
        }
    }
    run.d.undo.done = false;
    Ok(run.finish(Status::Succeeded, None).await)
}

pub(crate) fn rollout_detail(report: &ferry_rollout::RolloutReport) -> String {
    use ferry_rollout::HostStatus;
    let hosts = report
        .hosts
        .iter()
        .map(|h| {
            let mut s = format!("{} {}", h.name, h.status.as_str());
            if let Some(detail) = h.detail.as_deref().filter(|d| !d.is_empty())
                && !matches!(h.status, HostStatus::Deployed | HostStatus::Unchanged)
            {
                s.push_str(&format!(" ({detail})"));
            }
            s
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = format!("{}: {hosts}", report.status.as_str());
    if let Some(d) = report.detail.as_deref().filter(|d| !d.is_empty()) {
        s.push_str(&format!("; {d}"));
    }
    s
}

/// Records a rollout in the release history beside release `seq` (`ferry releases` shows it);
/// a failure to record is logged, never a failed step: the hosts are as the report says.
pub(crate) async fn record_rollout(
    run: &Run<'_>,
    seq: Option<u64>,
    report: &ferry_rollout::RolloutReport,
    rollback: bool,
) {
    let (Some(seq), Some(digest)) = (
        seq,
        report
            .artifact
            .split_once('@')
            .and_then(|(_, d)| d.parse().ok()),
    ) else {
        return;
    };
    let record = ferry_promote::RolloutRecord {
        seq,
        n: 0,
        digest,
        version: Some(report.version.clone()),
        status: report.status.as_str().to_string(),
        rollback,
        actor: run.d.actor.clone(),
        at: Utc::now(),
        reason: Some(match run.d.seq {
            Some(d) => format!(
                "{} {d}",
                if run.d.kind == Kind::Rollback {
                    "rollback"
                } else {
                    "deployment"
                }
            ),
            None => "deployment".to_string(),
        }),
        stopped: report.stopped,
        hosts: crate::rollout_host_records(report),
    };
    if let Err(e) = run.dep.promoter.record_rollout(&run.d.env, record).await {
        tracing::warn!(error = %e, "could not record the rollout in the release history");
    }
}

/// A unit enum's serde name (`"succeeded"` → `succeeded`).
pub(crate) fn serde_plain<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The automatic rollback, in reverse: hosts, release, schema (or backup).
pub(crate) async fn roll_back(
    mut run: Run<'_>,
    req: &DeployRequest,
    failure: String,
) -> Deployment {
    run.phase = Phase::Rollback;
    run.d.rollback = Some(RollbackSteps::default());
    let reason = format!(
        "automatic rollback of deployment {}: {failure}",
        run.d.seq.map_or("-".into(), |s| s.to_string())
    );
    let mut ok = true;
    let mut message = None;

    // Hosts that received the new version get the previous one back.
    if run.d.undo.rollout_started {
        if run.begin("rollout").await.is_err() {
            return run.finish(Status::Failed, Some(failure)).await;
        }
        let outcome = undo_hosts(&mut run).await;
        ok &= outcome.0 == StepStatus::Succeeded;
        run.end(outcome).await;
    }

    // The previous artifact becomes live again.
    if let Some(seq) = run.d.undo.release_seq {
        if run.begin("promote").await.is_err() {
            return run.finish(Status::Failed, Some(failure)).await;
        }
        let outcome = undo_release(&mut run, req, seq, &reason).await;
        ok &= outcome.0 == StepStatus::Succeeded;
        run.end(outcome).await;
    }

    // The schema goes back to where it was.
    if !run.d.undo.applied.is_empty()
        || run
            .d
            .steps
            .iter()
            .any(|s| s.name == "migrate" && s.status == StepStatus::Failed)
    {
        if run.begin("migrate").await.is_err() {
            return run.finish(Status::Failed, Some(failure)).await;
        }
        match undo_schema(&mut run).await {
            SchemaUndo::Done(detail) => run.end((StepStatus::Succeeded, detail)).await,
            SchemaUndo::Failed(detail) => {
                ok = false;
                run.end((StepStatus::Failed, detail.clone())).await;
                message = Some(detail);
            }
            SchemaUndo::NeedsRestore(why) => {
                run.end((StepStatus::Failed, why.clone())).await;
                let restore_ok = restore_or_stop(&mut run, &why, &mut message).await;
                ok &= restore_ok;
            }
        }
    }

    if ok {
        run.d.undo.done = true;
        let msg = format!("{failure}; rolled back: the previous release and schema are back");
        run.finish(Status::RolledBack, Some(msg)).await
    } else {
        let msg = match message {
            Some(m) => format!("{failure}; the rollback did not finish: {m}"),
            None => format!(
                "{failure}; the rollback did not finish (see its steps); `ferry rollback --env {}` retries it",
                run.d.env
            ),
        };
        run.finish(Status::Failed, Some(msg)).await
    }
}

/// Puts the previous release back on the hosts that received the new one.
pub(crate) async fn undo_hosts(run: &mut Run<'_>) -> Outcome {
    let t = run.t;
    let Some(prev) = run.d.undo.previous.clone() else {
        return (
            StepStatus::Failed,
            "there is no previous release to put back on the hosts; deploy a good release".into(),
        );
    };
    let new = run.d.digest.map(|digest| Target {
        env: t.env.clone(),
        name: prev.name.clone(),
        version: run
            .d
            .version
            .clone()
            .unwrap_or_else(|| digest.hex()[..12].to_string()),
        digest: digest.to_string(),
    });
    let only = (!run.d.undo.hosts.is_empty()).then(|| run.d.undo.hosts.clone());
    let result = ferry_rollout::rollout(
        RolloutRequest {
            fleet: &t.fleet,
            target: target_of(&t.env, &prev),
            previous: new,
            rollback: true,
            only_hosts: only,
            dry_run: false,
        },
        run.obs,
    )
    .await;
    if let Ok(report) = &result {
        record_rollout(run, Some(prev.seq), report, true).await;
    }
    match result {
        Ok(report) if report.status == RolloutStatus::Succeeded => (
            StepStatus::Succeeded,
            format!(
                "{} back on the hosts: {}",
                prev.host_version(),
                rollout_detail(&report)
            ),
        ),
        Ok(report) => (StepStatus::Failed, rollout_detail(&report)),
        Err(e) => (StepStatus::Failed, e.to_string()),
    }
}

/// Makes the release live before the deployment live again (a rollback record).
async fn undo_release(run: &mut Run<'_>, req: &DeployRequest, seq: u64, reason: &str) -> Outcome {
    let Some(prev) = run.d.undo.previous.clone() else {
        return (
            StepStatus::Failed,
            format!(
                "release {seq} was the first of `{}`, so there is no earlier artifact to make live; promote a good one",
                run.d.env
            ),
        );
    };
    let plan = run
        .dep
        .promoter
        .plan_rollback(ferry_promote::RollbackRequest {
            env: run.d.env.clone(),
            to: Some(RollbackTarget::Seq(prev.seq)),
            reason: Some(reason.to_string()),
            actor: req.actor.clone(),
            now: req.now,
        })
        .await;
    let info = DeployInfo {
        schema_version: run.d.undo.schema_before.or(prev.schema_version),
        backup_id: None,
        deploy: run.d.seq,
    };
    match plan {
        Ok(plan) => match plan.with_deploy(info).commit().await {
            Ok(r) => (
                StepStatus::Succeeded,
                format!(
                    "release {} ({}) live again as release {}; release {seq} marked bad",
                    prev.seq,
                    prev.host_version(),
                    r.release.seq
                ),
            ),
            Err(e) => (StepStatus::Failed, e.to_string()),
        },
        Err(e) => (StepStatus::Failed, e.to_string()),
    }
}

pub(crate) enum SchemaUndo {
    Done(String),
    Failed(String),
    /// Stored downs cannot do it (an irreversible or failed migration): only a restore can.
    NeedsRestore(String),
}

/// Reverts the migrations above `schema_before` with their stored downs, after checking that
/// they are exactly the ones this deployment applied.
async fn undo_schema(run: &mut Run<'_>) -> SchemaUndo {
    let before = run.d.undo.schema_before;
    let applied = run.d.undo.applied.clone();
    let migrator = Migrator::new(run.t.migrations.clone(), run.t.migrate.clone());
    let driver = match run.driver().await {
        Ok(Some(d)) => d,
        Ok(None) => return SchemaUndo::Done("no database".into()),
        Err(e) => return SchemaUndo::Failed(e.to_string()),
    };
    let history = match driver.history().await {
        Ok(h) => h,
        Err(e) => return SchemaUndo::Failed(e.to_string()),
    };
    let above: Vec<i64> = history
        .iter()
        .filter(|h| before.is_none_or(|b| h.version > b))
        .map(|h| h.version)
        .collect();
    if let Some(h) = history.iter().find(|h| !h.success) {
        return SchemaUndo::NeedsRestore(format!(
            "migration {}_{} stopped part-way (this database commits DDL as it goes), so stored downs cannot undo it",
            h.version, h.name
        ));
    }
    if let Some(v) = above.iter().find(|v| !applied.contains(v)) {
        return SchemaUndo::Failed(format!(
            "migration {v} was applied by someone else during the deployment; not reverting anything this deployment did not apply. Revert by hand with `ferry migrate down`"
        ));
    }
    if above.is_empty() {
        return SchemaUndo::Done(format!(
            "nothing to revert (schema at {})",
            before.map_or("nothing applied".into(), |v| v.to_string())
        ));
    }
    let target = ferry_migrate::DownTarget::To(before.unwrap_or(0));
    match migrator
        .down(driver.as_mut(), target, false, &QuietMigrate)
        .await
    {
        Ok(report) => SchemaUndo::Done(format!(
            "reverted {} with the stored down scripts; schema at {}",
            report
                .reverted
                .iter()
                .map(|s| format!("{}_{}", s.version, s.name))
                .collect::<Vec<_>>()
                .join(", "),
            report
                .current_version
                .map_or("nothing".into(), |v| v.to_string())
        )),
        Err(MigrateError::Irreversible { label }) => SchemaUndo::NeedsRestore(format!(
            "migration {label} has no down script, so the stored downs cannot revert it (nothing was reverted)"
        )),
        Err(e @ MigrateError::FailedPresent { .. }) => SchemaUndo::NeedsRestore(e.to_string()),
        Err(e) => SchemaUndo::Failed(e.to_string()),
    }
}

/// Restores the pre-deploy backup when `restore_on_failure = true`; otherwise records exactly
/// what a DBA has to decide. Returns whether the schema is back.
async fn restore_or_stop(run: &mut Run<'_>, why: &str, message: &mut Option<String>) -> bool {
    let env = run.d.env.clone();
    let Some(id) = run.d.backup_id.clone() else {
        let m = format!(
            "{why}; and no backup was taken, so the schema stays as the deployment left it. A DBA must repair it by hand"
        );
        *message = Some(m);
        return false;
    };
    if !run.t.deploy.restore_on_failure.unwrap_or(false) {
        let m = format!(
            "{why}. The previous release is live again and runs against the new schema. A DBA must decide: \
             keep the schema as it is and fix forward, or restore the backup taken before the deployment with \
             `ferry backup restore {id} --env {env} --yes` (writes since the deployment started are lost). \
             Set restore_on_failure = true in [env.{env}] to let ferry restore it itself"
        );
        *message = Some(m);
        return false;
    }
    if run.begin("restore").await.is_err() {
        return false;
    }
    // Nothing of ours may hold the database while its contents are replaced.
    if let Some(driver) = run.driver.take() {
        let _ = driver.close().await;
    }
    let url = run.t.database_url.clone().expect("a database was migrated");
    match run
        .dep
        .backups
        // The application is still connected: restore_on_failure = true is the environment's
        // consent to end its sessions for the swap (and to lose what it wrote since).
        .restore_with(&id, &url, &end_sessions(), &QuietBackup::arc())
        .await
    {
        Ok(r) => {
            run.end((
                StepStatus::Succeeded,
                format!(
                    "restored backup {id} (restore_on_failure = true); schema at {}",
                    r.schema_version.map_or("nothing".into(), |v| v.to_string())
                ),
            ))
            .await;
            true
        }
        Err(e) => {
            let m = format!("restoring backup {id} failed: {e}");
            run.end((StepStatus::Failed, m.clone())).await;
            *message = Some(m);
            false
        }
    }
}

/// `--dry-run`: every gate's verdict and what each step would do; nothing is changed (no lock,
/// no record, no hook, no copy).
async fn dry_run(mut run: Run<'_>, req: &DeployRequest) -> Result<Deployment> {
    let t = run.t;
    let dep = run.dep;
    let mut refused: Option<String> = None;
    run.begin("gates").await?;
    let lock = crate::lease::status(dep.store.as_ref(), &t.env).await?;
    let mut gate = Vec::new();
    match lock.state {
        "held" => {
            let h = lock
                .holder
                .as_ref()
                .map(|h| h.to_string())
                .unwrap_or_default();
            refused = Some(format!("the deploy lock of `{}` is held by {h}", t.env));
        }
        "stale" => gate.push(format!(
            "the deploy lock is stale ({}) and would be taken over",
            lock.stale_because.clone().unwrap_or_default()
        )),
        _ => gate.push("deploy lock free".into()),
    }
    match dep
        .promoter
        .check_promotion(promote_request(req, &t.env))
        .await
    {
        Ok(check) => {
            let live = dep.promoter.releases(&t.env).await?.live;
            gate.push(gate_detail(&mut run, &check, live.as_ref(), None));
        }
        Err(e) if e.is_refusal() => refused = Some(e.to_string()),
        Err(e) => return Err(e.into()),
    }
    if let Some(why) = &refused {
        gate.push(why.clone());
        run.end((StepStatus::Refused, gate.join("; "))).await;
        return Ok(run.finish(Status::Refused, Some(why.clone())).await);
    }
    run.end((StepStatus::Planned, gate.join("; "))).await;

    match &t.deploy.pre_deploy {
        Some(cmd) => {
            run.begin("pre_deploy").await?;
            run.end((StepStatus::Planned, format!("would run `{cmd}`")))
                .await;
        }
        None => run.skip("pre_deploy", "no pre_deploy hook").await?,
    }

    run.begin("compat").await?;
    let pend = match pending(&mut run).await? {
        Ok(p) => p,
        Err(why) => {
            run.end((StepStatus::Refused, why.clone())).await;
            return Ok(run.finish(Status::Refused, Some(why)).await);
        }
    };
    let labels = pend.as_ref().map(|p| p.labels.clone()).unwrap_or_default();
    match &pend {
        None => {
            run.end((StepStatus::Skipped, "no database_url".into()))
                .await
        }
        Some(p) if p.labels.is_empty() => {
            run.end((StepStatus::Skipped, "nothing pending".into()))
                .await
        }
        Some(p) => {
            let url = t.database_url.clone().expect("connected");
            let options = CheckOptions {
                engine: url.engine(),
                strict: false,
                shadow_url: Some(url),
                old_queries: Vec::new(),
                parallel: None,
                kept_base: t.compat_base.clone(),
            };
            let report = ferry_compat::check(&t.migrations, p.current, &options).await?;
            if !report.compatible {
                let why = format!("would be refused: {}", compat_summary(&report));
                run.end((StepStatus::Refused, why.clone())).await;
                return Ok(run.finish(Status::Refused, Some(why)).await);
            }
            run.end((
                StepStatus::Planned,
                format!("{} pending migration(s) compatible", p.labels.len()),
            ))
            .await;
        }
    }

    let policy = t.deploy.backup.unwrap_or_default();
    match (
        &t.database_url,
        labels.is_empty() && policy != BackupPolicy::Always,
    ) {
        (Some(url), false) => {
            run.begin("backup").await?;
            run.end((
                StepStatus::Planned,
                format!("would back up {} ({})", url.database_name(), url.redacted()),
            ))
            .await;
        }
        _ => run.skip("backup", "nothing to migrate").await?,
    }
    if labels.is_empty() {
        run.skip("migrate", "nothing pending").await?;
    } else {
        run.begin("migrate").await?;
        run.end((
            StepStatus::Planned,
            format!("would apply {}", labels.join(", ")),
        ))
        .await;
    }
    run.begin("promote").await?;
    let promote = match &run.d.undo.previous {
        Some(p) if Some(p.digest) == run.d.digest => {
            "already live; nothing would be recorded".to_string()
        }
        Some(p) => format!(
            "would make {} live, replacing release {} ({})",
            run.d.artifact,
            p.seq,
            p.host_version()
        ),
        None => format!(
            "would make {} the first release of `{}`",
            run.d.artifact, t.env
        ),
    };
    run.end((StepStatus::Planned, promote)).await;

    if t.fleet.hosts.is_empty() {
        run.skip("rollout", format!("`{}` has no hosts", t.env))
            .await?;
    } else {
        run.begin("rollout").await?;
        let target = Target {
            env: t.env.clone(),
            name: run
                .d
                .artifact
                .split('@')
                .next()
                .unwrap_or_default()
                .to_string(),
            version: run.d.version.clone().unwrap_or_default(),
            digest: run.d.digest.map(|x| x.to_string()).unwrap_or_default(),
        };
        let previous = run.d.undo.previous.as_ref().map(|p| target_of(&t.env, p));
        let outcome = match ferry_rollout::rollout(
            RolloutRequest {
                fleet: &t.fleet,
                target,
                previous,
                rollback: false,
                only_hosts: None,
                dry_run: true,
            },
            run.obs,
        )
        .await
        {
            Ok(report) => (StepStatus::Planned, rollout_detail(&report)),
            Err(e) => (StepStatus::Failed, e.to_string()),
        };
        run.end(outcome).await;
    }
    if t.fleet.smoke.is_empty() {
        run.skip("smoke", "no smoke checks").await?;
    } else {
        run.begin("smoke").await?;
        let names: Vec<String> = t.fleet.smoke.iter().map(|c| c.name.clone()).collect();
        run.end((
            StepStatus::Planned,
            format!("would run {}", names.join(", ")),
        ))
        .await;
    }
    match &t.deploy.post_deploy {
        Some(cmd) => {
            run.begin("post_deploy").await?;
            run.end((StepStatus::Planned, format!("would run `{cmd}`")))
                .await;
        }
        None => run.skip("post_deploy", "no post_deploy hook").await?,
    }
    Ok(run.finish(Status::Planned, None).await)
}

/// How the rollbacks restore a backup over the environment's database: its sessions (the
/// application's) are ended for the swap, which a restore over a live database needs.
pub(crate) fn end_sessions() -> ferry_backup::RestoreOptions {
    ferry_backup::RestoreOptions {
        end_sessions: true,
        ..Default::default()
    }
}
