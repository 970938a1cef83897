//! MySQL/MariaDB and SQLite statements read with sqlparser, lowered to what the rules read.

use sqlparser::ast::{
    AlterColumnOperation, AlterTableAlgorithm, AlterTableOperation, AlterTypeOperation, ColumnDef,
    ColumnOption, Expr, FromTable, ObjectName, ObjectType, Query as SqlQuery, RenameTableNameKind,
    SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Statement, TableConstraint, TableFactor,
    TableWithJoins,
};

use crate::ddl::{AlterOp, ColumnSpec, Constraint, From, Name, Query, Stmt, Target};
use crate::model::Column;

fn unquote(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '"' | '`' | '[' | ']'))
        .collect()
}

fn name(n: &ObjectName) -> Name {
    Name(unquote(&n.to_string()))
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

fn column_spec(def: &ColumnDef) -> ColumnSpec {
    let options: Vec<ColumnOption> = def.options.iter().map(|o| o.option.clone()).collect();
    ColumnSpec {
        name: def.name.value.clone(),
        column: column_from_parts(&def.data_type.to_string(), &options),
    }
}

pub fn lower(stmt: &Statement) -> Stmt {
    match stmt {
        Statement::CreateTable(ct) => Stmt::CreateTable {
            name: name(&ct.name),
            columns: ct.columns.iter().map(column_spec).collect(),
        },
        Statement::CreateIndex(ci) => Stmt::CreateIndex {
            name: ci.name.as_ref().map(name),
            table: name(&ci.table_name),
            unique: ci.unique,
            concurrently: ci.concurrently,
        },
        Statement::AlterTable(at) => Stmt::AlterTable {
            name: name(&at.name),
            ops: at.operations.iter().flat_map(alter_ops).collect(),
            online: at.operations.iter().any(|o| {
                matches!(
                    o,
                    AlterTableOperation::Algorithm {
                        algorithm: AlterTableAlgorithm::Instant | AlterTableAlgorithm::Inplace,
                        ..
                    }
                )
            }),
        },
        Statement::AlterType(at) => match &at.operation {
            AlterTypeOperation::RenameValue(rv) => Stmt::RenameEnumValue {
                type_name: name(&at.name),
                from: rv.from.value.clone(),
                to: rv.to.value.clone(),
            },
            _ => Stmt::Other,
        },
        Statement::Drop {
            object_type,
            names,
            cascade,
            ..
        } => {
            let names: Vec<Name> = names.iter().map(name).collect();
            match object_type {
                ObjectType::Table => Stmt::DropTables {
                    names,
                    cascade: *cascade,
                },
                ObjectType::View | ObjectType::MaterializedView => Stmt::DropViews {
                    names,
                    cascade: *cascade,
                },
                ObjectType::Type => Stmt::DropTypes {
                    names,
                    cascade: *cascade,
                },
                ObjectType::Sequence => Stmt::DropSequences { names },
                _ => Stmt::Other,
            }
        }
        Statement::DropFunction(df) => Stmt::DropFunctions {
            functions: df.func_desc.iter().map(|f| (name(&f.name), None)).collect(),
            procedure: false,
        },
        Statement::DropProcedure { proc_desc, .. } => Stmt::DropFunctions {
            functions: proc_desc.iter().map(|f| (name(&f.name), None)).collect(),
            procedure: true,
        },
        Statement::DropTrigger(t) => Stmt::DropTrigger {
            name: name(&t.trigger_name).key(),
            table: t.table_name.as_ref().map(name),
        },
        Statement::CreateTrigger(t) => Stmt::CreateTrigger {
            name: name(&t.name).key(),
            table: name(&t.table_name),
        },
        Statement::CreateView(v) => Stmt::CreateView {
            name: name(&v.name),
            aliases: v.columns.iter().map(|c| c.name.value.clone()).collect(),
            query: Some(query(&v.query)),
            materialized: v.materialized,
        },
        Statement::RenameTable(renames) => match renames.as_slice() {
            [r] => Stmt::RenameTable {
                old: name(&r.old_name),
                new: name(&r.new_name),
            },
            _ => Stmt::Other,
        },
        Statement::Truncate(t) => Stmt::Truncate {
            tables: t.table_names.iter().map(|t| name(&t.name)).collect(),
        },
        Statement::Delete(d) if d.selection.is_none() => {
            let from = match &d.from {
                FromTable::WithFromKeyword(v) | FromTable::WithoutKeyword(v) => v,
            };
            Stmt::DeleteAll {
                tables: from.iter().filter_map(relation_name).map(name).collect(),
            }
        }
        Statement::Update(u) if u.selection.is_none() => match relation_name(&u.table) {
            Some(table) => Stmt::UpdateAll {
                table: name(table),
                columns: u
                    .assignments
                    .iter()
                    .map(|a| unquote(&a.target.to_string()))
                    .collect(),
            },
            None => Stmt::Other,
        },
        _ => Stmt::Other,
    }
}

/// MySQL's `RENAME TABLE a TO b, c TO d` is several renames in one statement.
pub fn lower_all(stmt: &Statement) -> Vec<Stmt> {
    match stmt {
        Statement::RenameTable(renames) if renames.len() > 1 => renames
            .iter()
            .map(|r| Stmt::RenameTable {
                old: name(&r.old_name),
                new: name(&r.new_name),
            })
            .collect(),
        other => vec![lower(other)],
    }
}

fn alter_ops(op: &AlterTableOperation) -> Vec<AlterOp> {
    match op {
        AlterTableOperation::DropColumn { column_names, .. } => column_names
            .iter()
            .map(|c| AlterOp::DropColumn(c.value.clone()))
            .collect(),
        other => alter_op(other).into_iter().collect(),
    }
}

fn alter_op(op: &AlterTableOperation) -> Option<AlterOp> {
    Some(match op {
        AlterTableOperation::AddColumn { column_def, .. } => {
            AlterOp::AddColumn(column_spec(column_def))
        }
        AlterTableOperation::RenameColumn {
            old_column_name,
            new_column_name,
        } => AlterOp::RenameColumn {
            old: old_column_name.value.clone(),
            new: new_column_name.value.clone(),
        },
        AlterTableOperation::RenameTable { table_name } => {
            let new = match table_name {
                RenameTableNameKind::As(n) | RenameTableNameKind::To(n) => n,
            };
            AlterOp::RenameTable(name(new))
        }
        AlterTableOperation::ChangeColumn {
            old_name,
            new_name,
            data_type,
            options,
            ..
        } => AlterOp::Restate {
            old: old_name.value.clone(),
            spec: ColumnSpec {
                name: new_name.value.clone(),
                column: column_from_parts(&data_type.to_string(), options),
            },
            data_type: data_type.to_string(),
        },
        AlterTableOperation::ModifyColumn {
            col_name,
            data_type,
            options,
            ..
        } => AlterOp::Restate {
            old: col_name.value.clone(),
            spec: ColumnSpec {
                name: col_name.value.clone(),
                column: column_from_parts(&data_type.to_string(), options),
            },
            data_type: data_type.to_string(),
        },
        AlterTableOperation::AlterColumn { column_name, op } => {
            let c = column_name.value.clone();
            match op {
                AlterColumnOperation::SetNotNull => AlterOp::SetNotNull(c),
                AlterColumnOperation::DropNotNull => AlterOp::DropNotNull(c),
                AlterColumnOperation::SetDefault { value } => {
                    AlterOp::SetDefault(c, value.to_string())
                }
                AlterColumnOperation::DropDefault => AlterOp::DropDefault(c),
                AlterColumnOperation::SetDataType { data_type, .. } => {
                    AlterOp::SetType(c, data_type.to_string())
                }
                _ => return None,
            }
        }
        AlterTableOperation::AddConstraint {
            constraint,
            not_valid,
        } => AlterOp::AddConstraint {
            constraint: table_constraint(constraint)?,
            not_valid: *not_valid,
        },
        AlterTableOperation::DropPrimaryKey { .. } => AlterOp::DropPrimaryKey,
        _ => return None,
    })
}

fn table_constraint(c: &TableConstraint) -> Option<Constraint> {
    Some(match c {
        TableConstraint::Unique(u) => Constraint::Unique {
            name: u
                .name
                .clone()
                .or_else(|| u.index_name.clone())
                .map(|n| n.value),
            columns: u.columns.iter().map(|c| unquote(&c.to_string())).collect(),
            using_index: false,
        },
        TableConstraint::PrimaryKey(p) => Constraint::PrimaryKey {
            name: p.name.as_ref().map(|n| n.value.clone()),
            columns: p.columns.iter().map(|c| unquote(&c.to_string())).collect(),
        },
        TableConstraint::ForeignKey(fk) => Constraint::ForeignKey {
            name: fk.name.as_ref().map(|n| n.value.clone()),
            columns: fk.columns.iter().map(|c| c.value.clone()).collect(),
            table: name(&fk.foreign_table),
        },
        TableConstraint::Check(c) => Constraint::Check {
            name: c.name.as_ref().map(|n| n.value.clone()),
            expr: c.expr.to_string(),
        },
        _ => return None,
    })
}

fn query(q: &SqlQuery) -> Query {
    let opaque = || Query {
        targets: Vec::new(),
        from: vec![From::Opaque],
        simple: false,
    };
    let SetExpr::Select(s) = q.body.as_ref() else {
        return opaque();
    };
    let grouped = match &s.group_by {
        sqlparser::ast::GroupByExpr::All(_) => true,
        sqlparser::ast::GroupByExpr::Expressions(e, _) => !e.is_empty(),
    };
    let mut simple = q.with.is_none()
        && q.limit_clause.is_none()
        && s.distinct.is_none()
        && !grouped
        && s.having.is_none()
        && s.from.len() == 1
        && s.from.iter().all(|t| t.joins.is_empty());
    let mut targets = Vec::new();
    for item in &s.projection {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            SelectItem::Wildcard(_) => {
                targets.push(Target::Star(None));
                continue;
            }
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(n), _) => {
                targets.push(Target::Star(Some(name(n).key())));
                continue;
            }
            _ => {
                simple = false;
                continue;
            }
        };
        match expr {
            Expr::Identifier(i) => targets.push(Target::Column {
                name: alias.unwrap_or_else(|| i.value.clone()),
                qualifier: None,
                column: i.value.clone(),
                cast: None,
            }),
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let column = parts[parts.len() - 1].value.clone();
                targets.push(Target::Column {
                    name: alias.unwrap_or_else(|| column.clone()),
                    qualifier: Some(parts[parts.len() - 2].value.clone()),
                    column,
                    cast: None,
                });
            }
            other => {
                simple = false;
                targets.push(Target::Expr {
                    name: alias.unwrap_or_else(|| other.to_string()),
                    cast: None,
                });
            }
        }
    }
    let mut from = Vec::new();
    for t in &s.from {
        from.push(factor(&t.relation));
        for j in &t.joins {
            from.push(factor(&j.relation));
        }
    }
    Query {
        targets,
        from,
        simple,
    }
}

fn factor(f: &TableFactor) -> From {
    match f {
        TableFactor::Table { name: n, alias, .. } => From::Relation {
            key: name(n).key(),
            alias: alias
                .as_ref()
                .map(|a| a.name.value.to_ascii_lowercase())
                .unwrap_or_else(|| name(n).key()),
        },
        TableFactor::Derived {
            subquery, alias, ..
        } => From::Subquery {
            query: Box::new(query(subquery)),
            alias: alias.as_ref().map(|a| a.name.value.to_ascii_lowercase()),
        },
        _ => From::Opaque,
    }
}
