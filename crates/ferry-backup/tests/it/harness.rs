//! Per-test databases and stores.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferry_backup::{Backups, Options, Progress, Quiet};
use ferry_core::DatabaseUrl;
use sqlx::{AssertSqlSafe, Connection};

pub const PG_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const MYSQL_DEFAULT: &str = "mysql://root@127.0.0.1:3306/mysql";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    MySql,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn quiet() -> Arc<dyn Progress> {
    Quiet::arc()
}

/// A store in a temporary directory, and a `Backups` over it.
pub struct Store {
    pub dir: tempfile::TempDir,
    pub backups: Backups,
}

pub async fn store_with(options: Options) -> Store {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("store").display());
    let store = ferry_store::open(&url, &Default::default()).await.unwrap();
    Store {
        backups: Backups::with_options(store, options),
        dir,
    }
}

pub async fn store() -> Store {
    store_with(Options::default()).await
}

fn with_database(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    u.set_path(&format!("/{db}"));
    u.to_string()
}

/// A database of one's own on a server, dropped on `drop_now` (tests call it at the end).
pub struct ServerDb {
    pub kind: Kind,
    pub url: DatabaseUrl,
    admin: String,
    name: String,
}

impl ServerDb {
    pub async fn new(kind: Kind) -> Option<ServerDb> {
        let (admin, var, start) = match kind {
            Kind::Postgres => (
                std::env::var("FERRY_TEST_PG_URL").unwrap_or_else(|_| PG_DEFAULT.into()),
                "FERRY_TEST_PG_URL",
                "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            ),
            Kind::MySql => (
                std::env::var("FERRY_TEST_MYSQL_URL").unwrap_or_else(|_| MYSQL_DEFAULT.into()),
                "FERRY_TEST_MYSQL_URL",
                "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
            ),
        };
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("ferry_bk_{}_{}", std::process::id(), n);
        let created = async {
            let mut conn = connect_any(&admin).await?;
            raw(&mut conn, &format!("DROP DATABASE IF EXISTS {name}")).await?;
            raw(&mut conn, &format!("CREATE DATABASE {name}")).await?;
            let _ = conn.close().await;
            Ok::<_, sqlx::Error>(())
        }
        .await;
        if let Err(e) = created {
            let msg = format!(
                "cannot reach the {kind:?} test server at {admin} ({e}); start it with `{start}` or point {var} at one"
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("SKIPPED (no server): {msg}");
            return None;
        }
        Some(ServerDb {
            kind,
            url: DatabaseUrl::parse(&with_database(&admin, &name)).unwrap(),
            admin,
            name,
        })
    }

    /// Runs a script on this test database.
    pub async fn exec(&self, sql: &str) {
        let mut conn = connect_any(self.url.expose()).await.unwrap();
        raw(&mut conn, sql).await.unwrap();
        let _ = conn.close().await;
    }

    /// The first column of a query's rows, as text.
    pub async fn texts(&self, sql: &str) -> Vec<Option<String>> {
        let mut conn = connect_any(self.url.expose()).await.unwrap();
        let rows = sqlx::query(AssertSqlSafe(sql.to_string()))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
        use sqlx::Row;
        rows.iter()
            .map(|r| r.try_get::<Option<String>, _>(0).unwrap())
            .collect()
    }

    /// Another URL on the same server for a second database (dropped with this one).
    pub async fn sibling(&self, suffix: &str) -> DatabaseUrl {
        let name = format!("{}_{suffix}", self.name);
        let mut conn = connect_any(&self.admin).await.unwrap();
        raw(&mut conn, &format!("DROP DATABASE IF EXISTS {name}"))
            .await
            .unwrap();
        raw(&mut conn, &format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let _ = conn.close().await;
        DatabaseUrl::parse(&with_database(&self.admin, &name)).unwrap()
    }

    pub async fn drop_now(self) {
        let mut conn = connect_any(&self.admin).await.unwrap();
        for name in [self.name.clone(), format!("{}_copy", self.name)] {
            let sql = match self.kind {
                Kind::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                Kind::MySql => format!("DROP DATABASE IF EXISTS {name}"),
            };
            raw(&mut conn, &sql).await.unwrap();
        }
        let _ = conn.close().await;
    }
}

pub async fn connect_any(url: &str) -> Result<sqlx::AnyConnection, sqlx::Error> {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(url).await
}

async fn raw(conn: &mut sqlx::AnyConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(conn)
        .await
        .map(drop)
}

/// A directory holding an executable `name` that prints to stderr and exits 1.
pub fn fake_tool_dir(names: &[&str]) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for name in names {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo \"fake (PostgreSQL) 99.0 Distrib 99.0-MariaDB\"; exit 0; fi\n\
             printf 'partial output'\necho 'fake dump failed: connection to postgres://u:hunter2@h/db lost' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// Flips one byte in the middle of a backup's stored data.
pub fn corrupt(store: &Store, id: &str) {
    let path = store
        .dir
        .path()
        .join("store/backups")
        .join(id)
        .join("data.gz");
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
}

/// Store keys under `backups/`.
pub fn stored_files(store: &Store) -> Vec<String> {
    let root = store.dir.path().join("store");
    let mut out = Vec::new();
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    walk(&root, &root, &mut out);
    out.sort();
    out
}
