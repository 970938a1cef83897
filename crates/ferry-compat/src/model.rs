//! The schema model the static analysis keeps while it walks migrations: tables and their
//! columns as the migrations so far left them. Names are folded to lowercase (good enough for
//! unquoted identifiers on all three engines; a quoted mixed-case name is a rare edge).

use std::collections::HashMap;

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

#[derive(Debug, Default)]
pub struct Schema {
    pub tables: HashMap<String, Table>,
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
}
