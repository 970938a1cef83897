//! Puts a release on an environment's hosts without downtime (`ferry rollout`, and the rollout
//! step of `ferry deploy`), and runs its smoke checks ([`smoke`]).
//!
//! Contract of [`rollout`]:
//! 1. **Gather.** Every host is asked for its health (and version) first, and the load balancer
//!    for its servers. A host that is not healthy, or that the load balancer has down, drained
//!    or in maintenance, is `skipped`: it never receives the deploy command. A host already
//!    healthy on the release is `unchanged`.
//! 2. **Test bed** (not in a rollback): it goes first and alone, then soaks (health-checked every
//!    few seconds for `testbed_soak_seconds`). If it fails, or was skipped, nothing else is
//!    touched.
//! 3. **Batches**, hosts in parallel within one: drain (and wait until its sessions reach 0 or
//!    `drain_seconds` pass), run the deploy command, wait `settle_seconds`, check health and
//!    version, put it back, and (HAProxy) wait until its own checks report the host up. A host that fails any step stays out of traffic (HAProxy `maint`;
//!    with commands: not undrained), is reported with what failed, and no further batch starts:
//!    the rest are `not_reached`.
//! 4. **Final check.** Every deployed host must still report the release; one that does not is
//!    taken out of traffic (`stopped`). More than `max_failed` stopped: `failed`.
//!
//! The report is never `succeeded` while a host is left on the wrong version or out of traffic
//! without saying so: `stopped` counts them and each host has its own status and detail.
//! Nothing here prints or reads the environment: progress goes to a [`RolloutObserver`], events
//! to `tracing`, and the configuration arrives as a validated [`FleetConfig`].
//!
//! Key design decision: **one algorithm, narrow seams.** The order of the steps lives once, in
//! this file; the load balancer ([`lb::LoadBalancer`]: HAProxy's Runtime API, or commands) and
//! the host runner ([`runner`]) only do single steps. A rollback is the same algorithm with the
//! previous release, `rollback: true` (no test bed, a host already back on it is left alone, a
//! host out of traffic or unhealthy is still brought back) and usually `only_hosts`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub mod error;
mod health;
pub mod lb;
pub mod plan;
pub mod runner;
pub mod smoke;

pub use error::RolloutError;
pub use ferry_core::fleet::{
    AdminAddress, BatchSize, FleetConfig, HostConfig, LoadBalancerConfig, SmokeCheck, SmokeKind,
};
pub use plan::{Gathered, Plan};
pub use smoke::{CheckReport, SmokeReport};

use health::Checker;
use lb::command::{Commands, OwnedPlaceholders};
use lb::haproxy::Haproxy;
use lb::{AdminState, LoadBalancer, ServerState, SharedStates};

/// The first wait between two looks at the load balancer (sessions draining, a readied host
/// coming up); it doubles up to [`POLL_MAX`], so what holds at once costs no wait and a long
/// drain costs few requests.
const POLL_FIRST: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(50);
/// Most time for the load balancer's own checks to take a host back after `ready`.
const READY_WAIT: Duration = Duration::from_secs(30);
/// Longest gap between two health checks of a soaking test bed.
const SOAK_INTERVAL: Duration = Duration::from_secs(5);

/// What is being rolled out: the release (an artifact by digest) in an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub env: String,
    pub name: String,
    pub version: String,
    /// `sha256:<hex>`
    pub digest: String,
}

pub struct RolloutRequest<'a> {
    /// The environment's hosts, commands, batches, load balancer, timeouts.
    pub fleet: &'a FleetConfig,
    /// The release to put on the hosts.
    pub target: Target,
    /// What the hosts ran before (`{undeploy}` in a rollback, and reporting).
    pub previous: Option<Target>,
    /// No test bed soak; a host already on `target.version` is left alone (`unchanged`); a
    /// host that is unhealthy or out of traffic is brought back too.
    pub rollback: bool,
    /// Restrict to these hosts (a rollback: the hosts that received the new version).
    pub only_hosts: Option<Vec<String>>,
    /// Gather and plan; change nothing.
    pub dry_run: bool,
}

/// What a host is doing, for live progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostPhase {
    Waiting,
    Draining,
    Deploying,
    Settling,
    Soaking,
    Healthy,
    Failed,
    Skipped,
    Unchanged,
    Stopped,
}

impl HostPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            HostPhase::Waiting => "waiting",
            HostPhase::Draining => "draining",
            HostPhase::Deploying => "deploying",
            HostPhase::Settling => "settling",
            HostPhase::Soaking => "soaking",
            HostPhase::Healthy => "healthy",
            HostPhase::Failed => "failed",
            HostPhase::Skipped => "skipped",
            HostPhase::Unchanged => "unchanged",
            HostPhase::Stopped => "stopped",
        }
    }
}

/// Receives progress; called from the host tasks (hence `Sync`).
pub trait RolloutObserver: Send + Sync {
    fn host(&self, name: &str, phase: HostPhase) {
        let _ = (name, phase);
    }
}

/// An observer that ignores everything.
pub struct Quiet;
impl RolloutObserver for Quiet {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStatus {
    Succeeded,
    Failed,
    Halted,
    /// A gate refused it before any host was touched (set by the caller: freeze, stage order).
    Refused,
}

impl RolloutStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutStatus::Succeeded => "succeeded",
            RolloutStatus::Failed => "failed",
            RolloutStatus::Halted => "halted",
            RolloutStatus::Refused => "refused",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostStatus {
    Deployed,
    Skipped,
    Failed,
    Stopped,
    NotReached,
    Unchanged,
}

impl HostStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Deployed => "deployed",
            HostStatus::Skipped => "skipped",
            HostStatus::Failed => "failed",
            HostStatus::Stopped => "stopped",
            HostStatus::NotReached => "not_reached",
            HostStatus::Unchanged => "unchanged",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostReport {
    pub name: String,
    pub status: HostStatus,
    /// What its `version_url` said before (null without one).
    pub before_version: Option<String>,
    /// What it said at the end (null without a `version_url`, or when it was not reached).
    pub after_version: Option<String>,
    pub duration_ms: u64,
    /// What failed (exit status and last output of the command, the health answer), or why
    /// it was skipped.
    pub detail: Option<String>,
    /// Whether its deploy command ran (so a rollback knows which hosts to bring back).
    #[serde(default)]
    pub deploy_ran: bool,
}

/// The result of a rollout; its JSON is the contract of `ferry rollout`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutReport {
    pub env: String,
    /// `NAME@sha256:<hex>`
    pub artifact: String,
    pub version: String,
    pub status: RolloutStatus,
    pub hosts: Vec<HostReport>,
    /// Hosts taken out of traffic by the final check (they do not report the release).
    pub stopped: usize,
    /// Why it halted, failed or was refused, in one sentence.
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub rollback: bool,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub plan: Plan,
}

impl RolloutReport {
    /// The hosts that received the target: deployed, stopped, or failed after their deploy
    /// command ran. A rollback brings exactly these back.
    pub fn deployed_hosts(&self) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|h| match h.status {
                HostStatus::Deployed | HostStatus::Stopped => true,
                HostStatus::Failed => h.deploy_ran,
                _ => false,
            })
            .map(|h| h.name.clone())
            .collect()
    }

    /// Every host that was not skipped runs the release and is in traffic.
    pub fn all_live(&self) -> bool {
        self.status == RolloutStatus::Succeeded
            && self.stopped == 0
            && self.hosts.iter().all(|h| {
                matches!(
                    h.status,
                    HostStatus::Deployed | HostStatus::Unchanged | HostStatus::Skipped
                )
            })
    }

    /// A report for a rollout a gate refused: nothing was touched.
    pub fn refused(fleet: &FleetConfig, target: &Target, reason: String) -> RolloutReport {
        RolloutReport {
            env: target.env.clone(),
            artifact: format!("{}@{}", target.name, target.digest),
            version: target.version.clone(),
            status: RolloutStatus::Refused,
            hosts: fleet
                .hosts
                .iter()
                .map(|h| HostReport {
                    name: h.name.clone(),
                    status: HostStatus::NotReached,
                    before_version: None,
                    after_version: None,
                    duration_ms: 0,
                    detail: None,
                    deploy_ran: false,
                })
                .collect(),
            stopped: 0,
            detail: Some(reason),
            rollback: false,
            dry_run: false,
            plan: Plan::default(),
        }
    }
}

enum Decision {
    Planned,
    Skipped(String),
    Unchanged,
}

struct Run<'a> {
    fleet: &'a FleetConfig,
    target: Target,
    template: &'a str,
    values: OwnedPlaceholders,
    lb: Box<dyn LoadBalancer>,
    /// The load balancer's tables, read once for all the hosts that wait on them at once.
    lb_reads: SharedStates,
    checker: Checker,
    observer: &'a dyn RolloutObserver,
}

/// Rolls `req.target` over the environment's hosts (see the crate documentation):
/// [`Rollout::new`], [`Rollout::gather`], [`Rollout::run`].
pub async fn rollout(
    req: RolloutRequest<'_>,
    observer: &dyn RolloutObserver,
) -> Result<RolloutReport, RolloutError> {
    let rollout = Rollout::new(req, observer)?;
    let gathered = rollout.gather().await?;
    rollout.run(gathered).await
}

/// A rollout ready to start: its configuration checked, its load balancer and HTTP client made.
/// [`Rollout::gather`] only reads (the hosts' health and version, the load balancer's tables),
/// so a caller may run it while it makes its own checks (`ferry rollout` runs it beside the
/// promotion's gates and record) and then [`Rollout::run`] what it gathered, or drop both when
/// its checks refuse: no host was touched.
pub struct Rollout<'a> {
    run: Run<'a>,
    hosts: Vec<&'a HostConfig>,
    rollback: bool,
    dry_run: bool,
}

/// What [`Rollout::gather`] saw of each host, and what it decided for it.
pub struct Gathering(Vec<(Gathered, Decision)>);

impl<'a> Rollout<'a> {
    /// Checks the request against the configuration; touches nothing.
    pub fn new(
        req: RolloutRequest<'a>,
        observer: &'a dyn RolloutObserver,
    ) -> Result<Rollout<'a>, RolloutError> {
        let fleet = req.fleet;
        let env = req.target.env.clone();
        fleet.validate(&env)?;
        let template = match req.rollback {
            true => fleet
                .undeploy_command
                .as_deref()
                .or(fleet.deploy_command.as_deref()),
            false => fleet.deploy_command.as_deref(),
        }
        .ok_or_else(|| RolloutError::NoDeployCommand { env: env.clone() })?;

        let hosts: Vec<&HostConfig> = match &req.only_hosts {
            None => fleet.hosts.iter().collect(),
            Some(names) => {
                let mut picked = Vec::new();
                for n in names {
                    let h = fleet.host(n).ok_or_else(|| RolloutError::UnknownHost {
                        env: env.clone(),
                        host: n.clone(),
                        known: fleet
                            .hosts
                            .iter()
                            .map(|h| h.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
                    picked.push(h);
                }
                // Configuration order, whatever order the caller named them in.
                fleet
                    .hosts
                    .iter()
                    .filter(|h| picked.iter().any(|p| p.name == h.name))
                    .collect()
            }
        };

        let values = OwnedPlaceholders {
            version: req.target.version.clone(),
            digest: req.target.digest.clone(),
            name: req.target.name.clone(),
            env: env.clone(),
            undeploy: if req.rollback {
                req.previous
                    .as_ref()
                    .map(|p| p.version.clone())
                    .unwrap_or_default()
            } else {
                String::new()
            },
        };
        let lb: Box<dyn LoadBalancer> = match &fleet.load_balancer {
            Some(cfg) => Box::new(Haproxy::new(
                cfg.admin_address()
                    .map_err(|reason| ferry_core::CoreError::BadValue {
                        what: format!("`env.{env}.load_balancer.admin` in ferry.toml"),
                        value: cfg.admin.clone().unwrap_or_default(),
                        reason,
                    })?,
                cfg.backend.as_deref().unwrap_or_default(),
                fleet.health_timeout(),
            )),
            None => Box::new(Commands {
                drain: fleet.drain_command.clone(),
                undrain: fleet.undrain_command.clone(),
                values: values.clone(),
            }),
        };
        let run = Run {
            fleet,
            target: req.target,
            template,
            values,
            checker: Checker::new(fleet.health_timeout()).map_err(RolloutError::Http)?,
            lb,
            lb_reads: SharedStates::new(),
            observer,
        };
        Ok(Rollout {
            run,
            hosts,
            rollback: req.rollback,
            dry_run: req.dry_run,
        })
    }

    /// Step 1: asks every host for its health and version, and the load balancer for its
    /// servers, and decides who is planned, skipped or unchanged. Only reads.
    pub async fn gather(&self) -> Result<Gathering, RolloutError> {
        self.run
            .gather_all(&self.hosts, self.rollback)
            .await
            .map(Gathering)
    }

    /// Steps 2 to 4 on what [`Rollout::gather`] saw (with `dry_run`: the plan only).
    pub async fn run(self, gathered: Gathering) -> Result<RolloutReport, RolloutError> {
        self.run
            .execute(&self.hosts, gathered.0, self.rollback, self.dry_run)
            .await
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Run<'_> {
    fn command_for(&self, host: &str) -> String {
        runner::fill(self.template, &self.values.for_host(host))
    }

    /// 1. Gather (only reads).
    async fn gather_all(
        &self,
        hosts: &[&HostConfig],
        rollback: bool,
    ) -> Result<Vec<(Gathered, Decision)>, RolloutError> {
        let started = Instant::now();
        // The load balancer's tables and every host's answers at once: neither depends on the
        // other and both are only reads. When the tables cannot be read, that error returns at
        // once and the answers are dropped unused.
        let lb_error = |message: String| {
            let lb = self.fleet.load_balancer.as_ref();
            RolloutError::LoadBalancer {
                admin: lb.and_then(|l| l.admin.clone()).unwrap_or_default(),
                backend: lb.and_then(|l| l.backend.clone()).unwrap_or_default(),
                message,
            }
        };
        let (lb_states, answers) =
            tokio::try_join!(async { self.lb.states().await.map_err(lb_error) }, async {
                let answers =
                    futures_util::future::join_all(hosts.iter().map(|h| self.checker.state(h)));
                Ok(answers.await)
            })?;
        let gathered: Vec<(Gathered, Decision)> = hosts
            .iter()
            .zip(answers)
            .map(|(h, answer)| {
                let state = lb_states.as_ref().map(|m| m.get(&h.name));
                self.decide(h, answer, state, rollback)
            })
            .collect();
        tracing::debug!(ms = ms(started.elapsed()), "gathered");
        Ok(gathered)
    }

    async fn execute(
        &self,
        hosts: &[&HostConfig],
        gathered: Vec<(Gathered, Decision)>,
        rollback: bool,
        dry_run: bool,
    ) -> Result<RolloutReport, RolloutError> {
        let env = &self.target.env;
        tracing::info!(env = %env, version = %self.target.version, hosts = hosts.len(), rollback, dry_run, "rollout starts");
        let started = Instant::now();

        let mut reports: BTreeMap<String, HostReport> = BTreeMap::new();
        let mut planned: Vec<String> = Vec::new();
        let mut plan = Plan::default();
        for (g, decision) in gathered {
            let (status, detail) = match &decision {
                Decision::Planned => {
                    planned.push(g.name.clone());
                    plan.commands
                        .insert(g.name.clone(), self.command_for(&g.name));
                    self.observer.host(&g.name, HostPhase::Waiting);
                    (HostStatus::NotReached, None)
                }
                Decision::Skipped(why) => {
                    self.observer.host(&g.name, HostPhase::Skipped);
                    tracing::warn!(host = %g.name, reason = %why, "host skipped");
                    (HostStatus::Skipped, Some(why.clone()))
                }
                Decision::Unchanged => {
                    self.observer.host(&g.name, HostPhase::Unchanged);
                    (HostStatus::Unchanged, None)
                }
            };
            reports.insert(
                g.name.clone(),
                HostReport {
                    name: g.name.clone(),
                    status,
                    before_version: g.version.clone(),
                    after_version: if matches!(decision, Decision::Unchanged) {
                        g.version.clone()
                    } else {
                        None
                    },
                    duration_ms: 0,
                    detail,
                    deploy_ran: false,
                },
            );
            plan.gathered.push(g);
        }

        // The test bed: first and alone (never in a rollback).
        let testbed = if rollback {
            None
        } else {
            self.fleet.testbed.clone()
        };
        let mut halted: Option<String> = None;
        let mut rest = planned.clone();
        if let Some(tb) = &testbed {
            rest.retain(|h| h != tb);
            match reports.get(tb).map(|r| r.status) {
                Some(HostStatus::NotReached) => plan.testbed = Some(tb.clone()),
                Some(HostStatus::Skipped) => {
                    halted = Some(format!(
                        "the test bed {tb} was skipped ({}); no other host was touched",
                        reports[tb].detail.clone().unwrap_or_default()
                    ));
                }
                // Unchanged, or not among the hosts of this run: nothing to soak.
                _ => {}
            }
        }
        plan.batches = plan::batches(&rest, self.fleet.batch_len(hosts.len()));

        let finish = |reports: BTreeMap<String, HostReport>,
                      status: RolloutStatus,
                      detail: Option<String>,
                      plan: Plan| {
            let hosts_out: Vec<HostReport> = hosts
                .iter()
                .filter_map(|h| reports.get(&h.name).cloned())
                .collect();
            let stopped = hosts_out
                .iter()
                .filter(|h| h.status == HostStatus::Stopped)
                .count();
            tracing::info!(env = %env, status = status.as_str(), stopped, "rollout finished");
            RolloutReport {
                env: env.clone(),
                artifact: format!("{}@{}", self.target.name, self.target.digest),
                version: self.target.version.clone(),
                status,
                hosts: hosts_out,
                stopped,
                detail,
                rollback,
                dry_run,
                plan,
            }
        };

        if dry_run {
            return Ok(finish(reports, RolloutStatus::Succeeded, halted, plan));
        }
        if halted.is_some() {
            return Ok(finish(reports, RolloutStatus::Halted, halted, plan));
        }

        // 2. The test bed, then its soak.
        if let Some(tb) = &plan.testbed {
            let host = hosts.iter().find(|h| &h.name == tb).copied();
            if let Some(host) = host {
                let before = reports[tb].before_version.clone();
                let mut r = self.batch(vec![(host, before)]).await.remove(0);
                if r.status == HostStatus::Deployed {
                    let started = Instant::now();
                    self.observer.host(tb, HostPhase::Soaking);
                    if let Err(why) = self.soak(host).await {
                        r.status = HostStatus::Failed;
                        r.detail = Some(format!(
                            "failed its test bed soak after {:.1}s: {why}{}",
                            started.elapsed().as_secs_f64(),
                            self.take_out(tb).await
                        ));
                        self.observer.host(tb, HostPhase::Failed);
                    } else {
                        self.observer.host(tb, HostPhase::Healthy);
                    }
                    r.duration_ms += ms(started.elapsed());
                }
                if r.status == HostStatus::Failed {
                    halted = Some(format!(
                        "the test bed {tb} failed; no other host was touched"
                    ));
                }
                reports.insert(tb.clone(), r);
            }
        }

        // 3. Batches.
        if halted.is_none() {
            for (i, batch) in plan.batches.iter().enumerate() {
                let members = batch
                    .iter()
                    .filter_map(|name| {
                        let host = hosts.iter().find(|h| &h.name == name).copied()?;
                        Some((host, reports[name].before_version.clone()))
                    })
                    .collect();
                let results = self.batch(members).await;
                tracing::debug!(
                    batch = i + 1,
                    hosts = batch.len(),
                    ms = ms(started.elapsed()),
                    "batch done"
                );
                let failed: Vec<String> = results
                    .iter()
                    .filter(|r| r.status == HostStatus::Failed)
                    .map(|r| r.name.clone())
                    .collect();
                for r in results {
                    reports.insert(r.name.clone(), r);
                }
                if !failed.is_empty() {
                    halted = Some(format!(
                        "{} failed; no further batch was started",
                        failed.join(", ")
                    ));
                    break;
                }
            }
        }
        if let Some(why) = halted {
            return Ok(finish(reports, RolloutStatus::Halted, Some(why), plan));
        }

        // 4. Final check: every deployed host still reports the release.
        let deployed: Vec<&HostConfig> = hosts
            .iter()
            .filter(|h| reports[&h.name].status == HostStatus::Deployed && h.version_url.is_some())
            .copied()
            .collect();
        let finals = futures_util::future::join_all(deployed.iter().map(|h| async move {
            let v = self.checker.version(h).await;
            (h.name.clone(), v)
        }))
        .await;
        tracing::debug!(ms = ms(started.elapsed()), "final check done");
        for (name, v) in finals {
            let problem = match &v {
                Ok(Some(v)) if health::is_target(v, &self.target) => None,
                Ok(Some(v)) => Some(format!(
                    "reports version {v} at the final check, not {}",
                    self.target.version
                )),
                Ok(None) => None,
                Err(e) => Some(format!(
                    "its version could not be read at the final check: {e}"
                )),
            };
            let r = reports.get_mut(&name).expect("a reported host");
            if let Ok(Some(v)) = &v {
                r.after_version = Some(v.clone());
            }
            if let Some(p) = problem {
                let out = self.take_out(&name).await;
                tracing::warn!(host = %name, problem = %p, "host stopped");
                r.status = HostStatus::Stopped;
                r.detail = Some(format!("{p}; taken out of traffic{out}"));
                self.observer.host(&name, HostPhase::Stopped);
            }
        }
        let stopped = reports
            .values()
            .filter(|r| r.status == HostStatus::Stopped)
            .count();
        let live = reports
            .values()
            .filter(|r| matches!(r.status, HostStatus::Deployed | HostStatus::Unchanged))
            .count();
        let max = self.fleet.max_failed();
        let (status, detail) = if stopped > max {
            (
                RolloutStatus::Failed,
                Some(format!(
                    "{stopped} host(s) stopped, more than max_failed = {max}"
                )),
            )
        } else if live == 0 && !hosts.is_empty() && stopped == 0 {
            (
                RolloutStatus::Halted,
                Some("every host was skipped: the release is on none of them".into()),
            )
        } else if stopped > 0 {
            (
                RolloutStatus::Succeeded,
                Some(format!(
                    "{stopped} host(s) stopped (out of traffic, not on {}), within max_failed = {max}",
                    self.target.version
                )),
            )
        } else {
            (RolloutStatus::Succeeded, None)
        };
        Ok(finish(reports, status, detail, plan))
    }

    /// What the gather makes of one host: its answers (health, version) and what the load
    /// balancer reports of it (`None` without one; `Some(None)` when it has no such server).
    fn decide(
        &self,
        host: &HostConfig,
        (health, version): (Result<(), String>, Result<Option<String>, String>),
        lb: Option<Option<&ServerState>>,
        rollback: bool,
    ) -> (Gathered, Decision) {
        let version = version.ok().flatten();
        let lb_word = lb.map(|s| {
            s.map(|s| s.status.clone())
                .unwrap_or_else(|| "no such server".into())
        });
        let on_target = version
            .as_deref()
            .is_some_and(|v| health::is_target(v, &self.target));
        let in_traffic = match lb {
            None => true,
            Some(None) => false,
            Some(Some(s)) => s.admin == AdminState::Ready && s.up,
        };
        let decision = match (lb, &health) {
            (Some(None), _) => Decision::Skipped(format!(
                "{} has no server named {}",
                self.lb.describe(),
                host.name
            )),
            _ if on_target && health.is_ok() && in_traffic => Decision::Unchanged,
            // A rollback brings back what this rollout touched, whatever state it is in.
            _ if rollback => Decision::Planned,
            (_, Err(why)) => Decision::Skipped(format!("unhealthy before the rollout: {why}")),
            (Some(Some(s)), Ok(())) if s.admin == AdminState::Maint => Decision::Skipped(format!(
                "in maintenance in the load balancer ({}); ready it there first",
                s.status
            )),
            (Some(Some(s)), Ok(())) if s.admin == AdminState::Drain => Decision::Skipped(format!(
                "drained in the load balancer ({}): someone took it out of traffic",
                s.status
            )),
            (Some(Some(s)), Ok(())) if !s.up => {
                Decision::Skipped(format!("the load balancer reports it down ({})", s.status))
            }
            _ => Decision::Planned,
        };
        let gathered = Gathered {
            name: host.name.clone(),
            healthy: health.is_ok(),
            version,
            load_balancer: lb_word,
            decision: match decision {
                Decision::Planned => "planned",
                Decision::Skipped(_) => "skipped",
                Decision::Unchanged => "unchanged",
            }
            .into(),
            detail: match &decision {
                Decision::Skipped(w) => Some(w.clone()),
                _ => health.err(),
            },
        };
        (gathered, decision)
    }

    /// Keeps a host out of traffic; returns a note when even that failed.
    async fn take_out(&self, host: &str) -> String {
        match self.lb.maint(host).await {
            Ok(()) => String::new(),
            Err(e) => format!(" (and taking it out of traffic failed: {e})"),
        }
    }

    /// One batch (or the test bed alone), its hosts in parallel. With a load balancer that
    /// counts sessions, the batch's hosts are all drained first and then go on each by itself,
    /// so that the first look at their sessions is one read of the load balancer's tables for
    /// all of them rather than one per host (drains are one quick admin command each). With
    /// commands, each host runs its own drain command and nothing waits for another host's.
    async fn batch(&self, members: Vec<(&HostConfig, Option<String>)>) -> Vec<HostReport> {
        let started = Instant::now();
        let drains: Vec<Drain> = if self.lb.counts_sessions() {
            let done = futures_util::future::join_all(members.iter().map(|(h, _)| async move {
                self.observer.host(&h.name, HostPhase::Draining);
                self.lb.drain(&h.name).await
            }))
            .await;
            let at = Instant::now();
            done.into_iter().map(|r| Drain::Done(r, at)).collect()
        } else {
            members.iter().map(|_| Drain::Pending).collect()
        };
        futures_util::future::join_all(
            members
                .into_iter()
                .zip(drains)
                .map(|((h, before), drain)| self.host(h, before, started, drain)),
        )
        .await
    }

    /// Drain (unless [`Run::batch`] did), wait, deploy, settle, check, ready: one host.
    async fn host(
        &self,
        host: &HostConfig,
        before: Option<String>,
        started: Instant,
        drain: Drain,
    ) -> HostReport {
        let name = host.name.as_str();
        let mut report = HostReport {
            name: name.to_string(),
            status: HostStatus::Failed,
            before_version: before,
            after_version: None,
            duration_ms: 0,
            detail: None,
            deploy_ran: false,
        };
        let fail = |mut report: HostReport, detail: String| {
            self.observer.host(name, HostPhase::Failed);
            tracing::warn!(host = name, detail = %detail, "host failed");
            report.status = HostStatus::Failed;
            report.detail = Some(detail);
            report.duration_ms = ms(started.elapsed());
            report
        };

        let (drained, mut since) = match drain {
            Drain::Done(r, at) => (r, at),
            Drain::Pending => {
                self.observer.host(name, HostPhase::Draining);
                (self.lb.drain(name).await, Instant::now())
            }
        };
        if let Err(e) = drained {
            let out = self.take_out(name).await;
            return fail(report, format!("could not be drained: {e}{out}"));
        }
        let mut notes = Vec::new();
        if self.lb.counts_sessions() {
            let deadline = since + self.fleet.drain();
            let mut poll = Backoff::new();
            loop {
                // A read sent after the drain (then after the last look) took effect: the
                // batch's first one is shared by all its hosts.
                let sessions = match self
                    .lb_reads
                    .after(self.lb.as_ref(), since)
                    .await
                    .as_deref()
                {
                    Ok(Some(m)) => m.get(name).map_or(0, |s| s.sessions),
                    Ok(None) => 0,
                    Err(e) => {
                        notes.push(format!("its sessions could not be counted ({e})"));
                        break;
                    }
                };
                if sessions == 0 {
                    break;
                }
                if Instant::now() >= deadline {
                    notes.push(format!(
                        "{sessions} session(s) were still open after drain_seconds ({}s)",
                        self.fleet.drain().as_secs_f64()
                    ));
                    break;
                }
                poll.wait(deadline).await;
                since = Instant::now();
            }
        }
        let drained = started.elapsed();

        self.observer.host(name, HostPhase::Deploying);
        let command = self.command_for(name);
        report.deploy_ran = true;
        let outcome = runner::run(&command).await;
        let deployed = started.elapsed();
        tracing::info!(host = name, status = %outcome.status, "deploy command ran");
        if !outcome.success {
            let out = self.take_out(name).await;
            return fail(
                report,
                format!("deploy command {}{out}", outcome.describe()),
            );
        }

        self.observer.host(name, HostPhase::Settling);
        let settle = self.fleet.settle();
        if !settle.is_zero() {
            tokio::time::sleep(settle).await;
        }
        // Both questions at once, on the connections the gather opened; health is judged first.
        let (health, version) = self.checker.state(host).await;
        if let Err(why) = health {
            let out = self.take_out(name).await;
            return fail(report, format!("unhealthy after its deploy: {why}{out}"));
        }
        match version {
            Ok(Some(v)) if health::is_target(&v, &self.target) => report.after_version = Some(v),
            Ok(Some(v)) => {
                report.after_version = Some(v.clone());
                let out = self.take_out(name).await;
                return fail(
                    report,
                    format!(
                        "reports version {v} after its deploy, not {}{out}",
                        self.target.version
                    ),
                );
            }
            Ok(None) => {}
            Err(e) => {
                let out = self.take_out(name).await;
                return fail(
                    report,
                    format!("its version could not be read after its deploy: {e}{out}"),
                );
            }
        }
        let checked = started.elapsed();
        if let Err(e) = self.lb.ready(name).await {
            return fail(report, format!("could not be put back into traffic: {e}"));
        }
        // Back in traffic only once the load balancer's own health checks agree: the next
        // batch must not drain hosts while this one is not yet serving.
        if self.lb.counts_sessions()
            && let Err(why) = self.wait_in_traffic(name).await
        {
            let out = self.take_out(name).await;
            return fail(report, format!("{why}{out}"));
        }
        self.observer.host(name, HostPhase::Healthy);
        report.status = HostStatus::Deployed;
        report.duration_ms = ms(started.elapsed());
        // Where a host's time went (`RUST_LOG=ferry_rollout=debug`), milliseconds from its start.
        tracing::debug!(
            host = name,
            drained_ms = ms(drained),
            deployed_ms = ms(deployed),
            checked_ms = ms(checked),
            done_ms = report.duration_ms,
            "host in traffic"
        );
        if !notes.is_empty() {
            report.detail = Some(notes.join("; "));
        }
        report
    }

    /// Waits until the load balancer reports the host up and ready, at most [`READY_WAIT`].
    async fn wait_in_traffic(&self, name: &str) -> Result<(), String> {
        let end = Instant::now() + READY_WAIT;
        let mut poll = Backoff::new();
        loop {
            // Its own read: the hosts of a batch are readied one by one as their deploys end.
            let seen = match self.lb.states().await.as_ref() {
                Ok(Some(m)) => match m.get(name) {
                    Some(s) if s.up && s.admin == AdminState::Ready => return Ok(()),
                    Some(s) => s.status.clone(),
                    None => "no such server".into(),
                },
                Ok(None) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= end {
                return Err(format!(
                    "healthy, but {} did not report it up within {}s of `ready` ({seen}): its own health check disagrees",
                    self.lb.describe(),
                    READY_WAIT.as_secs()
                ));
            }
            poll.wait(end).await;
        }
    }

    /// Health (and version) checks every few seconds for `testbed_soak_seconds`.
    async fn soak(&self, host: &HostConfig) -> Result<(), String> {
        let soak = self.fleet.testbed_soak();
        let interval = (soak / 4).clamp(Duration::from_millis(100), SOAK_INTERVAL);
        let end = Instant::now() + soak;
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            tokio::time::sleep(interval.min(end - now)).await;
            let (health, version) = self.checker.state(host).await;
            health?;
            if let Some(v) = version?
                && !health::is_target(&v, &self.target)
            {
                return Err(format!(
                    "it reports version {v}, not {}",
                    self.target.version
                ));
            }
        }
    }
}

/// How a host of a batch is drained: by [`Run::batch`] already (its answer, and when all the
/// batch's drains had been answered), or by the host itself.
enum Drain {
    Done(Result<(), String>, Instant),
    Pending,
}

/// The waits between looks at the load balancer: [`POLL_FIRST`], doubling up to [`POLL_MAX`],
/// never past the deadline.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(POLL_FIRST)
    }

    async fn wait(&mut self, deadline: Instant) {
        tokio::time::sleep(
            self.0
                .min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
        self.0 = (self.0 * 2).min(POLL_MAX);
    }
}
