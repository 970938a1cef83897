//! A MySQL/MariaDB or SQLite catalog as last read, with the relation each object belongs to, so
//! that the snapshot after a migration re-reads only what [`super::scope`] says it can change
//! and what that drags along. Pure: the SQL that reads the rows is in `mysql.rs` and
//! `sqlite.rs`; this module decides which relations to read again and merges what they read.
//!
//! What a relation drags along is found in the previous snapshot's own text: the views whose
//! definition names it (a view's columns follow its tables on both engines, and its text names
//! every table it reads), transitively; after a rename, the tables whose foreign keys reference
//! it (both engines rewrite those) and, on SQLite, the triggers whose text names it (SQLite
//! rewrites those too; MySQL moves a table's own triggers with it, which its name finds). Names
//! are compared without regard to case, as both engines compare them; the relations read again
//! are always a superset of the ones forgotten, so a name the comparison gets wrong costs a
//! re-read, never a stale object.

use std::collections::{BTreeMap, BTreeSet};

use super::Snapshot;
use super::scope::Scope;

/// One catalog row: its snapshot key and value, the object's own name (a SQLite index, view,
/// trigger or table is keyed by it) and the relation it belongs to (its `tbl_name`, the table of
/// a column, index or constraint). Empty when the object belongs to no relation (a routine).
pub(super) type Row = (String, String, String, String);

/// How an engine's snapshot keys tell what their text refers to.
pub(super) struct Rules {
    /// A key whose value is a view's definition.
    pub view: &'static str,
    /// A key whose value is a trigger's text that a rename rewrites (SQLite), if any.
    pub trigger: Option<&'static str>,
    /// A foreign key's row: the key's prefix and the referenced table in its value.
    pub foreign_key: (&'static str, fn(&str) -> Option<&str>),
    /// Keys read again by every scoped snapshot: their rows cannot be filtered by relation
    /// (MySQL 8's `CHECK_CONSTRAINTS` has no table name).
    pub always: &'static [&'static str],
}

#[derive(Default)]
pub(super) struct Catalog {
    snapshot: Snapshot,
    /// key → (name, owner), as the catalog spells them.
    of: BTreeMap<String, (String, String)>,
}

/// What a scoped read must read again.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Reach {
    /// Names to read: the script's as written and lower-cased, and those of every relation
    /// reached, as the catalog spells them.
    pub names: BTreeSet<String>,
}

impl Reach {
    /// The names to bind, rounded up to a power of two (the last one repeated) so that a run
    /// prepares a handful of statements, not one per count.
    pub fn padded(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let last = names.last().copied().unwrap_or_default();
        names.resize(names.len().next_power_of_two(), last);
        names
    }
}

fn lower(s: &str) -> String {
    s.to_lowercase()
}

/// Whether `text` names one of `names` (lower-cased): as a word, or for a name that is not one
/// word (a quoted name with a space, say) anywhere in it.
fn names_any(text: &str, names: &BTreeSet<String>) -> bool {
    let text = lower(text);
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    if names
        .iter()
        .any(|n| !n.chars().all(word) && text.contains(n.as_str()))
    {
        return true;
    }
    text.split(|c: char| !word(c))
        .any(|w| !w.is_empty() && names.contains(w))
}

impl Catalog {
    /// The whole catalog, as just read.
    pub fn full(&mut self, rows: Vec<Row>) -> Snapshot {
        self.snapshot = Snapshot::default();
        self.of.clear();
        self.merge(rows);
        self.snapshot.clone()
    }

    /// The snapshot as last read (after a script that can change nothing).
    pub fn current(&self) -> Snapshot {
        self.snapshot.clone()
    }

    /// The relations the snapshot after a script with `scope` must read again; `None` when
    /// nothing can have changed.
    pub fn reach(&self, scope: &Scope, rules: &Rules) -> Option<Reach> {
        if scope.names.is_empty() {
            return None;
        }
        // Lower-cased names reached, grown until nothing more is dragged along.
        let mut reached: BTreeSet<String> = scope.names.iter().map(|n| lower(n)).collect();
        loop {
            let before = reached.len();
            for (key, value) in &self.snapshot.0 {
                let Some((name, owner)) = self.of.get(key) else {
                    continue;
                };
                let text = key.starts_with(rules.view)
                    || (scope.renames && rules.trigger.is_some_and(|t| key.starts_with(t)));
                if text && !name.is_empty() && names_any(value, &reached) {
                    reached.insert(lower(name));
                }
                let (fk, referenced) = rules.foreign_key;
                if scope.renames
                    && key.starts_with(fk)
                    && referenced(value).is_some_and(|r| reached.contains(&lower(r)))
                {
                    reached.insert(lower(owner));
                }
            }
            if reached.len() == before {
                break;
            }
        }
        let mut names: BTreeSet<String> = scope.names.clone();
        names.extend(reached.iter().cloned());
        // Every relation that will be forgotten, spelled as the catalog spells it, so that the
        // engine's own comparison finds it again whatever its collation.
        for (name, owner) in self.of.values() {
            for n in [name, owner] {
                if !n.is_empty() && reached.contains(&lower(n)) {
                    names.insert(n.clone());
                }
            }
        }
        Some(Reach { names })
    }

    /// The last snapshot with every object of the relations in `reach` (and every key of
    /// [`Rules::always`]) replaced by `rows`, read again for them.
    pub fn scoped(&mut self, reach: &Reach, rules: &Rules, rows: Vec<Row>) -> Snapshot {
        let reached: BTreeSet<String> = reach.names.iter().map(|n| lower(n)).collect();
        let stale: Vec<String> = self
            .of
            .iter()
            .filter(|(key, (name, owner))| {
                rules.always.iter().any(|p| key.starts_with(p))
                    || (!name.is_empty() && reached.contains(&lower(name)))
                    || (!owner.is_empty() && reached.contains(&lower(owner)))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.of.remove(&k);
            self.snapshot.0.remove(&k);
        }
        self.merge(rows);
        self.snapshot.clone()
    }

    fn merge(&mut self, rows: Vec<Row>) {
        for (key, value, name, owner) in rows {
            self.of.insert(key.clone(), (name, owner));
            self.snapshot.0.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn referenced(value: &str) -> Option<&str> {
        value.strip_prefix("REFERENCES ")?.split('(').next()
    }

    const RULES: Rules = Rules {
        view: "view ",
        trigger: Some("trigger "),
        foreign_key: ("constraint ", referenced),
        always: &[],
    };

    fn row(key: &str, value: &str, name: &str, owner: &str) -> Row {
        (key.into(), value.into(), name.into(), owner.into())
    }

    fn catalog() -> Catalog {
        let mut c = Catalog::default();
        c.full(vec![
            row("table users", "", "users", "users"),
            row("column users.id", "INTEGER||", "users", "users"),
            row(
                "index users_email",
                "CREATE INDEX …",
                "users_email",
                "users",
            ),
            row("table orders", "", "orders", "orders"),
            row(
                "constraint orders.fk_user_id",
                "REFERENCES users(id)",
                "orders",
                "orders",
            ),
            row(
                "view active",
                "CREATE VIEW active AS SELECT id FROM Users",
                "active",
                "active",
            ),
            row(
                "view active_2",
                "CREATE VIEW active_2 AS SELECT * FROM active",
                "active_2",
                "active_2",
            ),
            row(
                "view users_10",
                "CREATE VIEW users_10 AS SELECT * FROM users_1",
                "users_10",
                "users_10",
            ),
            row(
                "trigger audit",
                "CREATE TRIGGER audit AFTER INSERT ON orders BEGIN INSERT INTO users …",
                "audit",
                "orders",
            ),
        ]);
        c
    }

    fn scope(names: &[&str], renames: bool) -> Scope {
        Scope {
            names: names.iter().map(|s| s.to_string()).collect(),
            renames,
        }
    }

    fn reached(c: &Catalog, s: &Scope) -> Vec<String> {
        c.reach(s, &RULES)
            .map(|r| r.names.into_iter().collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_table_drags_the_views_that_name_it_transitively_by_word() {
        let c = catalog();
        // `users_10` names `users_1`, not `users`; `active_2` reads `active`.
        assert_eq!(
            reached(&c, &scope(&["USERS"], false)),
            ["USERS", "active", "active_2", "users"]
        );
    }

    #[test]
    fn a_rename_also_drags_foreign_keys_and_triggers_that_name_it() {
        let c = catalog();
        assert_eq!(
            reached(&c, &scope(&["users", "members"], true)),
            ["active", "active_2", "audit", "members", "orders", "users"]
        );
    }

    #[test]
    fn nothing_named_reads_nothing() {
        assert_eq!(catalog().reach(&scope(&[], false), &RULES), None);
    }

    #[test]
    fn a_scoped_read_forgets_the_objects_of_what_it_reached_and_keeps_the_rest() {
        let mut c = catalog();
        let s = scope(&["users_email"], false);
        let reach = c.reach(&s, &RULES).expect("named");
        // The index was dropped: the read finds nothing for it.
        let snap = c.scoped(&reach, &RULES, Vec::new());
        assert!(!snap.0.contains_key("index users_email"));
        assert!(snap.0.contains_key("column users.id"));
        // A table read again replaces every object it owns.
        let reach = c.reach(&scope(&["users"], false), &RULES).expect("named");
        let snap = c.scoped(
            &reach,
            &RULES,
            vec![row("table users", "", "users", "users")],
        );
        assert!(!snap.0.contains_key("column users.id"));
        assert!(!snap.0.contains_key("view active"), "re-read and gone");
        assert!(snap.0.contains_key("view users_10"));
        assert!(snap.0.contains_key("table orders"));
    }
}
