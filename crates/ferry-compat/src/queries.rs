//! The previous version's own queries (`--old-queries`): loads them from `.sql` files and from
//! sqlx's offline-query files (`.sqlx/query-<hash>.json`), each labelled with where it came from.
//! Reads files only; preparing them is the shadow run's job (`shadow/`), and nothing here
//! touches a database.

use std::path::{Path, PathBuf};

use ferry_core::Engine;

use crate::CompatError;

/// One statement the previous application version sends, to be prepared (never run) against
/// the migrated shadow schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldQuery {
    /// Where it came from: `queries/users.sql:12` (file and 1-based line) or
    /// `.sqlx/query-<hash>.json`. It is the finding's `object`.
    pub source: String,
    pub sql: String,
    /// The result columns the previous version decodes, by name, when known (sqlx's
    /// `describe.columns`); `None` for plain SQL files.
    pub columns: Option<Vec<String>>,
}

/// sqlx's name for each engine, as written in `db_name` (`Database::NAME`).
fn sqlx_db_name(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgres => "PostgreSQL",
        Engine::MySql => "MySQL",
        Engine::Sqlite => "SQLite",
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> CompatError {
    CompatError::OldQueries {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Loads the queries at `path`: a `.sql` file (split into statements, each with its line), a
/// sqlx `query-*.json` file, or a directory, walked recursively in name order for both kinds
/// (so a project root's `.sqlx/` is found). Directories in `exclude` (the migrations directory:
/// migrations are not queries), `target/` and hidden directories other than `.sqlx` are
/// skipped. Every file must be usable, and at least one query must be found.
pub fn load(
    path: &Path,
    engine: Engine,
    exclude: &[PathBuf],
) -> Result<Vec<OldQuery>, CompatError> {
    let meta = std::fs::metadata(path).map_err(|e| bad(path, format!("cannot read it: {e}")))?;
    let mut files = Vec::new();
    if meta.is_dir() {
        let exclude: Vec<PathBuf> = exclude
            .iter()
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .collect();
        walk(path, &exclude, &mut files)?;
    } else {
        files.push(path.to_path_buf());
    }
    let mut out = Vec::new();
    for file in &files {
        if is_sqlx_file(file) {
            out.push(load_sqlx(file, engine)?);
        } else if meta.is_dir() && !is_sql_file(file) {
            continue;
        } else {
            out.extend(load_sql(file, engine)?);
        }
    }
    if out.is_empty() {
        return Err(bad(
            path,
            "no queries found: expected SQL statements in *.sql files or sqlx offline queries \
             (.sqlx/query-*.json, written by `cargo sqlx prepare`)",
        ));
    }
    Ok(out)
}

fn is_sqlx_file(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("query-") && n.ends_with(".json"))
}

fn is_sql_file(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("sql"))
}

fn walk(dir: &Path, exclude: &[PathBuf], out: &mut Vec<PathBuf>) -> Result<(), CompatError> {
    let entries = std::fs::read_dir(dir).map_err(|e| bad(dir, format!("cannot list it: {e}")))?;
    let mut entries: Vec<PathBuf> = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| bad(dir, format!("cannot list it: {e}")))?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let skip = (name.starts_with('.') && name != ".sqlx")
                || name == "target"
                || std::fs::canonicalize(&p).is_ok_and(|c| exclude.contains(&c));
            if !skip {
                walk(&p, exclude, out)?;
            }
        } else if is_sql_file(&p) || is_sqlx_file(&p) {
            out.push(p);
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, CompatError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| bad(path, format!("cannot read it: {e}")))?;
    Ok(text
        .strip_prefix('\u{feff}')
        .unwrap_or(&text)
        .replace("\r\n", "\n"))
}

/// Every statement of a SQL file, labelled with the line of its first token (after any leading
/// comments, which usually name the query); blank and comment-only ones skipped.
fn load_sql(path: &Path, engine: Engine) -> Result<Vec<OldQuery>, CompatError> {
    let text = read(path)?;
    Ok(ferry_migrate::sql::split_statements_for(&text, engine)
        .into_iter()
        .map(|(line, sql)| {
            let (skipped, sql) = skip_leading_comments(&sql);
            OldQuery {
                source: format!("{}:{}", path.display(), line + skipped),
                sql: sql.to_string(),
                columns: None,
            }
        })
        .collect())
}

/// `sql` without its leading `--` and `/* */` comments, and how many lines they took.
fn skip_leading_comments(sql: &str) -> (usize, &str) {
    let mut rest = sql;
    loop {
        let trimmed = rest.trim_start();
        let next = if let Some(r) = trimmed.strip_prefix("--") {
            r.find('\n').map(|n| &r[n..])
        } else if let Some(r) = trimmed.strip_prefix("/*") {
            r.find("*/").map(|n| &r[n + 2..])
        } else {
            None
        };
        match next {
            Some(n) => rest = n,
            None => {
                let start = sql.len() - trimmed.len();
                return (sql[..start].matches('\n').count(), trimmed);
            }
        }
    }
}

/// The fields of sqlx's offline-query file (`sqlx_macros_core::query::data::DynQueryData`) that
/// ferry reads.
#[derive(serde::Deserialize)]
struct SqlxQuery {
    db_name: String,
    query: String,
    #[serde(default)]
    describe: Option<SqlxDescribe>,
}

#[derive(serde::Deserialize)]
struct SqlxDescribe {
    #[serde(default)]
    columns: Vec<SqlxColumn>,
}

#[derive(serde::Deserialize)]
struct SqlxColumn {
    name: String,
}

fn load_sqlx(path: &Path, engine: Engine) -> Result<OldQuery, CompatError> {
    let text = read(path)?;
    let q: SqlxQuery = serde_json::from_str(&text).map_err(|e| {
        bad(
            path,
            format!("not a sqlx offline query (expected JSON with db_name and query): {e}"),
        )
    })?;
    let want = sqlx_db_name(engine);
    if q.db_name != want {
        return Err(bad(
            path,
            format!(
                "sqlx wrote it for {}, but the migrations are checked on {want}; point \
                 --old-queries at the queries of this database",
                q.db_name
            ),
        ));
    }
    if ferry_migrate::sql::is_blank(&q.query) {
        return Err(bad(path, "its query is empty"));
    }
    Ok(OldQuery {
        source: path.display().to_string(),
        sql: q.query,
        columns: q
            .describe
            .map(|d| d.columns.into_iter().map(|c| c.name).collect()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    const SQLX_PG: &str = r#"{
  "db_name": "PostgreSQL",
  "query": "SELECT id, email FROM users WHERE id = $1",
  "describe": {
    "columns": [
      { "ordinal": 0, "name": "id", "type_info": "Int4" },
      { "ordinal": 1, "name": "email", "type_info": "Varchar" }
    ],
    "parameters": { "Left": ["Int4"] },
    "nullable": [false, true]
  },
  "hash": "0f"
}
"#;

    #[test]
    fn a_sql_file_is_split_with_lines_and_comments_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "users.sql",
            "\u{feff}-- the user list\r\nSELECT id FROM users;\r\n\r\n-- only a comment;\r\n\
             SELECT name\r\n  FROM users WHERE id = $1;\r\n/* trailing */",
        );
        let q = load(&f, Engine::Postgres, &[]).unwrap();
        assert_eq!(q.len(), 2, "{q:?}");
        assert_eq!(q[0].source, format!("{}:2", f.display()));
        assert_eq!(q[0].sql, "SELECT id FROM users");
        assert_eq!(q[1].source, format!("{}:5", f.display()));
        assert_eq!(q[1].sql, "SELECT name\n  FROM users WHERE id = $1");
        assert!(q.iter().all(|q| q.columns.is_none()));
    }

    #[test]
    fn sqlx_offline_files_give_the_query_and_its_columns() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), ".sqlx/query-0f.json", SQLX_PG);
        let q = load(&f, Engine::Postgres, &[]).unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].sql, "SELECT id, email FROM users WHERE id = $1");
        assert_eq!(q[0].source, f.display().to_string());
        assert_eq!(
            q[0].columns.as_deref(),
            Some(&["id".to_string(), "email".to_string()][..])
        );
    }

    #[test]
    fn a_directory_is_walked_in_order_skipping_migrations_and_hidden_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        write(p, ".sqlx/query-0f.json", SQLX_PG);
        write(p, ".sqlx/notes.txt", "not a query");
        write(p, "b/orders.sql", "SELECT 2;");
        write(p, "a.sql", "SELECT 1;");
        write(p, "migrations/1_x.up.sql", "CREATE TABLE x (id int);");
        write(p, ".git/hooks.sql", "SELECT 3;");
        write(p, "target/gen.sql", "SELECT 4;");
        write(p, "README.md", "# not SQL");
        let q = load(p, Engine::Postgres, &[p.join("migrations")]).unwrap();
        let sql: Vec<&str> = q.iter().map(|q| q.sql.as_str()).collect();
        assert_eq!(
            sql,
            [
                "SELECT id, email FROM users WHERE id = $1",
                "SELECT 1",
                "SELECT 2"
            ]
        );
    }

    #[test]
    fn bad_input_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let missing = p.join("nope.sql");
        let e = load(&missing, Engine::Postgres, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.sql") && e.contains("cannot read"), "{e}");

        let broken = write(p, "one/.sqlx/query-1.json", "{ not json");
        let e = load(&p.join("one"), Engine::Postgres, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains(&broken.display().to_string()), "{e}");
        assert!(e.contains("not a sqlx offline query"), "{e}");

        let other = write(p, "two/query-2.json", SQLX_PG);
        let e = load(&other, Engine::MySql, &[]).unwrap_err().to_string();
        assert!(
            e.contains("query-2.json") && e.contains("PostgreSQL") && e.contains("MySQL"),
            "{e}"
        );

        write(p, "three/only-comments.sql", "-- nothing here\n");
        let e = load(&p.join("three"), Engine::Sqlite, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("three") && e.contains("no queries found"), "{e}");
    }
}
