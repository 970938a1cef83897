//! The seam between the backup algorithm and each database: [`DumpEngine`], one implementation
//! per module (`postgres.rs`, `mysql.rs`, `sqlite.rs`). Those modules are the only place in
//! ferry-backup that contains SQL or knows a dump tool's command line. This module also owns
//! running external tools: finding them, checking versions, capturing (redacted) stderr.

use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;

use ferry_core::{DatabaseUrl, Engine};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::error::{BackupError, Result};
use crate::manifest::TableRows;

pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;
pub(crate) type ByteStream = ferry_store::ByteStream;

/// What a snapshot looks like, gathered in the same snapshot the dump reads where the engine
/// allows (PostgreSQL, SQLite).
pub(crate) struct SnapshotInfo {
    pub server_version: String,
    pub tool: String,
    pub tables: Vec<TableRows>,
    pub schema_version: Option<i64>,
}

/// A dump in progress: its bytes, and a future that says whether the tool succeeded. `finish`
/// must be awaited after `stream` reached EOF; dropping either kills the tool.
pub(crate) struct Dump {
    pub info: SnapshotInfo,
    pub stream: ByteStream,
    pub finish: BoxFut<'static, ()>,
}

/// The decompressed dump for a restore. `verified` resolves once the whole object was read and
/// its checksum and sizes matched; an engine commits (or renames into place) only after it.
pub(crate) struct RestoreInput {
    pub stream: ByteStream,
    pub verified: BoxFut<'static, ()>,
}

/// One restore, as the engines see it.
pub(crate) struct RestoreRequest<'a> {
    pub id: &'a str,
    pub target: &'a DatabaseUrl,
    pub options: &'a crate::RestoreOptions,
    /// The manifest's tables and row counts, which a restored database must match before it
    /// replaces the target.
    pub tables: &'a [TableRows],
}

/// What a restore did besides restoring.
#[derive(Debug)]
pub(crate) struct Restored {
    /// The previous database, kept under this name (`--keep-old`).
    pub kept_old: Option<String>,
    /// Sessions on the target that were ended for the swap.
    pub sessions_ended: u64,
    /// Connections that loaded the rows.
    pub jobs: usize,
}

impl Restored {
    /// A restore through one client, without a swap.
    pub fn single() -> Self {
        Restored {
            kept_old: None,
            sessions_ended: 0,
            jobs: 1,
        }
    }
}

/// Where external tools are looked up.
#[derive(Debug, Clone, Default)]
pub(crate) struct ToolSearch {
    pub path: Option<OsString>,
}

/// The primitives the backup algorithm needs from a database engine.
pub(crate) trait DumpEngine: Send + Sync {
    /// Checks the tools, opens a consistent snapshot, counts its rows and starts dumping it.
    fn start_dump<'a>(&'a self, url: &'a DatabaseUrl) -> BoxFut<'a, Dump>;

    /// Checks, before anything is read or touched, what would make the restore refuse to
    /// replace the target (sessions on it without `end_sessions`).
    fn preflight<'a>(&'a self, _request: &'a RestoreRequest<'a>) -> BoxFut<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    /// Replaces `request.target` with the dump read from `input`. By default the dump is
    /// loaded the way [`DumpEngine::load_scratch`] loads it (SQLite: into a temporary file that is
    /// renamed over the target; MySQL: see ARCHITECTURE.md for why there is no swap).
    fn restore<'a>(
        &'a self,
        request: &'a RestoreRequest<'a>,
        input: RestoreInput,
    ) -> BoxFut<'a, Restored> {
        Box::pin(async move {
            self.load_scratch(request, input).await?;
            Ok(Restored::single())
        })
    }

    /// Loads the dump read from `input` into `request.target`, an empty scratch database
    /// `create_scratch` made (the restore check).
    fn load_scratch<'a>(
        &'a self,
        request: &'a RestoreRequest<'a>,
        input: RestoreInput,
    ) -> BoxFut<'a, ()>;

    /// Every table of `url` with its row count, sorted by name.
    fn tables<'a>(&'a self, url: &'a DatabaseUrl) -> BoxFut<'a, Vec<TableRows>>;

    /// Creates an empty scratch database named `name` beside `source` and returns its URL.
    fn create_scratch<'a>(
        &'a self,
        source: &'a DatabaseUrl,
        name: &'a str,
    ) -> BoxFut<'a, DatabaseUrl>;

    /// Drops what `create_scratch` made.
    fn drop_scratch<'a>(
        &'a self,
        source: &'a DatabaseUrl,
        scratch: &'a DatabaseUrl,
    ) -> BoxFut<'a, ()>;
}

pub(crate) fn for_engine(engine: Engine, tools: ToolSearch) -> Box<dyn DumpEngine> {
    match engine {
        Engine::Postgres => Box::new(crate::postgres::Postgres { tools }),
        Engine::MySql => Box::new(crate::mysql::MySql { tools }),
        Engine::Sqlite => Box::new(crate::sqlite::Sqlite),
    }
}

/// A located external program.
#[derive(Debug, Clone)]
pub(crate) struct Tool {
    pub name: &'static str,
    pub path: PathBuf,
}

impl ToolSearch {
    /// The first of `names` found on the search path.
    pub fn find(&self, names: &[&'static str], package: &'static str) -> Result<Tool> {
        let path = self
            .path
            .clone()
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_default();
        for name in names {
            for dir in std::env::split_paths(&path) {
                let candidate = dir.join(name);
                if is_executable(&candidate) {
                    return Ok(Tool {
                        name,
                        path: candidate,
                    });
                }
            }
        }
        Err(BackupError::ToolMissing {
            tool: names.join("` or `"),
            package,
        })
    }
}

fn is_executable(path: &std::path::Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

impl Tool {
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.kill_on_drop(true).stdin(Stdio::null());
        cmd
    }

    /// The first line of `tool --version`.
    pub async fn version(&self) -> Result<String> {
        let out = self
            .command()
            .arg("--version")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|source| BackupError::ToolSpawn {
                tool: self.name.to_string(),
                source,
            })?;
        if !out.status.success() {
            return Err(BackupError::ToolFailed {
                tool: self.name.to_string(),
                database: "its --version check".into(),
                status: out.status.to_string(),
                stderr: clean_stderr(&out.stderr),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string())
    }

    pub fn spawn(&self, cmd: &mut Command) -> Result<Child> {
        cmd.spawn().map_err(|source| BackupError::ToolSpawn {
            tool: self.name.to_string(),
            source,
        })
    }
}

/// The first run of digits and dots in `s` as numbers: "pg_dump (PostgreSQL) 15.20 (Debian)" → [15, 20].
pub(crate) fn parse_version(s: &str) -> Vec<u64> {
    let start = match s.find(|c: char| c.is_ascii_digit()) {
        Some(i) => i,
        None => return Vec::new(),
    };
    s[start..]
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .next()
        .unwrap_or_default()
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Tool stderr for an error message: redacted, trimmed, at most a few KiB (the end matters most).
pub(crate) fn clean_stderr(bytes: &[u8]) -> String {
    const MAX: usize = 4000;
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let text = if text.len() > MAX {
        let mut cut = text.len() - MAX;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        format!("…{}", &text[cut..])
    } else {
        text.to_string()
    };
    let text = ferry_core::url::redact(&text);
    if text.is_empty() {
        "(no output on stderr)".into()
    } else {
        text
    }
}

/// Reads a child's stderr in the background (so it never blocks on a full pipe).
pub(crate) fn collect_stderr(child: &mut Child) -> tokio::task::JoinHandle<Vec<u8>> {
    let stderr = child.stderr.take();
    tokio::spawn(async move {
        let mut buf = Vec::new();
        if let Some(mut s) = stderr {
            let _ = s.read_to_end(&mut buf).await;
        }
        buf
    })
}

/// Waits for `child` and turns a failure into [`BackupError::ToolFailed`] with its stderr.
pub(crate) async fn wait_tool(
    tool: &str,
    database: &str,
    mut child: Child,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
) -> Result<()> {
    let status = child
        .wait()
        .await
        .map_err(|source| BackupError::ToolSpawn {
            tool: tool.to_string(),
            source,
        })?;
    let err = stderr.await.unwrap_or_default();
    if status.success() {
        if !err.is_empty() {
            tracing::debug!(tool, stderr = %clean_stderr(&err), "tool stderr");
        }
        Ok(())
    } else {
        Err(BackupError::ToolFailed {
            tool: tool.to_string(),
            database: database.to_string(),
            status: status.to_string(),
            stderr: clean_stderr(&err),
        })
    }
}

/// Spawns a dump tool with stdout piped; returns its output and the future that checks its exit.
pub(crate) fn spawn_dump(
    tool: &Tool,
    database: &str,
    mut cmd: Command,
    keep_alive: Option<Box<dyn Send + 'static>>,
) -> Result<(ByteStream, BoxFut<'static, ()>)> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = tool.spawn(&mut cmd)?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BackupError::Internal("dump tool has no stdout".into()))?;
    let stderr = collect_stderr(&mut child);
    let name = tool.name.to_string();
    let database = database.to_string();
    let finish = Box::pin(async move {
        let result = wait_tool(&name, &database, child, stderr).await;
        // The snapshot (PostgreSQL's exporting transaction) lives until the tool is done.
        drop(keep_alive);
        result
    });
    Ok((Box::pin(stdout), finish))
}

/// The decoded pieces of `url` for the client tools (arguments; the password only ever through
/// the environment).
pub(crate) fn url_parts(url: &DatabaseUrl) -> Result<ferry_core::url::UrlParts> {
    url.parts()
        .map_err(|e| BackupError::Internal(format!("cannot parse {url}: {e}")))
}

/// `url` with its database name replaced (`""`: the server, no database).
pub(crate) fn with_database(url: &DatabaseUrl, name: &str) -> Result<DatabaseUrl> {
    url.with_database(name)
        .map_err(|e| BackupError::Internal(format!("scratch URL: {e}")))
}

/// Creates the scratch database `name` beside `source` (replacing one an interrupted earlier
/// check left), through the one scratch layer of `ferry_core::scratch`.
pub(crate) async fn create_scratch(
    source: &DatabaseUrl,
    name: &str,
    options: ferry_core::scratch::ScratchOptions,
) -> Result<DatabaseUrl> {
    let options = ferry_core::scratch::ScratchOptions {
        replace: true,
        ..options
    };
    ferry_core::scratch::Scratch::create(source, name, &options)
        .await
        .map(|s| s.url().clone())
        .map_err(db(source, "creating the scratch database"))
}

/// Drops a scratch database [`create_scratch`] made.
pub(crate) async fn drop_scratch(source: &DatabaseUrl, scratch: &DatabaseUrl) -> Result<()> {
    ferry_core::scratch::drop_database(source, &scratch.database_name())
        .await
        .map_err(db(source, "dropping the scratch database"))
}

/// Wraps a sqlx error with the (redacted) database and what ferry was doing.
pub(crate) fn db(
    url: &DatabaseUrl,
    doing: &'static str,
) -> impl FnOnce(sqlx::Error) -> BackupError + use<> {
    let url = url.redacted();
    move |source| BackupError::Database { url, doing, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"),
            vec![15, 20]
        );
        assert_eq!(
            parse_version("10.11.19-MariaDB-0+deb12u1"),
            vec![10, 11, 19]
        );
        assert!(parse_version("none").is_empty());
    }

    #[test]
    fn stderr_is_redacted() {
        let s = clean_stderr(b"connection to postgres://u:hunter2@h/db failed\n");
        assert!(!s.contains("hunter2"), "{s}");
    }

    #[test]
    fn conn_parts_decode() {
        let url =
            DatabaseUrl::parse("postgres://app:p%40ss@db:6543/my_db?sslmode=require").unwrap();
        let p = url_parts(&url).unwrap();
        assert_eq!(p.password.as_deref(), Some("p@ss"));
        assert_eq!(p.user.as_deref(), Some("app"));
        assert_eq!(p.port, Some(6543));
        assert_eq!(p.database, "my_db");
        assert_eq!(p.param("sslmode"), Some("require"));
        let s = with_database(&url, "other").unwrap();
        assert_eq!(s.database_name(), "other");
        let plus = DatabaseUrl::parse("mysql://app:a+b%2Bc@db/x").unwrap();
        assert_eq!(url_parts(&plus).unwrap().password.as_deref(), Some("a+b+c"));
    }

    #[test]
    fn missing_tool_names_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let search = ToolSearch {
            path: Some(dir.path().as_os_str().to_owned()),
        };
        let err = search
            .find(&["pg_dump"], "postgresql-client")
            .unwrap_err()
            .to_string();
        assert!(err.contains("postgresql-client"), "{err}");
    }
}
