//! The schema model the static analysis keeps while it walks migrations: tables and their
//! columns, views and the columns they expose, functions, triggers and types, as the migrations
//! so far left them. Names are folded to lowercase (good enough for unquoted identifiers on all
//! three engines; a quoted mixed-case name is a rare edge).

use std::collections::HashMap;

use crate::ddl::TypeShape;

#[derive(Debug, Clone)]
pub struct Column {
    /// The type as written, lowercased (`varchar(50)`, `enum('a','b')`).
    pub data_type: String,
    pub not_null: bool,
    pub default: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Table {
    pub columns: HashMap<String, Column>,
    /// Created by one of the migrations being checked: the previous version cannot use it.
    pub new: bool,
}

/// A view's output columns: name and type (`None` when ferry cannot tell the type).
pub type ViewColumns = Vec<(String, Option<String>)>;

#[derive(Debug, Clone)]
pub struct View {
    /// `None` when ferry could not work them out (a relation it does not know, `*` over a
    /// function call, …).
    pub columns: Option<ViewColumns>,
    /// The relations (model keys) its query reads: dropped with CASCADE, the view goes too.
    pub reads: Vec<String>,
    /// PostgreSQL can insert, update and delete through it (one relation, plain columns).
    pub updatable: bool,
    pub new: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// The identity argument types, as PostgreSQL's grammar names them (`int8`, `text`).
    pub args: Vec<String>,
    pub returns: Option<String>,
    pub new: bool,
}

#[derive(Debug, Clone)]
pub struct TypeDef {
    pub shape: TypeShape,
    pub new: bool,
}

#[derive(Debug, Default)]
pub struct Schema {
    pub tables: HashMap<String, Table>,
    pub views: HashMap<String, View>,
    /// Name → overloads.
    pub functions: HashMap<String, Vec<Function>>,
    /// `table.trigger` → whether a migration being checked created it.
    pub triggers: HashMap<String, bool>,
    pub types: HashMap<String, TypeDef>,
}

impl Schema {
    pub fn table_mut(&mut self, name: &str) -> Option<&mut Table> {
        self.tables.get_mut(name)
    }

    pub fn column(&self, table: &str, column: &str) -> Option<&Column> {
        self.tables.get(table)?.columns.get(column)
    }

    /// True when the table was created by a migration being checked.
    pub fn is_new(&self, table: &str) -> bool {
        self.tables.get(table).is_some_and(|t| t.new)
    }

    /// The columns a relation (table or view) offers a query, with their types.
    pub fn relation_columns(&self, key: &str) -> Option<ViewColumns> {
        if let Some(t) = self.tables.get(key) {
            let mut cols: ViewColumns = t
                .columns
                .iter()
                .map(|(n, c)| (n.clone(), Some(c.data_type.clone())))
                .collect();
            cols.sort();
            return Some(cols);
        }
        self.views.get(key)?.columns.clone()
    }
}
