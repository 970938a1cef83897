//! Reading the history tables of the tools teams switch from, so `ferry migrate baseline --from`
//! can record the same versions as applied without running anything.

use std::collections::BTreeSet;

use super::Driver;
use crate::MigrateError;
use crate::error::Result;

/// A migration tool whose history ferry can adopt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Sqlx,
    Diesel,
    GolangMigrate,
    Refinery,
    Flyway,
    Dbmate,
}

impl Tool {
    pub fn as_str(self) -> &'static str {
        match self {
            Tool::Sqlx => "sqlx",
            Tool::Diesel => "diesel",
            Tool::GolangMigrate => "golang-migrate",
            Tool::Refinery => "refinery",
            Tool::Flyway => "flyway",
            Tool::Dbmate => "dbmate",
        }
    }

    pub fn table(self) -> &'static str {
        match self {
            Tool::Sqlx => "_sqlx_migrations",
            Tool::Diesel => "__diesel_schema_migrations",
            Tool::GolangMigrate | Tool::Dbmate => "schema_migrations",
            Tool::Refinery => "refinery_schema_history",
            Tool::Flyway => "flyway_schema_history",
        }
    }
}

impl std::fmt::Display for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The versions `tool` recorded as applied. For golang-migrate, which keeps only the current
/// version, the caller treats every file up to it as applied: this returns that one version and
/// `true` in the second field.
pub async fn adopted_versions(
    driver: &mut dyn Driver,
    tool: Tool,
) -> Result<(BTreeSet<i64>, bool)> {
    let table = tool.table();
    let err = |message: String| MigrateError::Adopt {
        tool: tool.to_string(),
        message,
    };
    if !driver.table_exists(table).await? {
        return Err(err(format!(
            "table {table} does not exist in this database; is this the database {tool} migrated, and is --from right?"
        )));
    }
    let v = driver.cast_text("version");
    let sql = match tool {
        Tool::Sqlx => format!(
            "SELECT {v}, {} FROM _sqlx_migrations ORDER BY version",
            driver.cast_text("success")
        ),
        Tool::Diesel | Tool::Refinery | Tool::Dbmate => format!("SELECT {v} FROM {table}"),
        Tool::GolangMigrate => format!(
            "SELECT {v}, {} FROM schema_migrations",
            driver.cast_text("dirty")
        ),
        Tool::Flyway => format!(
            "SELECT {v}, type, {} FROM flyway_schema_history WHERE version IS NOT NULL ORDER BY installed_rank",
            driver.cast_text("success")
        ),
    };
    let rows = driver.text_rows(&sql).await?;
    let parse = |text: &Option<String>| -> Result<i64> {
        let text = text.as_deref().unwrap_or("");
        let digits: String = text.chars().filter(char::is_ascii_digit).collect();
        digits.parse().map_err(|_| {
            err(format!(
                "version `{text}` in {table} is not a number ferry can order"
            ))
        })
    };
    let truthy =
        |text: &Option<String>| matches!(text.as_deref(), Some("1" | "t" | "true" | "TRUE"));
    let mut versions = BTreeSet::new();
    match tool {
        Tool::GolangMigrate => {
            if let Some(row) = rows.first() {
                if truthy(&row[1]) {
                    return Err(err(format!(
                        "golang-migrate marked version {} dirty (a migration failed part-way); fix the schema and \
                         run `migrate force VERSION` first",
                        row[0].as_deref().unwrap_or("?")
                    )));
                }
                versions.insert(parse(&row[0])?);
            }
            return Ok((versions, true));
        }
        Tool::Sqlx => {
            for row in &rows {
                if !truthy(&row[1]) {
                    return Err(err(format!(
                        "sqlx recorded version {} as failed (it stopped part-way); fix the schema and the \
                         _sqlx_migrations row first",
                        row[0].as_deref().unwrap_or("?")
                    )));
                }
                versions.insert(parse(&row[0])?);
            }
        }
        Tool::Flyway => {
            // Replayed in installed_rank order; the last row of a version decides its state.
            let mut failed = BTreeSet::new();
            for row in &rows {
                let version = parse(&row[0])?;
                let kind = row[1].as_deref().unwrap_or("");
                let undo = kind.starts_with("UNDO");
                if !undo && !matches!(kind, "SQL" | "JDBC" | "BASELINE" | "SPRING_JDBC" | "SCRIPT")
                {
                    continue;
                }
                if !truthy(&row[2]) {
                    failed.insert(version);
                    continue;
                }
                failed.remove(&version);
                if undo {
                    versions.remove(&version);
                } else {
                    versions.insert(version);
                }
            }
            if let Some(v) = failed.first() {
                return Err(err(format!(
                    "flyway recorded version {v} as failed (it stopped part-way); fix the schema and run \
                     `flyway repair` first"
                )));
            }
        }
        _ => {
            for row in &rows {
                versions.insert(parse(&row[0])?);
            }
        }
    }
    Ok((versions, false))
}
