//! ferry-compat's integration tests. The helpers here are shared by the shadow-database and
//! old-query modules.

use std::path::PathBuf;

use ferry_compat::DatabaseUrl;
use ferry_migrate::{Layout, Migration};
use ferry_testkit::db::{Kind, TestDb};

mod corpus;
mod end_state;
mod old_queries;
mod shadow;

/// A native-layout migration held in memory.
fn m(version: i64, name: &str, up: &str, down: Option<&str>) -> Migration {
    Migration {
        version,
        name: name.to_string(),
        up: up.to_string(),
        down: down.map(str::to_string),
        checksum: ferry_migrate::source::checksum(up),
        up_transaction: true,
        down_transaction: true,
        path: PathBuf::from(format!("{version}_{name}.up.sql")),
        layout: Layout::Native,
    }
}

/// The deployed version's schema: migration 1 in every case.
const BASE_UP: &str = "CREATE TABLE users (id INTEGER PRIMARY KEY, email VARCHAR(100) NOT NULL, \
                       status VARCHAR(20) NOT NULL DEFAULT 'active', age INTEGER);";

/// A fresh database of `kind` and its URL; `None` (test skipped) only for a server that is
/// unreachable outside CI.
async fn server(kind: Kind) -> Option<(TestDb, DatabaseUrl)> {
    let db = TestDb::new(kind).await?;
    let url = DatabaseUrl::parse(&db.url).expect("test url");
    Some((db, url))
}
