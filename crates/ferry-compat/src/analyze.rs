//! The static layer: walks each statement of an up script, keeps the schema model current and
//! emits findings. Never fails: a statement sqlparser cannot read becomes an `unparsed` finding.

use std::collections::HashMap;

use ferry_core::Engine;
use sqlparser::ast::{
    AlterColumnOperation, AlterTableAlgorithm, AlterTableOperation, AlterTypeOperation, ColumnDef,
    ColumnOption, FromTable, ObjectName, ObjectType, RenameTableNameKind, Statement,
    TableConstraint, TableFactor, TableWithJoins,
};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

use crate::Finding;
use crate::annotations::Annotations;
use crate::model::{Column, Schema, Table};
use crate::rules::Rule;
use crate::types::{Change, compare};

pub struct Analyzer {
    engine: Engine,
    schema: Schema,
}

/// Per-script state while analysing.
struct Run {
    learning: bool,
    findings: Vec<Finding>,
    /// Tables dropped in this script, as they were, for SQLite's rebuild pattern
    /// (create new_t, copy, drop t, rename new_t to t), which is not a drop.
    dropped: HashMap<String, Table>,
    /// Live tables renamed in this script: new key → (old key, old display name, the table as
    /// it was), for the other rebuild order (rename t to t_old, create t, copy, drop t_old).
    renamed_away: HashMap<String, (String, String, Table)>,
    line: usize,
}

impl Run {
    fn emit(&mut self, rule: Rule, object: impl Into<String>, message: impl Into<String>) {
        if self.learning {
            return;
        }
        self.findings.push(Finding {
            rule,
            class: rule.class(),
            severity: rule.severity(),
            object: object.into(),
            line: self.line,
            message: message.into(),
            hint: rule.hint().to_string(),
            allowed: false,
            reason: None,
        });
    }
}

fn unquote(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '"' | '`' | '[' | ']'))
        .collect()
}

/// The display name of an object (`public.users`).
fn display(name: &ObjectName) -> String {
    unquote(&name.to_string())
}

/// The model key of a table: its last name part, lowercased.
fn key(name: &ObjectName) -> String {
    let full = display(name);
    full.rsplit('.')
        .next()
        .unwrap_or(&full)
        .to_ascii_lowercase()
}

fn key_of_display(display: &str) -> String {
    display
        .rsplit('.')
        .next()
        .unwrap_or(display)
        .to_ascii_lowercase()
}

fn relation_name(t: &TableWithJoins) -> Option<&ObjectName> {
    match &t.relation {
        TableFactor::Table { name, .. } => Some(name),
        _ => None,
    }
}

/// Whether a column option gives the column a value when an insert omits it.
fn provides_value(o: &ColumnOption) -> bool {
    match o {
        ColumnOption::Default(_)
        | ColumnOption::Generated { .. }
        | ColumnOption::Identity(_)
        | ColumnOption::Materialized(_)
        | ColumnOption::Alias(_) => true,
        other => {
            let text = other.to_string().to_ascii_lowercase();
            text.contains("auto_increment") || text.contains("autoincrement")
        }
    }
}

fn column_from_parts(data_type: &str, options: &[ColumnOption]) -> Column {
    let t = data_type.to_ascii_lowercase();
    let serial = t.contains("serial");
    Column {
        not_null: options
            .iter()
            .any(|o| matches!(o, ColumnOption::NotNull | ColumnOption::PrimaryKey(_))),
        default: options
            .iter()
            .find_map(|o| match o {
                ColumnOption::Default(e) => Some(e.to_string()),
                o if provides_value(o) => Some(o.to_string()),
                _ => None,
            })
            .or_else(|| serial.then(|| "serial".to_string())),
        data_type: t,
    }
}

fn column_from_def(def: &ColumnDef) -> Column {
    let options: Vec<ColumnOption> = def.options.iter().map(|o| o.option.clone()).collect();
    column_from_parts(&def.data_type.to_string(), &options)
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

/// Parses one statement, working around sqlparser gaps for statements ferry knows are safe to
/// read another way: `DROP INDEX CONCURRENTLY` means, for compatibility, what `DROP INDEX` means.
/// sqlparser's dialect for an engine.
pub(crate) fn dialect(engine: Engine) -> Box<dyn Dialect> {
    match engine {
        Engine::Postgres => Box::new(PostgreSqlDialect {}),
        Engine::MySql => Box::new(MySqlDialect {}),
        Engine::Sqlite => Box::new(SQLiteDialect {}),
    }
}

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

impl Analyzer {
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            schema: Schema::default(),
        }
    }

    /// Updates the schema model from an already-applied script; reports nothing.
    pub fn learn(&mut self, script: &str) {
        self.walk(script, true);
    }

    /// Analyses a new script (and updates the model).
    pub fn analyze(&mut self, script: &str) -> Vec<Finding> {
        let mut findings = self.walk(script, false);
        Annotations::parse(script).apply(&mut findings);
        findings
    }

    fn walk(&mut self, script: &str, learning: bool) -> Vec<Finding> {
        let dialect = dialect(self.engine);
        let mut run = Run {
            learning,
            findings: Vec::new(),
            dropped: HashMap::new(),
            renamed_away: HashMap::new(),
            line: 0,
        };
        for (start, text) in ferry_migrate::sql::split_statements_for(script, self.engine) {
            run.line = statement_line(start, &text);
            match parse(self.engine, dialect.as_ref(), &text) {
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
        run.findings
    }

    /// `ALTER TABLE t RENAME TO t_old; CREATE TABLE t …; INSERT …; DROP TABLE t_old;` replaces t
    /// in place: report what changed in t's columns, not a rename and a drop.
    fn rebuilds_by_rename(&mut self, run: &mut Run) {
        let mut renamed: Vec<(String, (String, String, Table))> =
            run.renamed_away.drain().collect();
        renamed.sort_by(|a, b| a.0.cmp(&b.0));
        for (moved, (orig, orig_display, before)) in renamed {
            if !run.dropped.contains_key(&moved) || !self.schema.is_new(&orig) {
                continue;
            }
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

    fn statement(&mut self, stmt: &Statement, run: &mut Run) {
        match stmt {
            Statement::CreateTable(ct) => {
                let mut table = Table {
                    new: !run.learning,
                    ..Table::default()
                };
                for c in &ct.columns {
                    table
                        .columns
                        .insert(c.name.value.to_ascii_lowercase(), column_from_def(c));
                }
                self.schema.tables.insert(key(&ct.name), table);
            }
            Statement::CreateIndex(ci) => {
                let t = key(&ci.table_name);
                if self.schema.is_new(&t) {
                    return;
                }
                let obj = ci
                    .name
                    .as_ref()
                    .map(display)
                    .unwrap_or_else(|| display(&ci.table_name));
                if ci.unique {
                    run.emit(
                        Rule::UniqueIndex,
                        obj.clone(),
                        format!(
                            "unique index {obj} on {}: inserts and updates of the previous version that write duplicates start failing (and the build fails if duplicates exist)",
                            display(&ci.table_name)
                        ),
                    );
                }
                if self.engine == Engine::Postgres && !ci.concurrently {
                    run.emit(
                        Rule::NonConcurrentIndex,
                        obj.clone(),
                        format!(
                            "CREATE INDEX {obj} without CONCURRENTLY blocks writes to {} while the index builds",
                            display(&ci.table_name)
                        ),
                    );
                }
            }
            Statement::AlterTable(at) => self.alter_table(&at.name, &at.operations, run),
            Statement::AlterType(at) => {
                if let AlterTypeOperation::RenameValue(rv) = &at.operation {
                    let obj = format!("{}.{}", display(&at.name), rv.from.value);
                    run.emit(
                        Rule::RenameEnumValue,
                        obj,
                        format!(
                            "enum value '{}' of {} renamed to '{}': the previous version still writes and compares the old value",
                            rv.from.value,
                            display(&at.name),
                            rv.to.value
                        ),
                    );
                }
            }
            Statement::Drop {
                object_type, names, ..
            } => {
                for name in names {
                    let k = key(name);
                    let obj = display(name);
                    let (rule, what) = match object_type {
                        ObjectType::Table => {
                            if let Some(t) = self.schema.tables.remove(&k) {
                                let new = t.new;
                                run.dropped.insert(k.clone(), t);
                                if new {
                                    continue;
                                }
                            }
                            (Rule::DropTable, "table")
                        }
                        ObjectType::View | ObjectType::MaterializedView => (Rule::DropView, "view"),
                        ObjectType::Type => (Rule::DropType, "type"),
                        ObjectType::Sequence => (Rule::DropSequence, "sequence"),
                        _ => continue,
                    };
                    run.emit(
                        rule,
                        obj.clone(),
                        format!(
                            "{what} {obj} is dropped: the previous version still uses it{}",
                            if rule == Rule::DropTable {
                                ", and its rows are lost"
                            } else {
                                ""
                            }
                        ),
                    );
                }
            }
            Statement::DropFunction(df) => {
                for f in &df.func_desc {
                    let obj = display(&f.name);
                    run.emit(
                        Rule::DropFunction,
                        obj.clone(),
                        format!(
                            "function {obj} is dropped: the previous version may still call it"
                        ),
                    );
                }
            }
            Statement::DropProcedure { proc_desc, .. } => {
                for f in proc_desc {
                    let obj = display(&f.name);
                    run.emit(
                        Rule::DropFunction,
                        obj.clone(),
                        format!(
                            "procedure {obj} is dropped: the previous version may still call it"
                        ),
                    );
                }
            }
            Statement::RenameTable(renames) => {
                for r in renames {
                    self.rename_table(&r.old_name, &r.new_name, run);
                }
            }
            Statement::Truncate(t) => {
                for target in &t.table_names {
                    let k = key(&target.name);
                    if self.schema.is_new(&k) {
                        continue;
                    }
                    let obj = display(&target.name);
                    run.emit(
                        Rule::Truncate,
                        obj.clone(),
                        format!("TRUNCATE {obj} deletes every row"),
                    );
                }
            }
            Statement::Delete(d) if d.selection.is_none() => {
                let from = match &d.from {
                    FromTable::WithFromKeyword(v) | FromTable::WithoutKeyword(v) => v,
                };
                for name in from.iter().filter_map(relation_name) {
                    if self.schema.is_new(&key(name)) {
                        continue;
                    }
                    let obj = display(name);
                    run.emit(
                        Rule::DeleteWithoutWhere,
                        obj.clone(),
                        format!("DELETE without WHERE removes every row of {obj}"),
                    );
                }
            }
            Statement::Update(u) if u.selection.is_none() => {
                if let Some(name) = relation_name(&u.table) {
                    if self.schema.is_new(&key(name)) {
                        return;
                    }
                    let obj = display(name);
                    let cols: Vec<String> = u
                        .assignments
                        .iter()
                        .map(|a| unquote(&a.target.to_string()))
                        .collect();
                    run.emit(
                        Rule::UpdateWithoutWhere,
                        obj.clone(),
                        format!(
                            "UPDATE without WHERE overwrites {} in every row of {obj}",
                            cols.join(", ")
                        ),
                    );
                }
            }
            _ => {}
        }
    }

    fn rename_table(&mut self, old: &ObjectName, new: &ObjectName, run: &mut Run) {
        let (ok, nk) = (key(old), key(new));
        let table = self.schema.tables.remove(&ok);
        let was_new = table.as_ref().is_some_and(|t| t.new);
        if let Some(mut t) = table {
            if let Some(before) = run.dropped.remove(&nk) {
                // SQLite's rebuild: the new table takes the dropped one's place. Not a drop and
                // not a rename; what changed is the difference between the two column sets.
                run.findings.retain(|f| {
                    !(f.rule == Rule::DropTable && f.object.eq_ignore_ascii_case(&display(new)))
                });
                t.new = before.new;
                if !before.new {
                    self.diff_rebuild(&display(new), &before, &t, run);
                }
            }
            self.schema.tables.insert(nk, t);
        }
        if was_new {
            return;
        }
        if let Some(t) = self.schema.tables.get(&key(new)) {
            run.renamed_away
                .insert(key(new), (ok.clone(), display(old), t.clone()));
        }
        run.emit(
            Rule::RenameTable,
            display(old),
            format!(
                "table {} is renamed to {}: the previous version still uses the old name",
                display(old),
                display(new)
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

    fn alter_table(&mut self, name: &ObjectName, ops: &[AlterTableOperation], run: &mut Run) {
        let t = key(name);
        let tn = display(name);
        let is_new = self.schema.is_new(&t);
        // New tables: keep the model current, report nothing (the previous version cannot use it).
        let was_learning = run.learning;
        run.learning |= is_new;
        let online = ops.iter().any(|o| {
            matches!(
                o,
                AlterTableOperation::Algorithm {
                    algorithm: AlterTableAlgorithm::Instant | AlterTableAlgorithm::Inplace,
                    ..
                }
            )
        });
        let mut copies: Vec<String> = Vec::new();
        for op in ops {
            match op {
                AlterTableOperation::AddColumn { column_def, .. } => {
                    let c = column_from_def(column_def);
                    let cn = column_def.name.value.to_ascii_lowercase();
                    let obj = format!("{tn}.{}", column_def.name.value);
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
                        table.columns.insert(cn, c);
                    }
                }
                AlterTableOperation::DropColumn { column_names, .. } => {
                    for c in column_names {
                        let obj = format!("{tn}.{}", c.value);
                        run.emit(
                            Rule::DropColumn,
                            obj.clone(),
                            format!("column {obj} is dropped: the previous version still reads or writes it, and its values are lost"),
                        );
                        if let Some(table) = self.schema.table_mut(&t) {
                            table.columns.remove(&c.value.to_ascii_lowercase());
                        }
                    }
                }
                AlterTableOperation::RenameColumn {
                    old_column_name,
                    new_column_name,
                } => {
                    self.rename_column(
                        &t,
                        &tn,
                        &old_column_name.value,
                        &new_column_name.value,
                        run,
                    );
                }
                AlterTableOperation::RenameTable { table_name } => {
                    let new = match table_name {
                        RenameTableNameKind::As(n) | RenameTableNameKind::To(n) => n,
                    };
                    run.learning = was_learning;
                    self.rename_table(name, new, run);
                    run.learning |= is_new;
                }
                AlterTableOperation::ChangeColumn {
                    old_name,
                    new_name,
                    data_type,
                    options,
                    ..
                } => {
                    if !old_name.value.eq_ignore_ascii_case(&new_name.value) {
                        self.rename_column(&t, &tn, &old_name.value, &new_name.value, run);
                    }
                    self.modify_column(
                        &t,
                        &tn,
                        &new_name.value,
                        &data_type.to_string(),
                        options,
                        &mut copies,
                        run,
                    );
                }
                AlterTableOperation::ModifyColumn {
                    col_name,
                    data_type,
                    options,
                    ..
                } => {
                    self.modify_column(
                        &t,
                        &tn,
                        &col_name.value,
                        &data_type.to_string(),
                        options,
                        &mut copies,
                        run,
                    );
                }
                AlterTableOperation::AlterColumn { column_name, op } => {
                    let cn = column_name.value.to_ascii_lowercase();
                    let obj = format!("{tn}.{}", column_name.value);
                    match op {
                        AlterColumnOperation::SetNotNull => {
                            let already = self.schema.column(&t, &cn).is_some_and(|c| c.not_null);
                            if !already {
                                run.emit(
                                    Rule::SetNotNull,
                                    obj.clone(),
                                    format!("{obj} becomes NOT NULL: inserts and updates of the previous version that leave it NULL fail (and PostgreSQL scans the table under an ACCESS EXCLUSIVE lock)"),
                                );
                            }
                            if let Some(c) = self
                                .schema
                                .table_mut(&t)
                                .and_then(|x| x.columns.get_mut(&cn))
                            {
                                c.not_null = true;
                            }
                        }
                        AlterColumnOperation::DropNotNull => {
                            if let Some(c) = self
                                .schema
                                .table_mut(&t)
                                .and_then(|x| x.columns.get_mut(&cn))
                            {
                                c.not_null = false;
                            }
                        }
                        AlterColumnOperation::SetDefault { value } => {
                            if let Some(c) = self
                                .schema
                                .table_mut(&t)
                                .and_then(|x| x.columns.get_mut(&cn))
                            {
                                c.default = Some(value.to_string());
                            }
                        }
                        AlterColumnOperation::DropDefault => {
                            run.emit(
                                Rule::DropDefault,
                                obj.clone(),
                                format!("the default of {obj} is dropped: inserts of the previous version that omit the column now write NULL or fail"),
                            );
                            if let Some(c) = self
                                .schema
                                .table_mut(&t)
                                .and_then(|x| x.columns.get_mut(&cn))
                            {
                                c.default = None;
                            }
                        }
                        AlterColumnOperation::SetDataType { data_type, .. } => {
                            self.type_change(
                                &t,
                                &tn,
                                &column_name.value,
                                &data_type.to_string(),
                                &mut copies,
                                run,
                            );
                        }
                        _ => {}
                    }
                }
                AlterTableOperation::AddConstraint {
                    constraint,
                    not_valid,
                } => self.add_constraint(&tn, constraint, *not_valid, &mut copies, run),
                AlterTableOperation::DropPrimaryKey { .. } => {
                    copies.push("DROP PRIMARY KEY".into());
                }
                _ => {}
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
    #[allow(clippy::too_many_arguments)]
    fn modify_column(
        &mut self,
        t: &str,
        tn: &str,
        column: &str,
        data_type: &str,
        options: &[ColumnOption],
        copies: &mut Vec<String>,
        run: &mut Run,
    ) {
        let cn = column.to_ascii_lowercase();
        let obj = format!("{tn}.{column}");
        let new = column_from_parts(data_type, options);
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
            table.columns.insert(cn, new);
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
        if let Some(c) = self
            .schema
            .table_mut(t)
            .and_then(|x| x.columns.get_mut(&cn))
        {
            c.data_type = data_type.to_ascii_lowercase();
        }
    }

    fn add_constraint(
        &mut self,
        tn: &str,
        constraint: &TableConstraint,
        not_valid: bool,
        copies: &mut Vec<String>,
        run: &mut Run,
    ) {
        let pg = self.engine == Engine::Postgres;
        let named = |n: &Option<sqlparser::ast::Ident>, cols: String| match n {
            Some(n) => format!("{tn}.{}", n.value),
            None => format!("{tn}({cols})"),
        };
        let list = |v: Vec<String>| v.join(", ");
        match constraint {
            TableConstraint::Unique(u) => {
                let obj = named(
                    &u.name.clone().or_else(|| u.index_name.clone()),
                    list(u.columns.iter().map(|c| unquote(&c.to_string())).collect()),
                );
                run.emit(
                    Rule::AddUniqueConstraint,
                    obj.clone(),
                    format!("unique constraint {obj}: writes of the previous version that duplicate a value start failing"),
                );
            }
            TableConstraint::PrimaryKey(p) => {
                let obj = named(
                    &p.name,
                    list(p.columns.iter().map(|c| unquote(&c.to_string())).collect()),
                );
                run.emit(
                    Rule::AddPrimaryKey,
                    obj.clone(),
                    format!("primary key {obj}: writes of the previous version with duplicate or NULL keys start failing"),
                );
                copies.push("ADD PRIMARY KEY".into());
            }
            TableConstraint::ForeignKey(fk) => {
                let obj = named(
                    &fk.name,
                    list(fk.columns.iter().map(|c| c.value.clone()).collect()),
                );
                run.emit(
                    Rule::AddForeignKey,
                    obj.clone(),
                    format!(
                        "foreign key {obj} → {}: writes of the previous version with a missing reference start failing",
                        display(&fk.foreign_table)
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
            TableConstraint::Check(c) => {
                let obj = named(&c.name, c.expr.to_string());
                run.emit(
                    Rule::AddCheckConstraint,
                    obj.clone(),
                    format!("check constraint {obj} ({}): writes of the previous version that violate it start failing", c.expr),
                );
                if pg && !not_valid {
                    run.emit(
                        Rule::ConstraintWithoutNotValid,
                        obj.clone(),
                        format!("check constraint {obj} without NOT VALID scans every row under an ACCESS EXCLUSIVE lock on {tn}"),
                    );
                }
            }
            _ => {}
        }
    }
}
