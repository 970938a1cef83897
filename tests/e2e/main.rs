//! End-to-end tests of the `ferry` binary against real databases. See `tests/lib.rs` for the
//! harness and DEVELOPERS.md for the servers.

/// Generates one `#[tokio::test]` per database engine from an `async fn(TestDb)`.
macro_rules! per_engine {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use ferry_e2e::{Kind, TestDb};
                #[tokio::test(flavor = "multi_thread")]
                async fn sqlite() {
                    if let Some(db) = TestDb::new(Kind::Sqlite).await { super::$name(db).await }
                }
                #[tokio::test(flavor = "multi_thread")]
                async fn postgres() {
                    if let Some(db) = TestDb::new(Kind::Postgres).await { super::$name(db).await }
                }
                #[tokio::test(flavor = "multi_thread")]
                async fn mysql() {
                    if let Some(db) = TestDb::new(Kind::MySql).await { super::$name(db).await }
                }
            }
        )*
    };
}

mod adopt;
mod backup;
mod backup_s3;
mod cli;
mod compat;
mod concurrency;
mod deploy;
mod engines;
mod promote;
mod promote_oci;
mod rollout;
mod snapshots;
