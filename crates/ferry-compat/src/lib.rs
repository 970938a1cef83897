//! Backward compatibility of migrations: does the previous application version keep working
//! while (and after) the new migrations run, and does every down really reverse its up?
//!
//! Contract: [`check`] takes every migration (the ones already applied up to `base_version` and
//! the new ones above it) and returns a [`Report`] with one entry per new migration. The
//! **static layer** always runs: each up script is split with `ferry_migrate::sql` (for line
//! numbers), parsed statement by statement (PostgreSQL with PostgreSQL's own grammar through
//! `pg_query`, MySQL/MariaDB and SQLite with sqlparser), and checked against stable rules
//! ([`Rule`]) in three classes: `breaking` for the previous version,
//! `locking` on a live table, `data-loss`. A statement the parser cannot read becomes a finding
//! of class `unparsed` ("not analysed"), never an error. `-- ferry:allow <rule-id> <reason>`
//! in a migration marks that rule's findings in it as allowed, and so do the annotations teams
//! wrote for other linters (`-- squawk-ignore`, diesel-guard's `-- safety-assured` blocks; see
//! `annotations.rs`). A migration is `compatible`
//! when no unallowed breaking finding remains; with `strict`, unallowed locking, data-loss and
//! unparsed findings and an irreversible migration fail it too. Nothing prints; the JSON shape
//! of [`Report`] is part of ferry's CLI contract (issue 4).
//!
//! A migration is judged by its **end state**: what it drops and creates again in one
//! transaction (a view, function, type or trigger) is compared with what it was, and only what
//! the previous version lost is a finding (see `analyze.rs`).
//!
//! Key design decision: the analysis keeps a **schema model** built from the migrations up to
//! the base (and updated as it walks the new ones), instead of judging each statement alone.
//! Linters that see one statement must either flag every `ALTER COLUMN TYPE` (false positives
//! on widenings such as `varchar(50)` → `text`) or none; knowing the old column lets ferry tell
//! widening from narrowing, see MySQL's `MODIFY` silently drop a default or NOT NULL, and ignore
//! anything done to a table that only the new migrations created (the old version cannot use
//! it: `CREATE INDEX` on it needs no `CONCURRENTLY`, a NOT NULL column on it breaks nobody).
//!
//! The **dynamic layer** runs when [`CheckOptions::shadow_url`] is set: in a temporary database
//! (created on that server and dropped after; a temporary file for SQLite) it applies the
//! migrations up to the base, snapshots the catalog, applies each new migration and snapshots
//! again (objects the previous version relied on that disappear or change incompatibly become
//! `shadow-*` findings, line 0), then reverts them one by one and requires each down to restore
//! the earlier snapshot exactly (`roundtrip.differences`), then applies them again.
//!
//! **The previous version's own queries** ([`CheckOptions::old_queries`], loaded by
//! [`load_old_queries`] from `.sql` files and sqlx's offline `.sqlx/query-*.json`) are
//! prepared, never executed, in the shadow database at the base and after each new migration.
//! The database itself decides whether the old SQL still resolves, so ferry needs no model of
//! what a query touches, and its message is the database's own error. A query that stops
//! preparing is an `old-query-fails` finding (breaking) on the first migration after which it
//! fails, and is not tried again; one that does not prepare even at the base becomes a single
//! `old-query-invalid-at-base` finding (class `unparsed`) on the first new migration, since the
//! query file, not the migration, is wrong. For sqlx queries, whose recorded result columns the
//! old binary decodes by name, a column that disappears is `old-query-columns-changed`.

mod analyze;
mod annotations;
mod ddl;
mod error;
mod model;
mod parse;
mod queries;
mod rules;
mod shadow;
mod types;

use ferry_migrate::Migration;
use serde::Serialize;

pub use error::CompatError;
pub use ferry_core::{DatabaseUrl, Engine};
pub use queries::{OldQuery, load as load_old_queries};
pub use rules::{Class, Rule, Severity};
pub use shadow::base::{KeptBase, clean as clean_kept_bases};
pub use shadow::split as shadow_parts;

/// What [`check`] should do besides the static analysis.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The dialect the migrations are written for.
    pub engine: Engine,
    /// Locking, data-loss and unparsed findings (and an irreversible migration) also make a
    /// migration incompatible.
    pub strict: bool,
    /// The server to run the dynamic proof on: ferry creates a temporary database there (and
    /// drops it); for SQLite any `sqlite:` URL means a temporary file.
    pub shadow_url: Option<DatabaseUrl>,
    /// The previous version's queries ([`load_old_queries`]), prepared in the shadow database
    /// after each new migration; they need [`CheckOptions::shadow_url`].
    pub old_queries: Vec<OldQuery>,
    /// How many shadow databases a long release is proven in at once (`None`: one per core, at
    /// most three; see [`shadow_parts`]).
    pub parallel: Option<usize>,
    /// Keep the schema at the base between checks and copy it for each shadow database
    /// (PostgreSQL and SQLite; see [`KeptBase`]); `None` applies the base in every shadow
    /// database and keeps nothing.
    pub kept_base: Option<KeptBase>,
}

impl CheckOptions {
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            strict: false,
            shadow_url: None,
            old_queries: Vec::new(),
            parallel: None,
            kept_base: None,
        }
    }
}

/// The result of a check: one entry per migration above the base.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub migrations: Vec<MigrationReport>,
    /// True when every migration is compatible.
    pub compatible: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct MigrationReport {
    pub version: i64,
    pub name: String,
    pub compatible: bool,
    pub findings: Vec<Finding>,
    pub roundtrip: Roundtrip,
}

/// One problem found in one statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: Rule,
    pub class: Class,
    pub severity: Severity,
    /// What the statement touches: `table`, `table.column`, `index`, `type.value`, …
    pub object: String,
    /// 1-based line in the up script where the statement starts.
    pub line: usize,
    pub message: String,
    /// The safe (expand/contract) way to make this change.
    pub hint: String,
    /// True when a `-- ferry:allow <rule-id> <reason>` line in the migration covers it.
    pub allowed: bool,
    /// The reason given on the allow line; absent from JSON unless allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Finding {
    /// Whether this finding makes its migration incompatible.
    pub fn fails(&self, strict: bool) -> bool {
        !self.allowed && (self.class == Class::Breaking || strict)
    }
}

/// Whether down reverses up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Roundtrip {
    /// `false` when the migration is irreversible or the proof found differences; `null` when
    /// nothing was proven (the static layer alone cannot prove a down correct).
    pub ok: Option<bool>,
    /// Each difference as a sentence, e.g. "index x missing: this needs to be undone in down.sql".
    pub differences: Vec<String>,
}

/// Checks every migration above `base_version` (all of them when `None`) against the schema the
/// migrations up to and including `base_version` build. `migrations` need not be sorted. With
/// [`CheckOptions::shadow_url`], the dynamic proof runs too.
pub async fn check(
    migrations: &[Migration],
    base_version: Option<i64>,
    options: &CheckOptions,
) -> Result<Report, CompatError> {
    let Some(url) = &options.shadow_url else {
        if !options.old_queries.is_empty() {
            return Err(CompatError::OldQueriesNeedShadow);
        }
        return Ok(check_static(migrations, base_version, options));
    };
    // The static layer reads every migration of the history (the base's too, to learn its
    // schema); it runs on a thread of its own while the shadow database is copied or built,
    // which is the server's work, so that a short check waits for the longer of the two only.
    let analysis = {
        let (migrations, options) = (migrations.to_vec(), options.clone());
        tokio::task::spawn_blocking(move || check_static(&migrations, base_version, &options))
    };
    let proofs = shadow::prove(
        migrations,
        base_version,
        url,
        &options.old_queries,
        options.parallel,
        options.kept_base.as_ref(),
    )
    .await;
    let mut report = match analysis.await {
        Ok(report) => report,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: only when the runtime shuts down under the check.
        Err(_) => check_static(migrations, base_version, options),
    };
    let proofs = proofs?;
    let by_version: std::collections::HashMap<i64, &Migration> =
        migrations.iter().map(|m| (m.version, m)).collect();
    for m in &mut report.migrations {
        let Some(proof) = proofs.get(&m.version) else {
            continue;
        };
        let annotations = by_version
            .get(&m.version)
            .map(|mig| annotations::Annotations::parse(&mig.up))
            .unwrap_or_default();
        for mut f in proof.findings.iter().cloned() {
            // The static layer already named this object (with a line): the proof confirms it.
            let known = m
                .findings
                .iter()
                .any(|s| s.class == Class::Breaking && s.object.eq_ignore_ascii_case(&f.object));
            if known {
                continue;
            }
            if let Some(reason) = annotations.reason(&f) {
                f.allowed = true;
                f.reason = Some(reason);
            }
            m.findings.push(f);
        }
        if let Some(rt) = &proof.roundtrip {
            m.roundtrip = rt.clone();
        }
        let reversible = by_version.get(&m.version).is_some_and(|x| x.reversible());
        m.compatible = verdict(&m.findings, &m.roundtrip, reversible, options.strict);
    }
    report.compatible = report.migrations.iter().all(|r| r.compatible);
    Ok(report)
}

/// A migration fails on an unallowed breaking finding (any unallowed finding with `strict`), or
/// on a down that does not restore the schema; an irreversible one fails only with `strict`.
fn verdict(findings: &[Finding], roundtrip: &Roundtrip, reversible: bool, strict: bool) -> bool {
    let roundtrip_fails = roundtrip.ok == Some(false) && (strict || reversible);
    !roundtrip_fails && !findings.iter().any(|f| f.fails(strict))
}

/// The static layer alone: no database, no I/O.
pub fn check_static(
    migrations: &[Migration],
    base_version: Option<i64>,
    options: &CheckOptions,
) -> Report {
    let mut sorted: Vec<&Migration> = migrations.iter().collect();
    sorted.sort_by_key(|m| m.version);
    let mut analyzer = analyze::Analyzer::new(options.engine);
    let mut reports = Vec::new();
    for m in sorted {
        if base_version.is_some_and(|base| m.version <= base) {
            analyzer.learn(&m.up);
            continue;
        }
        let findings = analyzer.analyze_in(&m.up, m.up_transaction);
        let roundtrip = match &m.down {
            None => Roundtrip {
                ok: Some(false),
                differences: vec![format!(
                    "{} is irreversible: it has no down script (or only comments), so a failed \
                     release cannot roll it back; write down.sql",
                    m.label()
                )],
            },
            Some(_) => Roundtrip {
                ok: None,
                differences: Vec::new(),
            },
        };
        let compatible = verdict(&findings, &roundtrip, m.reversible(), options.strict);
        tracing::debug!(migration = %m.label(), findings = findings.len(), compatible, "compat: analysed");
        reports.push(MigrationReport {
            version: m.version,
            name: m.name.clone(),
            compatible,
            findings,
            roundtrip,
        });
    }
    Report {
        compatible: reports.iter().all(|r| r.compatible),
        migrations: reports,
    }
}

/// Analyses one up script on its own (no base schema), e.g. for an editor integration.
pub fn analyze_script(engine: Engine, up: &str) -> Vec<Finding> {
    analyze::Analyzer::new(engine).analyze(up)
}

/// Builds the schema model from `base` scripts, then analyses `up`.
pub fn analyze_script_over(engine: Engine, base: &[&str], up: &str) -> Vec<Finding> {
    let mut a = analyze::Analyzer::new(engine);
    for b in base {
        a.learn(b);
    }
    a.analyze(up)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn migration(version: i64, up: &str, down: Option<&str>) -> Migration {
        Migration {
            version,
            name: format!("m{version}"),
            up: up.to_string(),
            down: down.map(str::to_string),
            checksum: String::new(),
            up_transaction: true,
            down_transaction: true,
            path: PathBuf::from(format!("{version}_m{version}.up.sql")),
            layout: ferry_migrate::Layout::Native,
        }
    }

    const BASE: &str = "CREATE TABLE users (id int PRIMARY KEY, name text, age int);";

    #[test]
    fn json_keys_are_the_contract() {
        let ms = [
            migration(1, BASE, Some("DROP TABLE users;")),
            migration(2, "ALTER TABLE users DROP COLUMN age;", Some("SELECT 1;")),
        ];
        let report = check_static(&ms, Some(1), &CheckOptions::new(Engine::Postgres));
        let json = serde_json::to_value(&report).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&json), ["compatible", "migrations"]);
        let m = &json["migrations"][0];
        assert_eq!(
            keys(m),
            ["compatible", "findings", "name", "roundtrip", "version"]
        );
        assert_eq!(keys(&m["roundtrip"]), ["differences", "ok"]);
        assert_eq!(
            keys(&m["findings"][0]),
            [
                "allowed", "class", "hint", "line", "message", "object", "rule", "severity"
            ]
        );
        assert_eq!(m["findings"][0]["rule"], "drop-column");
        assert_eq!(m["findings"][0]["class"], "breaking");
        assert_eq!(m["findings"][0]["severity"], "error");
        assert_eq!(m["findings"][0]["object"], "users.age");
        assert_eq!(m["roundtrip"]["ok"], serde_json::Value::Null);
        assert_eq!(json["compatible"], false);
    }

    #[test]
    fn allow_lines_mark_findings_with_their_reason() {
        let up = "-- ferry:allow drop-column  v2 no longer reads age\nALTER TABLE users DROP COLUMN age;\n\
                  ALTER TABLE users RENAME COLUMN name TO full_name;";
        let f = analyze_script_over(Engine::Postgres, &[BASE], up);
        assert_eq!(f.len(), 2);
        assert!(f[0].allowed);
        assert_eq!(f[0].reason.as_deref(), Some("v2 no longer reads age"));
        assert_eq!(f[0].line, 2);
        assert!(!f[1].allowed && f[1].reason.is_none());
        let json = serde_json::to_value(&f[0]).unwrap();
        assert_eq!(json["reason"], "v2 no longer reads age");
    }

    #[test]
    fn strict_fails_locking_data_loss_and_irreversible() {
        let ms = [
            migration(1, BASE, None),
            migration(
                2,
                "CREATE INDEX users_name ON users (name);",
                Some("DROP INDEX users_name;"),
            ),
            migration(3, "ALTER TABLE users ADD COLUMN bio text;", None),
        ];
        let lax = check_static(&ms, Some(1), &CheckOptions::new(Engine::Postgres));
        assert!(lax.compatible, "{lax:?}");
        assert_eq!(lax.migrations.len(), 2);
        assert_eq!(lax.migrations[1].roundtrip.ok, Some(false));
        assert!(lax.migrations[1].roundtrip.differences[0].contains("irreversible"));
        let strict = check_static(
            &ms,
            Some(1),
            &CheckOptions {
                strict: true,
                ..CheckOptions::new(Engine::Postgres)
            },
        );
        assert!(!strict.compatible);
        assert!(!strict.migrations[0].compatible && !strict.migrations[1].compatible);
    }

    #[test]
    fn without_a_base_every_migration_is_checked_and_own_tables_are_free() {
        let ms = [
            migration(2, "CREATE INDEX t_x ON t (x); DROP TABLE t;", Some("x")),
            migration(1, "CREATE TABLE t (x int);", Some("DROP TABLE t;")),
        ];
        let report = check_static(&ms, None, &CheckOptions::new(Engine::Postgres));
        assert_eq!(report.migrations[0].version, 1);
        assert!(
            report.migrations.iter().all(|m| m.findings.is_empty()),
            "{report:?}"
        );
    }

    #[test]
    fn unparsable_sql_is_a_finding_not_a_crash() {
        for engine in [Engine::Postgres, Engine::MySql, Engine::Sqlite] {
            let f = analyze_script(engine, "THIS IS NOT SQL;\nSELECT 1;\n$$ unterminated");
            assert!(f.iter().all(|f| f.class == Class::Unparsed), "{f:?}");
            assert_eq!(f[0].line, 1);
        }
    }
}
