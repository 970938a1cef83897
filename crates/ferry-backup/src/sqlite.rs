//! SQLite: no external tool. `VACUUM INTO` writes a consistent snapshot of the database to a
//! temporary file (readers and writers of the live database are not blocked for long, and the
//! copy is compact and defragmented); the snapshot is counted and then streamed through the
//! pipeline. The snapshot file *is* the dump, so this is the one engine with a local temporary
//! copy; it is deleted as soon as it has been read.
//!
//! Restore writes the decompressed file beside the target, checks `PRAGMA integrity_check`, then
//! removes the target's stale `-wal`/`-shm` files and renames the new file over it: atomic, the
//! target is either the old database or the new one. Applications holding the file open keep
//! seeing the old inode; stop them first.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use ferry_core::DatabaseUrl;
use ferry_core::url::sqlite_path;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, SqliteConnection};
use tokio::io::AsyncWriteExt;

use crate::engine::{BoxFut, Dump, DumpEngine, RestoreInput, RestoreRequest, SnapshotInfo, db};
use crate::error::{BackupError, Result};
use crate::manifest::TableRows;

pub(crate) struct Sqlite;

async fn open_file(path: &Path, url: &DatabaseUrl, read_only: bool) -> Result<SqliteConnection> {
    SqliteConnectOptions::new()
        .filename(path)
        .read_only(read_only)
        .connect()
        .await
        .map_err(|source| BackupError::Connect {
            url: url.redacted(),
            source,
        })
}

async fn open_url(url: &DatabaseUrl) -> Result<SqliteConnection> {
    let path = PathBuf::from(sqlite_path(url.expose()));
    if !path.exists() {
        return Err(BackupError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the SQLite database file does not exist",
            ),
        });
    }
    let options = SqliteConnectOptions::from_str(&url.for_driver()).map_err(|source| {
        BackupError::Connect {
            url: url.redacted(),
            source,
        }
    })?;
    options
        .connect()
        .await
        .map_err(|source| BackupError::Connect {
            url: url.redacted(),
            source,
        })
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn count_tables(conn: &mut SqliteConnection, url: &DatabaseUrl) -> Result<Vec<TableRows>> {
    let names: Vec<String> = sqlx::query_scalar(
        r"SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db(url, "listing tables"))?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {}",
            quote_ident(&name)
        )))
        .fetch_one(&mut *conn)
        .await
        .map_err(db(url, "counting rows"))?;
        out.push(TableRows { name, rows });
    }
    Ok(out)
}

/// What `ferry_migrations` says is applied (the history module's one query).
async fn schema_version(conn: &mut SqliteConnection, url: &DatabaseUrl) -> Result<Option<i64>> {
    ferry_migrate::current_version(conn)
        .await
        .map_err(db(url, "reading the schema version"))
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BackupError::io(path.display())(e)),
    }
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl Sqlite {
    /// Replaces the contents of `target` with the dump read from `input`.
    fn replace<'a>(
        &'a self,
        id: &'a str,
        target: &'a DatabaseUrl,
        input: RestoreInput,
    ) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let failed = |message: String| BackupError::RestoreFailed {
                id: id.to_string(),
                target: target.redacted(),
                message,
            };
            let path = PathBuf::from(sqlite_path(target.expose()));
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            std::fs::create_dir_all(&dir).map_err(BackupError::io(dir.display()))?;
            let temp = tempfile::Builder::new()
                .prefix(".ferry-restore-")
                .tempfile_in(&dir)
                .map_err(BackupError::io(dir.display()))?;
            let std_file = temp
                .reopen()
                .map_err(BackupError::io(temp.path().display()))?;
            let mut file = tokio::fs::File::from_std(std_file);
            let mut stream = input.stream;
            let copy = async {
                tokio::io::copy(&mut stream, &mut file).await?;
                file.flush().await?;
                file.sync_all().await
            };
            let (copied, verified) = tokio::join!(copy, input.verified);
            verified?;
            copied.map_err(|e| failed(format!("writing {}: {e}", temp.path().display())))?;
            drop(file);

            let mut conn = open_file(temp.path(), target, true).await?;
            let check: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
                .fetch_all(&mut conn)
                .await
                .map_err(db(target, "checking the restored file"))?;
            let _ = conn.close().await;
            if check != ["ok"] {
                return Err(failed(format!(
                    "the restored file fails PRAGMA integrity_check ({}); the target was left unchanged",
                    check.join("; ")
                )));
            }
            // Stale WAL frames from the old database must not be replayed onto the new one.
            remove_if_exists(&sidecar(&path, "-wal"))?;
            remove_if_exists(&sidecar(&path, "-shm"))?;
            temp.persist(&path)
                .map_err(|e| failed(format!("renaming into place: {}", e.error)))?;
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })
    }
}

impl DumpEngine for Sqlite {
    fn start_dump<'a>(&'a self, url: &'a DatabaseUrl) -> BoxFut<'a, Dump> {
        Box::pin(async move {
            let mut conn = open_url(url).await?;
            let server: String = sqlx::query_scalar("SELECT sqlite_version()")
                .fetch_one(&mut conn)
                .await
                .map_err(db(url, "reading the SQLite version"))?;
            let snapshot = tempfile::Builder::new()
                .prefix("ferry-snapshot-")
                .suffix(".db")
                .tempfile()
                .map_err(BackupError::io("a temporary snapshot file"))?;
            let snap_path = snapshot.path().to_path_buf();
            sqlx::query("VACUUM INTO ?")
                .bind(snap_path.display().to_string())
                .execute(&mut conn)
                .await
                .map_err(db(url, "writing the snapshot (VACUUM INTO)"))?;
            let _ = conn.close().await;

            let mut snap = open_file(&snap_path, url, true).await?;
            let tables = count_tables(&mut snap, url).await?;
            let schema_version = schema_version(&mut snap, url).await?;
            let _ = snap.close().await;

            let file = tokio::fs::File::open(&snap_path)
                .await
                .map_err(BackupError::io(snap_path.display()))?;
            Ok(Dump {
                info: SnapshotInfo {
                    server_version: server,
                    tool: "sqlite VACUUM INTO".into(),
                    tables,
                    schema_version,
                },
                stream: Box::pin(file),
                finish: Box::pin(async move {
                    // Read to the end by now; deleting the snapshot is the only thing left.
                    drop(snapshot);
                    Ok(())
                }),
            })
        })
    }

    fn load_scratch<'a>(
        &'a self,
        request: &'a RestoreRequest<'a>,
        input: RestoreInput,
    ) -> BoxFut<'a, ()> {
        self.replace(request.id, request.target, input)
    }

    fn tables<'a>(&'a self, url: &'a DatabaseUrl) -> BoxFut<'a, Vec<TableRows>> {
        Box::pin(async move {
            let mut conn = open_url(url).await?;
            let tables = count_tables(&mut conn, url).await;
            let _ = conn.close().await;
            tables
        })
    }

    fn create_scratch<'a>(
        &'a self,
        _source: &'a DatabaseUrl,
        name: &'a str,
    ) -> BoxFut<'a, DatabaseUrl> {
        Box::pin(async move {
            let path =
                std::env::temp_dir().join(format!("{name}-{:08x}.db", rand::random::<u32>()));
            DatabaseUrl::parse(&format!("sqlite://{}", path.display()))
                .map_err(|e| BackupError::Internal(format!("scratch file URL: {e}")))
        })
    }

    fn drop_scratch<'a>(
        &'a self,
        _source: &'a DatabaseUrl,
        scratch: &'a DatabaseUrl,
    ) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let path = PathBuf::from(sqlite_path(scratch.expose()));
            remove_if_exists(&path)?;
            remove_if_exists(&sidecar(&path, "-wal"))?;
            remove_if_exists(&sidecar(&path, "-shm"))?;
            Ok(())
        })
    }
}
