//! `ferry deploy`, `ferry deploy status` and `ferry rollback`: resolves the environment (its
//! database, migrations, hooks, hosts and smoke checks) into a `ferry_deploy::EnvTarget`,
//! opens one store for artifacts, histories, backups and locks, calls `ferry_deploy`, and
//! renders the steps as they happen. The report's status becomes the exit code through
//! [`crate::exit_code`] (`CliError::Outcome`).

use std::path::PathBuf;

use ferry_core::{CoreError, Settings};
use ferry_deploy::{
    DeployRequest, Deployer, Deployment, EnvTarget, LeaseOptions, RollbackReport, RollbackRequest,
    Status,
};
use ferry_migrate::{MigrateError, MigrateOptions, source};
use ferry_promote::Promoter;

use crate::opt::{DeployArgs, DeployCommand};
use crate::output::{Printer, StepLines, table};
use crate::promote::{report_text, require_env};
use crate::{CliError, exit, open_store, settings, store_options};
use ferry_core::Overrides;

pub struct RollbackArgs {
    pub to: Option<String>,
    pub reason: Option<String>,
    pub restore_backup: Option<String>,
    pub yes: bool,
}

async fn deployer(settings: &Settings) -> Result<Deployer, CliError> {
    let store = open_store(settings).await?;
    let promoter = Promoter::from_config(store.clone(), &settings.file, store_options(settings))?
        .with_registry_options(crate::env::Environment::get().registry_options(settings.network));
    let backups =
        ferry_backup::Backups::with_options(store.clone(), crate::backup_options(settings)?);
    Ok(Deployer::new(store, promoter, backups))
}

/// The environment, resolved. `strict_migrations`: a migrations directory that does not load
/// is an error (deploy); a rollback only needs the stored down scripts.
fn env_target(
    settings: &Settings,
    env: &str,
    actor: &str,
    strict_migrations: bool,
) -> Result<EnvTarget, CliError> {
    let section = settings.file.env.get(env).cloned().unwrap_or_default();
    section.fleet.validate(env)?;
    section.deploy.validate(env)?;
    let migrations = match &settings.database_url {
        None => Vec::new(),
        Some(_) => match source::load_dir(&settings.migrations_dir) {
            Ok(m) => m,
            Err(e) if strict_migrations => return Err(MigrateError::from(e).into()),
            Err(e) => {
                tracing::info!(error = %e, "no migrations loaded; the stored down scripts are enough for a rollback");
                Vec::new()
            }
        },
    };
    let work_dir = std::path::absolute(settings.base_dir()).unwrap_or_else(|_| PathBuf::from("."));
    Ok(EnvTarget {
        env: env.to_string(),
        database_url: settings.database_url.clone(),
        migrations,
        migrate: MigrateOptions {
            lock_timeout: settings.lock_timeout,
            applied_by: actor.to_string(),
            allow_out_of_order: false,
        },
        compat_base: Some(crate::compat::kept_base()),
        deploy: section.deploy.clone(),
        fleet: section.fleet.clone(),
        git_tag: settings.file.git.tags(env),
        work_dir,
        lease: LeaseOptions::default(),
    })
}

pub async fn run(args: DeployArgs, global: &Overrides, printer: &Printer) -> Result<u8, CliError> {
    let settings = settings(global)?;
    let env = require_env(&settings)?;
    let deployer = deployer(&settings).await?;
    if let Some(DeployCommand::Status { limit, .. }) = args.command {
        let report = deployer.status(&env, limit).await?;
        printer.emit(&report, status_text);
        return Ok(exit::OK);
    }
    let artifact = args.artifact.ok_or_else(|| {
        CliError::Core(CoreError::BadValue {
            what: "--artifact".into(),
            value: String::new(),
            reason: "name the release to deploy, e.g. --artifact app@1.4.0".into(),
        })
    })?;
    let actor = crate::env::Environment::get().actor();
    let target = env_target(&settings, &env, &actor, true)?;
    if !args.dry_run && !args.yes {
        let question = format!("Deploy {artifact} to {env}?");
        if printer.confirm(&question) == Some(false) {
            return Err(CliError::NotConfirmed(
                "not confirmed; nothing was changed".into(),
            ));
        }
    }
    printer.line(&format!(
        "{} {artifact} to {env}",
        if args.dry_run {
            "plan: deploy"
        } else {
            "deploy"
        }
    ));
    let lines = StepLines::new(printer);
    let d = deployer
        .deploy(
            DeployRequest {
                artifact,
                reason: args.reason,
                dry_run: args.dry_run,
                actor,
                now: crate::env::Environment::get().now()?,
            },
            &target,
            &lines,
        )
        .await;
    drop(lines);
    let d = d?;
    printer.emit(&d, summary);
    match d.status {
        Status::Succeeded | Status::Planned => Ok(exit::OK),
        status => Err(CliError::Outcome {
            status,
            message: d
                .message
                .clone()
                .unwrap_or_else(|| format!("deploy {:?}", d.status)),
        }),
    }
}

/// The last line of a deploy in human mode (the steps were printed as they ended).
fn summary(d: &Deployment) -> String {
    let what = format!(
        "{}{}",
        d.artifact,
        d.version
            .as_deref()
            .map(|v| format!(" ({v})"))
            .unwrap_or_default()
    );
    let seq = d
        .seq
        .map(|s| format!(" [deployment {s}]"))
        .unwrap_or_default();
    match d.status {
        Status::Succeeded => format!(
            "deployed {what} to {}{seq}{}",
            d.env,
            d.backup_id
                .as_deref()
                .map(|b| format!("; backup {b}"))
                .unwrap_or_default()
        ),
        Status::Planned => format!(
            "dry run: nothing was changed; {what} would be deployed to {}",
            d.env
        ),
        Status::Refused => format!(
            "refused{seq}: {} (nothing was changed)",
            d.message.as_deref().unwrap_or("")
        ),
        Status::RolledBack => format!("ROLLED BACK{seq}: {}", d.message.as_deref().unwrap_or("")),
        Status::Failed | Status::Interrupted | Status::Running => {
            format!("FAILED{seq}: {}", d.message.as_deref().unwrap_or(""))
        }
    }
}

fn status_text(r: &ferry_deploy::DeployStatusReport) -> String {
    let live = r
        .live
        .as_ref()
        .map(|l| {
            format!(
                "{} {} {} (release {}{})",
                l.name,
                l.version.as_deref().unwrap_or("-"),
                l.digest,
                l.seq,
                l.schema_version
                    .map(|v| format!(", schema {v}"))
                    .unwrap_or_default()
            )
        })
        .unwrap_or_else(|| "nothing".into());
    let lock = match (&r.lock.holder, r.lock.state) {
        (Some(h), "held") => format!(
            "held by {h} until {}",
            r.lock
                .expires_at
                .map(|t| t.format("%H:%M:%S UTC").to_string())
                .unwrap_or_default()
        ),
        (Some(h), "stale") => format!(
            "STALE: held by {h}, but {} (the next deploy takes it over)",
            r.lock.stale_because.as_deref().unwrap_or("")
        ),
        _ => "free".into(),
    };
    let mut s = format!(
        "environment: {}\nlive:        {live}\nlock:        {lock}\n\n",
        r.env
    );
    let rows: Vec<Vec<String>> = r
        .deploys
        .iter()
        .map(|d| {
            vec![
                d.seq.map(|s| s.to_string()).unwrap_or_default(),
                format!("{:?}", d.kind).to_lowercase(),
                crate_status(d.status),
                d.version.clone().unwrap_or_default(),
                d.artifact.chars().take(24).collect(),
                d.started_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                d.actor.clone(),
                d.stopped_at.clone().unwrap_or_default(),
            ]
        })
        .collect();
    s.push_str(&table(
        &[
            "SEQ",
            "KIND",
            "STATUS",
            "VERSION",
            "ARTIFACT",
            "STARTED",
            "ACTOR",
            "STOPPED AT",
        ],
        &rows,
    ));
    for d in r.deploys.iter().filter(|d| d.undo_pending) {
        s.push_str(&format!(
            "\ndeployment {} is {}: {}\n  undo it with `ferry rollback --env {}`\n",
            d.seq.unwrap_or_default(),
            crate_status(d.status),
            d.message.as_deref().unwrap_or(""),
            r.env
        ));
    }
    s
}

fn crate_status(s: Status) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub async fn rollback(
    args: RollbackArgs,
    global: &Overrides,
    printer: &Printer,
) -> Result<u8, CliError> {
    let settings = settings(global)?;
    let env = require_env(&settings)?;
    let deployer = deployer(&settings).await?;
    let actor = crate::env::Environment::get().actor();
    let target = env_target(&settings, &env, &actor, false)?;
    let to = args.to.map(|t| t.parse()).transpose()?;
    if !args.yes {
        let question = format!(
            "Roll {env} back (artifact, hosts and schema{})?",
            args.restore_backup
                .as_deref()
                .map(|b| format!(", restoring backup {b}"))
                .unwrap_or_default()
        );
        if printer.confirm(&question) == Some(false) {
            return Err(CliError::NotConfirmed(
                "not confirmed; nothing was changed".into(),
            ));
        }
    }
    let lines = StepLines::new(printer);
    let report = deployer
        .rollback(
            RollbackRequest {
                to,
                reason: args.reason,
                restore_backup: args.restore_backup,
                actor,
                now: crate::env::Environment::get().now()?,
            },
            &target,
            &lines,
        )
        .await;
    drop(lines);
    let report = report?;
    printer.emit(&report, rollback_text);
    match report.outcome {
        Status::Succeeded => Ok(exit::OK),
        status => Err(CliError::Outcome {
            status,
            message: report
                .message
                .clone()
                .unwrap_or_else(|| "the rollback did not finish".into()),
        }),
    }
}

fn rollback_text(r: &RollbackReport) -> String {
    let mut s = if r.release.changed {
        report_text("rolled back", &r.release)
    } else {
        format!(
            "{} {} stays live in {} (release {})",
            r.release.release.name,
            r.release.release.version.as_deref().unwrap_or("-"),
            r.release.env,
            r.release.release.seq
        )
    };
    if let Some(u) = r.undid {
        s.push_str(&format!("\nfinished undoing deployment {u}"));
    }
    match &r.schema {
        Some(c) => s.push_str(&format!("\nschema: {}", c.detail)),
        None => s.push_str("\nschema: unchanged"),
    }
    if r.outcome != Status::Succeeded {
        s.push_str(&format!(
            "\nFAILED: {}",
            r.message.as_deref().unwrap_or("see the steps above")
        ));
    }
    s
}
