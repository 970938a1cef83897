//! Which relations a script can change, so that the snapshot after it re-reads only those
//! (PostgreSQL). A catalog snapshot deparses every index, view and constraint of the schema;
//! after each of hundreds of migrations that is most of a check's time, while a migration
//! usually touches one table.
//!
//! Only statements whose effect on the catalog is fully known are scoped: creating, altering,
//! renaming and dropping tables, views and indexes without CASCADE, and comments. Anything else
//! (functions, types, sequences, triggers, data changes that may fire triggers, CASCADE, a
//! schema-qualified name, a statement the parser cannot read) returns `None`: a full snapshot.
//! The snapshot side adds what a named relation drags along (its indexes and owned sequences,
//! an index's table, and, when the script renames something or changes a column's type, the
//! views, foreign keys and SQL-body functions whose text names it); in debug builds every
//! scoped snapshot is compared with a full one.

use std::collections::BTreeSet;

use ferry_core::Engine;
use sqlparser::ast::{
    AlterColumnOperation, AlterIndexOperation, AlterTableOperation, DropBehavior, Ident,
    ObjectName, ObjectNamePart, ObjectType, RenameTableNameKind, Statement,
};
use sqlparser::dialect::PostgreSqlDialect;

/// What a script can change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// The relation names (as stored in the catalog) it names.
    pub names: BTreeSet<String>,
    /// Whether it renames a relation or column or changes a column's type: only then can the
    /// text of an object that refers to a named relation (a view, a foreign key on another
    /// table, a SQL-body function) change. Adding, dropping (without CASCADE) and constraining
    /// cannot: PostgreSQL refuses to drop what such an object depends on.
    pub renames: bool,
}

/// What `script` can change, or `None` when the whole catalog must be read again.
pub fn relations(engine: Engine, script: &str) -> Option<Scope> {
    if engine != Engine::Postgres {
        return None;
    }
    let mut scope = Scope::default();
    for (_, text) in ferry_migrate::sql::split_statements(script) {
        let statements = crate::analyze::parse(engine, &PostgreSqlDialect {}, &text).ok()?;
        for s in &statements {
            statement(s, &mut scope)?;
        }
    }
    Some(scope)
}

/// PostgreSQL folds unquoted identifiers to lower case.
fn ident(i: &Ident) -> String {
    match i.quote_style {
        Some(_) => i.value.clone(),
        None => i.value.to_lowercase(),
    }
}

/// An unqualified name; a qualified one may live in another schema: `None`.
fn name(n: &ObjectName) -> Option<String> {
    match n.0.as_slice() {
        [ObjectNamePart::Identifier(i)] => Some(ident(i)),
        _ => None,
    }
}

fn cascades(behavior: &Option<DropBehavior>) -> bool {
    matches!(behavior, Some(DropBehavior::Cascade))
}

fn statement(s: &Statement, scope: &mut Scope) -> Option<()> {
    let names = &mut scope.names;
    match s {
        Statement::CreateTable(ct) if ct.clone.is_none() => {
            names.insert(name(&ct.name)?);
        }
        Statement::CreateIndex(ci) => {
            names.insert(name(&ci.table_name)?);
            if let Some(n) = &ci.name {
                names.insert(name(n)?);
            }
        }
        Statement::CreateView(cv) => {
            names.insert(name(&cv.name)?);
        }
        Statement::AlterTable(at) => {
            names.insert(name(&at.name)?);
            for op in &at.operations {
                match op {
                    AlterTableOperation::DropColumn { drop_behavior, .. }
                    | AlterTableOperation::DropConstraint { drop_behavior, .. } => {
                        if cascades(drop_behavior) {
                            return None;
                        }
                    }
                    AlterTableOperation::RenameTable { table_name } => {
                        let (RenameTableNameKind::As(n) | RenameTableNameKind::To(n)) = table_name;
                        names.insert(name(n)?);
                        scope.renames = true;
                    }
                    AlterTableOperation::RenameColumn { .. }
                    | AlterTableOperation::AlterColumn {
                        op: AlterColumnOperation::SetDataType { .. },
                        ..
                    } => scope.renames = true,
                    AlterTableOperation::AddColumn { .. }
                    | AlterTableOperation::AlterColumn { .. }
                    | AlterTableOperation::AddConstraint { .. }
                    | AlterTableOperation::RenameConstraint { .. }
                    | AlterTableOperation::ValidateConstraint { .. } => {}
                    _ => return None,
                }
            }
        }
        Statement::AlterIndex {
            name: n,
            operation: AlterIndexOperation::RenameIndex { index_name },
        } => {
            names.insert(name(n)?);
            names.insert(name(index_name)?);
        }
        Statement::Drop {
            object_type: ObjectType::Table | ObjectType::View | ObjectType::Index,
            names: dropped,
            cascade: false,
            ..
        } => {
            for n in dropped {
                names.insert(name(n)?);
            }
        }
        Statement::Comment { .. } => {}
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(sql: &str) -> Option<Vec<String>> {
        relations(Engine::Postgres, sql).map(|s| s.names.into_iter().collect())
    }

    fn renames(sql: &str) -> bool {
        relations(Engine::Postgres, sql).is_some_and(|s| s.renames)
    }

    #[test]
    fn only_renames_and_type_changes_reach_what_refers_to_a_relation() {
        assert!(renames("ALTER TABLE a RENAME TO b;"));
        assert!(renames("ALTER TABLE a RENAME COLUMN x TO y;"));
        assert!(renames("ALTER TABLE a ALTER COLUMN x TYPE bigint;"));
        assert!(!renames(
            "ALTER TABLE a ADD COLUMN x int, ALTER COLUMN y SET NOT NULL;"
        ));
        assert!(!renames(
            "CREATE INDEX i ON a (x); DROP TABLE b; CREATE VIEW v AS SELECT 1;"
        ));
        assert!(!renames("ALTER INDEX i RENAME TO j;"));
    }

    #[test]
    fn table_and_index_statements_name_their_relations() {
        assert_eq!(
            scope("CREATE TABLE Users (id int PRIMARY KEY);\nCREATE INDEX users_x ON users (id);"),
            Some(vec!["users".into(), "users_x".into()])
        );
        assert_eq!(
            scope("ALTER TABLE \"Mixed\" ADD COLUMN c text, ALTER COLUMN d SET NOT NULL;"),
            Some(vec!["Mixed".into()])
        );
        assert_eq!(
            scope("ALTER TABLE a RENAME TO b;"),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            scope("-- ferry:no-transaction\nDROP INDEX CONCURRENTLY b_1_name_3;"),
            Some(vec!["b_1_name_3".into()])
        );
        assert_eq!(
            scope("CREATE VIEW v AS SELECT 1; DROP VIEW w; COMMENT ON TABLE t IS 'x';"),
            Some(vec!["v".into(), "w".into()])
        );
    }

    #[test]
    fn anything_not_fully_known_reads_the_whole_catalog() {
        for sql in [
            "DROP TABLE t CASCADE;",
            "ALTER TABLE t DROP COLUMN c CASCADE;",
            "CREATE TABLE audit.t (id int);",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';",
            "CREATE TYPE mood AS ENUM ('a');",
            "CREATE SEQUENCE s;",
            "INSERT INTO t VALUES (1);",
            "UPDATE t SET a = f();",
            "ALTER TABLE p ATTACH PARTITION c FOR VALUES IN (1);",
            "DO $$ BEGIN EXECUTE 'CREATE TABLE x ()'; END $$;",
            "this is not sql;",
        ] {
            assert_eq!(scope(sql), None, "{sql}");
        }
        assert_eq!(relations(Engine::MySql, "CREATE TABLE t (id int);"), None);
    }
}
