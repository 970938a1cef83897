//! Reading a statement into what the rules read ([`crate::ddl::Stmt`]): PostgreSQL's own
//! grammar for the PostgreSQL dialect (`postgres.rs`), sqlparser for MySQL/MariaDB and SQLite
//! (`generic.rs`). Either way a statement that cannot be read is an error with the parser's
//! message, which the analysis reports as `unparsed`, never a failure.

mod generic;
pub(crate) mod postgres;

use ferry_core::Engine;

use crate::ddl::Stmt;

pub(crate) fn parse(engine: Engine, text: &str) -> Result<Vec<Stmt>, String> {
    match engine {
        Engine::Postgres => postgres::parse(text),
        _ => {
            let dialect = crate::analyze::dialect(engine);
            crate::analyze::parse(engine, dialect.as_ref(), text)
                .map(|stmts| stmts.iter().flat_map(generic::lower_all).collect())
                .map_err(|e| e.to_string())
        }
    }
}
