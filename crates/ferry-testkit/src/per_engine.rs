//! The per-engine test macro every test crate shares.

/// Generates one `#[tokio::test]` per database engine from an `async fn(TestDb)`, each with a
/// database of its own (skipped loudly, or failed under `CI=true`, when its server is
/// unreachable). `per_engine!(a, b)` covers SQLite, PostgreSQL and MariaDB;
/// `per_engine!([postgres, mysql] a, b)` only the engines named.
#[macro_export]
macro_rules! per_engine {
    (@kind sqlite) => { $crate::db::Kind::Sqlite };
    (@kind postgres) => { $crate::db::Kind::Postgres };
    (@kind mysql) => { $crate::db::Kind::MySql };
    (@one [$($engine:ident),+] $name:ident) => {
        mod $name {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $engine() {
                    if let Some(db) =
                        $crate::db::TestDb::new($crate::per_engine!(@kind $engine)).await
                    {
                        super::$name(db).await
                    }
                }
            )+
        }
    };
    ($($name:ident),* $(,)?) => {
        $crate::per_engine!([sqlite, postgres, mysql] $($name),*);
    };
    ($engines:tt $($name:ident),* $(,)?) => {
        $( $crate::per_engine!(@one $engines $name); )*
    };
}
