//! `ferry backup ...`: resolves the database and the store, calls `ferry_backup`, renders.

use ferry_backup::{Backups, Manifest, PrunePolicy, RestoreOptions};
use ferry_core::DatabaseUrl;

use crate::opt::BackupCommand;
use crate::output::{Printer, byte_progress, table};
use crate::{CliError, backup_options, exit, open_store, settings};
use ferry_core::Overrides;

pub async fn run(
    cmd: BackupCommand,
    global: &Overrides,
    printer: &Printer,
) -> Result<u8, CliError> {
    let settings = settings(global)?;
    let backups = Backups::with_options(open_store(&settings).await?, backup_options(&settings)?);
    let progress = byte_progress(printer);
    match cmd {
        BackupCommand::Create { label, .. } => {
            let url = settings.require_database_url()?;
            let m = backups.create(url, label.as_deref(), &progress).await?;
            drop(progress);
            printer.emit(&m, |m| m.id.clone());
        }
        BackupCommand::List { .. } => {
            let list = backups.list().await?;
            let doc = serde_json::json!({ "backups": list });
            printer.emit(&doc, |_| list_text(&list));
        }
        BackupCommand::Show { id, .. } => {
            let m = backups.show(&id).await?;
            printer.emit(&m, manifest_text);
        }
        BackupCommand::Verify {
            id, restore_check, ..
        } => {
            let report = backups.verify(&id, &progress).await?;
            let check = if restore_check {
                let url = settings.require_database_url()?;
                Some(backups.verify_restore_check(&id, url, &progress).await?)
            } else {
                None
            };
            drop(progress);
            let doc = serde_json::json!({
                "id": report.id,
                "ok": true,
                "sha256": report.sha256,
                "compressed_bytes": report.compressed_bytes,
                "raw_bytes": report.raw_bytes,
                "duration_ms": report.duration_ms,
                "restore_check": check,
            });
            printer.emit(&doc, |_| {
                let mut s = format!(
                    "backup {}: checksum and compressed stream OK ({} bytes, {} raw)\n",
                    report.id, report.compressed_bytes, report.raw_bytes
                );
                if let Some(c) = &check {
                    s.push_str(&format!(
                        "restore check OK: {} tables with the manifest's row counts, restored into {} (dropped)\n",
                        c.tables.len(),
                        c.scratch
                    ));
                }
                s
            });
        }
        BackupCommand::Restore {
            id,
            to,
            yes,
            jobs,
            keep_old,
            no_owner,
            role,
            ..
        } => {
            let target = match &to {
                Some(url) => DatabaseUrl::parse(url)?,
                None => settings.require_database_url()?.clone(),
            };
            let mut confirmed = yes;
            if to.is_none() && !yes {
                let question = format!("Replace the entire contents of {target} with backup {id}?");
                match printer.confirm(&question) {
                    Some(true) => confirmed = true,
                    Some(false) => {
                        return Err(CliError::NotConfirmed(
                            "not confirmed; the database was not touched".into(),
                        ));
                    }
                    None => {
                        return Err(CliError::NotConfirmed(format!(
                            "restoring over the configured database {target} replaces all of its contents; \
                             pass --yes to confirm, or --to URL to restore somewhere else"
                        )));
                    }
                }
            }
            let options = RestoreOptions {
                jobs: jobs.map(usize::from),
                end_sessions: confirmed,
                keep_old,
                no_owner,
                role,
            };
            let report = backups
                .restore_with(&id, &target, &options, &progress)
                .await?;
            drop(progress);
            printer.emit(&report, |r| {
                let mut s = format!(
                    "restored backup {} into {} in {} ms; schema version {}",
                    r.id,
                    r.target,
                    r.duration_ms,
                    r.schema_version
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "none".into())
                );
                if r.sessions_ended > 0 {
                    s.push_str(&format!("; ended {} session(s)", r.sessions_ended));
                }
                if let Some(old) = &r.kept_old {
                    s.push_str(&format!("; the replaced database is kept as {old}"));
                }
                s
            });
        }
        BackupCommand::Prune {
            keep_last,
            keep_within,
            yes,
            ..
        } => {
            let keep_within = keep_within
                .map(|text| {
                    ferry_core::config::parse_duration(&text).map_err(|reason| {
                        ferry_core::CoreError::BadValue {
                            what: "--keep-within".into(),
                            value: text,
                            reason,
                        }
                    })
                })
                .transpose()?;
            let report = backups
                .prune(&PrunePolicy {
                    keep_last,
                    keep_within,
                    dry_run: !yes,
                })
                .await?;
            printer.emit(&report, |r| {
                let verb = if r.dry_run { "would delete" } else { "deleted" };
                let mut s = format!("kept {} backup(s)\n", r.kept.len());
                for m in &r.deleted {
                    s.push_str(&format!(
                        "{verb} {} ({})\n",
                        m.id,
                        m.created_at.format("%Y-%m-%d %H:%M UTC")
                    ));
                }
                for key in &r.leftovers {
                    s.push_str(&format!("{verb} leftover {key}\n"));
                }
                if r.dry_run && (!r.deleted.is_empty() || !r.leftovers.is_empty()) {
                    s.push_str("nothing was deleted: pass --delete to delete\n");
                }
                s
            });
        }
    }
    Ok(exit::OK)
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn list_text(list: &[Manifest]) -> String {
    if list.is_empty() {
        return "no backups".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|m| {
            vec![
                m.id.clone(),
                m.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                m.engine.clone(),
                m.database.clone(),
                m.schema_version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                human_bytes(m.compressed_bytes),
                m.label.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "CREATED", "ENGINE", "DATABASE", "SCHEMA", "SIZE", "LABEL",
        ],
        &rows,
    )
}

fn manifest_text(m: &Manifest) -> String {
    let mut s = format!(
        "id:              {}\ncreated at:      {}\nengine:          {} {}\ndatabase:        {}\nurl:             {}\n\
         schema version:  {}\nlabel:           {}\ntool:            {}\nferry version:   {}\n\
         size:            {} compressed, {} raw\nsha256:          {}\nduration:        {} ms\ntables:\n",
        m.id,
        m.created_at.to_rfc3339(),
        m.engine,
        m.server_version,
        m.database,
        m.url,
        m.schema_version
            .map(|v| v.to_string())
            .unwrap_or_else(|| "none".into()),
        m.label.clone().unwrap_or_default(),
        m.tool,
        m.ferry_version,
        human_bytes(m.compressed_bytes),
        human_bytes(m.raw_bytes),
        m.sha256,
        m.duration_ms,
    );
    let rows: Vec<Vec<String>> = m
        .tables
        .iter()
        .map(|t| vec![t.name.clone(), t.rows.to_string()])
        .collect();
    s.push_str(&table(
        &["  TABLE", "ROWS"],
        &rows
            .iter()
            .map(|r| vec![format!("  {}", r[0]), r[1].clone()])
            .collect::<Vec<_>>(),
    ));
    s
}
