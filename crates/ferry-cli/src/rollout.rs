//! `ferry rollout` and `ferry smoke`: resolves the environment's fleet from `ferry.toml`, passes
//! the promotion gates (rolling out to an environment is promoting to it), calls
//! `ferry_rollout`, records the rollout beside its release, renders.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use ferry_core::{CoreError, Settings};
use ferry_promote::{Planned, PromoteRequest, Promoter, Releases, RolloutRecord};
use ferry_rollout::{
    FleetConfig, HostPhase, HostStatus, RolloutObserver, RolloutReport, RolloutRequest,
    SmokeReport, Target,
};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::opt::Command;
use crate::output::{Printer, table};
use crate::promote::require_env;
use crate::{CliError, exit, exit_code, open_store, rollout_exit, settings, store_options};
use ferry_core::Overrides;

pub async fn run(cmd: Command, global: &Overrides, printer: &Printer) -> Result<u8, CliError> {
    let settings = settings(global)?;
    let env = require_env(&settings)?;
    let fleet = &settings
        .file
        .env
        .get(&env)
        .ok_or_else(|| {
            CliError::Core(CoreError::BadValue {
                what: "--env".into(),
                value: env.clone(),
                reason: format!("add an [env.{env}] section to ferry.toml"),
            })
        })?
        .fleet;
    fleet.validate(&env)?;
    match cmd {
        Command::Rollout {
            artifact,
            dry_run,
            reason,
            ..
        } => rollout(&settings, &env, fleet, artifact, dry_run, reason, printer).await,
        Command::Smoke { .. } => smoke(&settings, &env, fleet, printer).await,
        _ => unreachable!("dispatched elsewhere"),
    }
}

async fn smoke(
    settings: &Settings,
    env: &str,
    fleet: &FleetConfig,
    printer: &Printer,
) -> Result<u8, CliError> {
    if fleet.smoke.is_empty() {
        return Err(CliError::Core(CoreError::BadValue {
            what: format!("`env.{env}.smoke` in ferry.toml"),
            value: String::new(),
            reason: format!(
                "no smoke checks are configured; add [[env.{env}.smoke]] with name and http = \"URL\" or sql = \"SELECT ...\""
            ),
        }));
    }
    let report = ferry_rollout::smoke::run(env, &fleet.smoke, settings.database_url.as_ref()).await;
    printer.emit(&report, smoke_text);
    Ok(if report.passed {
        exit::OK
    } else {
        exit::FAILED
    })
}

fn smoke_text(r: &SmokeReport) -> String {
    let rows: Vec<Vec<String>> = r
        .checks
        .iter()
        .map(|c| {
            vec![
                if c.passed { "ok" } else { "FAIL" }.to_string(),
                c.name.clone(),
                c.kind.clone(),
                format!("{} ms", c.latency_ms),
                c.detail.clone(),
            ]
        })
        .collect();
    let failed = r.checks.iter().filter(|c| !c.passed).count();
    let mut s = table(&["", "CHECK", "KIND", "LATENCY", "DETAIL"], &rows);
    s.push('\n');
    s.push_str(&if failed == 0 {
        format!("{}: all {} smoke check(s) passed", r.env, r.checks.len())
    } else {
        format!(
            "{}: {failed} of {} smoke check(s) failed",
            r.env,
            r.checks.len()
        )
    });
    s
}

#[allow(clippy::too_many_arguments)]
async fn rollout(
    settings: &Settings,
    env: &str,
    fleet: &FleetConfig,
    reference: String,
    dry_run: bool,
    reason: Option<String>,
    printer: &Printer,
) -> Result<u8, CliError> {
    if fleet.hosts.is_empty() {
        return Err(CliError::Core(CoreError::BadValue {
            what: format!("`env.{env}.hosts` in ferry.toml"),
            value: String::new(),
            reason: format!(
                "the environment has no hosts to roll out to; add [[env.{env}.hosts]] with name and health_url, or use `ferry promote` alone"
            ),
        }));
    }
    if fleet.deploy_command.is_none() {
        return Err(ferry_rollout::RolloutError::NoDeployCommand {
            env: env.to_string(),
        }
        .into());
    }
    let promoter = Promoter::from_config(
        open_store(settings).await?,
        &settings.file,
        store_options(settings),
    )?
    .with_registry_options(crate::env::Environment::get().registry_options(settings.network));
    let now = crate::env::Environment::get().now()?;
    let actor = crate::env::Environment::get().actor();

    let artifact = promoter.resolve(&reference).await?;
    let target = Target {
        env: env.to_string(),
        name: artifact.name.clone(),
        version: artifact
            .version
            .clone()
            .unwrap_or_else(|| artifact.digest.hex()[..12].to_string()),
        digest: artifact.digest.to_string(),
    };
    let request = PromoteRequest {
        reference: reference.clone(),
        to: env.to_string(),
        reason: reason.clone(),
        override_freeze: false,
        actor: actor.clone(),
        now,
    };

    // The gates of promote: a refusal is a refused rollout, and no host is touched.
    let refused = |e: ferry_promote::PromoteError| -> Result<u8, CliError> {
        let err = CliError::Promote(e);
        let message = ferry_core::url::redact(&err.to_string());
        let report = RolloutReport::refused(fleet, &target, message.clone());
        printer.emit(&report, |r| rollout_text(r, None));
        if !printer.json() {
            eprintln!("error: {message}");
        }
        Ok(exit_code(&err).0)
    };
    // The gather only reads (health, versions, the load balancer's tables), so it runs beside
    // the promotion's gates and record; when those refuse, what it saw is dropped unused and no
    // host was touched.
    let live = LiveLines::new(printer);
    let rollout = ferry_rollout::Rollout::new(
        RolloutRequest {
            fleet,
            target: target.clone(),
            previous: None,
            rollback: false,
            only_hosts: None,
            dry_run,
        },
        &live,
    )?;
    // Ok(Err(refusal)) when a gate refused.
    let promotion = async {
        let stop = |e: ferry_promote::PromoteError| match e.is_refusal() {
            true => Ok(Err(e)),
            false => Err(CliError::from(e)),
        };
        if dry_run {
            let c = match promoter.check_promotion(request).await {
                Ok(c) => c,
                Err(e) => return stop(e),
            };
            let what = if c.already_live {
                format!(
                    "{} is already live in {env} (release {})",
                    target.version, c.seq
                )
            } else {
                format!(
                    "would promote {} to {env} as release {}",
                    target.version, c.seq
                )
            };
            return Ok(Ok((c.seq, what)));
        }
        let report = match promoter.plan_promotion(request).await {
            Ok(Planned::Ready(plan)) => plan.commit().await?,
            Ok(Planned::AlreadyLive(report)) => report,
            Err(e) => return stop(e),
        };
        let what = if report.changed {
            format!(
                "promoted {} to {env} (release {})",
                target.version, report.release.seq
            )
        } else {
            format!(
                "{} was already live in {env} (release {})",
                target.version, report.release.seq
            )
        };
        Ok(Ok((report.release.seq, what)))
    };
    let (gathered, promoted) = tokio::join!(rollout.gather(), promotion);
    let (seq, promotion) = match promoted? {
        Ok(p) => p,
        Err(e) => return refused(e),
    };
    let result = match gathered {
        Ok(g) => rollout.run(g).await,
        Err(e) => Err(e),
    };
    drop(live);
    let mut report = result?;

    if !dry_run {
        let record = RolloutRecord {
            seq,
            n: 0,
            digest: artifact.digest,
            version: artifact.version.clone(),
            status: report.status.as_str().to_string(),
            rollback: false,
            actor,
            at: now,
            reason: reason
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty()),
            stopped: report.stopped,
            hosts: ferry_deploy::rollout_host_records(&report),
        };
        if let Err(e) = promoter.record_rollout(env, record).await {
            // The hosts are as the report says; only the history lacks it. Say so, fail.
            let note = format!("the rollout could not be recorded in the history: {e}");
            report.detail = Some(match report.detail.take() {
                Some(d) => format!("{d}; {note}"),
                None => note,
            });
            printer.emit(&report, |r| rollout_text(r, Some(&promotion)));
            return Ok(exit::FAILED);
        }
    }
    printer.emit(&report, |r| rollout_text(r, Some(&promotion)));
    Ok(rollout_exit(&report))
}

fn rollout_text(r: &RolloutReport, promotion: Option<&str>) -> String {
    let mut s = String::new();
    if r.dry_run {
        s.push_str("dry run: nothing was changed\n");
    }
    if let Some(p) = promotion {
        s.push_str(p);
        s.push('\n');
    }
    if r.dry_run {
        let rows: Vec<Vec<String>> = r
            .plan
            .gathered
            .iter()
            .map(|g| {
                vec![
                    g.name.clone(),
                    if g.healthy { "yes" } else { "no" }.into(),
                    g.version.clone().unwrap_or_else(|| "-".into()),
                    g.load_balancer.clone().unwrap_or_else(|| "-".into()),
                    g.decision.clone(),
                    g.detail.clone().unwrap_or_default(),
                ]
            })
            .collect();
        s.push('\n');
        s.push_str(&table(
            &["HOST", "HEALTHY", "VERSION", "LB", "PLAN", "DETAIL"],
            &rows,
        ));
        if let Some(tb) = &r.plan.testbed {
            s.push_str(&format!(
                "\ntest bed: {tb} (goes first, alone, and soaks)\n"
            ));
        }
        for (i, b) in r.plan.batches.iter().enumerate() {
            s.push_str(&format!("batch {}: {}\n", i + 1, b.join(", ")));
        }
        if !r.plan.commands.is_empty() {
            s.push_str("\ncommands:\n");
            for (host, cmd) in &r.plan.commands {
                s.push_str(&format!("  {host}: {cmd}\n"));
            }
        }
        return s;
    }
    let rows: Vec<Vec<String>> = r
        .hosts
        .iter()
        .map(|h| {
            vec![
                h.name.clone(),
                h.status.as_str().to_string(),
                h.before_version.clone().unwrap_or_else(|| "-".into()),
                h.after_version.clone().unwrap_or_else(|| "-".into()),
                if h.duration_ms > 0 {
                    format!("{:.1}s", h.duration_ms as f64 / 1000.0)
                } else {
                    "-".into()
                },
                h.detail.clone().unwrap_or_default(),
            ]
        })
        .collect();
    s.push('\n');
    s.push_str(&table(
        &["HOST", "STATUS", "BEFORE", "AFTER", "TIME", "DETAIL"],
        &rows,
    ));
    let count = |st: HostStatus| r.hosts.iter().filter(|h| h.status == st).count();
    s.push_str(&format!(
        "\nrollout of {} {} to {}: {} ({} deployed, {} unchanged, {} skipped, {} failed, {} stopped, {} not reached)\n",
        r.artifact,
        r.version,
        r.env,
        r.status.as_str(),
        count(HostStatus::Deployed),
        count(HostStatus::Unchanged),
        count(HostStatus::Skipped),
        count(HostStatus::Failed),
        count(HostStatus::Stopped),
        count(HostStatus::NotReached),
    ));
    if let Some(d) = &r.detail {
        s.push_str(d);
        s.push('\n');
    }
    s
}

/// The rollouts of each release, below `ferry releases`' table (nothing when there are none).
pub(crate) fn rollouts_text(r: &Releases, s: &mut String) {
    let mut rows = Vec::new();
    for rel in &r.history {
        for x in &rel.rollouts {
            let n = |st: &str| x.hosts.iter().filter(|h| h.status == st).count();
            rows.push(vec![
                format!("{}.{}", x.seq, x.n),
                x.version.clone().unwrap_or_default(),
                x.status.clone(),
                format!("{}/{}", n("deployed") + n("unchanged"), x.hosts.len()),
                x.hosts
                    .iter()
                    .filter(|h| h.status != "deployed" && h.status != "unchanged")
                    .map(|h| format!("{} {}", h.name, h.status))
                    .collect::<Vec<_>>()
                    .join(", "),
                x.at.format("%Y-%m-%d %H:%M UTC").to_string(),
                x.actor.clone(),
            ]);
        }
    }
    if rows.is_empty() {
        return;
    }
    s.push_str("\nrollouts:\n");
    s.push_str(&table(
        &[
            "RELEASE",
            "VERSION",
            "STATUS",
            "LIVE",
            "OTHER HOSTS",
            "AT",
            "ACTOR",
        ],
        &rows,
    ));
}

/// One live line per host at a terminal in human mode; nothing otherwise. Cleared at the end,
/// when the summary table takes over.
struct LiveLines {
    multi: Option<MultiProgress>,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
}

impl LiveLines {
    fn new(printer: &Printer) -> Self {
        let multi = (!printer.json() && std::io::stderr().is_terminal()).then(MultiProgress::new);
        LiveLines {
            multi,
            bars: Mutex::new(BTreeMap::new()),
        }
    }
}

impl RolloutObserver for LiveLines {
    fn host(&self, name: &str, phase: HostPhase) {
        let Some(multi) = &self.multi else {
            return;
        };
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        let bar = bars.entry(name.to_string()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:<16} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        bar.set_message(phase.as_str());
        if matches!(
            phase,
            HostPhase::Healthy
                | HostPhase::Failed
                | HostPhase::Skipped
                | HostPhase::Unchanged
                | HostPhase::Stopped
        ) {
            bar.disable_steady_tick();
            bar.tick();
        }
    }
}

impl Drop for LiveLines {
    fn drop(&mut self) {
        if let Ok(bars) = self.bars.lock() {
            for b in bars.values() {
                b.finish_and_clear();
            }
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}
