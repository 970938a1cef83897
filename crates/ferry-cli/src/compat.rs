//! `ferry compat check`: which migrations to check (above `--from`, or those pending on the
//! configured database), where to prove them (a shadow database on the configured server, or
//! `--shadow-url`), which of the previous version's queries to prepare there (`--old-queries`),
//! and the verdict as an exit code.

use ferry_compat::{CheckOptions, Report};
use ferry_core::{CoreError, DatabaseUrl};

use crate::opt::CompatCommand;
use crate::output::{Printer, Warned};
use crate::{CliError, exit, settings};
use ferry_core::Overrides;

pub async fn run(
    cmd: CompatCommand,
    global: &Overrides,
    printer: &Printer,
) -> Result<u8, CliError> {
    let (from, shadow_url, strict, old_queries, parallel, no_keep_base) = match cmd {
        CompatCommand::Check {
            from,
            shadow_url,
            strict,
            old_queries,
            parallel,
            no_keep_base,
            ..
        } => (
            from,
            shadow_url,
            strict,
            old_queries,
            parallel,
            no_keep_base,
        ),
        CompatCommand::Clean { shadow_url, .. } => return clean(shadow_url, global, printer).await,
    };
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
        kept_base: (!no_keep_base).then(kept_base),
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

/// Where SQLite's kept bases live: beside the shadow files, in the temporary directory. `ferry
/// deploy`'s compat step keeps its base here too, so a deploy and a check share it.
pub(crate) fn kept_base() -> ferry_compat::KeptBase {
    ferry_compat::KeptBase::new(std::env::temp_dir().join("ferry-compat-bases"))
}

/// The result of `ferry compat clean`.
#[derive(serde::Serialize)]
struct Cleaned {
    /// The shadow server (password redacted), or SQLite's base directory.
    server: String,
    /// The databases (SQLite: files) removed.
    removed: Vec<String>,
}

/// `ferry compat clean`: removes the kept bases on the shadow server.
async fn clean(
    shadow_url: Option<String>,
    global: &Overrides,
    printer: &Printer,
) -> Result<u8, CliError> {
    let settings = settings(global)?;
    let server = match shadow_url {
        Some(url) => DatabaseUrl::parse(&url)?,
        None => settings.database_url.clone().ok_or_else(|| {
            CliError::Core(CoreError::BadValue {
                what: "shadow server".into(),
                value: String::new(),
                reason: "compat clean removes the bases kept on a server: pass --database-url \
                         (its server) or --shadow-url"
                    .into(),
            })
        })?,
    };
    let kept = kept_base();
    let removed = ferry_compat::clean_kept_bases(&server, &kept).await?;
    let result = Cleaned {
        server: match server.engine() {
            ferry_core::Engine::Sqlite => kept.dir.display().to_string(),
            _ => server.redacted(),
        },
        removed,
    };
    printer.emit(&result, |c| {
        if c.removed.is_empty() {
            format!("no kept base on {}\n", c.server)
        } else {
            let mut s = format!(
                "removed {} kept base(s) on {}:\n",
                c.removed.len(),
                c.server
            );
            for r in &c.removed {
                s.push_str(&format!("  {r}\n"));
            }
            s
        }
    });
    Ok(exit::OK)
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
