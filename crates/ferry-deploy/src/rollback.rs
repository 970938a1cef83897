//! `ferry rollback`, schema-aware: the artifact, the hosts **and** the schema go back together.
//!
//! Without `--to`, a rollback first finishes undoing the newest deployment if it was
//! interrupted (its run killed) or failed half-way through its own rollback: the release live
//! before it comes back, its migrations are reverted, the hosts get the previous version.
//! Otherwise it brings back the previous release (`ferry releases` shows it), or the one `--to`
//! names. The schema goes to the version recorded with that release by `ferry deploy`, through
//! the down scripts stored when the migrations were applied; where one is irreversible the
//! rollback needs `--restore-backup ID` and is refused (naming the backup that would do it)
//! before anything changes. The hosts are rolled back through `ferry-rollout` (hosts already
//! on the target version are left alone). Never blocked by a freeze window; always recorded
//! (a rollback release record and a `rollback` deployment record).

use chrono::{DateTime, Utc};
use ferry_migrate::{DownTarget, MigrateError, Migrator, Quiet as QuietMigrate};
use ferry_promote::{DeployInfo, PromoteReport, Release, RollbackTarget};
use ferry_rollout::{RolloutReport, RolloutRequest, RolloutStatus};
use serde::Serialize;

use crate::error::{DeployError, Result};
use crate::run::{Run, new_deployment, rollout_detail, target_of};
use crate::{
    DeployObserver, Deployer, Deployment, EnvTarget, Kind, ReleaseRef, Status, Step, StepStatus,
    record,
};

/// `ferry rollback --env ENV [--to SEQ|DIGEST|VERSION] [--restore-backup ID]`.
#[derive(Debug, Clone)]
pub struct RollbackRequest {
    pub to: Option<RollbackTarget>,
    pub reason: Option<String>,
    /// The backup to restore where a migration cannot be reverted with its stored down.
    pub restore_backup: Option<String>,
    pub actor: String,
    pub now: DateTime<Utc>,
}

/// What happened to the schema.
#[derive(Debug, Clone, Serialize)]
pub struct SchemaChange {
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// `<version>_<name>` of each migration reverted (or applied, to reach a newer target).
    pub reverted: Vec<String>,
    pub applied: Vec<String>,
    pub restored_backup: Option<String>,
    pub detail: String,
}

/// The `ferry rollback` report: the release report of `ferry promote`'s rollback (its keys
/// unchanged) plus what the schema and the hosts did.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    #[serde(flatten)]
    pub release: PromoteReport,
    /// `succeeded`, or `failed` when a step after the first change failed (exit 1).
    pub outcome: Status,
    pub schema: Option<SchemaChange>,
    pub rollout: Option<RolloutReport>,
    /// The interrupted or half-undone deployment this rollback finished undoing.
    pub undid: Option<u64>,
    /// This rollback's own record in `deploys/<env>/`.
    pub deployment: Option<u64>,
    pub steps: Vec<Step>,
    pub message: Option<String>,
}

/// Where the rollback goes.
struct Goal {
    release: Release,
    /// The schema version to bring back (None: not recorded, the schema is left alone).
    schema: Option<i64>,
    /// The deployment being undone, if that is what this is.
    undo_of: Option<Deployment>,
    /// The backup that brings the schema back where stored downs cannot.
    backup: Option<String>,
}

pub(crate) async fn rollback(
    dep: &Deployer,
    req: RollbackRequest,
    t: &EnvTarget,
    obs: &dyn DeployObserver,
) -> Result<RollbackReport> {
    let mut d = new_deployment(&t.env, Kind::Rollback, "", &req.actor);
    d.reason = req.reason.clone();
    let mut run = Run::new(dep, t, obs, d);

    run.begin("gates").await?;
    let note = match run.lock("rollback").await? {
        Ok(note) => note,
        Err(held) => {
            run.end((StepStatus::Refused, held.clone())).await;
            run.finish(Status::Refused, Some(held.clone())).await;
            return Err(DeployError::Refused(format!(
                "{held}; wait for it to finish"
            )));
        }
    };
    let goal = match goal(dep, &run.d, &req, t).await {
        Ok(g) => g,
        Err(e) => {
            run.end((StepStatus::Refused, e.to_string())).await;
            run.finish(Status::Refused, Some(e.to_string())).await;
            return Err(e);
        }
    };
    let releases = dep.promoter.releases(&t.env).await?;
    let live = releases.live.clone();
    run.d.artifact = format!("{}@{}", goal.release.name, goal.release.digest);
    run.d.version = goal.release.version.clone();
    run.d.digest = Some(goal.release.digest);
    run.d.undo.previous = live.as_ref().map(ReleaseRef::of);

    // The schema plan, checked before anything changes.
    let (current, schema_plan) = match schema_plan(&mut run, &goal, &req).await {
        Ok(p) => p,
        Err(e) => {
            run.end((StepStatus::Refused, e.to_string())).await;
            run.finish(Status::Refused, Some(e.to_string())).await;
            return Err(e);
        }
    };
    run.d.undo.schema_before = current;
    let mut gate = vec![
        note,
        format!(
            "back to release {} ({}{})",
            goal.release.seq,
            goal.release.version.as_deref().unwrap_or("-"),
            goal.schema
                .map(|s| format!(", schema {s}"))
                .unwrap_or_default()
        ),
    ];
    if let Some(u) = &goal.undo_of {
        gate.push(format!(
            "finishing the undo of deployment {} ({})",
            u.seq.unwrap_or_default(),
            crate::run::serde_plain(&u.status)
        ));
    }
    run.end((StepStatus::Succeeded, gate.join("; "))).await;

    let mut ok = true;
    let mut message = None;

    // Hosts first: the previous version runs against the newer schema, as compat proved it can.
    let mut rollout = None;
    if !t.fleet.hosts.is_empty() {
        run.begin("rollout").await?;
        run.d.undo.rollout_started = true;
        let result = ferry_rollout::rollout(
            RolloutRequest {
                fleet: &t.fleet,
                target: target_of(&t.env, &ReleaseRef::of(&goal.release)),
                previous: live.as_ref().map(|l| target_of(&t.env, &ReleaseRef::of(l))),
                rollback: true,
                only_hosts: None,
                dry_run: false,
            },
            obs,
        )
        .await;
        match result {
            Ok(report) => {
                crate::run::record_rollout(&run, Some(goal.release.seq), &report, true).await;
                let detail = rollout_detail(&report);
                ok = report.status == RolloutStatus::Succeeded;
                run.end((
                    if ok {
                        StepStatus::Succeeded
                    } else {
                        StepStatus::Failed
                    },
                    detail.clone(),
                ))
                .await;
                if !ok {
                    message = Some(format!("the hosts did not all go back: {detail}"));
                }
                rollout = Some(report);
            }
            Err(e) => {
                ok = false;
                message = Some(e.to_string());
                run.end((StepStatus::Failed, e.to_string())).await;
            }
        }
    }

    // The release record.
    let mut release_report = None;
    if ok {
        let changes = live
            .as_ref()
            .is_none_or(|l| l.digest != goal.release.digest);
        if changes {
            run.begin("promote").await?;
            let reason = req.reason.clone().or_else(|| {
                goal.undo_of
                    .as_ref()
                    .map(|u| format!("undo of deployment {}", u.seq.unwrap_or_default()))
            });
            let planned = dep
                .promoter
                .plan_rollback(ferry_promote::RollbackRequest {
                    env: t.env.clone(),
                    to: Some(RollbackTarget::Seq(goal.release.seq)),
                    reason,
                    actor: req.actor.clone(),
                    now: req.now,
                })
                .await;
            let committed = match planned {
                Ok(plan) => {
                    plan.with_deploy(DeployInfo {
                        schema_version: goal.schema.or(current),
                        backup_id: None,
                        deploy: run.d.seq,
                    })
                    .commit()
                    .await
                }
                Err(e) => Err(e),
            };
            match committed {
                Ok(r) => {
                    run.d.undo.release_seq = Some(r.release.seq);
                    run.end((
                        StepStatus::Succeeded,
                        format!(
                            "release {} live again as release {}",
                            goal.release.seq, r.release.seq
                        ),
                    ))
                    .await;
                    release_report = Some(r);
                }
                Err(e) => {
                    ok = false;
                    message = Some(e.to_string());
                    run.end((StepStatus::Failed, e.to_string())).await;
                }
            }
        }
    }

    // The schema.
    let mut schema = None;
    if ok && let Some(plan) = schema_plan {
        run.begin("migrate").await?;
        match apply_schema(&mut run, plan, current, &req).await {
            Ok(change) => {
                run.end((StepStatus::Succeeded, change.detail.clone()))
                    .await;
                schema = Some(change);
            }
            Err(e) => {
                ok = false;
                message = Some(e.clone());
                run.end((StepStatus::Failed, e)).await;
            }
        }
    }

    // A finished undo is remembered on the deployment it undid.
    let undid = goal.undo_of.as_ref().and_then(|u| u.seq);
    if ok && let Some(mut u) = goal.undo_of.clone() {
        u.undo.done = true;
        u.undo.undone_by = run.d.seq;
        if let Err(e) = record::update(&dep.store, &u).await {
            tracing::warn!(error = %e, "could not mark the undone deployment");
        }
    }

    let release = match release_report {
        Some(r) => r,
        None => unchanged_report(dep, &t.env, live.as_ref().unwrap_or(&goal.release)).await?,
    };
    let seq = run.d.seq;
    let outcome = if ok {
        Status::Succeeded
    } else {
        Status::Failed
    };
    if ok {
        run.d.undo.done = true;
    }
    let d = run.finish(outcome, message.clone()).await;
    Ok(RollbackReport {
        release,
        outcome,
        schema,
        rollout,
        undid,
        deployment: seq,
        steps: d.steps,
        message,
    })
}

async fn unchanged_report(dep: &Deployer, env: &str, live: &Release) -> Result<PromoteReport> {
    let location = dep.promoter.location(env).await?.url();
    Ok(PromoteReport {
        env: env.to_string(),
        previous: live.replaced,
        release: live.clone(),
        changed: false,
        location,
        source: None,
        bytes_copied: 0,
        bytes_verified: 0,
        server_side: false,
    })
}

/// Which release (and schema) the rollback goes back to.
async fn goal(
    dep: &Deployer,
    me: &Deployment,
    req: &RollbackRequest,
    t: &EnvTarget,
) -> Result<Goal> {
    let releases = dep.promoter.releases(&t.env).await?;
    // Without a target: an unfinished deployment is undone first.
    if req.to.is_none() {
        let recent = record::recent(dep.store.as_ref(), &t.env, 5).await?;
        // The newest deployment (this run's lock marked any killed one `interrupted`).
        let last_deploy = recent
            .into_iter()
            .find(|d| d.seq != me.seq && d.kind == Kind::Deploy);
        if let Some(u) = last_deploy
            && matches!(u.status, Status::Interrupted | Status::Failed)
            && u.undo.pending()
        {
            let Some(prev) = &u.undo.previous else {
                return Err(DeployError::Invalid(format!(
                    "deployment {} was the first of `{}`: there is no earlier release to go back to",
                    u.seq.unwrap_or_default(),
                    t.env
                )));
            };
            let release = releases
                .history
                .iter()
                .find(|r| r.seq == prev.seq)
                .cloned()
                .ok_or_else(|| {
                    DeployError::Invalid(format!(
                        "release {} of `{}` is not in its history",
                        prev.seq, t.env
                    ))
                })?;
            return Ok(Goal {
                schema: u.undo.schema_before.or(release.schema_version),
                backup: u.backup_id.clone(),
                release,
                undo_of: Some(u),
            });
        }
    }
    let live = releases.live.clone().ok_or_else(|| {
        DeployError::Promote(ferry_promote::PromoteError::NothingToRollBack(format!(
            "`{}` has no releases, so there is nothing to roll back",
            t.env
        )))
    })?;
    let target = match &req.to {
        None => releases.previous.clone().ok_or_else(|| {
            DeployError::Promote(ferry_promote::PromoteError::NothingToRollBack(format!(
                "`{}` has no earlier release of another artifact that is not bad; name one with --to SEQ|DIGEST|VERSION (see `ferry releases --env {}`)",
                t.env, t.env
            )))
        })?,
        Some(to) => {
            let found = match to {
                RollbackTarget::Seq(n) => releases.history.iter().find(|r| r.seq == *n),
                RollbackTarget::Digest(d) => releases.history.iter().find(|r| r.digest == *d),
                RollbackTarget::Version(v) => releases
                    .history
                    .iter()
                    .find(|r| r.version.as_deref() == Some(v.as_str())),
            };
            found.cloned().ok_or_else(|| {
                DeployError::Promote(ferry_promote::PromoteError::NotFound {
                    what: format!("`{}` has no release {}", t.env, describe(to)),
                })
            })?
        }
    };
    if target.digest == live.digest {
        return Err(DeployError::Promote(
            ferry_promote::PromoteError::NothingToRollBack(format!(
                "{} is already live in `{}` (release {}); choose another release with --to",
                target.digest, t.env, live.seq
            )),
        ));
    }
    // The backup taken before the migrations that came after the target: that of the first
    // later release that recorded one (history is newest first).
    let backup = releases
        .history
        .iter()
        .rev()
        .filter(|r| r.seq > target.seq)
        .find_map(|r| r.backup_id.clone());
    Ok(Goal {
        schema: target.schema_version,
        release: target,
        undo_of: None,
        backup,
    })
}

fn describe(to: &RollbackTarget) -> String {
    match to {
        RollbackTarget::Seq(n) => format!("with seq {n}"),
        RollbackTarget::Digest(d) => format!("of {d}"),
        RollbackTarget::Version(v) => format!("of version {v}"),
    }
}

/// What the schema step will do.
enum SchemaPlan {
    Down(i64),
    Up(i64),
    Restore(String),
}

/// Reads the schema and decides how to reach the goal, refusing (before anything changes) a
/// revert that stored downs cannot do without `--restore-backup`.
async fn schema_plan(
    run: &mut Run<'_>,
    goal: &Goal,
    req: &RollbackRequest,
) -> Result<(Option<i64>, Option<SchemaPlan>)> {
    let env = run.d.env.clone();
    let migrator = Migrator::new(run.t.migrations.clone(), run.t.migrate.clone());
    let Some(driver) = run.driver().await? else {
        return Ok((None, None));
    };
    let history = driver.history().await?;
    let current = history
        .iter()
        .filter(|h| h.success)
        .map(|h| h.version)
        .max();
    let failed = history.iter().find(|h| !h.success);
    let Some(target) = goal.schema else {
        return Ok((current, None));
    };
    if current == Some(target) && failed.is_none() {
        return Ok((current, None));
    }
    if current.is_some_and(|c| c < target) && failed.is_none() {
        return Ok((current, Some(SchemaPlan::Up(target))));
    }
    let blocked = if let Some(f) = failed {
        Some(format!(
            "migration {}_{} stopped part-way",
            f.version, f.name
        ))
    } else {
        match migrator
            .down(driver.as_mut(), DownTarget::To(target), true, &QuietMigrate)
            .await
        {
            Ok(_) => None,
            Err(MigrateError::Irreversible { label }) => {
                Some(format!("migration {label} has no down script"))
            }
            Err(e) => return Err(e.into()),
        }
    };
    match (blocked, &req.restore_backup) {
        (None, _) => Ok((current, Some(SchemaPlan::Down(target)))),
        (Some(_), Some(id)) => Ok((current, Some(SchemaPlan::Restore(id.clone())))),
        (Some(why), None) => Err(DeployError::Refused(format!(
            "{why}, so the schema cannot go back to {target} with stored downs; nothing was changed. {}",
            match &goal.backup {
                Some(id) => format!(
                    "Backup {id} was taken before those migrations: `ferry rollback --env {env} --restore-backup {id}` restores it (writes since are lost)"
                ),
                None => "No backup was recorded before those migrations; find one with `ferry backup list` and pass --restore-backup ID, or repair the schema by hand"
                    .to_string(),
            }
        ))),
    }
}

async fn apply_schema(
    run: &mut Run<'_>,
    plan: SchemaPlan,
    current: Option<i64>,
    _req: &RollbackRequest,
) -> std::result::Result<SchemaChange, String> {
    let migrator = Migrator::new(run.t.migrations.clone(), run.t.migrate.clone());
    let label = |s: &ferry_migrate::Step| format!("{}_{}", s.version, s.name);
    match plan {
        SchemaPlan::Down(target) => {
            let driver = run
                .driver()
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no database")?;
            let r = migrator
                .down(
                    driver.as_mut(),
                    DownTarget::To(target),
                    false,
                    &QuietMigrate,
                )
                .await
                .map_err(|e| e.to_string())?;
            let reverted: Vec<String> = r.reverted.iter().map(label).collect();
            Ok(SchemaChange {
                from: current,
                to: r.current_version,
                detail: format!(
                    "reverted {} with the stored down scripts; schema at {}",
                    if reverted.is_empty() {
                        "nothing".into()
                    } else {
                        reverted.join(", ")
                    },
                    r.current_version
                        .map_or("nothing".into(), |v| v.to_string())
                ),
                reverted,
                applied: Vec::new(),
                restored_backup: None,
            })
        }
        SchemaPlan::Up(target) => {
            let driver = run
                .driver()
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no database")?;
            let r = migrator
                .up(driver.as_mut(), Some(target), false, &QuietMigrate)
                .await
                .map_err(|e| e.to_string())?;
            let applied: Vec<String> = r.applied.iter().map(label).collect();
            Ok(SchemaChange {
                from: current,
                to: r.current_version,
                detail: format!(
                    "applied {} to reach the release's schema",
                    applied.join(", ")
                ),
                reverted: Vec::new(),
                applied,
                restored_backup: None,
            })
        }
        SchemaPlan::Restore(id) => {
            if let Some(driver) = run.driver.take() {
                let _ = driver.close().await;
            }
            let url = run.t.database_url.clone().ok_or("no database")?;
            let r = run
                .dep
                .backups
                // `--restore-backup ID` (confirmed at a terminal) is the consent to end the
                // application's sessions for the swap.
                .restore_with(
                    &id,
                    &url,
                    &crate::run::end_sessions(),
                    &ferry_backup::Quiet::arc(),
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(SchemaChange {
                from: current,
                to: r.schema_version,
                detail: format!(
                    "restored backup {id} (--restore-backup); schema at {}",
                    r.schema_version.map_or("nothing".into(), |v| v.to_string())
                ),
                reverted: Vec::new(),
                applied: Vec::new(),
                restored_backup: Some(id),
            })
        }
    }
}
