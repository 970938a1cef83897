//! Pure comparisons of catalog snapshots: what differs, what of it the previous version relied
//! on, what a down left different, and which migration built what a replay got wrong. No I/O.

use super::Snapshot;
use crate::Finding;
use crate::rules::Rule;
use crate::types::{Change, compare};

pub(super) fn finding(rule: Rule, object: String, message: String) -> Finding {
    Finding {
        rule,
        class: rule.class(),
        severity: rule.severity(),
        object,
        line: 0,
        message,
        hint: rule.hint().to_string(),
        allowed: false,
        reason: None,
    }
}

/// `column t.c` → `t.c`; `function f(int)` → `f(int)`.
pub(super) fn object_of(key: &str) -> (&str, &str) {
    key.split_once(' ').unwrap_or(("", key))
}

/// Objects of `base` (what the previous version can rely on) that `before` → `after` removed or
/// changed incompatibly.
/// One object that two snapshots disagree on: its key, its description before (`None`: it is
/// new) and after (`None`: it is gone).
pub(super) type Delta<'a> = (&'a str, Option<&'a str>, Option<&'a str>);

/// Every object that differs between `before` and `after`, in key order: one walk of both
/// (sorted) maps side by side, so a diff costs a comparison per object, not a lookup.
pub(super) fn diff<'a>(before: &'a Snapshot, after: &'a Snapshot) -> Vec<Delta<'a>> {
    use std::cmp::Ordering;
    let mut out = Vec::new();
    let mut b = before.0.iter().peekable();
    let mut a = after.0.iter().peekable();
    loop {
        match (b.peek(), a.peek()) {
            (None, None) => break,
            (Some((k, v)), None) => {
                out.push((k.as_str(), Some(v.as_str()), None));
                b.next();
            }
            (None, Some((k, v))) => {
                out.push((k.as_str(), None, Some(v.as_str())));
                a.next();
            }
            (Some((kb, vb)), Some((ka, va))) => match kb.cmp(ka) {
                Ordering::Less => {
                    out.push((kb.as_str(), Some(vb.as_str()), None));
                    b.next();
                }
                Ordering::Greater => {
                    out.push((ka.as_str(), None, Some(va.as_str())));
                    a.next();
                }
                Ordering::Equal => {
                    if vb != va {
                        out.push((kb.as_str(), Some(vb.as_str()), Some(va.as_str())));
                    }
                    b.next();
                    a.next();
                }
            },
        }
    }
    out
}

pub fn incompatibilities(base: &Snapshot, changes: &[Delta]) -> Vec<Finding> {
    let mut out = Vec::new();
    for &(key, old, new) in changes {
        let Some(old) = old else { continue };
        if !base.0.contains_key(key) {
            continue;
        }
        let (kind, object) = object_of(key);
        if !matches!(
            kind,
            "table" | "column" | "view" | "function" | "enum" | "sequence" | "trigger"
        ) {
            continue;
        }
        match new {
            None => out.push(finding(
                Rule::ShadowObjectRemoved,
                object.to_string(),
                format!("{kind} {object} exists before the migration and not after it"),
            )),
            Some(new) => {
                if let Some(why) = incompatible_change(kind, old, new) {
                    out.push(finding(
                        Rule::ShadowObjectChanged,
                        object.to_string(),
                        format!("{kind} {object} {why}"),
                    ));
                }
            }
        }
    }
    out
}

fn incompatible_change(kind: &str, old: &str, new: &str) -> Option<String> {
    match kind {
        "column" => {
            let mut o = old.splitn(3, '|');
            let mut n = new.splitn(3, '|');
            let (ot, on, od) = (o.next()?, o.next()?, o.next().unwrap_or(""));
            let (nt, nn, nd) = (n.next()?, n.next()?, n.next().unwrap_or(""));
            let mut why = Vec::new();
            if matches!(compare(ot, nt), Change::Narrow | Change::EnumDrop(_)) {
                why.push(format!("changes type from {ot} to {nt}"));
            }
            if on.is_empty() && !nn.is_empty() {
                why.push("becomes NOT NULL".to_string());
            }
            if !od.is_empty() && nd.is_empty() {
                why.push(format!("loses its default {od}"));
            }
            (!why.is_empty()).then(|| why.join(", "))
        }
        "enum" => {
            let nv: Vec<&str> = new.split(',').collect();
            let gone: Vec<&str> = old.split(',').filter(|v| !nv.contains(v)).collect();
            (!gone.is_empty()).then(|| format!("loses values {}", gone.join(", ")))
        }
        _ => None,
    }
}

/// What down left different from the snapshot before up.
pub fn differences(before: &Snapshot, after_down: &Snapshot) -> Vec<String> {
    let changes = diff(before, after_down);
    let mut out = Vec::new();
    for &(key, old, new) in &changes {
        match (old, new) {
            (Some(_), None) => out.push(format!(
                "{key} missing: the up removed it and this needs to be undone in down.sql"
            )),
            (Some(old), Some(new)) => out.push(format!(
                "{key} differs: was `{old}`, after down `{new}`; this needs to be undone in down.sql"
            )),
            (None, _) => {}
        }
    }
    for &(key, old, _) in &changes {
        if old.is_none() {
            out.push(format!(
                "{key} still exists after down: down.sql must drop what up created"
            ));
        }
    }
    out
}

/// Whether a query that prepared before a migration may fail to prepare after it (`changes`:
/// the [`diff`] of the two snapshots). Only additions
/// that cannot change how an existing name resolves are safe to skip: new tables, views,
/// indexes, constraints, triggers, sequences and types, and the columns of a table or view the
/// same migration created. A new column on an existing table can make an unqualified name in a
/// join ambiguous, and a new function can make a call ambiguous, so they count; so does any
/// removal or change, and a migration the snapshot sees nothing of (it may have changed what
/// the snapshot does not record).
pub fn may_break_queries(changes: &[Delta]) -> bool {
    if changes.is_empty() || changes.iter().any(|(_, old, _)| old.is_some()) {
        return true;
    }
    // From here on every change is an addition; `changes` is in key order.
    let added = |key: &str| changes.binary_search_by(|(k, _, _)| (*k).cmp(key)).is_ok();
    changes
        .iter()
        .map(|&(key, _, _)| key)
        .any(|key| match object_of(key) {
            ("column", object) => {
                let relation = object.rsplit_once('.').map_or(object, |(t, _)| t);
                !(added(&format!("table {relation}")) || added(&format!("view {relation}")))
            }
            (
                "table" | "view" | "index" | "constraint" | "trigger" | "sequence" | "enum"
                | "check",
                _,
            ) => false,
            (kind, _) => !kind.starts_with("foreign"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shadow::snap;

    #[test]
    fn a_diff_walks_both_snapshots_and_finds_what_a_lookup_finds() {
        let before = snap(&[
            ("column a.x", "int"),
            ("column a.y", "text"),
            ("index a_i", "i"),
            ("table a", ""),
            ("table c", ""),
        ]);
        let after = snap(&[
            ("column a.x", "bigint"),
            ("column b.z", "text"),
            ("index a_i", "i"),
            ("table a", ""),
            ("table b", ""),
        ]);
        let walked = diff(&before, &after);
        // The same, one lookup per key.
        let mut looked: Vec<Delta> = before
            .0
            .iter()
            .filter(|(k, v)| after.0.get(*k) != Some(*v))
            .map(|(k, v)| {
                (
                    k.as_str(),
                    Some(v.as_str()),
                    after.0.get(k).map(String::as_str),
                )
            })
            .chain(
                after
                    .0
                    .iter()
                    .filter(|(k, _)| !before.0.contains_key(*k))
                    .map(|(k, v)| (k.as_str(), None, Some(v.as_str()))),
            )
            .collect();
        looked.sort();
        assert_eq!(walked, looked);
        assert_eq!(
            walked,
            vec![
                ("column a.x", Some("int"), Some("bigint")),
                ("column a.y", Some("text"), None),
                ("column b.z", None, Some("text")),
                ("table b", None, Some("")),
                ("table c", Some(""), None),
            ]
        );
        assert!(diff(&before, &before).is_empty());
        assert_eq!(diff(&Snapshot::default(), &before).len(), 5);
    }

    #[test]
    fn only_safe_additions_skip_preparing_old_queries() {
        let base = snap(&[("table users", ""), ("column users.id", "integer||")]);
        let new_table = snap(&[
            ("table users", ""),
            ("column users.id", "integer||"),
            ("table tags", ""),
            ("column tags.id", "integer||"),
            ("index tags_pkey", "CREATE UNIQUE INDEX …"),
            ("foreign key tags.fk", "users"),
        ]);
        assert!(!may_break_queries(&diff(&base, &new_table)));
        let new_column = snap(&[
            ("table users", ""),
            ("column users.id", "integer||"),
            ("column users.name", "text||"),
        ]);
        assert!(
            may_break_queries(&diff(&base, &new_column)),
            "ambiguity in joins"
        );
        let changed = snap(&[("table users", ""), ("column users.id", "bigint||")]);
        assert!(may_break_queries(&diff(&base, &changed)));
        let dropped = snap(&[("table users", "")]);
        assert!(may_break_queries(&diff(&base, &dropped)));
        let function = snap(&[
            ("table users", ""),
            ("column users.id", "integer||"),
            ("function f(integer)", "…"),
        ]);
        assert!(may_break_queries(&diff(&base, &function)), "overloads");
        assert!(may_break_queries(&diff(&base, &base)), "unseen changes");
    }
}
