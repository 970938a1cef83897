//! The fixture corpus: `tests/fixtures/<engine>/<case>/up.sql` over that engine's `base.sql`,
//! each with an `expected.toml`:
//!
//! ```toml
//! findings = ["drop-column"]   # every finding's rule id, in any order (a multiset)
//! compatible = false           # the migration's verdict without --strict
//! allowed = ["drop-column"]    # optional: rule ids that must be reported as allowed
//! lines = [4]                  # optional: the lines of the findings, in order
//! objects = ["users.age"]      # optional: the objects of the findings, in order
//! ```
//!
//! Every case runs; the test fails once, listing every case that disagrees.

use std::fs;
use std::path::{Path, PathBuf};

use ferry_compat::{CheckOptions, Class, Engine, Report, check_static};
use ferry_migrate::{Layout, Migration};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    findings: Vec<String>,
    compatible: bool,
    #[serde(default)]
    allowed: Vec<String>,
    lines: Option<Vec<usize>>,
    objects: Option<Vec<String>>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Whether a script opts out of its transaction, as the loader decides it (the directive on
/// its first non-empty line).
fn no_transaction(up: &str) -> bool {
    up.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .is_some_and(|l| l == "-- ferry:no-transaction")
}

fn migration(version: i64, name: &str, up: String, path: PathBuf) -> Migration {
    Migration {
        version,
        name: name.to_string(),
        checksum: ferry_migrate::source::checksum(&up),
        up_transaction: !no_transaction(&up),
        up,
        down: None,
        down_transaction: true,
        path,
        layout: Layout::Diesel,
    }
}

fn run_case(engine: Engine, base: &str, dir: &Path) -> Result<Report, String> {
    let up = fs::read_to_string(dir.join("up.sql")).map_err(|e| e.to_string())?;
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("case");
    let migrations = vec![
        migration(1, "base", base.to_string(), dir.join("../base.sql")),
        migration(
            2,
            name,
            ferry_migrate::source::normalize(&up),
            dir.join("up.sql"),
        ),
    ];
    Ok(check_static(
        &migrations,
        Some(1),
        &CheckOptions::new(engine),
    ))
}

fn verify(report: &Report, expected: &Expected) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(m) = report.migrations.first() else {
        return vec!["no migration reported".into()];
    };
    let mut got: Vec<String> = m.findings.iter().map(|f| f.rule.id().to_string()).collect();
    let mut want = expected.findings.clone();
    got.sort();
    want.sort();
    if got != want {
        let detail: Vec<String> = m
            .findings
            .iter()
            .map(|f| format!("{} @{} {}: {}", f.rule, f.line, f.object, f.message))
            .collect();
        problems.push(format!(
            "findings {got:?}, expected {want:?}\n      {}",
            detail.join("\n      ")
        ));
    }
    if m.compatible != expected.compatible {
        problems.push(format!(
            "compatible = {}, expected {}",
            m.compatible, expected.compatible
        ));
    }
    let mut allowed: Vec<String> = m
        .findings
        .iter()
        .filter(|f| f.allowed)
        .map(|f| f.rule.id().to_string())
        .collect();
    allowed.sort();
    let mut want_allowed = expected.allowed.clone();
    want_allowed.sort();
    if allowed != want_allowed {
        problems.push(format!("allowed {allowed:?}, expected {want_allowed:?}"));
    }
    if m.findings.iter().any(|f| f.allowed && f.reason.is_none()) {
        problems.push("an allowed finding has no reason".into());
    }
    if let Some(lines) = &expected.lines {
        let got: Vec<usize> = m.findings.iter().map(|f| f.line).collect();
        if &got != lines {
            problems.push(format!("lines {got:?}, expected {lines:?}"));
        }
    }
    if let Some(objects) = &expected.objects {
        let got: Vec<&str> = m.findings.iter().map(|f| f.object.as_str()).collect();
        if got != objects.iter().map(String::as_str).collect::<Vec<_>>() {
            problems.push(format!("objects {got:?}, expected {objects:?}"));
        }
    }
    for f in &m.findings {
        if f.hint.is_empty() || f.message.is_empty() || f.line == 0 {
            problems.push(format!("finding {} lacks a message, hint or line", f.rule));
        }
    }
    problems
}

#[test]
fn every_fixture_case_reports_exactly_its_expected_findings() {
    let mut failures = Vec::new();
    let (mut cases, mut compatible_cases) = (0, 0);
    for (engine, folder) in [
        (Engine::Postgres, "postgres"),
        (Engine::MySql, "mysql"),
        (Engine::Sqlite, "sqlite"),
    ] {
        let root = fixtures().join(folder);
        let base = fs::read_to_string(root.join("base.sql")).expect("base.sql of every engine");
        // The base itself must parse completely, or the schema model would be wrong.
        let base_findings = ferry_compat::analyze_script(engine, &base);
        assert!(
            !base_findings.iter().any(|f| f.class == Class::Unparsed),
            "{folder}/base.sql does not parse: {base_findings:?}"
        );
        let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
            .expect("fixture dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for dir in dirs {
            cases += 1;
            let label = format!(
                "{folder}/{}",
                dir.file_name().unwrap_or_default().to_string_lossy()
            );
            let expected: Expected = match fs::read_to_string(dir.join("expected.toml"))
                .map_err(|e| e.to_string())
                .and_then(|t| toml::from_str(&t).map_err(|e| e.to_string()))
            {
                Ok(e) => e,
                Err(e) => {
                    failures.push(format!("{label}: bad expected.toml: {e}"));
                    continue;
                }
            };
            if !expected.findings.iter().any(|r| {
                ferry_compat::Rule::from_id(r).is_some_and(|r| r.class() == Class::Breaking)
            }) || expected.allowed.len() == expected.findings.len()
            {
                compatible_cases += 1;
            }
            match run_case(engine, &base, &dir) {
                Ok(report) => {
                    for p in verify(&report, &expected) {
                        failures.push(format!("{label}: {p}"));
                    }
                }
                Err(e) => failures.push(format!("{label}: {e}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases disagree:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    assert!(
        cases >= 40,
        "the corpus must hold at least 40 cases, has {cases}"
    );
    assert!(
        compatible_cases * 2 >= cases - 2,
        "about half the cases must be compatible changes: {compatible_cases} of {cases}"
    );
}

/// Every PostgreSQL fixture is real PostgreSQL: the server accepts `base.sql` and each case's
/// `up.sql` (statement by statement, as a no-transaction migration runs), except the one case
/// that is there to be unreadable. So "no statement PostgreSQL accepts is reported as unparsed"
/// is checked against the server, not against ferry's idea of the grammar. Each case runs in a
/// schema of its own in one test database.
#[tokio::test]
async fn postgres_fixtures_are_real_postgresql() {
    use sqlx::{AssertSqlSafe, Connection};
    let Some(db) = ferry_testkit::db::TestDb::new(ferry_testkit::db::Kind::Postgres).await else {
        return;
    };
    let root = fixtures().join("postgres");
    let base = fs::read_to_string(root.join("base.sql")).expect("base.sql");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .expect("fixture dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut conn = db.connect().await;
    let mut refused = Vec::new();
    let mut accepted = 0;
    for (i, dir) in dirs.iter().enumerate() {
        let case = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let up = fs::read_to_string(dir.join("up.sql")).expect("up.sql");
        let expects_unparsed = fs::read_to_string(dir.join("expected.toml"))
            .expect("expected.toml")
            .contains("\"unparsed\"");
        let schema = format!("case_{i}");
        let setup = format!("CREATE SCHEMA {schema}; SET search_path = {schema};");
        for sql in [setup.as_str(), base.as_str()] {
            sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{case}: base: {e}"));
        }
        let mut failed = None;
        for (line, statement) in
            ferry_migrate::sql::split_statements_for(&up, ferry_compat::Engine::Postgres)
        {
            if let Err(e) = sqlx::raw_sql(AssertSqlSafe(statement.clone()))
                .execute(&mut conn)
                .await
            {
                failed = Some(format!("line {line}: {e}"));
                break;
            }
        }
        match (failed, expects_unparsed) {
            (None, false) => accepted += 1,
            (Some(_), true) => {}
            (Some(e), false) => refused.push(format!("{case}: PostgreSQL refuses it: {e}")),
            (None, true) => refused.push(format!(
                "{case}: expects an unparsed finding, but PostgreSQL accepts every statement"
            )),
        }
        let _ = sqlx::raw_sql(AssertSqlSafe(format!(
            "SET search_path = public; DROP SCHEMA {schema} CASCADE;"
        )))
        .execute(&mut conn)
        .await;
    }
    let _ = conn.close().await;
    assert!(refused.is_empty(), "{}", refused.join("\n"));
    assert!(accepted >= 60, "only {accepted} PostgreSQL cases ran");
}
