//! Which relations a script can change, so that the snapshot after it re-reads only those.
//! A catalog snapshot deparses every index, view and constraint of the schema; after each of
//! hundreds of migrations that is most of a check's time, while a migration usually touches
//! one table.
//!
//! Only statements whose effect on the catalog is fully known are scoped, each engine by its
//! own grammar and rules. PostgreSQL: creating, altering, renaming and dropping tables, views
//! and indexes without CASCADE, and comments. MySQL/MariaDB and SQLite: the same table, view
//! and index statements, and data changes (`INSERT`, `UPDATE`, `DELETE`; neither engine lets a
//! trigger or a function run DDL, so they change no catalog) and the settings migrations set
//! around a table rebuild (MySQL `SET`, SQLite's `foreign_keys`, `defer_foreign_keys` and
//! `legacy_alter_table` pragmas). Anything else (functions, procedures, types, sequences,
//! triggers, PostgreSQL data changes that may fire triggers, CASCADE, a qualified name, a
//! statement the parser cannot read) returns `None`: a full snapshot.
//!
//! The snapshot side adds what a named relation drags along: on PostgreSQL its indexes and
//! owned sequences, an index's table, and, when the script renames something or changes a
//! column's type, the views, foreign keys and SQL-body functions whose text names it
//! (`postgres.rs`); on MySQL and SQLite the views whose text names it (a view's columns follow
//! its tables there), and after a rename the tables whose foreign keys reference it (both
//! engines rewrite those) and, on SQLite, the triggers whose text names it (rewritten too)
//! (`catalog.rs`). In debug builds every scoped snapshot is compared with a full one.

use std::collections::BTreeSet;

use ferry_core::Engine;
use sqlparser::ast::{
    AlterColumnOperation, AlterIndexOperation, AlterTable, AlterTableOperation, DropBehavior,
    Ident, ObjectName, ObjectNamePart, ObjectType, RenameTableNameKind, Statement,
};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};

/// What a script can change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// The relation names it names: on PostgreSQL as stored in the catalog (folded), on MySQL
    /// and SQLite as written (both compare names without regard to case; the catalog side
    /// does too).
    pub names: BTreeSet<String>,
    /// Whether it renames a relation or column or changes a column's type: only then can the
    /// text of an object that refers to a named relation (a view, a foreign key on another
    /// table, a SQL-body function) change. Adding, dropping (without CASCADE) and constraining
    /// cannot: PostgreSQL refuses to drop what such an object depends on.
    pub renames: bool,
}

/// One engine's rules for a statement: adds what it can change to the scope, or `None`.
type Rules = fn(&Statement, &mut Scope) -> Option<()>;

/// What `script` can change, or `None` when the whole catalog must be read again.
pub fn relations(engine: Engine, script: &str) -> Option<Scope> {
    let (dialect, rules): (&dyn Dialect, Rules) = match engine {
        Engine::Postgres => (&PostgreSqlDialect {}, statement),
        Engine::MySql => (&MySqlDialect {}, mysql_statement),
        Engine::Sqlite => (&SQLiteDialect {}, sqlite_statement),
    };
    let mut scope = Scope::default();
    for (_, text) in ferry_migrate::sql::split_statements_for(script, engine) {
        if engine == Engine::Sqlite && rebuild_setting(&text) {
            continue;
        }
        let statements = crate::analyze::parse(engine, dialect, &text).ok()?;
        for s in &statements {
            rules(s, &mut scope)?;
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

/// An unqualified name as written (MySQL, SQLite: the catalog side compares without case).
fn written(n: &ObjectName) -> Option<String> {
    match n.0.as_slice() {
        [ObjectNamePart::Identifier(i)] => Some(i.value.clone()),
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

/// Whether a SQLite statement sets one of the pragmas of a table rebuild, which change no
/// catalog (`legacy_alter_table` only makes a rename rewrite less than the snapshot side
/// re-reads). Read by hand: sqlparser takes no `ON`/`OFF` as a pragma's value.
fn rebuild_setting(text: &str) -> bool {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase();
    let Some(rest) = code.trim().strip_prefix("pragma") else {
        return false;
    };
    let rest = rest.trim_start();
    let name_end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let (name, value) = rest.split_at(name_end);
    let value = value.trim().trim_end_matches(';').trim();
    let value = value
        .strip_prefix('=')
        .map(str::trim)
        .or_else(|| value.strip_prefix('(')?.strip_suffix(')').map(str::trim))
        .unwrap_or(value);
    matches!(
        name,
        "foreign_keys" | "defer_foreign_keys" | "legacy_alter_table"
    ) && matches!(
        value,
        "" | "0" | "1" | "on" | "off" | "true" | "false" | "yes" | "no"
    )
}

/// `ALTER TABLE` on MySQL or SQLite: names the table, and the new name of a rename. `known` says
/// of each other operation whether it renames something (`Some(true)`: a column, whose new
/// name the text of other objects may now hold), changes the table only (`Some(false)`), or
/// is not known to the engine's rules (`None`: a full snapshot).
fn alter_table(
    at: &AlterTable,
    scope: &mut Scope,
    known: fn(&AlterTableOperation) -> Option<bool>,
) -> Option<()> {
    scope.names.insert(written(&at.name)?);
    for op in &at.operations {
        if let AlterTableOperation::RenameTable { table_name } = op {
            let (RenameTableNameKind::As(n) | RenameTableNameKind::To(n)) = table_name;
            scope.names.insert(written(n)?);
            scope.renames = true;
        } else if known(op)? {
            scope.renames = true;
        }
    }
    Some(())
}

/// Statements whose reach MySQL/MariaDB and SQLite share: tables (created in any form), views,
/// indexes and data changes.
fn common_statement(s: &Statement, scope: &mut Scope) -> Option<()> {
    let names = &mut scope.names;
    match s {
        // A copy (`LIKE`, `AS SELECT`) reads its source and writes only the new table.
        Statement::CreateTable(ct) => {
            names.insert(written(&ct.name)?);
        }
        Statement::CreateView(cv) => {
            names.insert(written(&cv.name)?);
        }
        Statement::Drop {
            object_type: ObjectType::Table | ObjectType::View,
            names: dropped,
            ..
        } => {
            for n in dropped {
                names.insert(written(n)?);
            }
        }
        // Neither engine lets a trigger or a stored function run DDL, so a data change leaves
        // the catalog as it was.
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Query(_) => {}
        _ => return None,
    }
    Some(())
}

/// MySQL/MariaDB: index keys belong to their table (`index t.i`), so an index statement names
/// its table; a rename (`ALTER TABLE … RENAME`, `RENAME TABLE`) also changes the foreign keys
/// of other tables that reference the table, which the snapshot side follows.
fn mysql_statement(s: &Statement, scope: &mut Scope) -> Option<()> {
    match s {
        Statement::CreateIndex(ci) => {
            scope.names.insert(written(&ci.table_name)?);
        }
        Statement::Drop {
            object_type: ObjectType::Index,
            table: Some(table),
            ..
        } => {
            scope.names.insert(written(table)?);
        }
        Statement::AlterView { name, .. } => {
            scope.names.insert(written(name)?);
        }
        Statement::RenameTable(renames) => {
            for r in renames {
                scope.names.insert(written(&r.old_name)?);
                scope.names.insert(written(&r.new_name)?);
            }
            scope.renames = true;
        }
        Statement::AlterTable(at) => alter_table(at, scope, |op| match op {
            AlterTableOperation::RenameColumn { .. } | AlterTableOperation::ChangeColumn { .. } => {
                Some(true)
            }
            // Each of these changes the table itself (and so the views over it) only: MySQL
            // refuses to drop or retype what another table's foreign key needs.
            AlterTableOperation::AddColumn { .. }
            | AlterTableOperation::DropColumn { .. }
            | AlterTableOperation::ModifyColumn { .. }
            | AlterTableOperation::AlterColumn { .. }
            | AlterTableOperation::AddConstraint { .. }
            | AlterTableOperation::DropConstraint { .. }
            | AlterTableOperation::DropPrimaryKey { .. }
            | AlterTableOperation::DropForeignKey { .. }
            | AlterTableOperation::DropIndex { .. }
            | AlterTableOperation::RenameConstraint { .. }
            | AlterTableOperation::Algorithm { .. }
            | AlterTableOperation::Lock { .. }
            | AlterTableOperation::AutoIncrement { .. } => Some(false),
            _ => None,
        })?,
        // `SET foreign_key_checks = 0` and the like: session settings, no catalog.
        Statement::Set(_) => {}
        _ => return common_statement(s, scope),
    }
    Some(())
}

/// SQLite: index and trigger keys are their own names (`index i`, owned by their `tbl_name`),
/// so a dropped index is named by itself; `ALTER TABLE` renames a table or column (which also
/// rewrites the text of the views and triggers that name it, and other tables' foreign keys)
/// or adds or drops a column.
fn sqlite_statement(s: &Statement, scope: &mut Scope) -> Option<()> {
    match s {
        Statement::CreateIndex(ci) => {
            scope.names.insert(written(&ci.table_name)?);
            if let Some(n) = &ci.name {
                scope.names.insert(written(n)?);
            }
        }
        Statement::Drop {
            object_type: ObjectType::Index,
            names: dropped,
            ..
        } => {
            for n in dropped {
                scope.names.insert(written(n)?);
            }
        }
        Statement::AlterTable(at) => alter_table(at, scope, |op| match op {
            AlterTableOperation::RenameColumn { .. } => Some(true),
            AlterTableOperation::AddColumn { .. } | AlterTableOperation::DropColumn { .. } => {
                Some(false)
            }
            _ => None,
        })?,
        _ => return common_statement(s, scope),
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
    }

    fn scope_in(engine: Engine, sql: &str) -> Option<(Vec<String>, bool)> {
        relations(engine, sql).map(|s| (s.names.into_iter().collect(), s.renames))
    }

    fn names(list: &[&str], renames: bool) -> Option<(Vec<String>, bool)> {
        Some((list.iter().map(|s| s.to_string()).collect(), renames))
    }

    #[test]
    fn mysql_table_view_and_index_statements_name_their_tables() {
        let my = |sql| scope_in(Engine::MySql, sql);
        assert_eq!(
            my("CREATE TABLE n_6 (id bigint PRIMARY KEY, b_id bigint NOT NULL,                 FOREIGN KEY (b_id) REFERENCES b_1 (id));
CREATE INDEX n_6_b ON n_6 (b_id);"),
            names(&["n_6"], false)
        );
        // An index key is the table's (`index t.i`): the index's own name is not needed.
        assert_eq!(
            my("DROP INDEX users_email ON Users;"),
            names(&["Users"], false)
        );
        assert_eq!(
            my(
                "ALTER TABLE `users` ADD COLUMN bio text, MODIFY status varchar(30) NOT NULL,                 ADD INDEX users_bio (bio(10)), ALGORITHM=INPLACE, LOCK=NONE;"
            ),
            names(&["users"], false)
        );
        assert_eq!(
            my("ALTER TABLE users DROP FOREIGN KEY fk_1, DROP INDEX i, DROP PRIMARY KEY;"),
            names(&["users"], false)
        );
        assert_eq!(
            my("CREATE OR REPLACE VIEW v AS SELECT 1;
DROP VIEW w;
DROP TABLE IF EXISTS a, b;"),
            names(&["a", "b", "v", "w"], false)
        );
        assert_eq!(
            my("CREATE TABLE copy LIKE users;
CREATE TABLE snap AS SELECT * FROM users;"),
            names(&["copy", "snap"], false)
        );
        // Data changes and session settings change no catalog.
        assert_eq!(
            my("SET foreign_key_checks = 0;
INSERT INTO users (id) VALUES (1);
                UPDATE users SET id = 2;
DELETE FROM users WHERE id = 3;
SELECT 1;"),
            names(&[], false)
        );
    }

    #[test]
    fn mysql_renames_are_marked_for_the_foreign_keys_that_follow_them() {
        let my = |sql| scope_in(Engine::MySql, sql);
        assert_eq!(
            my("RENAME TABLE a TO b, c TO d;"),
            names(&["a", "b", "c", "d"], true)
        );
        assert_eq!(my("ALTER TABLE a RENAME TO b;"), names(&["a", "b"], true));
        assert_eq!(
            my("ALTER TABLE a RENAME COLUMN x TO y;"),
            names(&["a"], true)
        );
        assert_eq!(
            my("ALTER TABLE a CHANGE x y int NOT NULL;"),
            names(&["a"], true)
        );
    }

    #[test]
    fn mysql_anything_not_fully_known_reads_the_whole_catalog() {
        for sql in [
            // Without its table, a dropped index's key is unknown.
            "DROP INDEX i;",
            "CREATE TABLE other_db.t (id int);",
            "CREATE PROCEDURE p() BEGIN CREATE TABLE x (id int); END;",
            "CALL p();",
            "CREATE TRIGGER t BEFORE INSERT ON users FOR EACH ROW SET NEW.id = 1;",
            "CREATE FUNCTION f() RETURNS int DETERMINISTIC RETURN 1;",
            "ALTER TABLE t PARTITION BY HASH(id) PARTITIONS 4;",
            "this is not sql;",
        ] {
            assert_eq!(scope_in(Engine::MySql, sql), None, "{sql}");
        }
    }

    #[test]
    fn sqlite_statements_name_their_tables_indexes_and_views() {
        let lite = |sql| scope_in(Engine::Sqlite, sql);
        assert_eq!(
            lite(
                "CREATE TABLE t (id INTEGER PRIMARY KEY);
CREATE INDEX t_id ON t (id);"
            ),
            names(&["t", "t_id"], false)
        );
        // A dropped index is keyed by its own name.
        assert_eq!(lite("DROP INDEX t_id;"), names(&["t_id"], false));
        assert_eq!(
            lite(
                "ALTER TABLE t ADD COLUMN x TEXT;
ALTER TABLE t DROP COLUMN y;"
            ),
            names(&["t"], false)
        );
        // The rebuild recipe: new table, copy, drop, rename, with foreign keys off around it.
        assert_eq!(
            lite(
                "PRAGMA foreign_keys = OFF;
CREATE TABLE t_new (id INTEGER PRIMARY KEY);
                  INSERT INTO t_new (id) SELECT id FROM t;
DROP TABLE t;
                  ALTER TABLE t_new RENAME TO t;
PRAGMA foreign_keys = ON;"
            ),
            names(&["t", "t_new"], true)
        );
        assert_eq!(
            lite("ALTER TABLE t RENAME COLUMN a TO b;"),
            names(&["t"], true)
        );
        assert_eq!(
            lite(
                "CREATE VIEW v AS SELECT * FROM t;
DROP VIEW w;"
            ),
            names(&["v", "w"], false)
        );
    }

    #[test]
    fn sqlite_anything_not_fully_known_reads_the_whole_catalog() {
        for sql in [
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x = 1; END;",
            "DROP TRIGGER tr;",
            "PRAGMA writable_schema = ON;",
            "PRAGMA foreign_keys = (SELECT 1);",
            "CREATE TABLE main.t (id INTEGER);",
            "VACUUM;",
            "this is not sql;",
        ] {
            assert_eq!(scope_in(Engine::Sqlite, sql), None, "{sql}");
        }
    }
}
