//! PostgreSQL statements read with PostgreSQL's own grammar (libpg_query, through the
//! `pg_query` crate), so every statement the server accepts parses. The bodies of DO blocks are
//! read with libpg_query's PL/pgSQL parser and the SQL statements in them are lowered too: a DO
//! block runs in the migration, so its DDL is judged like any other. A function's body runs only
//! when the function is called, so it is not judged as part of the migration.

use pg_query::NodeEnum;
use pg_query::protobuf::{
    AlterTableType, ColumnDef, ConstrType, DropBehavior, ObjectType, SetOperation, TypeName,
};
use pg_query::protobuf::{Node, RangeVar, SelectStmt};

use crate::ddl::{AlterOp, ColumnSpec, Constraint, From, Name, Query, Stmt, Target, TypeShape};
use crate::model::Column;

/// Parses one statement (or several) and lowers each to what the rules read.
pub fn parse(text: &str) -> Result<Vec<Stmt>, String> {
    let parsed = pg_query::parse(text, 0).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for raw in &parsed.protobuf.stmts {
        let Some(node) = raw.stmt.as_deref().and_then(|n| n.node.as_ref()) else {
            continue;
        };
        let start = usize::try_from(raw.stmt_location).unwrap_or(0);
        let len = usize::try_from(raw.stmt_len).unwrap_or(0);
        let own = match len {
            0 => text.get(start..),
            n => text.get(start..start + n),
        }
        .unwrap_or(text);
        lower(node, own, &mut out);
    }
    Ok(out)
}

fn lower(node: &NodeEnum, text: &str, out: &mut Vec<Stmt>) {
    let stmt = match node {
        NodeEnum::CreateStmt(c) => Stmt::CreateTable {
            name: range_var(c.relation.as_ref()),
            columns: c
                .table_elts
                .iter()
                .filter_map(|e| match e.node.as_ref() {
                    Some(NodeEnum::ColumnDef(cd)) => Some(column_def(cd)),
                    _ => None,
                })
                .collect(),
        },
        NodeEnum::IndexStmt(i) => Stmt::CreateIndex {
            name: (!i.idxname.is_empty()).then(|| Name(i.idxname.clone())),
            table: range_var(i.relation.as_ref()),
            unique: i.unique,
            concurrently: i.concurrent,
        },
        NodeEnum::AlterTableStmt(a) => {
            let kind = ObjectType::try_from(a.objtype).unwrap_or(ObjectType::Undefined);
            if kind != ObjectType::ObjectTable {
                return out.push(Stmt::Other);
            }
            Stmt::AlterTable {
                name: range_var(a.relation.as_ref()),
                ops: a
                    .cmds
                    .iter()
                    .filter_map(|c| match c.node.as_ref() {
                        Some(NodeEnum::AlterTableCmd(cmd)) => alter_op(cmd),
                        _ => None,
                    })
                    .collect(),
                online: false,
            }
        }
        NodeEnum::RenameStmt(r) => rename(r),
        NodeEnum::AlterEnumStmt(e) if !e.old_val.is_empty() => Stmt::RenameEnumValue {
            type_name: Name(names(&e.type_name).join(".")),
            from: e.old_val.clone(),
            to: e.new_val.clone(),
        },
        NodeEnum::DropStmt(d) => drop(d),
        NodeEnum::ViewStmt(v) => Stmt::CreateView {
            name: range_var(v.view.as_ref()),
            aliases: names(&v.aliases),
            query: v.query.as_deref().and_then(select).map(query),
            materialized: false,
        },
        NodeEnum::CreateTableAsStmt(c)
            if ObjectType::try_from(c.objtype) == Ok(ObjectType::ObjectMatview) =>
        {
            let into = c.into.as_deref();
            Stmt::CreateView {
                name: range_var(into.and_then(|i| i.rel.as_ref())),
                aliases: into.map(|i| names(&i.col_names)).unwrap_or_default(),
                query: c.query.as_deref().and_then(select).map(query),
                materialized: true,
            }
        }
        // CREATE TABLE … AS: a table of this migration (its columns come from the query).
        NodeEnum::CreateTableAsStmt(c)
            if ObjectType::try_from(c.objtype) == Ok(ObjectType::ObjectTable) =>
        {
            Stmt::CreateTable {
                name: range_var(c.into.as_deref().and_then(|i| i.rel.as_ref())),
                columns: Vec::new(),
            }
        }
        NodeEnum::CreateFunctionStmt(f) => {
            let args = f
                .parameters
                .iter()
                .filter_map(|p| match p.node.as_ref() {
                    Some(NodeEnum::FunctionParameter(p)) => Some(p),
                    _ => None,
                })
                // The identity of a function is its IN, INOUT and VARIADIC arguments.
                .filter(|p| !matches!(p.mode, 2 | 5))
                .map(|p| p.arg_type.as_ref().map(type_name).unwrap_or_default())
                .collect();
            let returns = f.return_type.as_ref().map(type_name).or_else(|| {
                // RETURNS TABLE (…) / OUT parameters: the row they describe.
                let outs: Vec<String> = f
                    .parameters
                    .iter()
                    .filter_map(|p| match p.node.as_ref() {
                        Some(NodeEnum::FunctionParameter(p)) if matches!(p.mode, 2 | 3 | 5) => {
                            Some(format!(
                                "{} {}",
                                p.name,
                                p.arg_type.as_ref().map(type_name).unwrap_or_default()
                            ))
                        }
                        _ => None,
                    })
                    .collect();
                (!outs.is_empty()).then(|| format!("record({})", outs.join(", ")))
            });
            Stmt::CreateFunction {
                name: Name(names(&f.funcname).join(".")),
                args,
                returns,
            }
        }
        NodeEnum::CreateTrigStmt(t) => Stmt::CreateTrigger {
            name: t.trigname.clone(),
            table: range_var(t.relation.as_ref()),
        },
        NodeEnum::CreateEnumStmt(e) => Stmt::CreateType {
            name: Name(names(&e.type_name).join(".")),
            shape: TypeShape::Enum(names(&e.vals)),
        },
        NodeEnum::CompositeTypeStmt(c) => Stmt::CreateType {
            name: range_var(c.typevar.as_ref()),
            shape: TypeShape::Composite(
                c.coldeflist
                    .iter()
                    .filter_map(|e| match e.node.as_ref() {
                        Some(NodeEnum::ColumnDef(cd)) => Some((
                            cd.colname.to_ascii_lowercase(),
                            cd.type_name.as_ref().map(type_name).unwrap_or_default(),
                        )),
                        _ => None,
                    })
                    .collect(),
            ),
        },
        NodeEnum::CreateDomainStmt(d) => {
            let (mut not_null, mut checks) = (false, Vec::new());
            for c in &d.constraints {
                let Some(NodeEnum::Constraint(c)) = c.node.as_ref() else {
                    continue;
                };
                match constr_type(c) {
                    ConstrType::ConstrNotnull => not_null = true,
                    ConstrType::ConstrCheck => {
                        checks.push(c.raw_expr.as_deref().map(expr_text).unwrap_or_default())
                    }
                    _ => {}
                }
            }
            Stmt::CreateType {
                name: Name(names(&d.domainname).join(".")),
                shape: TypeShape::Domain {
                    base: d.type_name.as_ref().map(type_name).unwrap_or_default(),
                    not_null,
                    checks,
                },
            }
        }
        NodeEnum::CreateRangeStmt(r) => Stmt::CreateType {
            name: Name(names(&r.type_name).join(".")),
            shape: TypeShape::Other,
        },
        NodeEnum::TruncateStmt(t) => Stmt::Truncate {
            tables: t.relations.iter().filter_map(node_range_var).collect(),
        },
        NodeEnum::DeleteStmt(d) if d.where_clause.is_none() => Stmt::DeleteAll {
            tables: vec![range_var(d.relation.as_ref())],
        },
        NodeEnum::UpdateStmt(u) if u.where_clause.is_none() => Stmt::UpdateAll {
            table: range_var(u.relation.as_ref()),
            columns: u
                .target_list
                .iter()
                .filter_map(|t| match t.node.as_ref() {
                    Some(NodeEnum::ResTarget(r)) => Some(r.name.clone()),
                    _ => None,
                })
                .collect(),
        },
        NodeEnum::DoStmt(d) => return do_block(d, text, out),
        _ => Stmt::Other,
    };
    out.push(stmt);
}

/// The SQL statements of a DO block's body, lowered in order.
fn do_block(d: &pg_query::protobuf::DoStmt, text: &str, out: &mut Vec<Stmt>) {
    let language = d.args.iter().find_map(|a| match a.node.as_ref() {
        Some(NodeEnum::DefElem(e)) if e.defname == "language" => e
            .arg
            .as_deref()
            .and_then(string)
            .map(str::to_ascii_lowercase),
        _ => None,
    });
    if language.as_deref().is_some_and(|l| l != "plpgsql") {
        out.push(Stmt::BodyUnread {
            what: format!("the DO block (LANGUAGE {})", language.unwrap_or_default()),
            error: "ferry reads only PL/pgSQL bodies".into(),
        });
        return;
    }
    let json = match pg_query::parse_plpgsql(text) {
        Ok(json) => json,
        Err(e) => {
            out.push(Stmt::BodyUnread {
                what: "the DO block's body".into(),
                error: e.to_string(),
            });
            return;
        }
    };
    let mut queries = Vec::new();
    plpgsql_statements(&json, &mut queries);
    for q in queries {
        match pg_query::parse(&q, 0) {
            Ok(parsed) => {
                for raw in &parsed.protobuf.stmts {
                    if let Some(node) = raw.stmt.as_deref().and_then(|n| n.node.as_ref()) {
                        lower(node, &q, out);
                    }
                }
            }
            Err(e) => out.push(Stmt::BodyUnread {
                what: format!(
                    "a statement in the DO block ({})",
                    q.chars().take(60).collect::<String>()
                ),
                error: e.to_string(),
            }),
        }
    }
}

/// The SQL a PL/pgSQL body runs, in order: each plain SQL statement, and each `EXECUTE` of a
/// string constant (an `EXECUTE` of a built string cannot be known before it runs).
fn plpgsql_statements(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Array(items) => {
            for i in items {
                plpgsql_statements(i, out);
            }
        }
        serde_json::Value::Object(map) => {
            if let Some(exec) = map.get("PLpgSQL_stmt_execsql") {
                if let Some(q) = exec.pointer("/sqlstmt/PLpgSQL_expr/query") {
                    out.extend(q.as_str().map(str::to_string));
                }
                return;
            }
            if let Some(exec) = map.get("PLpgSQL_stmt_dynexecute") {
                if let Some(q) = exec.pointer("/query/PLpgSQL_expr/query") {
                    out.extend(q.as_str().and_then(string_constant));
                }
                return;
            }
            for value in map.values() {
                plpgsql_statements(value, out);
            }
        }
        _ => {}
    }
}

/// `'ALTER TABLE …'` → `ALTER TABLE …`; anything but one string constant → `None`.
fn string_constant(expr: &str) -> Option<String> {
    let e = expr.trim();
    let inner = e.strip_prefix('\'')?.strip_suffix('\'')?;
    // A quote inside must be doubled; a lone one means the constant ended (concatenation).
    let mut chars = inner.chars().peekable();
    let mut out = String::new();
    while let Some(c) = chars.next() {
        if c == '\'' && chars.next() != Some('\'') {
            return None;
        }
        out.push(c);
    }
    Some(out)
}

fn string(node: &Node) -> Option<&str> {
    match node.node.as_ref()? {
        NodeEnum::String(s) => Some(&s.sval),
        _ => None,
    }
}

fn names(list: &[Node]) -> Vec<String> {
    list.iter().filter_map(string).map(str::to_string).collect()
}

fn range_var(rv: Option<&RangeVar>) -> Name {
    match rv {
        Some(rv) if !rv.schemaname.is_empty() => Name(format!("{}.{}", rv.schemaname, rv.relname)),
        Some(rv) => Name(rv.relname.clone()),
        None => Name(String::new()),
    }
}

fn node_range_var(node: &Node) -> Option<Name> {
    match node.node.as_ref()? {
        NodeEnum::RangeVar(rv) => Some(range_var(Some(rv))),
        _ => None,
    }
}

/// A type as text the way `types.rs` reads it: `varchar(50)`, `int4`, `numeric(10,2)`,
/// `text[]`, without the `pg_catalog.` PostgreSQL's grammar puts before built-in types.
pub(crate) fn type_name(t: &TypeName) -> String {
    let parts = names(&t.names);
    let parts: Vec<&str> = parts
        .iter()
        .map(String::as_str)
        .filter(|p| *p != "pg_catalog")
        .collect();
    let mut out = parts.join(".");
    let mods: Vec<String> = t
        .typmods
        .iter()
        .filter_map(|m| match m.node.as_ref()? {
            NodeEnum::AConst(c) => match c.val.as_ref()? {
                pg_query::protobuf::a_const::Val::Ival(i) => Some(i.ival.to_string()),
                pg_query::protobuf::a_const::Val::Sval(s) => Some(s.sval.clone()),
                pg_query::protobuf::a_const::Val::Fval(f) => Some(f.fval.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    if !mods.is_empty() {
        out.push_str(&format!("({})", mods.join(",")));
    }
    for _ in &t.array_bounds {
        out.push_str("[]");
    }
    out
}

/// An expression as SQL text (PostgreSQL's deparser prints statements, so it is wrapped in one).
fn expr_text(node: &Node) -> String {
    let select = SelectStmt {
        target_list: vec![Node {
            node: Some(NodeEnum::ResTarget(Box::new(
                pg_query::protobuf::ResTarget {
                    val: Some(Box::new(node.clone())),
                    ..Default::default()
                },
            ))),
        }],
        limit_option: 1,
        op: SetOperation::SetopNone as i32,
        ..Default::default()
    };
    NodeEnum::SelectStmt(Box::new(select))
        .deparse(Default::default())
        .ok()
        .and_then(|s| s.strip_prefix("SELECT ").map(str::to_string))
        .unwrap_or_default()
}

fn constr_type(c: &pg_query::protobuf::Constraint) -> ConstrType {
    ConstrType::try_from(c.contype).unwrap_or(ConstrType::Undefined)
}

fn column_def(cd: &ColumnDef) -> ColumnSpec {
    let data_type = cd.type_name.as_ref().map(type_name).unwrap_or_default();
    let mut not_null = cd.is_not_null;
    let mut default = cd.raw_default.as_deref().map(expr_text);
    for c in &cd.constraints {
        let Some(NodeEnum::Constraint(c)) = c.node.as_ref() else {
            continue;
        };
        match constr_type(c) {
            ConstrType::ConstrNotnull | ConstrType::ConstrPrimary => not_null = true,
            ConstrType::ConstrDefault => {
                default = Some(c.raw_expr.as_deref().map(expr_text).unwrap_or_default());
            }
            ConstrType::ConstrIdentity => default = Some("identity".into()),
            ConstrType::ConstrGenerated => default = Some("generated".into()),
            _ => {}
        }
    }
    if !cd.identity.is_empty() {
        default = Some("identity".into());
    }
    if !cd.generated.is_empty() {
        default = Some("generated".into());
    }
    let lower = data_type.to_ascii_lowercase();
    if default.is_none() && lower.contains("serial") {
        default = Some("serial".into());
    }
    ColumnSpec {
        name: cd.colname.clone(),
        column: Column {
            data_type: lower,
            not_null,
            default,
        },
    }
}

fn key_names(list: &[Node]) -> Vec<String> {
    list.iter()
        .filter_map(|n| match n.node.as_ref()? {
            NodeEnum::String(s) => Some(s.sval.clone()),
            NodeEnum::IndexElem(e) => Some(e.name.clone()),
            _ => None,
        })
        .collect()
}

fn constraint(c: &pg_query::protobuf::Constraint) -> Option<Constraint> {
    let name = (!c.conname.is_empty()).then(|| c.conname.clone());
    Some(match constr_type(c) {
        ConstrType::ConstrUnique => Constraint::Unique {
            name,
            columns: key_names(&c.keys),
            using_index: !c.indexname.is_empty(),
        },
        ConstrType::ConstrPrimary if !c.indexname.is_empty() => Constraint::Unique {
            name,
            columns: Vec::new(),
            using_index: true,
        },
        ConstrType::ConstrPrimary => Constraint::PrimaryKey {
            name,
            columns: key_names(&c.keys),
        },
        ConstrType::ConstrForeign => Constraint::ForeignKey {
            name,
            columns: key_names(&c.fk_attrs),
            table: range_var(c.pktable.as_ref()),
        },
        ConstrType::ConstrCheck => Constraint::Check {
            name,
            expr: c.raw_expr.as_deref().map(expr_text).unwrap_or_default(),
        },
        _ => return None,
    })
}

fn alter_op(cmd: &pg_query::protobuf::AlterTableCmd) -> Option<AlterOp> {
    let col = || cmd.name.clone();
    let def = cmd.def.as_deref().and_then(|d| d.node.as_ref());
    Some(
        match AlterTableType::try_from(cmd.subtype).unwrap_or(AlterTableType::Undefined) {
            AlterTableType::AtAddColumn => match def? {
                NodeEnum::ColumnDef(cd) => AlterOp::AddColumn(column_def(cd)),
                _ => return None,
            },
            AlterTableType::AtDropColumn => AlterOp::DropColumn(col()),
            AlterTableType::AtSetNotNull => AlterOp::SetNotNull(col()),
            AlterTableType::AtDropNotNull => AlterOp::DropNotNull(col()),
            AlterTableType::AtColumnDefault => match cmd.def.as_deref() {
                Some(d) => AlterOp::SetDefault(col(), expr_text(d)),
                None => AlterOp::DropDefault(col()),
            },
            AlterTableType::AtAlterColumnType => match def? {
                NodeEnum::ColumnDef(cd) => AlterOp::SetType(
                    col(),
                    cd.type_name
                        .as_ref()
                        .map(type_name)
                        .unwrap_or_default()
                        .to_ascii_lowercase(),
                ),
                _ => return None,
            },
            AlterTableType::AtAddConstraint => match def? {
                NodeEnum::Constraint(c) => AlterOp::AddConstraint {
                    not_valid: c.skip_validation,
                    constraint: constraint(c)?,
                },
                _ => return None,
            },
            _ => return None,
        },
    )
}

fn rename(r: &pg_query::protobuf::RenameStmt) -> Stmt {
    let kind = ObjectType::try_from(r.rename_type).unwrap_or(ObjectType::Undefined);
    let relation = ObjectType::try_from(r.relation_type).unwrap_or(ObjectType::Undefined);
    match kind {
        ObjectType::ObjectTable => Stmt::RenameTable {
            old: range_var(r.relation.as_ref()),
            new: Name(r.newname.clone()),
        },
        ObjectType::ObjectColumn if relation == ObjectType::ObjectTable => Stmt::AlterTable {
            name: range_var(r.relation.as_ref()),
            ops: vec![AlterOp::RenameColumn {
                old: r.subname.clone(),
                new: r.newname.clone(),
            }],
            online: false,
        },
        _ => Stmt::Other,
    }
}

fn drop(d: &pg_query::protobuf::DropStmt) -> Stmt {
    let cascade = DropBehavior::try_from(d.behavior) == Ok(DropBehavior::DropCascade);
    // Each object is a list of name parts (tables, views, sequences), a TypeName (types), or an
    // ObjectWithArgs (functions).
    let object_names = || -> Vec<Name> {
        d.objects
            .iter()
            .filter_map(|o| match o.node.as_ref()? {
                NodeEnum::List(l) => Some(Name(names(&l.items).join("."))),
                NodeEnum::TypeName(t) => Some(Name(names(&t.names).join("."))),
                NodeEnum::String(s) => Some(Name(s.sval.clone())),
                _ => None,
            })
            .collect()
    };
    match ObjectType::try_from(d.remove_type).unwrap_or(ObjectType::Undefined) {
        ObjectType::ObjectTable => Stmt::DropTables {
            names: object_names(),
            cascade,
        },
        ObjectType::ObjectView => Stmt::DropViews {
            names: object_names(),
            cascade,
        },
        ObjectType::ObjectMatview => Stmt::DropViews {
            names: object_names(),
            cascade,
        },
        ObjectType::ObjectType | ObjectType::ObjectDomain => Stmt::DropTypes {
            names: object_names(),
            cascade,
        },
        ObjectType::ObjectSequence => Stmt::DropSequences {
            names: object_names(),
        },
        kind @ (ObjectType::ObjectFunction
        | ObjectType::ObjectProcedure
        | ObjectType::ObjectRoutine) => Stmt::DropFunctions {
            functions: d
                .objects
                .iter()
                .filter_map(|o| match o.node.as_ref()? {
                    NodeEnum::ObjectWithArgs(f) => Some((
                        Name(names(&f.objname).join(".")),
                        (!f.args_unspecified).then(|| {
                            f.objargs
                                .iter()
                                .filter_map(|a| match a.node.as_ref()? {
                                    NodeEnum::TypeName(t) => Some(type_name(t)),
                                    _ => None,
                                })
                                .collect()
                        }),
                    )),
                    _ => None,
                })
                .collect(),
            procedure: kind == ObjectType::ObjectProcedure,
        },
        ObjectType::ObjectTrigger => {
            // `DROP TRIGGER t ON tbl`: one list, the table's name parts then the trigger's.
            let mut parts = d
                .objects
                .first()
                .and_then(|o| match o.node.as_ref()? {
                    NodeEnum::List(l) => Some(names(&l.items)),
                    _ => None,
                })
                .unwrap_or_default();
            let name = parts.pop().unwrap_or_default();
            Stmt::DropTrigger {
                name,
                table: (!parts.is_empty()).then(|| Name(parts.join("."))),
            }
        }
        _ => Stmt::Other,
    }
}

fn select(node: &Node) -> Option<&SelectStmt> {
    match node.node.as_ref()? {
        NodeEnum::SelectStmt(s) => Some(s),
        _ => None,
    }
}

/// The name PostgreSQL gives an output column written without `AS` (its FigureColname): a
/// column's name, a function's, a cast's type or inner column, else `?column?`.
fn figure_name(node: &Node) -> String {
    match node.node.as_ref() {
        Some(NodeEnum::ColumnRef(c)) => c
            .fields
            .last()
            .and_then(string)
            .unwrap_or("?column?")
            .to_string(),
        Some(NodeEnum::FuncCall(f)) => f
            .funcname
            .last()
            .and_then(string)
            .unwrap_or("?column?")
            .to_string(),
        Some(NodeEnum::TypeCast(t)) => match t.arg.as_deref().map(figure_name) {
            Some(inner) if inner != "?column?" => inner,
            _ => t
                .type_name
                .as_ref()
                .and_then(|n| n.names.last())
                .and_then(string)
                .unwrap_or("?column?")
                .to_string(),
        },
        Some(NodeEnum::CaseExpr(_)) => "case".into(),
        Some(NodeEnum::CoalesceExpr(_)) => "coalesce".into(),
        _ => "?column?".into(),
    }
}

fn query(s: &SelectStmt) -> Query {
    let set_op = SetOperation::try_from(s.op).unwrap_or(SetOperation::Undefined);
    if matches!(
        set_op,
        SetOperation::SetopUnion | SetOperation::SetopIntersect | SetOperation::SetopExcept
    ) {
        // The output columns are the left side's.
        let mut q = s.larg.as_deref().map(query).unwrap_or(Query {
            targets: Vec::new(),
            from: vec![From::Opaque],
            simple: false,
        });
        q.simple = false;
        return q;
    }
    let mut simple = s.distinct_clause.is_empty()
        && s.group_clause.is_empty()
        && s.having_clause.is_none()
        && s.limit_count.is_none()
        && s.limit_offset.is_none()
        && s.with_clause.is_none()
        && s.window_clause.is_empty()
        && s.values_lists.is_empty()
        && s.from_clause.len() == 1;
    let mut targets = Vec::new();
    for t in &s.target_list {
        let Some(NodeEnum::ResTarget(r)) = t.node.as_ref() else {
            continue;
        };
        let Some(val) = r.val.as_deref() else {
            continue;
        };
        let alias = (!r.name.is_empty()).then(|| r.name.clone());
        let (inner, cast) = match val.node.as_ref() {
            Some(NodeEnum::TypeCast(c)) => (
                c.arg.as_deref().unwrap_or(val),
                c.type_name.as_ref().map(type_name),
            ),
            _ => (val, None),
        };
        match inner.node.as_ref() {
            Some(NodeEnum::ColumnRef(c)) => {
                let fields: Vec<Option<&str>> = c.fields.iter().map(string).collect();
                let star = matches!(
                    c.fields.last().and_then(|f| f.node.as_ref()),
                    Some(NodeEnum::AStar(_))
                );
                simple &= cast.is_none();
                if star {
                    let qualifier = (fields.len() > 1)
                        .then(|| fields[fields.len() - 2].map(str::to_string))
                        .flatten();
                    targets.push(Target::Star(qualifier));
                } else {
                    let column = fields.last().copied().flatten().unwrap_or("").to_string();
                    let qualifier = (fields.len() > 1)
                        .then(|| fields[fields.len() - 2].map(str::to_string))
                        .flatten();
                    targets.push(Target::Column {
                        name: alias.unwrap_or_else(|| figure_name(val)),
                        qualifier,
                        column,
                        cast,
                    });
                }
            }
            _ => {
                simple = false;
                targets.push(Target::Expr {
                    name: alias.unwrap_or_else(|| figure_name(val)),
                    cast,
                });
            }
        }
    }
    let from: Vec<From> = s.from_clause.iter().map(from_item).collect();
    simple &= matches!(from.as_slice(), [From::Relation { .. }]);
    Query {
        targets,
        from,
        simple,
    }
}

fn from_item(node: &Node) -> From {
    match node.node.as_ref() {
        Some(NodeEnum::RangeVar(rv)) => From::Relation {
            key: rv.relname.to_ascii_lowercase(),
            alias: rv
                .alias
                .as_ref()
                .map(|a| a.aliasname.clone())
                .unwrap_or_else(|| rv.relname.clone())
                .to_ascii_lowercase(),
        },
        Some(NodeEnum::RangeSubselect(r)) => match r.subquery.as_deref().and_then(select) {
            Some(s) => From::Subquery {
                query: Box::new(query(s)),
                alias: r.alias.as_ref().map(|a| a.aliasname.to_ascii_lowercase()),
            },
            None => From::Opaque,
        },
        Some(NodeEnum::JoinExpr(j)) => {
            // Both sides, flattened: a join's columns are its sides' columns.
            let sides: Vec<From> = [j.larg.as_deref(), j.rarg.as_deref()]
                .into_iter()
                .flatten()
                .map(from_item)
                .collect();
            match sides.len() {
                2 => From::Subquery {
                    query: Box::new(Query {
                        targets: vec![Target::Star(None)],
                        from: sides,
                        simple: false,
                    }),
                    alias: None,
                },
                _ => From::Opaque,
            }
        }
        _ => From::Opaque,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_read_as_the_type_comparison_expects() {
        let Ok(stmts) =
            parse("CREATE TABLE t (a varchar(50), b int, c numeric(10, 2), d text[], e bigserial)")
        else {
            panic!("parses");
        };
        let Stmt::CreateTable { columns, .. } = &stmts[0] else {
            panic!("{stmts:?}");
        };
        let types: Vec<&str> = columns
            .iter()
            .map(|c| c.column.data_type.as_str())
            .collect();
        assert_eq!(
            types,
            [
                "varchar(50)",
                "int4",
                "numeric(10,2)",
                "text[]",
                "bigserial"
            ]
        );
        assert_eq!(columns[4].column.default.as_deref(), Some("serial"));
    }

    #[test]
    fn a_do_block_yields_the_statements_it_runs() {
        let sql = "DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_tables WHERE tablename = 'x') THEN
                ALTER TABLE users DROP COLUMN age;
            END IF;
            EXECUTE 'ALTER TABLE users RENAME COLUMN name TO full_name';
            EXECUTE format('DROP TABLE %I', 'orders');
        END $$";
        let stmts = parse(sql).expect("parses");
        let ops: Vec<String> = stmts
            .iter()
            .map(|s| match s {
                Stmt::AlterTable { ops, .. } => format!("{:?}", ops[0]),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(ops.len(), 2, "{ops:?}");
        assert!(ops[0].starts_with("DropColumn(\"age\")"), "{ops:?}");
        assert!(ops[1].starts_with("RenameColumn"), "{ops:?}");
    }

    #[test]
    fn create_table_as_creates_a_table() {
        let stmts = parse("CREATE TABLE archive AS SELECT * FROM orders").expect("parses");
        assert!(
            matches!(&stmts[0], Stmt::CreateTable { name, .. } if name.key() == "archive"),
            "{stmts:?}"
        );
    }

    #[test]
    fn a_string_constant_is_unquoted_and_a_concatenation_is_not() {
        assert_eq!(string_constant("'it''s'").as_deref(), Some("it's"));
        assert_eq!(string_constant("'a' || b"), None);
        assert_eq!(string_constant("'a' || 'b'"), None);
    }

    #[test]
    fn defaults_and_check_expressions_are_printed() {
        let stmts = parse(
            "ALTER TABLE t ADD COLUMN token uuid DEFAULT gen_random_uuid(), \
             ADD CONSTRAINT c CHECK (total >= 0) NOT VALID",
        )
        .expect("parses");
        let Stmt::AlterTable { ops, .. } = &stmts[0] else {
            panic!("{stmts:?}");
        };
        let AlterOp::AddColumn(c) = &ops[0] else {
            panic!("{ops:?}");
        };
        assert_eq!(c.column.default.as_deref(), Some("gen_random_uuid()"));
        let AlterOp::AddConstraint {
            constraint: Constraint::Check { expr, .. },
            not_valid: true,
        } = &ops[1]
        else {
            panic!("{ops:?}");
        };
        assert_eq!(expr, "total >= 0");
    }
}
