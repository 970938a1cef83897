//! The database as the judge of a compatibility view (PostgreSQL): when a table the previous
//! version used is now a view of the same name (`ALTER TABLE products RENAME TO catalog_items;
//! CREATE VIEW products AS SELECT * FROM catalog_items;`), the catalog alone says the table is
//! gone and its columns "lost their default". Whether the previous version still works is for
//! PostgreSQL to say: in the shadow database, inside a transaction that is always rolled back,
//! this module runs the previous version's kinds of statements against the view, a SELECT of
//! every old column and an INSERT of only the old NOT NULL columns that have no default
//! (returning the defaulted ones, which must come back filled in). When both work, the
//! snapshot's "removed" and "lost its default" findings for that relation are withdrawn; when
//! the database refuses, they stay, with its error. Nothing here outlives the rollback.

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::Snapshot;
use crate::Finding;
use crate::rules::Rule;
use crate::types::{Change, compare};

/// One old column: name, type, NOT NULL, default.
struct OldColumn {
    name: String,
    data_type: String,
    not_null: bool,
    default: bool,
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A value of `data_type` that a NOT NULL column accepts, or `None` when ferry has no sample
/// for the type (the probe is then inconclusive).
fn sample(data_type: &str) -> Option<String> {
    let t = data_type.to_ascii_lowercase();
    let cast = |v: &str| Some(format!("CAST({v} AS {data_type})"));
    if t.ends_with("[]") {
        return cast("'{}'");
    }
    let base = t.split('(').next().unwrap_or(&t).trim();
    match base {
        "smallint" | "integer" | "bigint" | "numeric" | "real" | "double precision" | "money" => {
            cast("1")
        }
        "text" | "character varying" | "character" | "citext" | "name" => cast("'x'"),
        "boolean" => cast("true"),
        "date"
        | "timestamp without time zone"
        | "timestamp with time zone"
        | "time without time zone"
        | "time with time zone" => cast("now()"),
        "interval" => cast("'1 day'"),
        "uuid" => cast("'00000000-0000-0000-0000-000000000001'"),
        "json" | "jsonb" => cast("'{}'"),
        "bytea" => cast("'\\x00'"),
        "inet" | "cidr" => cast("'127.0.0.1'"),
        // An enum (or another user type): its first label, if it is an enum.
        _ => Some(format!(
            "(SELECT CAST(e.enumlabel AS {data_type}) FROM pg_enum e \
             WHERE e.enumtypid = CAST('{}' AS regtype) ORDER BY e.enumsortorder LIMIT 1)",
            data_type.replace('\'', "''")
        )),
    }
}

/// The `tables` of `base` that are views in `after`, with their old columns.
fn replaced_by_views<'a>(
    base: &Snapshot,
    after: &Snapshot,
    tables: impl Iterator<Item = &'a str>,
) -> Vec<(String, Vec<OldColumn>)> {
    let mut out = Vec::new();
    for table in tables {
        let key = format!("table {table}");
        if !base.0.contains_key(&key)
            || after.0.contains_key(&key)
            || !after.0.contains_key(&format!("view {table}"))
        {
            continue;
        }
        let prefix = format!("column {table}.");
        let columns = base
            .0
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            // A column the view lacks is reported as removed already; the probe asks whether
            // the rest still works.
            .filter(|(k, _)| after.0.contains_key(*k))
            .map(|(k, v)| {
                let mut parts = v.splitn(3, '|');
                OldColumn {
                    name: k[prefix.len()..].to_string(),
                    data_type: parts.next().unwrap_or("").to_string(),
                    not_null: !parts.next().unwrap_or("").is_empty(),
                    default: !parts.next().unwrap_or("").is_empty(),
                }
            })
            .collect();
        out.push((table.to_string(), columns));
    }
    out
}

/// What PostgreSQL said: `Ok` when both statements worked, else its error.
async fn try_statements(
    conn: &mut PgConnection,
    view: &str,
    columns: &[OldColumn],
) -> Result<Result<(), String>, sqlx::Error> {
    let select = format!(
        "SELECT {} FROM {} LIMIT 0",
        columns
            .iter()
            .map(|c| quote(&c.name))
            .collect::<Vec<_>>()
            .join(", "),
        quote(view)
    );
    let required: Vec<&OldColumn> = columns
        .iter()
        .filter(|c| c.not_null && !c.default)
        .collect();
    let mut values = Vec::new();
    for c in &required {
        match sample(&c.data_type) {
            Some(v) => values.push(v),
            None => return Ok(Err(format!("no sample value of type {}", c.data_type))),
        }
    }
    let defaulted: Vec<&OldColumn> = columns.iter().filter(|c| c.default).collect();
    let insert = format!(
        "INSERT INTO {} {} {} RETURNING {}",
        quote(view),
        if required.is_empty() {
            String::new()
        } else {
            format!(
                "({})",
                required
                    .iter()
                    .map(|c| quote(&c.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        if required.is_empty() {
            "DEFAULT VALUES".to_string()
        } else {
            format!("VALUES ({})", values.join(", "))
        },
        if defaulted.is_empty() {
            "1".to_string()
        } else {
            defaulted
                .iter()
                .map(|c| format!("{} IS NOT NULL", quote(&c.name)))
                .collect::<Vec<_>>()
                .join(" AND ")
        }
    );
    let mut tx = conn.begin().await?;
    // References to rows the shadow database does not have would fail the INSERT for a reason
    // that has nothing to do with the view; replica mode skips foreign-key checks (and
    // triggers) where the role may set it, and is undone with the rest.
    sqlx::raw_sql("SAVEPOINT ferry_probe")
        .execute(&mut *tx)
        .await?;
    let undo = match sqlx::raw_sql("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
    {
        Ok(_) => "RELEASE SAVEPOINT ferry_probe",
        // Not allowed for this role: carry on without it.
        Err(sqlx::Error::Database(_)) => "ROLLBACK TO SAVEPOINT ferry_probe",
        Err(e) => return Err(e),
    };
    sqlx::raw_sql(undo).execute(&mut *tx).await?;
    let outcome = async {
        sqlx::raw_sql(AssertSqlSafe(select.clone()))
            .execute(&mut *tx)
            .await
            .map_err(|e| (select.as_str(), e))?;
        let filled: (bool,) = sqlx::query_as(AssertSqlSafe(insert.clone()))
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| (insert.as_str(), e))?;
        Ok::<bool, (&str, sqlx::Error)>(filled.0)
    }
    .await;
    tx.rollback().await?;
    Ok(match outcome {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "`{insert}` left a column that had a default without a value"
        )),
        Err((statement, sqlx::Error::Database(e))) => {
            Err(format!("`{statement}` fails: {}", e.message()))
        }
        Err((_, e)) => return Err(e),
    })
}

/// Withdraws from `found` the findings that a table replaced by a view of the same name caused,
/// when PostgreSQL runs the previous version's statements through that view; otherwise adds
/// its error to them.
pub(super) async fn judge(
    conn: &mut PgConnection,
    base: &Snapshot,
    after: &Snapshot,
    found: &mut Vec<Finding>,
) -> Result<(), sqlx::Error> {
    // Only a table the snapshot reports removed can have become a view.
    let removed: Vec<String> = found
        .iter()
        .filter(|f| f.rule == Rule::ShadowObjectRemoved)
        .map(|f| f.object.clone())
        .collect();
    for (view, columns) in replaced_by_views(base, after, removed.iter().map(String::as_str)) {
        let belongs = |f: &Finding| {
            f.object == view
                || f.object
                    .strip_prefix(&view)
                    .is_some_and(|rest| rest.starts_with('.'))
        };
        if !found.iter().any(belongs) {
            continue;
        }
        match try_statements(conn, &view, &columns).await? {
            Ok(()) => found.retain(|f| {
                if !belongs(f) {
                    return true;
                }
                match f.rule {
                    // The table is there, as a view the previous version can use.
                    Rule::ShadowObjectRemoved => f.object != view,
                    // A lost default or NOT NULL does not matter through the view; a narrowed
                    // type still does.
                    Rule::ShadowObjectChanged => {
                        let key = format!("column {}", f.object);
                        let (Some(old), Some(new)) = (base.0.get(&key), after.0.get(&key)) else {
                            return true;
                        };
                        let ty = |v: &str| v.split('|').next().unwrap_or("").to_string();
                        matches!(
                            compare(&ty(old), &ty(new)),
                            Change::Narrow | Change::EnumDrop(_)
                        )
                    }
                    _ => true,
                }
            }),
            Err(why) => {
                for f in found.iter_mut().filter(|f| belongs(f)) {
                    f.message.push_str(&format!(
                        "; the view {view} that replaces the table does not stand in for it: {why}"
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shadow::snap;

    #[test]
    fn only_a_table_that_became_a_view_is_probed() {
        let base = snap(&[
            ("table products", ""),
            ("column products.id", "bigint|NOT NULL|nextval('s')"),
            ("column products.name", "text|NOT NULL|"),
            ("table other", ""),
        ]);
        let after = snap(&[
            ("view products", "SELECT …"),
            ("column products.id", "bigint||"),
            ("column products.name", "text||"),
        ]);
        let found = replaced_by_views(&base, &after, ["products", "other"].into_iter());
        assert_eq!(found.len(), 1, "a dropped table is not a view");
        let (name, cols) = &found[0];
        assert_eq!(name, "products");
        assert_eq!(cols.len(), 2);
        assert!(cols[0].default && cols[0].not_null);
        assert!(!cols[1].default && cols[1].not_null);
    }

    #[test]
    fn samples_are_typed_and_quoted() {
        assert_eq!(
            sample("character varying(20)").as_deref(),
            Some("CAST('x' AS character varying(20))")
        );
        assert_eq!(sample("text[]").as_deref(), Some("CAST('{}' AS text[])"));
        assert!(sample("order_status").is_some_and(|s| s.contains("pg_enum")));
    }
}
