//! `ferry compat check`: which migrations to check (above `--from`, or those pending on the
//! configured database), where to prove them (a shadow database on the configured server, or
//! `--shadow-url`), which of the previous version's queries to prepare there (`--old-queries`),
//! and the verdict as an exit code.

use ferry_compat::{CheckOptions, Report};
use ferry_core::{CoreError, DatabaseUrl};

use crate::opt::{CompatCommand, GlobalOpts};
use crate::output::{Printer, Warned};
use crate::{CliError, exit, settings};

pub async fn run(
    cmd: CompatCommand,
    global: &GlobalOpts,
    printer: &Printer,
) -> Result<u8, CliError> {
    let CompatCommand::Check {
        from,
        shadow_url,
        strict,
        old_queries,
        parallel,
    } = cmd;
    let settings = settings(global)?;
    let (migrations, warnings) = crate::migrate::load(&settings.migrations_dir, printer)?;
    let shadow = match shadow_url {
        Some(url) => Some(DatabaseUrl::parse(&url)?),
        None => settings.database_url.clone(),
    };
    let Some(shadow) = shadow else {
        if old_queries.is_some() {
            return Err(ferry_compat::CompatError::OldQueriesNeedShadow.into());
        }
        return Err(CliError::Core(CoreError::BadValue {
            what: "shadow database".into(),
            value: String::new(),
            reason: "compat check proves migrations on a real database: pass --database-url (the \
                     shadow database is created on its server) or --shadow-url"
                .into(),
        }));
    };
    // The base: --from, else what the configured database has applied (its pending migrations
    // are the ones about to be deployed), else nothing (every migration is checked).
    let base = match (from, &settings.database_url) {
        (Some(v), _) => Some(v),
        (None, Some(url)) => {
            let mut driver = ferry_migrate::connect(url).await?;
            let current = driver.current_version().await;
            let _ = driver.close().await;
            current?
        }
        (None, None) => None,
    };
    // Loaded before anything connects: a bad query file is invalid input (exit 2), found at once.
    let old_queries = match &old_queries {
        Some(path) => ferry_compat::load_old_queries(
            path,
            shadow.engine(),
            std::slice::from_ref(&settings.migrations_dir),
        )?,
        None => Vec::new(),
    };
    let options = CheckOptions {
        engine: shadow.engine(),
        strict,
        shadow_url: Some(shadow),
        old_queries,
        parallel,
    };
    let report = ferry_compat::check(&migrations, base, &options).await?;
    let warned = Warned {
        result: &report,
        warnings: &warnings,
    };
    printer.emit(&warned, |w| report_text(w.result, base));
    Ok(if report.compatible {
        exit::OK
    } else {
        exit::REFUSED
    })
}

fn report_text(r: &Report, base: Option<i64>) -> String {
    let mut s = format!(
        "checked {} migration(s) above {}\n",
        r.migrations.len(),
        base.map(|v| v.to_string())
            .unwrap_or_else(|| "an empty database".into())
    );
    for m in &r.migrations {
        s.push_str(&format!(
            "\n{}_{}: {}\n",
            m.version,
            m.name,
            if m.compatible {
                "compatible"
            } else {
                "NOT COMPATIBLE"
            }
        ));
        for f in &m.findings {
            let tag = if f.allowed { " (allowed)" } else { "" };
            s.push_str(&format!(
                "  line {} [{:?} {}] {}: {}{tag}\n    safe way: {}\n",
                f.line,
                f.class,
                f.rule.id(),
                f.object,
                f.message,
                f.hint
            ));
            if let Some(reason) = &f.reason {
                s.push_str(&format!("    allowed because: {reason}\n"));
            }
        }
        match m.roundtrip.ok {
            Some(true) => s.push_str("  down reverses up: yes\n"),
            Some(false) => {
                s.push_str("  down reverses up: NO\n");
                for d in &m.roundtrip.differences {
                    s.push_str(&format!("    - {d}\n"));
                }
            }
            None => s.push_str("  down reverses up: not proven\n"),
        }
    }
    s.push_str(&format!(
        "\n{}\n",
        if r.compatible {
            "compatible: the previous version keeps working"
        } else {
            "not compatible: see the findings above (exit 3)"
        }
    ));
    s
}
