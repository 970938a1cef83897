//! `ferry artifact ...`, `ferry promote`, `ferry releases`, `ferry rollback`: resolves the
//! central store and the environments from `ferry.toml`, calls `ferry_promote`, renders.

use ferry_core::{CoreError, Settings};
use ferry_promote::{
    GcRequest, PromoteReport, PromoteRequest, Promoter, PushRequest, Release, Releases,
};

use crate::env::Environment;
use crate::opt::{ArtifactCommand, Command};
use crate::output::{Printer, table};
use crate::{CliError, exit, open_store, settings, store_options};
use ferry_core::Overrides;

pub async fn run(cmd: Command, global: &Overrides, printer: &Printer) -> Result<u8, CliError> {
    let settings = settings(global)?;
    let env = Environment::get();
    let promoter = Promoter::from_config(
        open_store(&settings).await?,
        &settings.file,
        store_options(&settings),
    )?
    // Registry credentials and insecure registries come from the environment (and the docker
    // configuration it points at), timeouts from `[store]`.
    .with_registry_options(env.registry_options(settings.network));
    let now = env.now()?;
    let actor = env.actor();
    match cmd {
        Command::Artifact(ArtifactCommand::Push {
            path,
            name,
            version,
            ..
        }) => {
            let report = promoter
                .push(PushRequest {
                    path,
                    name,
                    version,
                    actor,
                    now,
                })
                .await?;
            printer.emit(&report, |r| {
                if r.stored {
                    r.reference.clone()
                } else {
                    format!("{} (already stored; nothing new)", r.reference)
                }
            });
        }
        Command::Artifact(ArtifactCommand::Gc { keep, yes, .. }) => {
            let report = promoter.gc(GcRequest::new(keep, !yes, now)).await?;
            printer.emit(&report, |r| {
                let verb = if r.dry_run { "would remove" } else { "removed" };
                let mut s = format!(
                    "kept {} artifact(s) that the last {} release(s) of each environment need\n",
                    r.kept.len(),
                    r.keep
                );
                for x in &r.removed {
                    s.push_str(&format!(
                        "{verb} {} from {} ({} bytes)\n",
                        x.digest, x.location, x.size
                    ));
                }
                for loc in &r.skipped {
                    s.push_str(&format!(
                        "skipped {loc}: an OCI registry cannot list images by digest; use its own garbage collection\n"
                    ));
                }
                if r.dry_run && !r.removed.is_empty() {
                    s.push_str("nothing was removed: pass --delete to remove\n");
                }
                s
            });
        }
        Command::Promote {
            reference,
            to,
            reason,
            override_freeze,
            ..
        } => {
            let report = promoter
                .promote(PromoteRequest {
                    reference,
                    to,
                    reason,
                    override_freeze,
                    actor,
                    now,
                })
                .await?;
            printer.emit(&report, |r| report_text("promoted", r));
        }
        Command::Releases { .. } => {
            let env = require_env(&settings)?;
            let releases = promoter.releases(&env).await?;
            printer.emit(&releases, releases_text);
        }
        Command::Migrate(_)
        | Command::Backup(_)
        | Command::Compat(_)
        | Command::Rollback { .. }
        | Command::Deploy(_)
        | Command::Rollout { .. }
        | Command::Smoke { .. } => {
            unreachable!("dispatched elsewhere")
        }
    }
    Ok(exit::OK)
}

pub(crate) fn require_env(settings: &Settings) -> Result<String, CliError> {
    settings.env.clone().ok_or_else(|| {
        CliError::Core(CoreError::BadValue {
            what: "--env".into(),
            value: String::new(),
            reason:
                "name the environment with --env NAME (or FERRY_ENV, or default_env in ferry.toml)"
                    .into(),
        })
    })
}

pub(crate) fn report_text(done: &str, r: &PromoteReport) -> String {
    if !r.changed {
        return format!(
            "{}@{} is already live in {} (release {}); nothing recorded",
            r.release.name, r.release.digest, r.env, r.release.seq
        );
    }
    format!(
        "{done} {}{} @ {} in {} (release {}), previously {}",
        r.release.name,
        r.release
            .version
            .as_deref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default(),
        r.release.digest,
        r.env,
        r.release.seq,
        r.previous
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_else(|| "nothing".into())
    )
}

fn releases_text(r: &Releases) -> String {
    let one = |x: &Option<Release>| {
        x.as_ref()
            .map(|x| {
                format!(
                    "{} {} {} (release {})",
                    x.name,
                    x.version.as_deref().unwrap_or("-"),
                    x.digest,
                    x.seq
                )
            })
            .unwrap_or_else(|| "nothing".into())
    };
    let mut s = format!(
        "environment: {}\nlive:        {}\nprevious:    {}\n\n",
        r.env,
        one(&r.live),
        one(&r.previous)
    );
    let rows: Vec<Vec<String>> = r
        .history
        .iter()
        .map(|x| {
            vec![
                x.seq.to_string(),
                format!("{:?}", x.action).to_lowercase(),
                format!("{:?}", x.status).to_lowercase(),
                x.name.clone(),
                x.version.clone().unwrap_or_default(),
                x.digest.to_string().chars().take(19).collect(),
                x.at.format("%Y-%m-%d %H:%M UTC").to_string(),
                x.actor.clone(),
                x.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    s.push_str(&table(
        &[
            "SEQ", "ACTION", "STATUS", "NAME", "VERSION", "DIGEST", "AT", "ACTOR", "REASON",
        ],
        &rows,
    ));
    crate::rollout::rollouts_text(r, &mut s);
    s
}
