//! Real databases for tests, and the `ferry` binary against them.
//!
//! Each test gets its own database (PostgreSQL, MySQL/MariaDB) or file (SQLite), dropped when
//! the [`TestDb`] is. Servers come from `FERRY_TEST_PG_URL` and `FERRY_TEST_MYSQL_URL` (defaults:
//! the local servers of DEVELOPERS.md). A server that cannot be reached fails the test under
//! `CI=true`, with a message saying how to start it; elsewhere the test says loudly that it was
//! skipped. It never passes silently.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ferry_core::DatabaseUrl;
use ferry_core::scratch::{Scratch, ScratchOptions};
use sqlx::{AnyConnection, AssertSqlSafe, Connection};

pub const PG_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const MYSQL_DEFAULT: &str = "mysql://root@127.0.0.1:3306/mysql";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
    MySql,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Sqlite, Kind::Postgres, Kind::MySql];
}

/// A database of one's own for one test.
pub struct TestDb {
    pub kind: Kind,
    /// The URL ferry is given.
    pub url: String,
    admin_url: String,
    name: String,
    /// Other databases of this test on the same server ([`TestDb::sibling`]), dropped with it.
    siblings: std::sync::Mutex<Vec<String>>,
    /// A scratch directory (SQLite file, migrations, config) that lives as long as the database.
    pub dir: tempfile::TempDir,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn server_url(kind: Kind) -> (String, &'static str, &'static str) {
    match kind {
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
        Kind::Sqlite => (String::new(), "", ""),
    }
}

pub async fn admin(url: &str) -> Result<AnyConnection, sqlx::Error> {
    sqlx::any::install_default_drivers();
    AnyConnection::connect(url).await
}

impl TestDb {
    /// A fresh database, or `None` (after a loud note) when the server is unreachable outside CI.
    pub async fn new(kind: Kind) -> Option<TestDb> {
        let dir = tempfile::tempdir().expect("temp dir");
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("ferry_t_{}_{}_{}", std::process::id(), n, nanos());
        if kind == Kind::Sqlite {
            // mode=rwc: the harness may open the file before ferry has created it.
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
            return Some(TestDb {
                kind,
                url,
                admin_url: String::new(),
                name,
                siblings: Default::default(),
                dir,
            });
        }
        let (admin_url, var, start) = server_url(kind);
        let conn = match admin(&admin_url).await {
            Ok(c) => c,
            Err(e) => {
                let msg = format!(
                    "cannot reach the {kind:?} test server at {admin_url} ({e}); start it with `{start}` \
                     or point {var} at one"
                );
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("{msg}");
                }
                eprintln!("SKIPPED (no server): {msg}");
                return None;
            }
        };
        let _ = conn.close().await;
        let server = DatabaseUrl::parse(&admin_url).expect("test server URL");
        let scratch = Scratch::create(&server, &name, &ScratchOptions::default())
            .await
            .unwrap_or_else(|e| panic!("create test database {name}: {e}"));
        Some(TestDb {
            kind,
            url: scratch.url().expose().to_string(),
            admin_url,
            name,
            siblings: Default::default(),
            dir,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A connection to this test's database.
    pub async fn connect(&self) -> AnyConnection {
        admin(&self.url).await.expect("connect to test database")
    }

    /// [`url`](Self::url) as the libraries take it.
    pub fn database_url(&self) -> DatabaseUrl {
        DatabaseUrl::parse(&self.url).expect("test database URL")
    }

    /// Another database of this test on the same server (PostgreSQL, MySQL), dropped with it.
    pub async fn sibling(&self, suffix: &str) -> DatabaseUrl {
        let name = format!("{}_{suffix}", self.name);
        let server = DatabaseUrl::parse(&self.admin_url).expect("test server URL");
        let options = ScratchOptions {
            replace: true,
            ..Default::default()
        };
        let scratch = Scratch::create(&server, &name, &options)
            .await
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        self.siblings.lock().unwrap().push(name);
        scratch.url().clone()
    }

    /// The first column of a query's rows on this test's database, as text.
    pub async fn texts(&self, sql: &str) -> Vec<Option<String>> {
        use sqlx::Row;
        let mut c = self.connect().await;
        let rows = sqlx::query(AssertSqlSafe(sql.to_string()))
            .fetch_all(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = c.close().await;
        rows.iter()
            .map(|r| r.try_get::<Option<String>, _>(0).expect("a text column"))
            .collect()
    }

    /// Runs SQL on this test's database (setup and checks).
    pub async fn exec(&self, sql: &str) {
        let mut c = self.connect().await;
        sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = c.close().await;
    }

    /// Whether a table exists in this test's database.
    pub async fn has_table(&self, table: &str) -> bool {
        let sql = match self.kind {
            Kind::Sqlite => {
                format!("SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name='{table}'")
            }
            Kind::Postgres => format!(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = '{table}'"
            ),
            Kind::MySql => format!(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = '{table}'"
            ),
        };
        let mut c = self.connect().await;
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&mut c)
            .await
            .expect("count tables");
        let _ = c.close().await;
        n > 0
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.kind == Kind::Sqlite {
            return;
        }
        let admin_url = self.admin_url.clone();
        let mut names = vec![self.name.clone()];
        names.extend(self.siblings.lock().map(|s| s.clone()).unwrap_or_default());
        // Drop runs inside the test's runtime; a thread with its own runtime avoids nesting.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let server = DatabaseUrl::parse(&admin_url).ok()?;
                for name in names {
                    if let Err(e) = ferry_core::scratch::drop_database(&server, &name).await {
                        eprintln!("could not drop test database {name}: {e}");
                    }
                }
                Some(())
            })
        })
        .join();
    }
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// The `ferry` binary under test: `FERRY_BIN` (to test an installed or release build), else the
/// one cargo builds with this crate's tests.
pub fn ferry_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FERRY_BIN") {
        return PathBuf::from(p);
    }
    // Cargo builds a package's binaries before running its integration tests, and puts them one
    // directory above the test executable (target/<profile>/ vs target/<profile>/deps/).
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join(format!("ferry-under-test{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "no binary at {}: run the tests with `cargo test`",
        bin.display()
    );
    bin
}

/// A `ferry` command running in `dir`, with every variable that changes what ferry does
/// cleared ([`scrubbed`]); a test sets the ones it wants after this.
pub fn ferry(dir: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(ferry_bin());
    cmd.current_dir(dir);
    for var in scrubbed() {
        cmd.env_remove(var);
    }
    cmd
}

/// The variables a test's `ferry` runs without: the settings of `ferry_core::env::VARS`, the
/// one list of what ferry reads, so a developer's shell cannot change a test.
pub fn scrubbed() -> impl Iterator<Item = &'static str> {
    ferry_core::env::settings()
}

/// The outcome of one ferry run.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// stdout as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Panics with the whole output unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}, got {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Runs `ferry args...` in `dir`.
pub fn run(dir: &Path, args: &[&str]) -> Outcome {
    let out = ferry(dir).args(args).output().expect("run ferry");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes a native-layout migration pair into `dir/migrations` (creating it); `down` may be empty.
pub fn write_migration(dir: &Path, version: i64, name: &str, up: &str, down: &str) {
    let m = dir.join("migrations");
    std::fs::create_dir_all(&m).expect("mkdir migrations");
    std::fs::write(m.join(format!("{version}_{name}.up.sql")), up).expect("write up");
    if !down.is_empty() {
        std::fs::write(m.join(format!("{version}_{name}.down.sql")), down).expect("write down");
    }
}

/// The repository's own example migrations.
pub fn example_migrations() -> PathBuf {
    repo_root().join("migrations")
}

/// The migrate fixtures committed under crates/ferry-migrate/tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    repo_root()
        .join("crates/ferry-migrate/tests/fixtures")
        .join(name)
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
