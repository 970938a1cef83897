//! The previous version's queries during the forward pass: which still prepare after each new
//! migration, and which to prepare again (those that name a relation the migration changed).

use std::collections::BTreeSet;

use ferry_core::{DatabaseUrl, Engine};

use super::diff::{Delta, finding, object_of};
use super::inspector::{Inspector, Prepared};
use crate::queries::OldQuery;
use crate::rules::Rule;
use crate::{CompatError, Finding};

/// The previous version's queries during the forward pass: which still prepare, and what they
/// return.
pub(super) struct OldQueries<'q> {
    /// Queries that prepared at the base and after every migration so far, with the result
    /// columns the previous version decodes (sqlx queries only).
    live: Vec<Live<'q>>,
}

struct Live<'q> {
    query: &'q OldQuery,
    decoded: Option<Vec<String>>,
    /// Every word of the query, lowercased: the relations it can name are among them. `None`
    /// when it does not tokenize (it is then prepared after every migration).
    words: Option<BTreeSet<String>>,
}

/// The words (identifiers and keywords) of `sql`, lowercased.
fn words(engine: Engine, sql: &str) -> Option<BTreeSet<String>> {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let dialect = crate::analyze::dialect(engine);
    let tokens = Tokenizer::new(dialect.as_ref(), sql).tokenize().ok()?;
    Some(
        tokens
            .into_iter()
            .filter_map(|t| match t {
                Token::Word(w) => Some(w.value.to_lowercase()),
                _ => None,
            })
            .collect(),
    )
}

/// The relations (lowercased) whose objects a migration changed ([`diff`] of the snapshots
/// before and after it), for deciding which old queries to prepare again. `None` when what changed is not tied to a relation the key
/// names (a function, a type, a sequence, PostgreSQL's and SQLite's index and trigger keys, a
/// MySQL check) or when no difference is visible: every query is prepared then.
pub fn changed_relations(engine: Engine, changes: &[Delta]) -> Option<BTreeSet<String>> {
    if changes.is_empty() {
        return None;
    }
    let mut out = BTreeSet::new();
    for &(key, _, _) in changes {
        let (kind, object) = object_of(key);
        let object = object.to_lowercase();
        match kind {
            "table" | "view" => {
                out.insert(object);
            }
            // `t.c`: a name may hold dots, so both readings count.
            "column" | "constraint" | "foreign" => {
                let object = object.strip_prefix("key ").unwrap_or(&object);
                for (t, _) in [object.split_once('.'), object.rsplit_once('.')]
                    .into_iter()
                    .flatten()
                {
                    out.insert(t.to_string());
                }
            }
            "index" | "trigger" if engine == Engine::MySql => {
                for (t, _) in [object.split_once('.'), object.rsplit_once('.')]
                    .into_iter()
                    .flatten()
                {
                    out.insert(t.to_string());
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

impl<'q> OldQueries<'q> {
    /// The queries as they prepared at the base (`outcomes`, in the same order). Those that fail
    /// there are the query file's fault, not a migration's: one non-breaking finding each,
    /// returned for the first new migration.
    pub(super) fn at_base(
        engine: Engine,
        all: Vec<&'q OldQuery>,
        outcomes: Vec<Prepared>,
    ) -> (Self, Vec<Finding>) {
        let mut live = Vec::new();
        let mut invalid = Vec::new();
        for (q, outcome) in all.into_iter().zip(outcomes) {
            match outcome {
                Ok(columns) => {
                    // What the previous version decodes: sqlx's recorded columns that the base
                    // schema really returns (a stale .sqlx file is not a migration's fault).
                    let decoded = q
                        .columns
                        .as_ref()
                        .map(|c| c.iter().filter(|n| columns.contains(n)).cloned().collect());
                    live.push(Live {
                        query: q,
                        decoded,
                        words: words(engine, &q.sql),
                    });
                }
                Err(e) => invalid.push(finding(
                    Rule::OldQueryInvalidAtBase,
                    q.source.clone(),
                    format!(
                        "old query {} does not prepare even on the schema before the new \
                         migrations, so it was not checked: {e}",
                        q.source
                    ),
                )),
            }
        }
        (OldQueries { live }, invalid)
    }

    /// Prepares the live queries that can name a relation in `changed` (all of them when it is
    /// `None`) after `label` was applied; the ones that no longer prepare (or lost a result
    /// column) become breaking findings and are not tried again.
    pub(super) async fn after(
        &mut self,
        label: &str,
        changed: Option<&BTreeSet<String>>,
        inspector: &mut Inspector,
        url: &DatabaseUrl,
    ) -> Result<Vec<Finding>, CompatError> {
        let (affected, mut still): (Vec<Live<'q>>, Vec<Live<'q>>) = std::mem::take(&mut self.live)
            .into_iter()
            .partition(|l| match (changed, &l.words) {
                (Some(changed), Some(words)) => !changed.is_disjoint(words),
                _ => true,
            });
        if affected.is_empty() {
            self.live = still;
            return Ok(Vec::new());
        }
        let queries: Vec<&OldQuery> = affected.iter().map(|l| l.query).collect();
        let outcomes = inspector.prepare(&queries, url).await?;
        let mut findings = Vec::new();
        for (live, outcome) in affected.into_iter().zip(outcomes) {
            let q = live.query;
            match outcome {
                Err(e) => findings.push(finding(
                    Rule::OldQueryFails,
                    q.source.clone(),
                    format!(
                        "old query {} no longer prepares after {label}: {e}",
                        q.source
                    ),
                )),
                Ok(columns) => {
                    let gone: Vec<&str> = live
                        .decoded
                        .iter()
                        .flatten()
                        .filter(|n| !columns.contains(n))
                        .map(String::as_str)
                        .collect();
                    if gone.is_empty() {
                        still.push(live);
                    } else {
                        findings.push(finding(
                            Rule::OldQueryColumnsChanged,
                            q.source.clone(),
                            format!(
                                "old query {} still prepares after {label}, but no longer returns \
                                 {}, which the previous version decodes",
                                q.source,
                                gone.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        self.live = still;
        Ok(findings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shadow::diff::diff;
    use crate::shadow::snap;

    #[test]
    fn changed_relations_name_tables_or_give_up() {
        let base = snap(&[("table users", ""), ("column users.id", "integer||")]);
        let added = snap(&[
            ("table users", ""),
            ("column users.id", "integer||"),
            ("column users.name", "text||"),
            ("constraint Orders.fk", "FOREIGN KEY …"),
        ]);
        let got = changed_relations(Engine::Postgres, &diff(&base, &added));
        assert_eq!(
            got,
            Some(["orders".to_string(), "users".to_string()].into())
        );
        let function = snap(&[
            ("table users", ""),
            ("column users.id", "integer||"),
            ("function f()", "…"),
        ]);
        assert_eq!(
            changed_relations(Engine::Postgres, &diff(&base, &function)),
            None
        );
        assert_eq!(
            changed_relations(Engine::Postgres, &diff(&base, &base)),
            None
        );
        let index = snap(&[
            ("table users", ""),
            ("column users.id", "integer||"),
            ("index users.by_id", "id"),
        ]);
        assert_eq!(
            changed_relations(Engine::MySql, &diff(&base, &index)),
            Some(["users".to_string()].into())
        );
        assert_eq!(
            changed_relations(Engine::Postgres, &diff(&base, &index)),
            None
        );
    }

    #[test]
    fn query_words_are_lowercased_identifiers() {
        let w = words(
            Engine::Postgres,
            "SELECT o.id FROM \"Orders\" o JOIN users u ON u.id = o.user_id WHERE x = $1",
        )
        .unwrap();
        assert!(w.contains("orders") && w.contains("users") && w.contains("user_id"));
        assert!(!w.contains("$1"));
    }
}
