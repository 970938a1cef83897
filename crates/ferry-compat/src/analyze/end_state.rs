//! The end state of a migration (see the parent module's doc): the previous version's views,
//! functions, types (domains too) and triggers that a script drops, kept as they were
//! ([`Gone`]), and, once the whole script is read, each compared with what the script left
//! under its name. In one transaction only what the previous version lost is reported and the
//! drop finding is withdrawn; outside one the drop stays a finding, and says where the object
//! comes back.

use std::collections::HashMap;

use ferry_core::Engine;

use super::{Analyzer, Run};
use crate::ddl::TypeShape;
use crate::model::{Function, TypeDef, View};
use crate::rules::Rule;
use crate::types::{Change, compare};

/// An object of the previous version dropped in this script, as it was.
#[derive(Debug, Clone)]
pub(super) enum Before {
    View(Option<View>),
    /// The overloads dropped (all of them when the drop named no arguments).
    Functions(Vec<Function>),
    Type(Option<TypeDef>),
    Trigger,
}

impl Before {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Before::View(_) => "view",
            Before::Functions(_) => "function",
            Before::Type(_) => "type",
            Before::Trigger => "trigger",
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Gone {
    pub(super) key: String,
    pub(super) display: String,
    pub(super) before: Before,
    /// The drop finding, to withdraw when the end state shows nothing was lost.
    pub(super) rule: Rule,
    pub(super) object: String,
    pub(super) line: usize,
}

impl Run {
    /// Whether this script dropped the previous version's `kind` named `key` (a create then
    /// stands in for it: the previous version uses it).
    pub(super) fn recreates(&self, kind: &str, key: &str) -> bool {
        self.gone
            .iter()
            .any(|g| g.key == key && g.before.kind() == kind)
    }
}

impl Analyzer {
    /// Compares each view, function, type and trigger this script dropped with what the script
    /// left under its name (see the module doc).
    pub(super) fn end_state(&mut self, run: &mut Run) {
        let gone = std::mem::take(&mut run.gone);
        for g in gone {
            let kind = g.before.kind();
            let Some(&line) = run.created.get(&format!("{kind} {}", g.key)) else {
                continue;
            };
            if !run.atomic {
                let more = format!(
                    "; it is created again on line {line}, but the migration does not run in one \
                     transaction{}, so in between the previous version fails",
                    if self.engine == Engine::MySql {
                        " (MySQL commits each statement)"
                    } else {
                        ""
                    }
                );
                run.amend(g.rule, &g.object, g.line, &more);
                continue;
            }
            run.withdraw(g.rule, &g.object, g.line);
            match &g.before {
                Before::View(before) => self.compare_view(&g, before.as_ref(), line, run),
                Before::Functions(before) => self.compare_functions(&g, before, line, run),
                Before::Type(before) => self.compare_type(&g, before.as_ref(), line, run),
                Before::Trigger => {}
            }
        }
    }

    fn not_compared(&self, g: &Gone, line: usize, run: &mut Run, why: &str) {
        run.emit_at(
            line,
            Rule::RecreatedNotCompared,
            g.display.clone(),
            format!(
                "{} is dropped and created again in this migration, but {why}, so ferry did not \
                 compare what the previous version used with what is there now",
                g.display
            ),
        );
    }

    fn compare_view(&self, g: &Gone, before: Option<&View>, line: usize, run: &mut Run) {
        let now = self.schema.views.get(&g.key);
        let (Some(old), Some(new)) = (
            before.and_then(|v| v.columns.as_ref()),
            now.and_then(|v| v.columns.as_ref()),
        ) else {
            let which = if before.is_none() {
                "no migration ferry read created the view"
            } else {
                "ferry could not work out the view's columns"
            };
            return self.not_compared(g, line, run, which);
        };
        let new: HashMap<&str, &Option<String>> =
            new.iter().map(|(n, t)| (n.as_str(), t)).collect();
        for (name, old_type) in old {
            let obj = format!("{}.{name}", g.display);
            match new.get(name.as_str()) {
                None => run.emit_at(
                    line,
                    Rule::DropColumn,
                    obj,
                    format!(
                        "view {} is dropped and created again without column {name}: the \
                         previous version still reads it",
                        g.display
                    ),
                ),
                Some(Some(new_type)) => {
                    if let Some(old_type) = old_type
                        && matches!(
                            compare(old_type, new_type),
                            Change::Narrow | Change::EnumDrop(_)
                        )
                    {
                        run.emit_at(
                            line,
                            Rule::NarrowingTypeChange,
                            obj,
                            format!(
                                "view {} is created again with column {name} of type {new_type} \
                                 instead of {old_type}",
                                g.display
                            ),
                        );
                    }
                }
                Some(None) => {}
            }
        }
    }

    fn compare_functions(&self, g: &Gone, before: &[Function], line: usize, run: &mut Run) {
        if before.is_empty() {
            return self.not_compared(g, line, run, "no migration ferry read created the function");
        }
        let now = self
            .schema
            .functions
            .get(&g.key)
            .cloned()
            .unwrap_or_default();
        for old in before {
            let signature = format!("{}({})", g.display, old.args.join(", "));
            match now.iter().find(|f| f.args == old.args) {
                None => run.emit_at(
                    line,
                    Rule::DropFunction,
                    signature.clone(),
                    format!(
                        "function {signature} is dropped and created again as {}: the previous \
                         version calls it with ({})",
                        now.iter()
                            .map(|f| format!("{}({})", g.display, f.args.join(", ")))
                            .collect::<Vec<_>>()
                            .join(", "),
                        old.args.join(", ")
                    ),
                ),
                Some(f) => {
                    let same = match (&old.returns, &f.returns) {
                        (Some(a), Some(b)) => {
                            a.eq_ignore_ascii_case(b) || compare(a, b) == Change::Same
                        }
                        (a, b) => a == b,
                    };
                    if !same {
                        run.emit_at(
                            line,
                            Rule::DropFunction,
                            signature.clone(),
                            format!(
                                "function {signature} is created again returning {} instead of \
                                 {}: the previous version reads the old result",
                                f.returns.as_deref().unwrap_or("nothing"),
                                old.returns.as_deref().unwrap_or("nothing")
                            ),
                        );
                    }
                }
            }
        }
    }

    fn compare_type(&self, g: &Gone, before: Option<&TypeDef>, line: usize, run: &mut Run) {
        let now = self.schema.types.get(&g.key);
        let (Some(old), Some(new)) = (before, now) else {
            return self.not_compared(g, line, run, "no migration ferry read created the type");
        };
        match (&old.shape, &new.shape) {
            (TypeShape::Enum(a), TypeShape::Enum(b)) => {
                for v in a.iter().filter(|v| !b.contains(v)) {
                    run.emit_at(
                        line,
                        Rule::DropEnumValue,
                        format!("{}.{v}", g.display),
                        format!(
                            "type {} is created again without the value '{v}': the previous \
                             version still writes it",
                            g.display
                        ),
                    );
                }
            }
            (TypeShape::Composite(a), TypeShape::Composite(b)) => {
                for (name, t) in a {
                    let lost = match b.iter().find(|(n, _)| n == name) {
                        None => Some(format!("without the attribute {name}")),
                        Some((_, nt)) if compare(t, nt) == Change::Narrow => {
                            Some(format!("with {name} of type {nt} instead of {t}"))
                        }
                        Some(_) => None,
                    };
                    if let Some(lost) = lost {
                        run.emit_at(
                            line,
                            Rule::DropType,
                            format!("{}.{name}", g.display),
                            format!(
                                "type {} is created again {lost}: the previous version still uses it",
                                g.display
                            ),
                        );
                    }
                }
            }
            (
                TypeShape::Domain {
                    base: a,
                    not_null: a_not_null,
                    checks: a_checks,
                },
                TypeShape::Domain {
                    base: b,
                    not_null: b_not_null,
                    checks: b_checks,
                },
            ) => {
                let mut lost = Vec::new();
                if !a.eq_ignore_ascii_case(b)
                    && matches!(compare(a, b), Change::Narrow | Change::EnumDrop(_))
                {
                    lost.push(format!("over {b} instead of {a}"));
                }
                if *b_not_null && !a_not_null {
                    lost.push("with NOT NULL".to_string());
                }
                for c in b_checks.iter().filter(|c| !a_checks.contains(c)) {
                    lost.push(format!("with CHECK ({c})"));
                }
                if !lost.is_empty() {
                    run.emit_at(
                        line,
                        Rule::DropType,
                        g.display.clone(),
                        format!(
                            "domain {} is created again {}: the previous version may still write \
                             values that fail it",
                            g.display,
                            lost.join(", ")
                        ),
                    );
                }
            }
            (TypeShape::Other, TypeShape::Other) => {}
            _ => run.emit_at(
                line,
                Rule::DropType,
                g.display.clone(),
                format!(
                    "type {} is created again as a different kind of type: the previous version \
                     still uses it as it was",
                    g.display
                ),
            ),
        }
    }
}
