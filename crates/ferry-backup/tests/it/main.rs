//! Integration tests of ferry-backup against real PostgreSQL and MariaDB servers and SQLite
//! files, with the file store. Servers come from `FERRY_TEST_PG_URL` / `FERRY_TEST_MYSQL_URL`;
//! an unreachable server fails the test under `CI=true` and is reported as SKIPPED elsewhere.

mod compression;
mod harness;
mod mysql;
mod postgres;
mod postgres_swap;
mod sqlite;
mod store;
