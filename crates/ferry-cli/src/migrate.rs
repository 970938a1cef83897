//! `ferry migrate ...`: resolves settings, calls `ferry_migrate`, renders the result.

use ferry_core::Settings;
use ferry_migrate::{
    DdlLock, DownTarget, Driver, MigrateError, MigrateOptions, Migrator, State, Step, Tool, source,
};

use crate::opt::{AdoptFrom, MigrateCommand};
use crate::output::{Printer, Warned, table};
use crate::{CliError, exit, settings};
use ferry_core::Overrides;

pub async fn run(
    cmd: MigrateCommand,
    global: &Overrides,
    printer: &Printer,
) -> Result<u8, CliError> {
    let settings = settings(global)?;
    if let MigrateCommand::New { name, .. } = &cmd {
        return new(&settings, name, printer);
    }
    let (migrator, warnings) = migrator(&settings, &cmd, printer)?;

    if let MigrateCommand::Validate { .. } = cmd {
        let mut driver = match &settings.database_url {
            Some(url) => Some(ferry_migrate::connect(url).await?),
            None => None,
        };
        let report = match driver.as_mut() {
            Some(d) => migrator.validate(Some(d.as_mut())).await,
            None => migrator.validate(None).await,
        };
        close(driver).await;
        let report = report?;
        printer.emit(&report, |r| {
            let mut s = format!(
                "{} migration file{} in {}: valid\n",
                r.files,
                if r.files == 1 { "" } else { "s" },
                settings.migrations_dir.display()
            );
            if !r.database_checked {
                s.push_str("no database configured: checksums not compared (pass --database-url to compare)\n");
            }
            for p in &r.problems {
                s.push_str(&format!("{}_{}: {}\n", p.version, p.name, p.message));
            }
            s
        });
        return Ok(if report.valid {
            exit::OK
        } else {
            exit::REFUSED
        });
    }

    let url = settings.require_database_url()?.clone();
    let mut driver = ferry_migrate::connect(&url).await?;
    let result = dispatch(cmd, &migrator, driver.as_mut(), &url, &warnings, printer).await;
    close(Some(driver)).await;
    result
}

async fn close(driver: Option<Box<dyn Driver>>) {
    if let Some(d) = driver
        && let Err(e) = d.close().await
    {
        tracing::debug!(error = %e, "closing the connection");
    }
}

/// The directory's migrations, and its warnings (already printed on stderr) for the JSON
/// results that list them.
fn migrator(
    settings: &Settings,
    cmd: &MigrateCommand,
    printer: &Printer,
) -> Result<(Migrator, Vec<String>), CliError> {
    let (migrations, warnings) = load(&settings.migrations_dir, printer)?;
    let allow_out_of_order = matches!(
        cmd,
        MigrateCommand::Up {
            allow_out_of_order: true,
            ..
        }
    );
    let migrator = Migrator::new(
        migrations,
        MigrateOptions {
            lock_timeout: settings.lock_timeout,
            applied_by: crate::env::Environment::get().actor(),
            allow_out_of_order,
        },
    )
    .with_ddl_lock(DdlLock {
        timeout: settings.ddl_lock_timeout,
        retries: settings.ddl_lock_retries,
        ..DdlLock::default()
    });
    Ok((migrator, warnings))
}

/// Loads a migrations directory, printing what it skipped on stderr (a loose file beside
/// diesel's folders) and returning those warnings for the JSON result.
pub(crate) fn load(
    dir: &std::path::Path,
    printer: &Printer,
) -> Result<(Vec<ferry_migrate::Migration>, Vec<String>), CliError> {
    let loaded = source::load_dir_with_warnings(dir).map_err(MigrateError::from)?;
    let warnings: Vec<String> = loaded.warnings.into_iter().map(|w| w.message).collect();
    for w in &warnings {
        printer.warn(w);
    }
    Ok((loaded.migrations, warnings))
}

async fn dispatch(
    cmd: MigrateCommand,
    migrator: &Migrator,
    driver: &mut dyn Driver,
    url: &ferry_core::DatabaseUrl,
    warnings: &[String],
    printer: &Printer,
) -> Result<u8, CliError> {
    match cmd {
        MigrateCommand::Status { .. } => {
            let report = migrator.status(driver).await?;
            let report = Warned {
                result: &report,
                warnings,
            };
            printer.emit(&report, |Warned { result: r, .. }| {
                let rows: Vec<Vec<String>> = r
                    .migrations
                    .iter()
                    .map(|m| {
                        vec![
                            m.version.to_string(),
                            m.name.clone(),
                            m.state.as_str().to_string(),
                            if m.reversible { "yes" } else { "NO (restore a backup)" }.to_string(),
                            m.applied_at
                                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                                .unwrap_or_default(),
                        ]
                    })
                    .collect();
                let mut s = format!("database: {url}\ncurrent version: {}\n\n", version_text(r.current_version));
                if rows.is_empty() {
                    s.push_str("no migrations\n");
                } else {
                    s.push_str(&table(&["VERSION", "NAME", "STATE", "REVERSIBLE", "APPLIED AT"], &rows));
                }
                let attention = r
                    .migrations
                    .iter()
                    .filter(|m| matches!(m.state, State::Modified | State::Failed))
                    .count();
                if attention > 0 {
                    s.push_str(&format!(
                        "\n{attention} migration(s) need attention: see `ferry migrate validate` and `ferry migrate repair`\n"
                    ));
                }
                s
            });
            Ok(exit::OK)
        }
        MigrateCommand::Up { to, dry_run, .. } => {
            let progress = printer.progress();
            let report = migrator.up(driver, to, dry_run, &progress).await?;
            drop(progress);
            let report = Warned {
                result: &report,
                warnings,
            };
            printer.emit(&report, |Warned { result: r, .. }| {
                steps_text("applied", "apply", &r.applied, r.current_version, r.dry_run)
            });
            Ok(exit::OK)
        }
        MigrateCommand::Down {
            steps,
            to,
            dry_run,
            yes,
            ..
        } => {
            let target = match to {
                Some(v) => DownTarget::To(v),
                None => DownTarget::Steps(steps.unwrap_or(1)),
            };
            if dry_run {
                let plan = migrator
                    .down(driver, target, true, &ferry_migrate::Quiet)
                    .await?;
                printer.emit(&plan, |r| {
                    steps_text("reverted", "revert", &r.reverted, r.current_version, true)
                });
                return Ok(exit::OK);
            }
            // Only a person is shown the plan first; CI goes straight to the locked run, so
            // nothing is planned outside the lock (where another run's work looks unfinished).
            if !yes && printer.can_ask() {
                let plan = migrator
                    .down(driver, target, true, &ferry_migrate::Quiet)
                    .await?;
                if !plan.reverted.is_empty() {
                    confirm(
                        printer,
                        &format!("Revert {} on {url}?", labels(&plan.reverted)),
                    )?;
                }
            }
            let progress = printer.progress();
            let report = migrator.down(driver, target, false, &progress).await?;
            drop(progress);
            printer.emit(&report, |r| {
                steps_text("reverted", "revert", &r.reverted, r.current_version, false)
            });
            Ok(exit::OK)
        }
        MigrateCommand::Redo { yes, .. } => {
            if !yes && printer.can_ask() {
                let plan = migrator
                    .down(driver, DownTarget::Steps(1), true, &ferry_migrate::Quiet)
                    .await?;
                if !plan.reverted.is_empty() {
                    let question =
                        format!("Revert and re-apply {} on {url}?", labels(&plan.reverted));
                    confirm(printer, &question)?;
                }
            }
            let report = migrator.redo(driver, &ferry_migrate::Quiet).await?;
            printer.emit(&report, |r| {
                let reverted = steps_text("reverted", "revert", &r.reverted, None, false);
                let reverted: Vec<&str> = reverted
                    .lines()
                    .filter(|l| !l.starts_with("current"))
                    .collect();
                format!(
                    "{}\n{}",
                    reverted.join("\n"),
                    steps_text("applied", "apply", &r.applied, r.current_version, false)
                )
            });
            Ok(exit::OK)
        }
        MigrateCommand::Repair { .. } => {
            let report = migrator.repair(driver).await?;
            printer.emit(&report, |r| {
                if r.changes.is_empty() {
                    return "nothing to repair: no failed records, every applied migration matches its file".into();
                }
                r.changes
                    .iter()
                    .map(|c| format!("{}_{}: {}", c.version, c.name, c.detail))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(exit::OK)
        }
        MigrateCommand::Baseline { version, from, .. } => {
            let report = match (version, from) {
                (Some(v), _) => migrator.baseline_version(driver, v).await?,
                (None, Some(tool)) => migrator.baseline_from(driver, tool_of(tool)).await?,
                (None, None) => unreachable!("clap requires --version or --from"),
            };
            printer.emit(&report, |r| {
                let mut s = format!(
                    "recorded {} migration{} as applied without running {} (from {})\n",
                    r.recorded.len(),
                    if r.recorded.len() == 1 { "" } else { "s" },
                    if r.recorded.len() == 1 { "it" } else { "them" },
                    r.source
                );
                for st in &r.recorded {
                    s.push_str(&format!("  {}_{}\n", st.version, st.name));
                }
                s.push_str(&format!(
                    "current version: {}\n",
                    version_text(r.current_version)
                ));
                s
            });
            Ok(exit::OK)
        }
        MigrateCommand::Validate { .. } | MigrateCommand::New { .. } => {
            unreachable!("handled before connecting")
        }
    }
}

fn confirm(printer: &Printer, question: &str) -> Result<(), CliError> {
    match printer.confirm(question) {
        Some(false) => Err(CliError::NotConfirmed(
            "not confirmed; nothing was changed (pass --yes to skip the question)".into(),
        )),
        _ => Ok(()),
    }
}

fn new(settings: &Settings, name: &str, printer: &Printer) -> Result<u8, CliError> {
    let version = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
    let (up, down) =
        source::new_pair(&settings.migrations_dir, &version, name).map_err(MigrateError::from)?;
    let doc = serde_json::json!({ "version": version, "up": up, "down": down });
    printer.emit(&doc, |_| {
        format!("created {}\ncreated {}", up.display(), down.display())
    });
    Ok(exit::OK)
}

fn tool_of(t: AdoptFrom) -> Tool {
    match t {
        AdoptFrom::Sqlx => Tool::Sqlx,
        AdoptFrom::Diesel => Tool::Diesel,
        AdoptFrom::GolangMigrate => Tool::GolangMigrate,
        AdoptFrom::Refinery => Tool::Refinery,
        AdoptFrom::Flyway => Tool::Flyway,
        AdoptFrom::Dbmate => Tool::Dbmate,
    }
}

fn version_text(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "none".into())
}

fn labels(steps: &[Step]) -> String {
    let names: Vec<String> = steps
        .iter()
        .map(|s| format!("{}_{}", s.version, s.name))
        .collect();
    format!(
        "{} migration{} ({})",
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        names.join(", ")
    )
}

fn steps_text(
    done: &str,
    verb: &str,
    steps: &[Step],
    current: Option<i64>,
    dry_run: bool,
) -> String {
    let mut s = String::new();
    if steps.is_empty() {
        s.push_str(&format!("nothing to {verb}\n"));
    }
    for st in steps {
        if dry_run {
            s.push_str(&format!("-- would {verb} {}_{}\n", st.version, st.name));
            if let Some(sql) = &st.sql {
                s.push_str(sql.trim_end());
                s.push('\n');
            }
        } else {
            s.push_str(&format!(
                "{done} {}_{} ({} ms)\n",
                st.version, st.name, st.duration_ms
            ));
        }
    }
    if !dry_run {
        s.push_str(&format!("current version: {}\n", version_text(current)));
    }
    s
}
