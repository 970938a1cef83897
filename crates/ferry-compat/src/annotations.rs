//! The annotations a migration carries that allow a finding: ferry's own
//! `-- ferry:allow <rule-id> <reason>` and the ones teams already wrote for other linters, so a
//! history annotated for squawk or diesel-guard is not flagged again for what its authors already
//! reviewed:
//! - squawk: `-- squawk-ignore <rule>[, <rule>…]` covers the next statement,
//!   `-- squawk-ignore-file <rule>[, <rule>…]` the whole script. squawk's rule ids are mapped to
//!   the ferry rules that flag the same statement ([`squawk_rules`]); a squawk rule with no ferry
//!   counterpart allows nothing.
//! - diesel-guard: every statement that starts between `-- safety-assured:start` and
//!   `-- safety-assured:end` is allowed, whatever the rule.
//!
//! Line-bound annotations only reach findings that have a line (the static layer's); the
//! file-wide ones (`ferry:allow`, `squawk-ignore-file`) also reach the shadow proof's.

use std::collections::HashMap;

use crate::Finding;
use crate::rules::Rule;

/// Why an annotated finding is allowed, when the annotation came from another linter.
const SQUAWK_REASON: &str = "annotated for squawk";
const DIESEL_GUARD_REASON: &str = "annotated for diesel-guard";

/// The annotations of one up script.
#[derive(Debug, Default)]
pub(crate) struct Annotations {
    /// `-- ferry:allow`: rule id → reason.
    ferry: HashMap<String, String>,
    /// `-- squawk-ignore-file`: rules allowed in the whole script.
    squawk_file: Vec<Rule>,
    /// `-- squawk-ignore`: (line of the statement it covers, rules).
    squawk_next: Vec<(usize, Vec<Rule>)>,
    /// `-- safety-assured` blocks: (first line, last line), inclusive; an unclosed block runs to
    /// the end of the script.
    assured: Vec<(usize, usize)>,
}

impl Annotations {
    pub(crate) fn parse(script: &str) -> Self {
        let lines: Vec<&str> = script.lines().collect();
        let mut a = Annotations::default();
        let mut open_block: Option<usize> = None;
        for (i, raw) in lines.iter().enumerate() {
            let line = i + 1;
            let Some(comment) = raw.trim().strip_prefix("--") else {
                continue;
            };
            let comment = comment.trim();
            if let Some(rest) = comment.strip_prefix("ferry:allow") {
                let rest = rest.trim();
                let (id, reason) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                if !id.is_empty() {
                    let reason = match reason.trim() {
                        "" => "(no reason given)",
                        r => r,
                    };
                    a.ferry.insert(id.to_string(), reason.to_string());
                }
            } else if let Some(rest) = comment.strip_prefix("squawk-ignore-file") {
                a.squawk_file.extend(squawk_list(rest));
            } else if let Some(rest) = comment.strip_prefix("squawk-ignore") {
                let rules = squawk_list(rest);
                if let Some(target) = next_statement_line(&lines, i + 1) {
                    a.squawk_next.push((target, rules));
                }
            } else if comment == "safety-assured:start" {
                open_block.get_or_insert(line);
            } else if comment == "safety-assured:end"
                && let Some(start) = open_block.take()
            {
                a.assured.push((start, line));
            }
        }
        if let Some(start) = open_block {
            a.assured.push((start, usize::MAX));
        }
        a
    }

    /// The reason `finding` is allowed, if an annotation covers it.
    pub(crate) fn reason(&self, finding: &Finding) -> Option<String> {
        if let Some(reason) = self.ferry.get(finding.rule.id()) {
            return Some(reason.clone());
        }
        if self.squawk_file.contains(&finding.rule) {
            return Some(SQUAWK_REASON.to_string());
        }
        if finding.line == 0 {
            return None;
        }
        if self
            .squawk_next
            .iter()
            .any(|(line, rules)| *line == finding.line && rules.contains(&finding.rule))
        {
            return Some(SQUAWK_REASON.to_string());
        }
        if self
            .assured
            .iter()
            .any(|&(start, end)| start < finding.line && finding.line < end)
        {
            return Some(DIESEL_GUARD_REASON.to_string());
        }
        None
    }

    /// Marks every finding an annotation covers as allowed, with its reason.
    pub(crate) fn apply(&self, findings: &mut [Finding]) {
        for f in findings {
            if let Some(reason) = self.reason(f) {
                f.allowed = true;
                f.reason = Some(reason);
            }
        }
    }
}

/// The 1-based line of the first statement line after 0-based index `from`: the next line that
/// is neither blank nor a `--` comment.
fn next_statement_line(lines: &[&str], from: usize) -> Option<usize> {
    (from..lines.len())
        .find(|&j| {
            let t = lines[j].trim();
            !t.is_empty() && !t.starts_with("--")
        })
        .map(|j| j + 1)
}

/// The ferry rules that squawk's rules (comma- or space-separated) name.
fn squawk_list(list: &str) -> Vec<Rule> {
    list.split([',', ' ', '\t'])
        .filter(|s| !s.is_empty())
        .flat_map(|s| squawk_rules(s).iter().copied())
        .collect()
}

/// The ferry rules that flag what squawk's rule `id` flags.
pub(crate) fn squawk_rules(id: &str) -> &'static [Rule] {
    match id {
        "ban-drop-column" => &[Rule::DropColumn],
        "ban-drop-table" => &[Rule::DropTable],
        "renaming-column" => &[Rule::RenameColumn],
        "renaming-table" => &[Rule::RenameTable],
        "changing-column-type" => &[Rule::NarrowingTypeChange, Rule::TableRewritingTypeChange],
        "adding-not-nullable-field" => &[Rule::SetNotNull],
        "adding-required-field" => &[Rule::AddNotNullColumnWithoutDefault],
        "adding-field-with-default" => &[Rule::VolatileDefault],
        "adding-foreign-key-constraint" => &[Rule::AddForeignKey, Rule::ConstraintWithoutNotValid],
        "constraint-missing-not-valid" => &[Rule::ConstraintWithoutNotValid],
        "disallowed-unique-constraint" => &[Rule::AddUniqueConstraint],
        "adding-serial-primary-key-field" => &[Rule::AddPrimaryKey],
        "require-concurrent-index-creation" => &[Rule::NonConcurrentIndex],
        "ban-truncate-cascade" => &[Rule::Truncate],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Class;

    fn finding(rule: Rule, line: usize) -> Finding {
        Finding {
            rule,
            class: rule.class(),
            severity: rule.severity(),
            object: "t".into(),
            line,
            message: String::new(),
            hint: String::new(),
            allowed: false,
            reason: None,
        }
    }

    #[test]
    fn squawk_ignore_covers_only_the_next_statement_and_its_rules() {
        let script = "-- squawk-ignore ban-drop-column, renaming-table\n\
                      -- a comment between\n\
                      \n\
                      ALTER TABLE a DROP COLUMN x;\n\
                      ALTER TABLE b DROP COLUMN y;\n";
        let a = Annotations::parse(script);
        assert_eq!(
            a.reason(&finding(Rule::DropColumn, 4)).as_deref(),
            Some(SQUAWK_REASON)
        );
        assert_eq!(
            a.reason(&finding(Rule::DropColumn, 5)),
            None,
            "next statement only"
        );
        assert_eq!(
            a.reason(&finding(Rule::DropTable, 4)),
            None,
            "only the rules named"
        );
        assert_eq!(
            a.reason(&finding(Rule::DropColumn, 0)),
            None,
            "a finding without a line"
        );
    }

    #[test]
    fn squawk_ignore_file_covers_every_statement_and_the_shadow_findings() {
        let a = Annotations::parse(
            "-- squawk-ignore-file ban-drop-table\nDROP TABLE a;\nDROP TABLE b;\n",
        );
        assert!(a.reason(&finding(Rule::DropTable, 3)).is_some());
        assert!(a.reason(&finding(Rule::DropTable, 0)).is_some());
        assert!(a.reason(&finding(Rule::DropColumn, 2)).is_none());
    }

    #[test]
    fn safety_assured_blocks_cover_what_starts_inside_them() {
        let script = "DROP TABLE before;\n\
                      -- safety-assured:start\n\
                      DROP TABLE inside;\n\
                      ALTER TABLE t RENAME TO u;\n\
                      -- safety-assured:end\n\
                      DROP TABLE after;\n\
                      -- safety-assured:start\n\
                      DROP TABLE unclosed;\n";
        let a = Annotations::parse(script);
        assert!(a.reason(&finding(Rule::DropTable, 1)).is_none());
        assert_eq!(
            a.reason(&finding(Rule::DropTable, 3)).as_deref(),
            Some(DIESEL_GUARD_REASON)
        );
        assert!(a.reason(&finding(Rule::RenameTable, 4)).is_some());
        assert!(a.reason(&finding(Rule::DropTable, 6)).is_none());
        assert!(
            a.reason(&finding(Rule::DropTable, 8)).is_some(),
            "an unclosed block runs to the end"
        );
    }

    #[test]
    fn ferry_allow_keeps_its_reason_and_wins() {
        let script = "-- ferry:allow drop-table  v2 never reads it\n-- safety-assured:start\nDROP TABLE a;\n-- safety-assured:end\n";
        let a = Annotations::parse(script);
        assert_eq!(
            a.reason(&finding(Rule::DropTable, 3)).as_deref(),
            Some("v2 never reads it")
        );
        let bare = Annotations::parse("-- ferry:allow drop-table\n");
        assert_eq!(
            bare.reason(&finding(Rule::DropTable, 2)).as_deref(),
            Some("(no reason given)")
        );
    }

    #[test]
    fn every_mapped_squawk_rule_names_real_ferry_rules() {
        for id in [
            "ban-drop-column",
            "renaming-column",
            "changing-column-type",
            "adding-required-field",
        ] {
            assert!(!squawk_rules(id).is_empty(), "{id}");
        }
        assert!(squawk_rules("prefer-text-field").is_empty());
        assert!(
            squawk_rules("ban-drop-column")
                .iter()
                .all(|r| r.class() == Class::Breaking)
        );
    }
}
