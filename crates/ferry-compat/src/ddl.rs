//! What the static layer's rules read: each statement of a migration reduced to the change
//! ferry judges, the same whichever parser read it (PostgreSQL's own grammar through pg_query,
//! sqlparser for MySQL/MariaDB and SQLite; see `parse/`). The rules in `analyze.rs` are written
//! once, over these types. A statement that changes nothing the rules look at is [`Stmt::Other`].

use crate::model::Column;

/// An object's name as written, without quotes (`public.users`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(pub String);

impl Name {
    pub fn display(&self) -> &str {
        &self.0
    }

    /// The model key: the last name part, lowercased.
    pub fn key(&self) -> String {
        self.0
            .rsplit('.')
            .next()
            .unwrap_or(&self.0)
            .to_ascii_lowercase()
    }
}

#[derive(Debug, Clone)]
pub struct ColumnSpec {
    pub name: String,
    pub column: Column,
}

#[derive(Debug, Clone)]
pub enum Constraint {
    /// `using_index`: `ADD CONSTRAINT … UNIQUE USING INDEX i`, whose index already enforces it.
    Unique {
        name: Option<String>,
        columns: Vec<String>,
        using_index: bool,
    },
    PrimaryKey {
        name: Option<String>,
        columns: Vec<String>,
    },
    ForeignKey {
        name: Option<String>,
        columns: Vec<String>,
        table: Name,
    },
    Check {
        name: Option<String>,
        expr: String,
    },
}

#[derive(Debug, Clone)]
pub enum AlterOp {
    AddColumn(ColumnSpec),
    DropColumn(String),
    RenameColumn {
        old: String,
        new: String,
    },
    RenameTable(Name),
    /// MySQL's `CHANGE old new …` and `MODIFY c …` (old = new): the whole column restated.
    Restate {
        old: String,
        spec: ColumnSpec,
        data_type: String,
    },
    SetNotNull(String),
    DropNotNull(String),
    SetDefault(String, String),
    DropDefault(String),
    SetType(String, String),
    AddConstraint {
        constraint: Constraint,
        not_valid: bool,
    },
    DropPrimaryKey,
}

/// What a recreated object must still provide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeShape {
    Enum(Vec<String>),
    /// Attribute name and type.
    Composite(Vec<(String, String)>),
    /// A domain: its base type and the constraints a value must meet (`NOT NULL`, each
    /// `CHECK` as PostgreSQL deparses it).
    Domain {
        base: String,
        not_null: bool,
        checks: Vec<String>,
    },
    /// A range, base or shell type: only its existence is compared.
    Other,
}

/// One output column of a view's query, before it is resolved against the schema model.
#[derive(Debug, Clone)]
pub enum Target {
    /// `*` or `t.*`.
    Star(Option<String>),
    /// A column reference: output name, the qualifier and column it reads, and the type it is
    /// cast to, if any.
    Column {
        name: String,
        qualifier: Option<String>,
        column: String,
        cast: Option<String>,
    },
    /// Anything else: the output name PostgreSQL gives it, and its type when written as a cast.
    Expr { name: String, cast: Option<String> },
}

#[derive(Debug, Clone)]
pub enum From {
    /// A table or view, by model key, with the name the query refers to it by.
    Relation { key: String, alias: String },
    Subquery {
        query: Box<Query>,
        alias: Option<String>,
    },
    /// Something ferry does not follow (a function call, VALUES, …).
    Opaque,
}

/// A view's query, as far as the rules need it.
#[derive(Debug, Clone)]
pub struct Query {
    pub targets: Vec<Target>,
    pub from: Vec<From>,
    /// One relation, and none of what makes PostgreSQL refuse to update through a view
    /// (DISTINCT, GROUP BY, HAVING, LIMIT, OFFSET, WITH, set operations, window functions, or
    /// an output column that is not a plain column).
    pub simple: bool,
}

#[derive(Debug, Clone)]
pub enum Stmt {
    CreateTable {
        name: Name,
        columns: Vec<ColumnSpec>,
    },
    CreateIndex {
        name: Option<Name>,
        table: Name,
        unique: bool,
        concurrently: bool,
    },
    AlterTable {
        name: Name,
        ops: Vec<AlterOp>,
        /// MySQL's `ALGORITHM=INPLACE|INSTANT`.
        online: bool,
    },
    RenameTable {
        old: Name,
        new: Name,
    },
    RenameEnumValue {
        type_name: Name,
        from: String,
        to: String,
    },
    DropTables {
        names: Vec<Name>,
        cascade: bool,
    },
    DropViews {
        names: Vec<Name>,
        cascade: bool,
    },
    DropTypes {
        names: Vec<Name>,
        cascade: bool,
    },
    DropSequences {
        names: Vec<Name>,
    },
    /// Each function with its argument types when written (`DROP FUNCTION f(bigint)`).
    DropFunctions {
        functions: Vec<(Name, Option<Vec<String>>)>,
        procedure: bool,
    },
    DropTrigger {
        name: String,
        table: Option<Name>,
    },
    CreateView {
        name: Name,
        /// `CREATE VIEW v (a, b) AS …`: the column names, overriding the query's.
        aliases: Vec<String>,
        query: Option<Query>,
        materialized: bool,
    },
    CreateFunction {
        name: Name,
        args: Vec<String>,
        returns: Option<String>,
    },
    CreateTrigger {
        name: String,
        table: Name,
    },
    CreateType {
        name: Name,
        shape: TypeShape,
    },
    Truncate {
        tables: Vec<Name>,
    },
    DeleteAll {
        tables: Vec<Name>,
    },
    UpdateAll {
        table: Name,
        columns: Vec<String>,
    },
    /// A statement inside a DO block or function body that libpg_query's PL/pgSQL parser could
    /// not read (the block itself parsed).
    BodyUnread {
        what: String,
        error: String,
    },
    Other,
}
