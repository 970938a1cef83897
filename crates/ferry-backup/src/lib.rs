//! Database backups that are checked at every step: PostgreSQL through `pg_dump`, MySQL/MariaDB
//! through `mariadb-dump`/`mysqldump`, SQLite through a `VACUUM INTO` snapshot, compressed
//! (zstd or gzip) and checksummed into an [`ObjectStore`](ferry_store::ObjectStore).
//!
//! Contract:
//! - A backup is `backups/<id>/data.zst` (or `data.gz`) plus `backups/<id>/manifest.json`,
//!   whose `compression` says which (absent: gzip, as every older ferry wrote), and the manifest is
//!   written **last**, as the commit marker. A backup without its manifest is invisible to
//!   [`Backups::list`], [`Backups::show`] and [`Backups::restore`]; [`Backups::prune`] removes such
//!   leftovers once they are older than [`Options::leftover_age`].
//! - A dump tool that is missing, older than the server, exits non-zero, or writes nothing leaves
//!   **no backup at all**: the dump streams into the store and the stream fails at its end in
//!   those cases, so the store never completes the object, and no manifest is written.
//! - [`Backups::restore`] verifies the whole object (SHA-256, gzip integrity, sizes) **before**
//!   it touches the target, and checks it again while restoring; the target is replaced only
//!   once that second pass passed too. PostgreSQL and SQLite restores are atomic (one
//!   transaction; a rename); MySQL's cannot be (DDL commits implicitly), so there the target is
//!   dropped and recreated only after verification.
//! - Memory is bounded (a few MiB of chunks in flight) and no copy of the dump is written to
//!   local disk, except SQLite's snapshot file, which *is* the dump.
//! - Nothing prints. Progress goes to a [`Progress`] observer; diagnostics to `tracing`. No
//!   password leaves the crate: tools get it through `PGPASSWORD`/`MYSQL_PWD`, never argv, and
//!   every tool message is redacted.
//!
//! Key design decision: **the dump tool's exit status is part of the byte stream.** The
//! compressed body handed to `put_stream` reaches EOF only after the tool exited successfully
//! and produced at least one byte; otherwise the body's last read is an error. So the store's
//! own "complete or absent" guarantee is what makes a failed dump leave nothing, on every
//! backend, without a separate cleanup path that could itself fail.
//!
//! Compression is zstd at level 3 by default, or gzip (flate2 with zlib-rs, level 1 by
//! default, readable by any `gunzip`) with `[backup] compression = "gzip"`. zstd at level 3
//! makes a PostgreSQL backup no larger than `pg_dump -Fc`'s (zlib level 6) while compressing
//! faster than gzip at level 1, so the dump, not the compressor, stays the bottleneck.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use ferry_backup::{Backups, Quiet};
//! let store = ferry_store::open("file:///var/backups/ferry", &Default::default()).await?;
//! let url = ferry_core::DatabaseUrl::parse("postgres://app@db/app")?;
//! let backups = Backups::new(store);
//! let manifest = backups.create(&url, Some("before v42"), &Quiet::arc()).await?;
//! backups.verify(&manifest.id, &Quiet::arc()).await?;
//! # Ok(()) }
//! ```

use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ferry_core::{DatabaseUrl, Engine};
use ferry_store::{ObjectStore, PutMode};
use serde::Serialize;

mod engine;
mod error;
mod manifest;
mod mysql;
mod pipeline;
mod postgres;
mod sqlite;

pub use error::{BackupError, Result};
pub use manifest::{Compression, Manifest, TableRows};

use engine::{DumpEngine, RestoreInput, RestoreRequest, ToolSearch};
use manifest::{PREFIX, check_id, data_key, manifest_key};

/// Which long step a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Dumping and uploading; bytes are the raw dump's size (total unknown).
    Dump,
    /// Reading the stored object to check it; bytes are compressed bytes of a known total.
    Verify,
    /// Restoring; bytes are compressed bytes of a known total.
    Restore,
}

/// Receives progress; the CLI draws a progress bar from it. Called at most about ten times a
/// second per phase, from any thread.
pub trait Progress: Send + Sync {
    fn bytes(&self, _phase: Phase, _done: u64, _total: Option<u64>, _bytes_per_sec: f64) {}
}

/// A [`Progress`] that ignores everything.
pub struct Quiet;
impl Progress for Quiet {}

impl Quiet {
    /// `Quiet` as the shared observer the operations take.
    pub fn arc() -> Arc<dyn Progress> {
        Arc::new(Quiet)
    }
}

/// Settings of [`Backups`].
#[derive(Debug, Clone)]
pub struct Options {
    /// A `PATH`-style list of directories to find `pg_dump`, `psql`, `mariadb-dump`… in,
    /// instead of the process's `PATH`. Tests use it to put a fake tool first.
    pub tool_search_path: Option<OsString>,
    /// How new backups are compressed (default zstd: see the crate docs).
    pub compression: Compression,
    /// The level, within [`Compression::levels`]; `None`: [`Compression::default_level`].
    pub compression_level: Option<i32>,
    /// `prune` deletes objects of backups without a manifest once they are this old (default
    /// one hour), so that a backup still being written is never touched.
    pub leftover_age: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tool_search_path: None,
            compression: Compression::Zstd,
            compression_level: None,
            leftover_age: Duration::from_secs(3600),
        }
    }
}

/// The result of [`Backups::verify`]: the object matched its manifest.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub id: String,
    pub sha256: String,
    pub compressed_bytes: u64,
    pub raw_bytes: u64,
    pub duration_ms: u64,
}

/// The result of [`Backups::verify_restore_check`]: restored into a scratch database, every
/// table and row count matched the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreCheckReport {
    pub id: String,
    /// The scratch database (or file) used, already dropped.
    pub scratch: String,
    pub tables: Vec<TableRows>,
    pub duration_ms: u64,
}

/// How [`Backups::restore_with`] restores.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Parallel loading connections (PostgreSQL); `None`: one per core.
    pub jobs: Option<usize>,
    /// End the target's sessions for the swap (PostgreSQL); without it a restore over a
    /// database with sessions is refused before anything is touched.
    pub end_sessions: bool,
    /// Keep the replaced database (PostgreSQL) under the name the report gives, instead of
    /// dropping it after the swap.
    pub keep_old: bool,
    /// Do not restore the objects' owners: everything belongs to the restoring user
    /// (PostgreSQL, `pg_restore --no-owner`), for a server that lacks the dump's roles.
    pub no_owner: bool,
    /// Restore as this role (PostgreSQL, `pg_restore --role`; `SET ROLE` for the loading
    /// sessions too).
    pub role: Option<String>,
}

impl RestoreOptions {
    /// The number of loading connections: `jobs`, else the cores of this machine.
    pub fn jobs(&self) -> usize {
        self.jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1)
    }
}

/// The result of [`Backups::restore`].
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub id: String,
    /// The target URL, redacted.
    pub target: String,
    pub schema_version: Option<i64>,
    pub duration_ms: u64,
    /// Parallel loading connections used (1 where the engine loads in one stream).
    pub jobs: usize,
    /// Sessions on the target that were ended for the swap.
    pub sessions_ended: u64,
    /// The replaced database, when it was kept (`--keep-old`).
    pub kept_old: Option<String>,
}

/// Which backups [`Backups::prune`] keeps. A backup is kept if it is among the newest
/// `keep_last`, or younger than `keep_within`.
#[derive(Debug, Clone)]
pub struct PrunePolicy {
    pub keep_last: usize,
    pub keep_within: Option<Duration>,
    /// Only report what would be deleted.
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    /// Kept backups, newest first.
    pub kept: Vec<Manifest>,
    /// Deleted (or, in a dry run, to be deleted) backups, newest first.
    pub deleted: Vec<Manifest>,
    /// Keys of objects without a manifest that were (or would be) removed.
    pub leftovers: Vec<String>,
}

/// Backups of databases, kept in one store.
pub struct Backups {
    store: Arc<dyn ObjectStore>,
    options: Options,
}

impl Backups {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self::with_options(store, Options::default())
    }

    pub fn with_options(store: Arc<dyn ObjectStore>, options: Options) -> Self {
        Self { store, options }
    }

    fn engine(&self, engine: Engine) -> Box<dyn DumpEngine> {
        engine::for_engine(
            engine,
            ToolSearch {
                path: self.options.tool_search_path.clone(),
            },
        )
    }

    /// Takes a backup of `url` and returns its manifest, written last. On any error nothing of
    /// the backup remains in the store.
    pub async fn create(
        &self,
        url: &DatabaseUrl,
        label: Option<&str>,
        progress: &Arc<dyn Progress>,
    ) -> Result<Manifest> {
        let started = Instant::now();
        let created_at = Utc::now();
        let id = manifest::new_id(created_at);
        let compression = self.options.compression;
        let level = self
            .options
            .compression_level
            .unwrap_or_else(|| compression.default_level());
        if !compression.levels().contains(&level) {
            return Err(BackupError::BadLevel {
                compression: compression.as_str(),
                level,
                levels: format!(
                    "{}–{}",
                    compression.levels().start(),
                    compression.levels().end()
                ),
            });
        }
        let engine = self.engine(url.engine());
        let dump = engine.start_dump(url).await?;
        let info = dump.info;
        tracing::info!(%url, id, tool = %info.tool, "backup started");

        let database = url.database_name();
        let observer = progress.clone();
        let (body, totals) = pipeline::compress(
            dump.stream,
            dump.finish,
            info.tool.clone(),
            database.clone(),
            (compression, level),
            observer,
        );
        let key = data_key(&id, compression);
        let put = self.store.put_stream(&key, body).await;
        let totals = totals.await;
        let totals = match (put, totals) {
            (Ok(_), Ok(t)) => t,
            (put, Err(e)) => {
                if put.is_ok() {
                    let _ = self.store.delete(&key).await;
                }
                return Err(e);
            }
            (Err(e), Ok(_)) => {
                return Err(BackupError::Store {
                    context: format!("writing backup {id} to {}", self.store.url()),
                    source: e,
                });
            }
        };
        let manifest = Manifest {
            id: id.clone(),
            created_at,
            engine: url.engine().as_str().to_string(),
            server_version: info.server_version,
            database,
            url: url.redacted(),
            schema_version: info.schema_version,
            label: label.map(str::to_string),
            tool: info.tool,
            ferry_version: env!("CARGO_PKG_VERSION").to_string(),
            raw_bytes: totals.raw_bytes,
            compression,
            compressed_bytes: totals.compressed_bytes,
            sha256: totals.sha256,
            duration_ms: started.elapsed().as_millis() as u64,
            tables: info.tables,
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| BackupError::Internal(format!("manifest JSON: {e}")))?;
        if let Err(e) = self
            .store
            .put_bytes(&manifest_key(&id), json, PutMode::IfAbsent)
            .await
        {
            let _ = self.store.delete(&key).await;
            return Err(BackupError::Store {
                context: format!("writing the manifest of backup {id}"),
                source: e,
            });
        }
        tracing::info!(
            id,
            raw = manifest.raw_bytes,
            compressed = manifest.compressed_bytes,
            "backup written"
        );
        Ok(manifest)
    }

    /// Every complete backup (one with a manifest), newest first. An unreadable manifest is
    /// skipped with a warning, so one damaged backup does not hide the others.
    pub async fn list(&self) -> Result<Vec<Manifest>> {
        let objects = self
            .store
            .list(PREFIX)
            .await
            .map_err(BackupError::store(format!(
                "listing backups in {}",
                self.store.url()
            )))?;
        let mut out = Vec::new();
        for o in objects {
            let Some(id) = id_of_manifest_key(&o.key) else {
                continue;
            };
            match self.show(id).await {
                Ok(m) => out.push(m),
                Err(e) => tracing::warn!(key = o.key, error = %e, "skipping unreadable manifest"),
            }
        }
        sort_newest_first(&mut out);
        Ok(out)
    }

    /// The manifest of backup `id`.
    pub async fn show(&self, id: &str) -> Result<Manifest> {
        check_id(id)?;
        let bytes = match self.store.get_bytes(&manifest_key(id)).await {
            Ok(b) => b,
            Err(ferry_store::StoreError::NotFound { .. }) => {
                return Err(BackupError::NotFound {
                    id: id.to_string(),
                    store: self.store.url(),
                });
            }
            Err(e) => return Err(BackupError::store(format!("reading backup {id}"))(e)),
        };
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| BackupError::BadManifest {
            id: id.to_string(),
            store: self.store.url(),
            message: e.to_string(),
        })?;
        if m.id != id {
            return Err(BackupError::BadManifest {
                id: id.to_string(),
                store: self.store.url(),
                message: format!("it names backup {}", m.id),
            });
        }
        Ok(m)
    }

    /// The stored data object of a backup, as a stream.
    async fn get_object(&self, manifest: &Manifest) -> Result<ferry_store::ByteStream> {
        match self
            .store
            .get_stream(&data_key(&manifest.id, manifest.compression))
            .await
        {
            Ok(s) => Ok(s),
            Err(ferry_store::StoreError::NotFound { .. }) => Err(BackupError::Corrupt {
                id: manifest.id.clone(),
                reason: format!(
                    "its data object {} is missing",
                    manifest.compression.data_file()
                ),
            }),
            Err(e) => Err(BackupError::store(format!(
                "reading backup {}",
                manifest.id
            ))(e)),
        }
    }

    async fn open_decoded(
        &self,
        manifest: &Manifest,
        phase: Phase,
        progress: &Arc<dyn Progress>,
    ) -> Result<RestoreInput> {
        let object = self.get_object(manifest).await?;
        let observer = progress.clone();
        let (stream, verified) = pipeline::decode(object, manifest, observer, phase);
        Ok(RestoreInput { stream, verified })
    }

    /// Reads backup `id` end to end: SHA-256 of the object, gzip integrity, and the sizes of
    /// its manifest. A mismatch is [`BackupError::Corrupt`].
    pub async fn verify(&self, id: &str, progress: &Arc<dyn Progress>) -> Result<VerifyReport> {
        let started = Instant::now();
        let m = self.show(id).await?;
        self.verify_manifest(&m, progress).await?;
        Ok(VerifyReport {
            id: m.id.clone(),
            sha256: m.sha256.clone(),
            compressed_bytes: m.compressed_bytes,
            raw_bytes: m.raw_bytes,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    async fn verify_manifest(&self, m: &Manifest, progress: &Arc<dyn Progress>) -> Result<()> {
        let mut input = self.open_decoded(m, Phase::Verify, progress).await?;
        let drained = tokio::io::copy(&mut input.stream, &mut tokio::io::sink()).await;
        input.verified.await?;
        drained.map_err(|e| BackupError::Corrupt {
            id: m.id.clone(),
            reason: e.to_string(),
        })?;
        Ok(())
    }

    /// Verifies backup `id`, restores it into a scratch database beside `url` (a temporary
    /// database `ferry_verify_<id>` on the same server; a temporary file for SQLite), compares
    /// its tables and row counts with the manifest, and drops the scratch database.
    pub async fn verify_restore_check(
        &self,
        id: &str,
        url: &DatabaseUrl,
        progress: &Arc<dyn Progress>,
    ) -> Result<RestoreCheckReport> {
        let started = Instant::now();
        let m = self.show(id).await?;
        check_engine(&m, url)?;
        self.verify_manifest(&m, progress).await?;
        let engine = self.engine(url.engine());
        let scratch = engine
            .create_scratch(url, &manifest::scratch_name(&m.id))
            .await?;
        let result = async {
            let input = self.open_decoded(&m, Phase::Restore, progress).await?;
            let options = RestoreOptions::default();
            let request = RestoreRequest {
                id: &m.id,
                target: &scratch,
                options: &options,
                tables: &m.tables,
            };
            engine.load_scratch(&request, input).await?;
            engine.tables(&scratch).await
        }
        .await;
        let dropped = engine.drop_scratch(url, &scratch).await;
        let tables = result?;
        dropped?;
        let differences = compare_tables(&m.tables, &tables);
        if !differences.is_empty() {
            return Err(BackupError::CheckMismatch {
                id: m.id.clone(),
                differences: differences.join("; "),
            });
        }
        Ok(RestoreCheckReport {
            id: m.id,
            scratch: scratch.redacted(),
            tables,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// [`Backups::restore_with`] with the default [`RestoreOptions`]: one loading connection
    /// per core, and refused while sessions are connected to a PostgreSQL target.
    pub async fn restore(
        &self,
        id: &str,
        target: &DatabaseUrl,
        progress: &Arc<dyn Progress>,
    ) -> Result<RestoreReport> {
        self.restore_with(id, target, &RestoreOptions::default(), progress)
            .await
    }

    /// Replaces the contents of `target` with backup `id`. The backup is verified completely
    /// before the target is touched, and again while it streams; a corrupt backup, or any
    /// failure before the new contents are complete and match the manifest, leaves the
    /// target exactly as it was.
    pub async fn restore_with(
        &self,
        id: &str,
        target: &DatabaseUrl,
        options: &RestoreOptions,
        progress: &Arc<dyn Progress>,
    ) -> Result<RestoreReport> {
        let started = Instant::now();
        let m = self.show(id).await?;
        check_engine(&m, target)?;
        let engine = self.engine(target.engine());
        let request = RestoreRequest {
            id: &m.id,
            target,
            options,
            tables: &m.tables,
        };
        engine.preflight(&request).await?;
        // Before the target is touched: PostgreSQL and SQLite restores re-check everything
        // while streaming and only commit (or rename) once that check passed, so a checksum of
        // the stored object suffices up front. MySQL's restore cannot be rolled back, so there
        // the whole object is decompressed and checked first.
        match target.engine() {
            Engine::MySql => self.verify_manifest(&m, progress).await?,
            Engine::Postgres | Engine::Sqlite => {
                let object = self.get_object(&m).await?;
                pipeline::checksum(object, &m, &**progress).await?;
            }
        }
        let input = self.open_decoded(&m, Phase::Restore, progress).await?;
        let restored = engine.restore(&request, input).await?;
        tracing::info!(id, target = %target, "restored");
        Ok(RestoreReport {
            id: m.id.clone(),
            target: target.redacted(),
            schema_version: m.schema_version,
            duration_ms: started.elapsed().as_millis() as u64,
            jobs: restored.jobs,
            sessions_ended: restored.sessions_ended,
            kept_old: restored.kept_old,
        })
    }

    /// Deletes backups outside `policy` (never the newest `keep_last`), and objects of
    /// backups without a manifest older than [`Options::leftover_age`].
    pub async fn prune(&self, policy: &PrunePolicy) -> Result<PruneReport> {
        self.prune_at(policy, Utc::now()).await
    }

    async fn prune_at(&self, policy: &PrunePolicy, now: DateTime<Utc>) -> Result<PruneReport> {
        if policy.keep_last == 0 {
            return Err(BackupError::KeepNothing);
        }
        let all = self.list().await?;
        let (mut kept, mut deleted) = (Vec::new(), Vec::new());
        for (i, m) in all.into_iter().enumerate() {
            let young = policy.keep_within.is_some_and(|w| {
                chrono::Duration::from_std(w).is_ok_and(|w| now - m.created_at < w)
            });
            if i < policy.keep_last || young {
                kept.push(m);
            } else {
                deleted.push(m);
            }
        }
        // Leftovers: objects under a backup id whose manifest is absent, old enough that no
        // backup can still be writing them.
        let objects = self
            .store
            .list(PREFIX)
            .await
            .map_err(BackupError::store("listing backups for prune"))?;
        let with_manifest: std::collections::HashSet<&str> = objects
            .iter()
            .filter_map(|o| id_of_manifest_key(&o.key))
            .collect();
        let age =
            chrono::Duration::from_std(self.options.leftover_age).unwrap_or(chrono::Duration::MAX);
        let leftovers: Vec<String> = objects
            .iter()
            .filter(|o| {
                let id = o.key[PREFIX.len()..].split('/').next().unwrap_or("");
                !with_manifest.contains(id) && o.modified.is_some_and(|t| now - t >= age)
            })
            .map(|o| o.key.clone())
            .collect();
        if !policy.dry_run {
            for m in &deleted {
                // Manifest first: a half-deleted backup is then an invisible leftover, never a
                // listed backup without data.
                self.store
                    .delete(&manifest_key(&m.id))
                    .await
                    .map_err(BackupError::store(format!("deleting backup {}", m.id)))?;
                for o in objects.iter().filter(|o| {
                    o.key.starts_with(&format!("{PREFIX}{}/", m.id))
                        && !o.key.ends_with(manifest::MANIFEST)
                }) {
                    self.store
                        .delete(&o.key)
                        .await
                        .map_err(BackupError::store(format!("deleting backup {}", m.id)))?;
                }
            }
            for key in &leftovers {
                self.store
                    .delete(key)
                    .await
                    .map_err(BackupError::store(format!("deleting leftover {key}")))?;
            }
        }
        Ok(PruneReport {
            dry_run: policy.dry_run,
            kept,
            deleted,
            leftovers,
        })
    }
}

fn id_of_manifest_key(key: &str) -> Option<&str> {
    key.strip_prefix(PREFIX)?
        .strip_suffix(&format!("/{}", manifest::MANIFEST))
        .filter(|id| !id.contains('/'))
}

fn sort_newest_first(v: &mut [Manifest]) {
    v.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| b.id.cmp(&a.id))
    });
}

fn check_engine(m: &Manifest, target: &DatabaseUrl) -> Result<()> {
    if m.engine != target.engine().as_str() {
        return Err(BackupError::EngineMismatch {
            id: m.id.clone(),
            backup_engine: m.engine.clone(),
            target: target.redacted(),
            target_engine: target.engine().as_str().to_string(),
        });
    }
    Ok(())
}

pub(crate) fn compare_tables(expected: &[TableRows], actual: &[TableRows]) -> Vec<String> {
    let mut out = Vec::new();
    for e in expected {
        match actual.iter().find(|a| a.name == e.name) {
            None => out.push(format!("table {} is missing", e.name)),
            Some(a) if a.rows != e.rows => out.push(format!(
                "table {} has {} rows, expected {}",
                e.name, a.rows, e.rows
            )),
            Some(_) => {}
        }
    }
    for a in actual {
        if !expected.iter().any(|e| e.name == a.name) {
            out.push(format!("unexpected table {}", a.name));
        }
    }
    out
}
