//! `ferry deploy`: one command that deploys a release safely and, when it goes wrong, undoes
//! itself: the artifact **and** the schema.
//!
//! Contract: [`Deployer::deploy`] runs, in one process with one connection to the
//! environment's database and one store handle, the steps the field has learnt to run in this
//! order, and returns a [`Deployment`] whose `status` says how it ended:
//!
//! 1. `gates`: the environment's **deploy lock** (a lease in the central store, see
//!    [`lease`]; a live holder refuses the deploy, a stale one is taken over and its
//!    deployment marked `interrupted`), then `ferry-promote`'s own checks: freeze windows,
//!    stage order, artifacts rolled back as bad ([`Promoter::check_promotion`]).
//! 2. `pre_deploy`: the optional hook; a non-zero exit refuses the deploy.
//! 3. `compat`: `ferry-compat` on the pending migrations against the environment's database
//!    (static rules and the shadow proof); a breaking finding refuses the deploy.
//! 4. `backup`: `ferry-backup`, labelled with the release, when a migration is pending (or
//!    always, with `backup = "always"`).
//! 5. `migrate`: `ferry-migrate`'s `up`, once, by ferry, never per host.
//! 6. `promote`: the release record, carrying the schema version and the backup id.
//! 7. `rollout`: `ferry-rollout` to the environment's hosts, if it has any.
//! 8. `smoke`, then `post_deploy`; then `git` (`[git] tag = true`).
//!
//! Steps 1–3 change nothing, so a refusal there (`refused`, the CLI's exit 3) leaves the
//! environment as it was. A failure in steps 5–8 starts the **automatic rollback**, in
//! reverse: the previous release goes back to the hosts that received the new one, a rollback
//! record makes the previous artifact live again, the migrations this deploy applied are
//! reverted with the down scripts stored when they were applied, and where one of them is
//! irreversible the pre-deploy backup is restored only when the environment says
//! `restore_on_failure = true`; otherwise the run stops and its message says what a DBA must
//! decide, naming the backup. Status `rolled_back` when all of that succeeded, `failed` when
//! not.
//!
//! The deployment record (`deploys/<env>/<seq>.json`, [`record`]) is written when the lock is
//! taken and rewritten at every step, so a run killed with SIGKILL leaves a `running` record
//! that the next command shows as `interrupted`; [`Deployer::rollback`] (`ferry rollback`)
//! finishes undoing such a deployment, and otherwise brings back the previous release with
//! the schema recorded with it.
//!
//! Key design decision: **the deploy is the libraries, not a script of commands.** Each step
//! calls the library the separate command would (`Promoter`, `Backups`, `Migrator`,
//! `ferry_compat::check`, `ferry_rollout::rollout`), through one [`DeployRequest`] resolved by
//! the CLI, so a deploy costs no more than its steps run by hand and cannot drift from them;
//! what a step applied is remembered in the record, which is what makes an exact undo
//! possible (only this deploy's migrations, only the hosts that got the new version).
//! Nothing prints: progress goes to a [`DeployObserver`], diagnostics to `tracing`.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ferry_backup::Backups;
use ferry_core::DatabaseUrl;
use ferry_core::deploy::DeploySection;
use ferry_migrate::{MigrateOptions, Migration};
use ferry_promote::{Digest, Promoter};
use ferry_rollout::FleetConfig;
use ferry_store::ObjectStore;
use serde::{Deserialize, Serialize};

mod error;
mod git;
mod hooks;
pub mod lease;
pub mod record;
mod rollback;
mod run;
mod status;

pub use error::{DeployError, Result};
pub use lease::{Holder, LeaseOptions, LockStatus};
pub use rollback::{RollbackReport, RollbackRequest, SchemaChange};
pub use status::DeployStatusReport;

/// How a deployment (or a rollback run) ended, or that it is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The release is live (exit 0).
    Succeeded,
    /// A gate, hook or the compat check refused it before anything changed (exit 3).
    Refused,
    /// A step failed and everything was undone (exit 1).
    RolledBack,
    /// A step failed and it could not all be undone; `message` says what is left (exit 1).
    Failed,
    /// Its run stopped without finishing (killed); `ferry rollback` undoes it (exit 1).
    Interrupted,
    /// In progress (only ever seen in the store, or through `deploy status`).
    Running,
    /// A dry run whose gates all passed: nothing was changed (exit 0).
    Planned,
}

/// How one step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Succeeded,
    Failed,
    Refused,
    Skipped,
    Running,
    Interrupted,
    /// Dry run: what the step would do is in its detail.
    Planned,
}

/// One step of a deployment or of its rollback; the JSON keys are the CLI contract.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub status: StepStatus,
    pub duration_ms: u64,
    pub detail: String,
}

/// The steps of an automatic rollback.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RollbackSteps {
    pub steps: Vec<Step>,
}

/// `deploy` or `rollback`: what a record in `deploys/<env>/` is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Deploy,
    Rollback,
}

/// A release, as a deployment remembers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRef {
    pub seq: u64,
    pub name: String,
    pub version: Option<String>,
    pub digest: Digest,
    pub schema_version: Option<i64>,
    pub backup_id: Option<String>,
}

impl ReleaseRef {
    fn of(r: &ferry_promote::Release) -> ReleaseRef {
        ReleaseRef {
            seq: r.seq,
            name: r.name.clone(),
            version: r.version.clone(),
            digest: r.digest,
            schema_version: r.schema_version,
            backup_id: r.backup_id.clone(),
        }
    }

    /// What the hosts are told: the version, else the digest's first 12 hex digits.
    pub fn host_version(&self) -> String {
        self.version
            .clone()
            .unwrap_or_else(|| self.digest.hex()[..12].to_string())
    }
}

/// What a deployment changed, so that it can be undone exactly (also after its run was
/// killed, by `ferry rollback`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Undo {
    /// The release live before the deployment.
    pub previous: Option<ReleaseRef>,
    /// The schema version before the deployment (highest applied migration).
    pub schema_before: Option<i64>,
    /// The migrations the deployment applied, in order.
    pub applied: Vec<i64>,
    /// The release the deployment recorded.
    pub release_seq: Option<u64>,
    /// The rollout to the hosts started.
    pub rollout_started: bool,
    /// The hosts that received the new version.
    pub hosts: Vec<String>,
    /// Everything the deployment changed has been undone.
    pub done: bool,
    /// The rollback run that finished undoing it (`ferry rollback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undone_by: Option<u64>,
}

impl Undo {
    /// Whether the deployment changed anything that is not undone yet.
    pub fn pending(&self) -> bool {
        !self.done
            && (!self.applied.is_empty() || self.release_seq.is_some() || self.rollout_started)
    }
}

/// A deployment: the `ferry deploy` report (its first seven keys are the CLI contract) and the
/// record kept in the environment's history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    pub env: String,
    /// `NAME@sha256:<hex>` once resolved; the reference as given before that.
    pub artifact: String,
    pub version: Option<String>,
    pub status: Status,
    pub backup_id: Option<String>,
    pub steps: Vec<Step>,
    pub rollback: Option<RollbackSteps>,
    /// The record's sequence number in `deploys/<env>/` (null for a dry run, or a deploy
    /// refused at the lock, which records nothing).
    pub seq: Option<u64>,
    pub kind: Kind,
    pub digest: Option<Digest>,
    pub actor: String,
    pub reason: Option<String>,
    pub dry_run: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it was refused, failed or interrupted, and what is left to do.
    pub message: Option<String>,
    pub undo: Undo,
}

/// What the CLI resolved about the environment being deployed.
pub struct EnvTarget {
    pub env: String,
    /// The environment's database; a deploy without one has nothing to migrate.
    pub database_url: Option<DatabaseUrl>,
    /// Every migration of the migrations directory, loaded (and checked) by the caller.
    pub migrations: Vec<Migration>,
    /// Lock timeout and who applies, for `ferry-migrate`.
    pub migrate: MigrateOptions,
    /// Where the compat step keeps its shadow base between deploys, as `ferry compat check`
    /// does (`None`: the base migrations are applied in every shadow database).
    pub compat_base: Option<ferry_compat::KeptBase>,
    /// The hooks, backup policy and `restore_on_failure` of `[env.<name>]`.
    pub deploy: DeploySection,
    /// The environment's hosts and smoke checks (ferry-rollout's keys).
    pub fleet: FleetConfig,
    /// `[git] tag` applies to this environment.
    pub git_tag: bool,
    /// Where hooks run and whose repository `[git]` tags: the directory of `ferry.toml`.
    pub work_dir: PathBuf,
    pub lease: LeaseOptions,
}

/// `ferry deploy --env ENV --artifact REF`.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub artifact: String,
    pub reason: Option<String>,
    pub dry_run: bool,
    pub actor: String,
    /// The time freeze windows are judged at (`FERRY_NOW` pins it); leases use the real clock.
    pub now: DateTime<Utc>,
}

/// Which part of a run a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Deploy,
    Rollback,
}

/// Told about each step as it starts and ends (the CLI draws a live line per step), and about
/// each host of a rollout.
pub trait DeployObserver: ferry_rollout::RolloutObserver {
    fn step_started(&self, _phase: Phase, _name: &str) {}
    fn step_finished(&self, _phase: Phase, _step: &Step) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl ferry_rollout::RolloutObserver for Quiet {}
impl DeployObserver for Quiet {}

/// Deploys, rolls back and reports on environments, with one central store (artifacts,
/// release histories, backups, deployment records and locks).
pub struct Deployer {
    store: Arc<dyn ObjectStore>,
    promoter: Promoter,
    backups: Backups,
}

impl Deployer {
    /// `promoter` and `backups` must use `store` as their central store.
    pub fn new(store: Arc<dyn ObjectStore>, promoter: Promoter, backups: Backups) -> Self {
        Deployer {
            store,
            promoter,
            backups,
        }
    }

    pub fn promoter(&self) -> &Promoter {
        &self.promoter
    }

    /// Runs a deployment (see the crate documentation); `Err` only for what stopped it
    /// before it could run at all (an unknown environment, an unreachable store).
    pub async fn deploy(
        &self,
        req: DeployRequest,
        target: &EnvTarget,
        observer: &dyn DeployObserver,
    ) -> Result<Deployment> {
        run::deploy(self, req, target, observer).await
    }

    /// `ferry rollback`: see [`rollback`](crate::rollback).
    pub async fn rollback(
        &self,
        req: RollbackRequest,
        target: &EnvTarget,
        observer: &dyn DeployObserver,
    ) -> Result<RollbackReport> {
        rollback::rollback(self, req, target, observer).await
    }

    /// `ferry deploy status`: what is live, the newest deployments, the lock.
    pub async fn status(&self, env: &str, limit: usize) -> Result<DeployStatusReport> {
        status::status(self, env, limit).await
    }
}

/// What a rollout did to each host, as the environment's history records it (`ferry rollout`
/// and a deploy's rollout step write the same record).
pub fn rollout_host_records(
    report: &ferry_rollout::RolloutReport,
) -> Vec<ferry_promote::RolloutHostRecord> {
    report
        .hosts
        .iter()
        .map(|h| ferry_promote::RolloutHostRecord {
            name: h.name.clone(),
            status: h.status.as_str().to_string(),
            before_version: h.before_version.clone(),
            after_version: h.after_version.clone(),
            duration_ms: h.duration_ms,
            detail: h.detail.clone(),
        })
        .collect()
}
