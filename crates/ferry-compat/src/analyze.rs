//! The static layer: walks each statement of an up script, keeps the schema model current and
//! emits findings. Never fails: a statement the parser cannot read becomes an `unparsed` finding.
//!
//! A migration is judged by its **end state**: an object dropped and created again with the same
//! name in one transactional migration is compared with what it was (a view's columns and their
//! types, a function's signature and return type, a trigger's table, a type's values or
//! attributes, a domain's base type and constraints), and only what the previous version lost
//! is reported. A table renamed and
//! replaced by a view under its old name is judged the same way. Outside a transaction (a
//! `-- ferry:no-transaction` migration, and MySQL, which commits each statement) the gap between
//! the drop and the create is real, and the drop stays a finding.
//! That comparison is [`end_state`]'s; this module records what each drop took away.

use std::collections::HashMap;

use ferry_core::Engine;
use sqlparser::ast::Statement;
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

use crate::Finding;
use crate::annotations::Annotations;
use crate::ddl::{AlterOp, ColumnSpec, Constraint, From, Name, Query, Stmt, Target, TypeShape};
use crate::model::{Column, Function, Schema, Table, TypeDef, View, ViewColumns};
use crate::rules::Rule;
use crate::types::{Change, compare};

mod end_state;
use end_state::{Before, Gone};

pub struct Analyzer {
    engine: Engine,
    schema: Schema,
}

/// Per-script state while analysing.
struct Run {
    learning: bool,
    /// Whether the script runs in one transaction, so the previous version never sees the
    /// state between two of its statements.
    atomic: bool,
    findings: Vec<Finding>,
    /// Tables dropped in this script, as they were, for SQLite's rebuild pattern
    /// (create new_t, copy, drop t, rename new_t to t), which is not a drop.
    dropped: HashMap<String, Table>,
    /// Live tables renamed in this script: new key → (old key, old display name, the table as
    /// it was), for the other rebuild order (rename t to t_old, create t, copy, drop t_old) and
    /// for a compatibility view under the old name.
    renamed_away: HashMap<String, (String, String, Table)>,
    /// Views, functions, types and triggers of the previous version dropped in this script.
    gone: Vec<Gone>,
    /// Objects created in this script (`view v`, `function f`, …) → the line of the create.
    created: HashMap<String, usize>,
    line: usize,
}

impl Run {
    fn emit(&mut self, rule: Rule, object: impl Into<String>, message: impl Into<String>) {
        self.emit_at(self.line, rule, object, message);
    }

    fn emit_at(
        &mut self,
        line: usize,
        rule: Rule,
        object: impl Into<String>,
        message: impl Into<String>,
    ) {
        if self.learning {
            return;
        }
        self.findings.push(Finding {
            rule,
            class: rule.class(),
            severity: rule.severity(),
            object: object.into(),
            line,
            message: message.into(),
            hint: rule.hint().to_string(),
            allowed: false,
            reason: None,
        });
    }

    fn withdraw(&mut self, rule: Rule, object: &str, line: usize) {
        self.findings
            .retain(|f| !(f.rule == rule && f.object == object && f.line == line));
    }

    fn amend(&mut self, rule: Rule, object: &str, line: usize, more: &str) {
        for f in &mut self.findings {
            if f.rule == rule && f.object == object && f.line == line {
                f.message.push_str(more);
            }
        }
    }
}

fn key_of_display(display: &str) -> String {
    Name(display.to_string()).key()
}

/// PostgreSQL functions whose value differs per row: a default calling one rewrites the table.
fn volatile(default: &str) -> bool {
    let d = default.to_ascii_lowercase();
    [
        "random(",
        "gen_random_uuid(",
        "uuid_generate_v",
        "clock_timestamp(",
        "timeofday(",
        "nextval(",
        "serial",
        // Identity and stored generated columns are computed for every existing row.
        "identity",
        "generated",
    ]
    .iter()
    .any(|f| d.contains(f))
}

/// The line the statement itself starts on, skipping leading comments.
fn statement_line(start: usize, text: &str) -> usize {
    let mut line = start;
    let mut s = text;
    loop {
        let trimmed = s.trim_start();
        line += s[..s.len() - trimmed.len()].matches('\n').count();
        s = trimmed;
        if let Some(rest) = s.strip_prefix("--") {
            match rest.find('\n') {
                Some(n) => s = &rest[n..],
                None => return line,
            }
        } else if let Some(rest) = s.strip_prefix("/*") {
            match rest.find("*/") {
                Some(n) => {
                    line += rest[..n].matches('\n').count();
                    s = &rest[n + 2..];
                }
                None => return line,
            }
        } else {
            return line;
        }
    }
}

/// sqlparser's dialect for an engine (the PostgreSQL one is still what `shadow/scope.rs` and
/// the old-query tokenizer read with).
pub(crate) fn dialect(engine: Engine) -> Box<dyn Dialect> {
    match engine {
        Engine::Postgres => Box::new(PostgreSqlDialect {}),
        Engine::MySql => Box::new(MySqlDialect {}),
        Engine::Sqlite => Box::new(SQLiteDialect {}),
    }
}

/// Parses one statement with sqlparser, working around its gaps for statements ferry knows are
/// safe to read another way: `DROP INDEX CONCURRENTLY` means, for compatibility, what
/// `DROP INDEX` means.
pub(crate) fn parse(
    engine: Engine,
    dialect: &dyn Dialect,
    text: &str,
) -> Result<Vec<Statement>, sqlparser::parser::ParserError> {
    Parser::parse_sql(dialect, text).or_else(|e| {
        let upper = text.to_ascii_uppercase();
        match upper.find("DROP INDEX CONCURRENTLY") {
            Some(at) if engine == Engine::Postgres => {
                let end = at + "DROP INDEX CONCURRENTLY".len();
                let rewritten = format!("{}DROP INDEX{}", &text[..at], &text[end..]);
                Parser::parse_sql(dialect, &rewritten).map_err(|_| e)
            }
            _ => Err(e),
        }
    })
}

/// A view's columns and the relations it reads, resolved against the model.
fn resolve(schema: &Schema, q: &Query) -> (Option<ViewColumns>, Vec<String>) {
    let mut reads = Vec::new();
    // Each FROM item: the name it is referred to by, and its columns.
    let mut items: Vec<(Option<String>, Option<ViewColumns>)> = Vec::new();
    for f in &q.from {
        match f {
            From::Relation { key, alias } => {
                reads.push(key.clone());
                items.push((Some(alias.clone()), schema.relation_columns(key)));
            }
            From::Subquery { query, alias } => {
                let (cols, r) = resolve(schema, query);
                reads.extend(r);
                items.push((alias.clone(), cols));
            }
            From::Opaque => items.push((None, None)),
        }
    }
    let find = |qualifier: &Option<String>, column: &str| -> Option<String> {
        let column = column.to_ascii_lowercase();
        items
            .iter()
            .filter(|(alias, _)| {
                qualifier
                    .as_ref()
                    .is_none_or(|q| alias.as_deref() == Some(&q.to_ascii_lowercase()))
            })
            .filter_map(|(_, cols)| cols.as_ref())
            .flat_map(|cols| cols.iter())
            .find(|(n, _)| *n == column)
            .and_then(|(_, t)| t.clone())
    };
    let mut out: ViewColumns = Vec::new();
    let mut known = true;
    for t in &q.targets {
        match t {
            Target::Star(qualifier) => {
                for (alias, cols) in &items {
                    if qualifier
                        .as_ref()
                        .is_some_and(|q| alias.as_deref() != Some(&q.to_ascii_lowercase()))
                    {
                        continue;
                    }
                    match cols {
                        Some(cols) => out.extend(cols.iter().cloned()),
                        None => known = false,
                    }
                }
            }
            Target::Column {
                name,
                qualifier,
                column,
                cast,
            } => out.push((
                name.to_ascii_lowercase(),
                cast.clone().or_else(|| find(qualifier, column)),
            )),
            Target::Expr { name, cast } => out.push((name.to_ascii_lowercase(), cast.clone())),
        }
    }
    (known.then_some(out), reads)
}

impl Analyzer {
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            schema: Schema::default(),
        }
    }

    /// Updates the schema model from an already-applied script; reports nothing.
    pub fn learn(&mut self, script: &str) {
        self.walk(script, true, true);
    }

    /// Analyses a new script that runs in one transaction (and updates the model).
    pub fn analyze(&mut self, script: &str) -> Vec<Finding> {
        self.analyze_in(script, true)
    }

    /// Analyses a new script; `transaction`: whether it runs in one transaction (MySQL never
    /// does: it commits each DDL statement).
    pub fn analyze_in(&mut self, script: &str, transaction: bool) -> Vec<Finding> {
        let atomic = transaction && self.engine != Engine::MySql;
        let mut findings = self.walk(script, false, atomic);
        Annotations::parse(script).apply(&mut findings);
        findings
    }

    fn walk(&mut self, script: &str, learning: bool, atomic: bool) -> Vec<Finding> {
        let mut run = Run {
            learning,
            atomic,
            findings: Vec::new(),
            dropped: HashMap::new(),
            renamed_away: HashMap::new(),
            gone: Vec::new(),
            created: HashMap::new(),
            line: 0,
        };
        for (start, text) in ferry_migrate::sql::split_statements_for(script, self.engine) {
            run.line = statement_line(start, &text);
            match crate::parse::parse(self.engine, &text) {
                Ok(statements) => {
                    for s in &statements {
                        self.statement(s, &mut run);
                    }
                }
                Err(e) => {
                    tracing::debug!(line = run.line, error = %e, "compat: statement not parsed");
                    let first = text
                        .lines()
                        .map(str::trim)
                        .find(|l| !l.is_empty() && !l.starts_with("--"))
                        .unwrap_or("")
                        .chars()
                        .take(60)
                        .collect::<String>();
                    run.emit(
                        Rule::Unparsed,
                        first,
                        format!(
                            "not analysed: the {} parser could not read this statement ({e})",
                            self.engine
                        ),
                    );
                }
            }
        }
        self.rebuilds_by_rename(&mut run);
        self.compatibility_views(&mut run);
        self.end_state(&mut run);
        run.findings
    }

    /// `ALTER TABLE t RENAME TO t_old; CREATE TABLE t …; INSERT …; DROP TABLE t_old;` replaces t
    /// in place: report what changed in t's columns, not a rename and a drop.
    fn rebuilds_by_rename(&mut self, run: &mut Run) {
        let mut renamed: Vec<(String, (String, String, Table))> = run
            .renamed_away
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        renamed.sort_by(|a, b| a.0.cmp(&b.0));
        for (moved, (orig, orig_display, before)) in renamed {
            if !run.dropped.contains_key(&moved) || !self.schema.is_new(&orig) {
                continue;
            }
            run.renamed_away.remove(&moved);
            run.findings.retain(|f| {
                !((f.rule == Rule::RenameTable && f.object.eq_ignore_ascii_case(&orig_display))
                    || (f.rule == Rule::DropTable && key_of_display(&f.object) == moved))
            });
            if let Some(t) = self.schema.table_mut(&orig) {
                t.new = false;
            }
            if let Some(after) = self.schema.tables.get(&orig).cloned() {
                self.diff_rebuild(&orig_display, &before, &after, run);
            }
        }
    }

    /// `ALTER TABLE products RENAME TO catalog_items; CREATE VIEW products AS SELECT * FROM
    /// catalog_items;` keeps the previous version working where the view can stand in for the
    /// table: PostgreSQL, in one transaction, with a view it can insert, update and delete
    /// through (inserts get the table's defaults) that still has every column.
    fn compatibility_views(&mut self, run: &mut Run) {
        let mut renamed: Vec<(String, (String, String, Table))> =
            run.renamed_away.drain().collect();
        renamed.sort_by(|a, b| a.0.cmp(&b.0));
        for (moved, (orig, orig_display, before)) in renamed {
            let Some(&line) = run.created.get(&format!("view {orig}")) else {
                continue;
            };
            let Some(view) = self.schema.views.get(&orig).cloned() else {
                continue;
            };
            let rename_line = run
                .findings
                .iter()
                .find(|f| f.rule == Rule::RenameTable && f.object == orig_display)
                .map(|f| f.line);
            let Some(rename_line) = rename_line else {
                continue;
            };
            let why_not = if self.engine == Engine::Sqlite {
                Some("SQLite views are read-only, so the previous version's writes to it fail")
            } else if !run.atomic {
                Some(
                    "the migration does not run in one transaction, so between the rename and \
                     the CREATE VIEW the previous version finds neither",
                )
            } else if !(view.updatable && view.reads == [moved.clone()]) {
                Some(
                    "that view is not automatically updatable (it must read one table with \
                     plain columns), so the previous version's INSERT, UPDATE and DELETE fail",
                )
            } else if view.columns.is_none() {
                Some("ferry could not work out that view's columns")
            } else {
                None
            };
            if let Some(why) = why_not {
                let more = format!(
                    "; a view {orig_display} replaces it, but {why}{}",
                    if self.engine == Engine::Postgres && view.columns.is_none() {
                        " (the shadow database's check compares them)"
                    } else {
                        ""
                    }
                );
                run.amend(Rule::RenameTable, &orig_display, rename_line, &more);
                continue;
            }
            run.withdraw(Rule::RenameTable, &orig_display, rename_line);
            let cols: HashMap<String, Option<String>> =
                view.columns.unwrap_or_default().into_iter().collect();
            let mut names: Vec<&String> = before.columns.keys().collect();
            names.sort();
            for name in names {
                let obj = format!("{orig_display}.{name}");
                match cols.get(name) {
                    None => run.emit_at(
                        line,
                        Rule::DropColumn,
                        obj,
                        format!(
                            "the view {orig_display} that replaces the table {orig_display} has no \
                             column {name}: the previous version still reads or writes it"
                        ),
                    ),
                    Some(Some(t)) if compare(&before.columns[name].data_type, t) == Change::Narrow => {
                        run.emit_at(
                            line,
                            Rule::NarrowingTypeChange,
                            obj,
                            format!(
                                "the view {orig_display} that replaces the table changes {name} from {} to {t}",
                                before.columns[name].data_type
                            ),
                        )
                    }
                    Some(_) => {}
                }
            }
        }
    }

    fn statement(&mut self, stmt: &Stmt, run: &mut Run) {
        match stmt {
            Stmt::CreateTable { name, columns } => {
                let mut table = Table {
                    new: !run.learning,
                    ..Table::default()
                };
                for c in columns {
                    table
                        .columns
                        .insert(c.name.to_ascii_lowercase(), c.column.clone());
                }
                self.schema.tables.insert(name.key(), table);
            }
            Stmt::CreateIndex {
                name,
                table,
                unique,
                concurrently,
            } => {
                if self.schema.is_new(&table.key()) {
                    return;
                }
                let obj = name.as_ref().unwrap_or(table).display().to_string();
                if *unique {
                    run.emit(
                        Rule::UniqueIndex,
                        obj.clone(),
                        format!(
                            "unique index {obj} on {}: inserts and updates of the previous version that write duplicates start failing (and the build fails if duplicates exist)",
                            table.display()
                        ),
                    );
                }
                if self.engine == Engine::Postgres && !concurrently {
                    run.emit(
                        Rule::NonConcurrentIndex,
                        obj.clone(),
                        format!(
                            "CREATE INDEX {obj} without CONCURRENTLY blocks writes to {} while the index builds",
                            table.display()
                        ),
                    );
                }
            }
            Stmt::AlterTable { name, ops, online } => self.alter_table(name, ops, *online, run),
            Stmt::RenameTable { old, new } => self.rename_table(old, new, run),
            Stmt::RenameEnumValue {
                type_name,
                from,
                to,
            } => {
                let obj = format!("{}.{from}", type_name.display());
                run.emit(
                    Rule::RenameEnumValue,
                    obj,
                    format!(
                        "enum value '{from}' of {} renamed to '{to}': the previous version still writes and compares the old value",
                        type_name.display()
                    ),
                );
                if let Some(TypeDef {
                    shape: TypeShape::Enum(values),
                    ..
                }) = self.schema.types.get_mut(&type_name.key())
                {
                    for v in values.iter_mut().filter(|v| *v == from) {
                        *v = to.clone();
                    }
                }
            }
            Stmt::DropTables { names, cascade } => {
                for name in names {
                    let k = name.key();
                    let obj = name.display().to_string();
                    if let Some(t) = self.schema.tables.remove(&k) {
                        let new = t.new;
                        run.dropped.insert(k.clone(), t);
                        if *cascade {
                            self.cascade_views(&k, &obj, run);
                        }
                        if new {
                            continue;
                        }
                    }
                    run.emit(
                        Rule::DropTable,
                        obj.clone(),
                        format!(
                            "table {obj} is dropped: the previous version still uses it, and its rows are lost"
                        ),
                    );
                }
            }
            Stmt::DropViews { names, cascade, .. } => {
                for name in names {
                    let k = name.key();
                    let before = self.schema.views.remove(&k);
                    if !before.as_ref().is_some_and(|v| v.new) {
                        let obj = name.display().to_string();
                        run.emit(
                            Rule::DropView,
                            obj.clone(),
                            format!("view {obj} is dropped: the previous version still uses it"),
                        );
                        run.gone.push(Gone {
                            key: k.clone(),
                            display: obj.clone(),
                            before: Before::View(before),
                            rule: Rule::DropView,
                            object: obj,
                            line: run.line,
                        });
                    }
                    if *cascade {
                        self.cascade_views(&k, name.display(), run);
                    }
                }
            }
            Stmt::DropTypes { names, cascade } => {
                for name in names {
                    let k = name.key();
                    let before = self.schema.types.remove(&k);
                    if !before.as_ref().is_some_and(|t| t.new) {
                        let obj = name.display().to_string();
                        run.emit(
                            Rule::DropType,
                            obj.clone(),
                            format!("type {obj} is dropped: the previous version still uses it"),
                        );
                        run.gone.push(Gone {
                            key: k.clone(),
                            display: obj.clone(),
                            before: Before::Type(before),
                            rule: Rule::DropType,
                            object: obj,
                            line: run.line,
                        });
                    }
                    if *cascade {
                        self.cascade_type(&k, name.display(), run);
                    }
                }
            }
            Stmt::DropSequences { names } => {
                for name in names {
                    let obj = name.display().to_string();
                    run.emit(
                        Rule::DropSequence,
                        obj.clone(),
                        format!("sequence {obj} is dropped: the previous version still uses it"),
                    );
                }
            }
            Stmt::DropFunctions {
                functions,
                procedure,
            } => {
                let what = if *procedure { "procedure" } else { "function" };
                for (name, args) in functions {
                    let k = name.key();
                    let overloads = self.schema.functions.remove(&k).unwrap_or_default();
                    let (dropped, kept): (Vec<Function>, Vec<Function>) =
                        overloads.into_iter().partition(|f| {
                            args.as_ref().is_none_or(|a| {
                                a.len() == f.args.len()
                                    && a.iter()
                                        .zip(&f.args)
                                        .all(|(x, y)| x.eq_ignore_ascii_case(y))
                            })
                        });
                    if !kept.is_empty() {
                        self.schema.functions.insert(k.clone(), kept);
                    }
                    if !dropped.is_empty() && dropped.iter().all(|f| f.new) {
                        continue;
                    }
                    let obj = name.display().to_string();
                    run.emit(
                        Rule::DropFunction,
                        obj.clone(),
                        format!("{what} {obj} is dropped: the previous version may still call it"),
                    );
                    run.gone.push(Gone {
                        key: k,
                        display: obj.clone(),
                        before: Before::Functions(dropped),
                        rule: Rule::DropFunction,
                        object: obj,
                        line: run.line,
                    });
                }
            }
            Stmt::DropTrigger { name, table } => {
                let key = match table {
                    Some(t) => format!("{}.{}", t.key(), name.to_ascii_lowercase()),
                    None => {
                        // MySQL and SQLite: trigger names are unique in the schema.
                        let suffix = format!(".{}", name.to_ascii_lowercase());
                        self.schema
                            .triggers
                            .keys()
                            .find(|k| k.ends_with(&suffix))
                            .cloned()
                            .unwrap_or_else(|| name.to_ascii_lowercase())
                    }
                };
                let new = self.schema.triggers.remove(&key);
                if new == Some(true) {
                    return;
                }
                let obj = match table {
                    Some(t) => format!("{}.{name}", t.display()),
                    None => key.clone(),
                };
                run.emit(
                    Rule::DropTrigger,
                    obj.clone(),
                    format!(
                        "trigger {obj} is dropped: the previous version may rely on what it does \
                         (fill a column, keep a table in step)"
                    ),
                );
                run.gone.push(Gone {
                    key,
                    display: obj.clone(),
                    before: Before::Trigger,
                    rule: Rule::DropTrigger,
                    object: obj,
                    line: run.line,
                });
            }
            Stmt::CreateView {
                name,
                aliases,
                query,
                materialized,
            } => {
                let (mut columns, reads) = match query {
                    Some(q) => resolve(&self.schema, q),
                    None => (None, Vec::new()),
                };
                if !aliases.is_empty() {
                    columns = columns.map(|cols| {
                        cols.into_iter()
                            .enumerate()
                            .map(|(i, (n, t))| match aliases.get(i) {
                                Some(a) => (a.to_ascii_lowercase(), t),
                                None => (n, t),
                            })
                            .collect()
                    });
                    // With `*` the order of the model's columns is not the view's.
                    if query
                        .as_ref()
                        .is_some_and(|q| q.targets.iter().any(|t| matches!(t, Target::Star(_))))
                    {
                        columns = None;
                    }
                }
                let updatable = !materialized
                    && query.as_ref().is_some_and(|q| q.simple)
                    && reads.len() == 1
                    && (self.schema.tables.contains_key(&reads[0])
                        || self
                            .schema
                            .views
                            .get(&reads[0])
                            .is_some_and(|v| v.updatable));
                let k = name.key();
                let new = !run.learning
                    && !run.recreates("view", &k)
                    && !run.renamed_away.values().any(|(old, _, _)| *old == k)
                    && self.schema.views.get(&k).is_none_or(|v| v.new);
                self.schema.views.insert(
                    k.clone(),
                    View {
                        columns,
                        reads,
                        updatable,
                        new,
                    },
                );
                run.created.insert(format!("view {k}"), run.line);
            }
            Stmt::CreateFunction {
                name,
                args,
                returns,
            } => {
                let k = name.key();
                let new = !run.learning && !run.recreates("function", &k);
                let overloads = self.schema.functions.entry(k.clone()).or_default();
                match overloads.iter_mut().find(|f| &f.args == args) {
                    // CREATE OR REPLACE: PostgreSQL refuses a different return type itself.
                    Some(f) => f.returns = returns.clone(),
                    None => overloads.push(Function {
                        args: args.clone(),
                        returns: returns.clone(),
                        new,
                    }),
                }
                run.created.insert(format!("function {k}"), run.line);
            }
            Stmt::CreateTrigger { name, table } => {
                let k = format!("{}.{}", table.key(), name.to_ascii_lowercase());
                let new = !run.learning && !run.recreates("trigger", &k);
                self.schema.triggers.entry(k.clone()).or_insert(new);
                run.created.insert(format!("trigger {k}"), run.line);
            }
            Stmt::CreateType { name, shape } => {
                let k = name.key();
                let new = !run.learning && !run.recreates("type", &k);
                self.schema.types.insert(
                    k.clone(),
                    TypeDef {
                        shape: shape.clone(),
                        new,
                    },
                );
                run.created.insert(format!("type {k}"), run.line);
            }
            Stmt::Truncate { tables } => {
                for target in tables {
                    if self.schema.is_new(&target.key()) {
                        continue;
                    }
                    let obj = target.display().to_string();
                    run.emit(
                        Rule::Truncate,
                        obj.clone(),
                        format!("TRUNCATE {obj} deletes every row"),
                    );
                }
            }
            Stmt::DeleteAll { tables } => {
                for name in tables {
                    if self.schema.is_new(&name.key()) {
                        continue;
                    }
                    let obj = name.display().to_string();
                    run.emit(
                        Rule::DeleteWithoutWhere,
                        obj.clone(),
                        format!("DELETE without WHERE removes every row of {obj}"),
                    );
                }
            }
            Stmt::UpdateAll { table, columns } => {
                if self.schema.is_new(&table.key()) {
                    return;
                }
                let obj = table.display().to_string();
                run.emit(
                    Rule::UpdateWithoutWhere,
                    obj.clone(),
                    format!(
                        "UPDATE without WHERE overwrites {} in every row of {obj}",
                        columns.join(", ")
                    ),
                );
            }
            Stmt::BodyUnread { what, error } => {
                run.emit(
                    Rule::Unparsed,
                    what.clone(),
                    format!(
                        "not analysed: {what} could not be read by PostgreSQL's PL/pgSQL parser ({error})"
                    ),
                );
            }
            Stmt::Other => {}
        }
    }

    /// `DROP … CASCADE` of a relation drops the views that read it (and the views that read
    /// those).
    fn cascade_views(&mut self, key: &str, by: &str, run: &mut Run) {
        let mut dependants: Vec<String> = self
            .schema
            .views
            .iter()
            .filter(|(_, v)| v.reads.iter().any(|r| r == key))
            .map(|(k, _)| k.clone())
            .collect();
        dependants.sort();
        for k in dependants {
            let Some(before) = self.schema.views.remove(&k) else {
                continue;
            };
            self.cascade_views(&k, by, run);
            if before.new {
                continue;
            }
            run.emit(
                Rule::DropView,
                k.clone(),
                format!(
                    "view {k} is dropped with {by} (CASCADE): the previous version still uses it"
                ),
            );
            run.gone.push(Gone {
                key: k.clone(),
                display: k.clone(),
                before: Before::View(Some(before)),
                rule: Rule::DropView,
                object: k,
                line: run.line,
            });
        }
    }

    /// `DROP TYPE … CASCADE` drops every column of that type.
    fn cascade_type(&mut self, key: &str, by: &str, run: &mut Run) {
        let mut lost = Vec::new();
        for (t, table) in &mut self.schema.tables {
            let cols: Vec<String> = table
                .columns
                .iter()
                .filter(|(_, c)| {
                    let base = c.data_type.trim_end_matches("[]");
                    key_of_display(base) == key
                })
                .map(|(n, _)| n.clone())
                .collect();
            for c in cols {
                table.columns.remove(&c);
                if !table.new {
                    lost.push(format!("{t}.{c}"));
                }
            }
        }
        lost.sort();
        for obj in lost {
            run.emit(
                Rule::DropColumn,
                obj.clone(),
                format!(
                    "column {obj} is dropped with type {by} (CASCADE): the previous version still \
                     reads or writes it, and its values are lost"
                ),
            );
        }
    }

    fn rename_table(&mut self, old: &Name, new: &Name, run: &mut Run) {
        let (ok, nk) = (old.key(), new.key());
        let table = self.schema.tables.remove(&ok);
        let was_new = table.as_ref().is_some_and(|t| t.new);
        if let Some(mut t) = table {
            if let Some(before) = run.dropped.remove(&nk) {
                // SQLite's rebuild: the new table takes the dropped one's place. Not a drop and
                // not a rename; what changed is the difference between the two column sets.
                run.findings.retain(|f| {
                    !(f.rule == Rule::DropTable && f.object.eq_ignore_ascii_case(new.display()))
                });
                t.new = before.new;
                if !before.new {
                    self.diff_rebuild(new.display(), &before, &t, run);
                }
            }
            self.schema.tables.insert(nk, t);
        }
        if was_new {
            return;
        }
        if let Some(t) = self.schema.tables.get(&new.key()) {
            run.renamed_away.insert(
                new.key(),
                (ok.clone(), old.display().to_string(), t.clone()),
            );
        }
        run.emit(
            Rule::RenameTable,
            old.display(),
            format!(
                "table {} is renamed to {}: the previous version still uses the old name",
                old.display(),
                new.display()
            ),
        );
    }

    fn diff_rebuild(&self, table: &str, before: &Table, after: &Table, run: &mut Run) {
        let mut names: Vec<&String> = before.columns.keys().collect();
        names.sort();
        for name in names {
            let old = &before.columns[name];
            let obj = format!("{table}.{name}");
            match after.columns.get(name) {
                None => run.emit(
                    Rule::DropColumn,
                    obj.clone(),
                    format!("the rebuilt table {table} has no column {name}: the previous version still uses it"),
                ),
                Some(new) => {
                    if compare(&old.data_type, &new.data_type) == Change::Narrow {
                        run.emit(
                            Rule::NarrowingTypeChange,
                            obj.clone(),
                            format!("the rebuilt table changes {obj} from {} to {}", old.data_type, new.data_type),
                        );
                    }
                    if new.not_null && !old.not_null {
                        run.emit(Rule::SetNotNull, obj.clone(), format!("the rebuilt table makes {obj} NOT NULL: inserts of the previous version that omit it fail"));
                    }
                    if old.default.is_some() && new.default.is_none() {
                        run.emit(Rule::DropDefault, obj.clone(), format!("the rebuilt table drops the default of {obj}: inserts of the previous version that omit it change or fail"));
                    }
                }
            }
        }
        let mut added: Vec<(&String, &Column)> = after
            .columns
            .iter()
            .filter(|(n, _)| !before.columns.contains_key(*n))
            .collect();
        added.sort_by_key(|(n, _)| n.as_str());
        for (name, c) in added {
            if c.not_null && c.default.is_none() {
                run.emit(
                    Rule::AddNotNullColumnWithoutDefault,
                    format!("{table}.{name}"),
                    format!("the rebuilt table {table} has a new NOT NULL column {name} without a default: inserts of the previous version fail"),
                );
            }
        }
    }

    fn alter_table(&mut self, name: &Name, ops: &[AlterOp], online: bool, run: &mut Run) {
        let t = name.key();
        let tn = name.display().to_string();
        let is_new = self.schema.is_new(&t);
        // New tables: keep the model current, report nothing (the previous version cannot use it).
        let was_learning = run.learning;
        run.learning |= is_new;
        let mut copies: Vec<String> = Vec::new();
        for op in ops {
            match op {
                AlterOp::AddColumn(ColumnSpec {
                    name: column,
                    column: c,
                }) => {
                    let cn = column.to_ascii_lowercase();
                    let obj = format!("{tn}.{column}");
                    if c.not_null && c.default.is_none() {
                        run.emit(
                            Rule::AddNotNullColumnWithoutDefault,
                            obj.clone(),
                            format!("new column {obj} is NOT NULL without a default: inserts of the previous version, which do not know it, fail"),
                        );
                    }
                    if self.engine == Engine::Postgres && c.default.as_deref().is_some_and(volatile)
                    {
                        run.emit(
                            Rule::VolatileDefault,
                            obj.clone(),
                            format!("new column {obj} has a volatile default ({}): PostgreSQL rewrites {tn} under an ACCESS EXCLUSIVE lock", c.default.as_deref().unwrap_or("")),
                        );
                    }
                    if let Some(table) = self.schema.table_mut(&t) {
                        table.columns.insert(cn, c.clone());
                    }
                }
                AlterOp::DropColumn(c) => {
                    let obj = format!("{tn}.{c}");
                    run.emit(
                        Rule::DropColumn,
                        obj.clone(),
                        format!("column {obj} is dropped: the previous version still reads or writes it, and its values are lost"),
                    );
                    if let Some(table) = self.schema.table_mut(&t) {
                        table.columns.remove(&c.to_ascii_lowercase());
                    }
                }
                AlterOp::RenameColumn { old, new } => {
                    self.rename_column(&t, &tn, old, new, run);
                }
                AlterOp::RenameTable(new) => {
                    run.learning = was_learning;
                    self.rename_table(name, new, run);
                    run.learning |= is_new;
                }
                AlterOp::Restate {
                    old,
                    spec,
                    data_type,
                } => {
                    if !old.eq_ignore_ascii_case(&spec.name) {
                        self.rename_column(&t, &tn, old, &spec.name, run);
                    }
                    self.modify_column(&t, &tn, spec, data_type, &mut copies, run);
                }
                AlterOp::SetNotNull(column) => {
                    let cn = column.to_ascii_lowercase();
                    let obj = format!("{tn}.{column}");
                    let already = self.schema.column(&t, &cn).is_some_and(|c| c.not_null);
                    if !already {
                        run.emit(
                            Rule::SetNotNull,
                            obj.clone(),
                            format!("{obj} becomes NOT NULL: inserts and updates of the previous version that leave it NULL fail (and PostgreSQL scans the table under an ACCESS EXCLUSIVE lock)"),
                        );
                    }
                    if let Some(c) = self.column_mut(&t, &cn) {
                        c.not_null = true;
                    }
                }
                AlterOp::DropNotNull(column) => {
                    if let Some(c) = self.column_mut(&t, &column.to_ascii_lowercase()) {
                        c.not_null = false;
                    }
                }
                AlterOp::SetDefault(column, value) => {
                    if let Some(c) = self.column_mut(&t, &column.to_ascii_lowercase()) {
                        c.default = Some(value.clone());
                    }
                }
                AlterOp::DropDefault(column) => {
                    let obj = format!("{tn}.{column}");
                    run.emit(
                        Rule::DropDefault,
                        obj.clone(),
                        format!("the default of {obj} is dropped: inserts of the previous version that omit the column now write NULL or fail"),
                    );
                    if let Some(c) = self.column_mut(&t, &column.to_ascii_lowercase()) {
                        c.default = None;
                    }
                }
                AlterOp::SetType(column, data_type) => {
                    self.type_change(&t, &tn, column, data_type, &mut copies, run);
                }
                AlterOp::AddConstraint {
                    constraint,
                    not_valid,
                } => self.add_constraint(&tn, constraint, *not_valid, &mut copies, run),
                AlterOp::DropPrimaryKey => {
                    copies.push("DROP PRIMARY KEY".into());
                }
            }
        }
        if self.engine == Engine::MySql && !online && !copies.is_empty() {
            run.emit(
                Rule::MysqlLockingAlter,
                tn.clone(),
                format!(
                    "ALTER TABLE {tn} ({}) copies the table without ALGORITHM=INPLACE or INSTANT, blocking writes while it runs",
                    copies.join(", ")
                ),
            );
        }
        run.learning = was_learning;
    }

    fn column_mut(&mut self, table: &str, column: &str) -> Option<&mut Column> {
        self.schema
            .table_mut(table)
            .and_then(|x| x.columns.get_mut(column))
    }

    fn rename_column(&mut self, t: &str, tn: &str, old: &str, new: &str, run: &mut Run) {
        run.emit(
            Rule::RenameColumn,
            format!("{tn}.{old}"),
            format!("column {tn}.{old} is renamed to {new}: the previous version still uses the old name"),
        );
        if let Some(table) = self.schema.table_mut(t)
            && let Some(c) = table.columns.remove(&old.to_ascii_lowercase())
        {
            table.columns.insert(new.to_ascii_lowercase(), c);
        }
    }

    /// MySQL's MODIFY/CHANGE restates the whole column: a type, and nullability and default that
    /// silently change when left out.
    fn modify_column(
        &mut self,
        t: &str,
        tn: &str,
        spec: &ColumnSpec,
        data_type: &str,
        copies: &mut Vec<String>,
        run: &mut Run,
    ) {
        let column = &spec.name;
        let cn = column.to_ascii_lowercase();
        let obj = format!("{tn}.{column}");
        let new = &spec.column;
        if let Some(old) = self.schema.column(t, &cn).cloned() {
            if new.not_null && !old.not_null {
                run.emit(
                    Rule::SetNotNull,
                    obj.clone(),
                    format!("{obj} becomes NOT NULL: inserts and updates of the previous version that leave it NULL fail"),
                );
            }
            if old.default.is_some() && new.default.is_none() {
                run.emit(
                    Rule::DropDefault,
                    obj.clone(),
                    format!("MODIFY/CHANGE of {obj} does not repeat its default ({}), which drops it: inserts of the previous version that omit the column change or fail", old.default.as_deref().unwrap_or("")),
                );
            }
        }
        self.type_change(t, tn, column, data_type, copies, run);
        if let Some(table) = self.schema.table_mut(t) {
            table.columns.insert(cn, new.clone());
        }
    }

    fn type_change(
        &mut self,
        t: &str,
        tn: &str,
        column: &str,
        data_type: &str,
        copies: &mut Vec<String>,
        run: &mut Run,
    ) {
        let cn = column.to_ascii_lowercase();
        let obj = format!("{tn}.{column}");
        let old = self.schema.column(t, &cn).map(|c| c.data_type.clone());
        let change = match &old {
            Some(old) => compare(old, data_type),
            None => Change::Narrow,
        };
        match &change {
            Change::Same => {}
            Change::Widen { rewrite } => {
                if self.engine == Engine::Postgres && *rewrite {
                    run.emit(
                        Rule::TableRewritingTypeChange,
                        obj.clone(),
                        format!(
                            "{obj} changes from {} to {data_type}: PostgreSQL rewrites {tn} under an ACCESS EXCLUSIVE lock",
                            old.as_deref().unwrap_or("?")
                        ),
                    );
                }
            }
            Change::EnumDrop(values) => {
                for v in values {
                    run.emit(
                        Rule::DropEnumValue,
                        format!("{obj}.{v}"),
                        format!("enum value '{v}' is removed from {obj}: the previous version still writes it, and rows holding it are changed"),
                    );
                }
            }
            Change::Narrow => {
                let message = match &old {
                    Some(old) => format!(
                        "{obj} changes from {old} to {data_type}, which narrows or reinterprets values the previous version writes and reads"
                    ),
                    None => format!(
                        "{obj} changes type to {data_type}, and ferry does not know its previous type (no migration it read created it): check that this does not narrow it"
                    ),
                };
                run.emit(Rule::NarrowingTypeChange, obj.clone(), message);
            }
        }
        let instant_enum_append = matches!(change, Change::Widen { rewrite: false })
            && data_type.to_ascii_lowercase().starts_with("enum");
        if change != Change::Same && !instant_enum_append {
            copies.push(format!("type of {column}"));
        }
        if let Some(c) = self.column_mut(t, &cn) {
            c.data_type = data_type.to_ascii_lowercase();
        }
    }

    fn add_constraint(
        &mut self,
        tn: &str,
        constraint: &Constraint,
        not_valid: bool,
        copies: &mut Vec<String>,
        run: &mut Run,
    ) {
        let pg = self.engine == Engine::Postgres;
        let named = |n: &Option<String>, cols: &[String]| match n {
            Some(n) => format!("{tn}.{n}"),
            None => format!("{tn}({})", cols.join(", ")),
        };
        match constraint {
            // The unique index it uses already enforces it (and was judged when it was built).
            Constraint::Unique {
                using_index: true, ..
            } => {}
            Constraint::Unique { name, columns, .. } => {
                let obj = named(name, columns);
                run.emit(
                    Rule::AddUniqueConstraint,
                    obj.clone(),
                    format!("unique constraint {obj}: writes of the previous version that duplicate a value start failing"),
                );
            }
            Constraint::PrimaryKey { name, columns } => {
                let obj = named(name, columns);
                run.emit(
                    Rule::AddPrimaryKey,
                    obj.clone(),
                    format!("primary key {obj}: writes of the previous version with duplicate or NULL keys start failing"),
                );
                copies.push("ADD PRIMARY KEY".into());
            }
            Constraint::ForeignKey {
                name,
                columns,
                table,
            } => {
                let obj = named(name, columns);
                run.emit(
                    Rule::AddForeignKey,
                    obj.clone(),
                    format!(
                        "foreign key {obj} → {}: writes of the previous version with a missing reference start failing",
                        table.display()
                    ),
                );
                if pg && !not_valid {
                    run.emit(
                        Rule::ConstraintWithoutNotValid,
                        obj.clone(),
                        format!("foreign key {obj} without NOT VALID checks every row while holding a lock that blocks writes to {tn}"),
                    );
                }
                copies.push("ADD FOREIGN KEY".into());
            }
            Constraint::Check { name, expr } => {
                let obj = named(name, std::slice::from_ref(expr));
                run.emit(
                    Rule::AddCheckConstraint,
                    obj.clone(),
                    format!("check constraint {obj} ({expr}): writes of the previous version that violate it start failing"),
                );
                if pg && !not_valid {
                    run.emit(
                        Rule::ConstraintWithoutNotValid,
                        obj.clone(),
                        format!("check constraint {obj} without NOT VALID scans every row under an ACCESS EXCLUSIVE lock on {tn}"),
                    );
                }
            }
        }
    }
}
