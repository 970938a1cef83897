//! Loading a `pg_dump -Fc` archive into an empty database, in parallel where the archive allows:
//!
//! 1. the header and table of contents are read off the stream ([`archive::read_head`]) into a
//!    small file, from which `pg_restore --section=pre-data` creates the schema (tables without
//!    their indexes, keys and constraints);
//! 2. the data blocks are split at row boundaries (`COPY` text is one row per line: a newline
//!    inside a value is written `\n`) into batches of [`BATCH`] bytes, which `jobs` connections
//!    take from one queue, each with its own `COPY … FROM STDIN` on the batch's table. A big
//!    table is so loaded by every connection at once, a small one by whichever takes its one
//!    batch;
//! 3. the data section's other entries (`SEQUENCE SET`); the index builds of post-data, all
//!    at once on `jobs` connections, keys and unique constraints included ([`super::post`]);
//!    then `pg_restore -j jobs` from the same file for the rest of post-data (foreign keys,
//!    triggers, comments, …), in parallel where its scheduler finds them independent.
//!
//! An archive this does not read (another format version, compressed data blocks, large
//! objects) is restored by one `pg_restore` reading the whole stream instead. Either way the
//! database is a new one that nobody uses yet: atomicity comes from the swap in `mod.rs`, not
//! from a transaction, so nothing here needs one.

use std::collections::HashMap;
use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;

use bytes::Bytes;
use ferry_core::DatabaseUrl;
use sqlx::{AssertSqlSafe, Connection};
use tokio::io::{AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, mpsc};

use super::archive::{self, Block, Blocks, Head, SECTION_DATA, SECTION_POST_DATA, Toc};
use super::{connect, libpq_target, post, quote_ident};
use crate::engine::{ByteStream, Tool, collect_stderr, wait_tool};
use crate::error::{BackupError, Result};

/// Rows are handed to the loading connections in batches of about this many bytes.
pub(crate) const BATCH: usize = 1024 * 1024;

/// How the objects of the archive are owned in the new database.
#[derive(Debug, Clone, Default)]
pub(crate) struct Owners {
    /// `pg_restore --no-owner`: every object belongs to the restoring user.
    pub no_owner: bool,
    /// `pg_restore --role`: the restore runs as this role (`SET ROLE`), loading included.
    pub role: Option<String>,
}

impl Owners {
    fn args(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.no_owner {
            out.push("--no-owner".into());
        }
        if let Some(r) = &self.role {
            out.push(format!("--role={r}"));
        }
        out
    }
}

/// What a load needs besides the bytes.
pub(crate) struct Load<'a> {
    pub id: &'a str,
    pub pg_restore: &'a Tool,
    /// The empty database to load into.
    pub url: &'a DatabaseUrl,
    pub jobs: usize,
    pub owners: &'a Owners,
}

impl Load<'_> {
    fn failed(&self, message: String) -> BackupError {
        BackupError::RestoreFailed {
            id: self.id.to_string(),
            target: self.url.redacted(),
            message,
        }
    }

    /// Loads the archive read from `stream` into [`Load::url`].
    pub async fn run(&self, stream: ByteStream) -> Result<Loaded> {
        let mut stream = BufReader::with_capacity(crate::pipeline::CHUNK, stream);
        let head = archive::read_head(&mut stream)
            .await
            .map_err(|e| self.failed(format!("reading the archive's table of contents: {e}")))?;
        match &head.toc {
            Some(toc) if parallel_loadable(toc) => {
                let rows = self.parallel(&head, toc, stream).await?;
                Ok(Loaded {
                    jobs: self.jobs.max(1),
                    rows: Some(rows),
                })
            }
            _ => {
                tracing::info!("archive restored by one pg_restore (not parallel)");
                self.whole(&head, stream).await?;
                Ok(Loaded {
                    jobs: 1,
                    rows: None,
                })
            }
        }
    }

    /// One `pg_restore` reading the whole archive from its stdin.
    async fn whole<R: AsyncRead + Unpin>(&self, head: &Head, mut rest: R) -> Result<()> {
        let mut cmd = self.pg_restore_cmd();
        cmd.stdin(Stdio::piped());
        let mut child = self.pg_restore.spawn(&mut cmd)?;
        let stderr = collect_stderr(&mut child);
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| BackupError::Internal("pg_restore has no stdin".into()))?;
        let fed = async {
            stdin.write_all(&head.bytes).await?;
            tokio::io::copy(&mut rest, &mut stdin).await?;
            stdin.shutdown().await
        }
        .await;
        drop(stdin);
        if let Err(e) = fed {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(self.failed(format!("feeding pg_restore: {e}")));
        }
        self.finish_tool(child, stderr).await
    }

    async fn parallel<R: AsyncRead + Unpin>(
        &self,
        head: &Head,
        toc: &Toc,
        rest: R,
    ) -> Result<HashMap<String, u64>> {
        let mut file = tempfile::Builder::new()
            .prefix("ferry-toc-")
            .suffix(".dump")
            .tempfile()
            .map_err(BackupError::io(
                "a temporary file for the table of contents",
            ))?;
        file.write_all(&head.bytes)
            .and_then(|()| file.flush())
            .map_err(BackupError::io(file.path().display()))?;
        let toc_path = file.path().to_path_buf();

        self.pg_restore_file(&["--section=pre-data".into()], &toc_path)
            .await?;
        let started = std::time::Instant::now();
        let loaded = self.data(toc, rest).await?;
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "rows loaded");
        let others = toc
            .entries
            .iter()
            .filter(|e| e.section == SECTION_DATA && e.desc != "TABLE DATA");
        self.restore_listed(others, None, &toc_path).await?;

        let started = std::time::Instant::now();
        let built = post::run(
            &post::Indexes {
                url: self.url,
                jobs: self.jobs.max(1),
                setup: &session_setup(toc, self.owners),
                weights: &loaded.bytes,
            },
            post::candidates(toc),
            &|m| self.failed(m),
        )
        .await?;
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            built = built.len(),
            "indexes built"
        );
        let jobs = format!("--jobs={}", self.jobs.max(1));
        if built.is_empty() {
            self.pg_restore_file(&["--section=post-data".into(), jobs], &toc_path)
                .await?;
        } else {
            let rest = toc
                .entries
                .iter()
                .filter(|e| e.section == SECTION_POST_DATA && !built.contains(&e.dump_id));
            self.restore_listed(rest, Some(jobs), &toc_path).await?;
        }
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "post-data restored"
        );
        Ok(loaded.rows)
    }

    /// The rows: the data blocks, split into batches for `jobs` `COPY` connections.
    async fn data<R: AsyncRead + Unpin>(&self, toc: &Toc, mut rest: R) -> Result<Rows> {
        let tables: HashMap<i64, usize> = toc
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.desc == "TABLE DATA")
            .map(|(i, e)| (e.dump_id, i))
            .collect();
        let setup = session_setup(toc, self.owners);
        let statements: Arc<Vec<String>> =
            Arc::new(toc.entries.iter().map(|e| e.copy_stmt.clone()).collect());
        let names: Arc<Vec<String>> = Arc::new(
            toc.entries
                .iter()
                .map(|e| format!("{}.{}", e.namespace, e.tag))
                .collect(),
        );
        let jobs = self.jobs.max(1);
        let (tx, rx) = mpsc::channel::<Batch>(jobs * 2);
        let rx = Arc::new(Mutex::new(rx));
        // Rows per entry as the server counted them (each `COPY`'s own count), and bytes.
        let counts: Arc<std::sync::Mutex<HashMap<usize, u64>>> = Default::default();
        let mut bytes: HashMap<usize, u64> = HashMap::new();

        let table_names = names.clone();
        let sizes = &mut bytes;
        let dispatch = async move {
            let names = table_names;
            let mut blocks = Blocks::new(&mut rest, toc);
            let mut buf: Vec<u8> = Vec::with_capacity(BATCH + crate::pipeline::CHUNK);
            while let Some(block) = blocks
                .next_block()
                .await
                .map_err(|e| self.failed(format!("reading the archive: {e}")))?
            {
                let dump_id = match block {
                    Block::Data { dump_id } => dump_id,
                    Block::Other { kind } => {
                        return Err(self.failed(format!(
                            "the archive has a data block of type {kind}, which ferry does not load in parallel"
                        )));
                    }
                };
                let Some(&table) = tables.get(&dump_id) else {
                    return Err(self.failed(format!(
                        "the archive has data for entry {dump_id}, which is not table data"
                    )));
                };
                buf.clear();
                loop {
                    let more = blocks
                        .next_chunk(&mut buf)
                        .await
                        .map_err(|e| self.failed(format!("reading the archive: {e}")))?;
                    let last = !more;
                    if buf.len() >= BATCH || last {
                        let cut = if last {
                            strip_end_marker(&mut buf);
                            if !buf.is_empty() && !buf.ends_with(b"\n") {
                                return Err(self.failed(format!(
                                    "the rows of {} do not end with a newline",
                                    names[table]
                                )));
                            }
                            buf.len()
                        } else {
                            match buf.iter().rposition(|&b| b == b'\n') {
                                Some(i) => i + 1,
                                None => continue,
                            }
                        };
                        if cut > 0 {
                            let tail = buf.split_off(cut);
                            let data = Bytes::from(std::mem::replace(&mut buf, tail));
                            *sizes.entry(table).or_default() += data.len() as u64;
                            if tx.send(Batch { table, data }).await.is_err() {
                                // A loader stopped: its error is the one to report.
                                return Ok(());
                            }
                            buf.reserve(BATCH + crate::pipeline::CHUNK);
                        }
                    }
                    if last {
                        break;
                    }
                }
            }
            drop(tx);
            Ok(())
        };
        let worker_counts = counts.clone();
        let workers = join_all_ok((0..jobs).map(move |_| {
            let rx = rx.clone();
            let statements = statements.clone();
            let names = names.clone();
            let setup = setup.clone();
            let counts = worker_counts.clone();
            async move { self.worker(&setup, &statements, &names, rx, &counts).await }
        }));
        // The first error ends both sides: a failed loader drops the dispatcher (and with it
        // the stream), a bad archive drops the loaders (and with them their COPY).
        tokio::try_join!(dispatch, workers)?;
        let counts = counts.lock().map(|c| c.clone()).unwrap_or_default();
        let entry = |i: usize| &toc.entries[i];
        Ok(Rows {
            // Only where the `COPY` went into the entry's own table (not, with
            // `--load-via-partition-root`, into the root that routes the rows).
            rows: counts
                .into_iter()
                .filter(|&(i, _)| {
                    let e = entry(i);
                    let own = format!(
                        "COPY {}.{} ",
                        post::written(&e.namespace),
                        post::written(&e.tag)
                    );
                    e.copy_stmt.starts_with(&own)
                })
                .map(|(i, n)| (format!("{}.{}", entry(i).namespace, entry(i).tag), n))
                .collect(),
            bytes: bytes
                .into_iter()
                .map(|(i, n)| {
                    let e = entry(i);
                    (
                        format!("{}.{}", post::written(&e.namespace), post::written(&e.tag)),
                        n,
                    )
                })
                .collect(),
        })
    }

    async fn worker(
        &self,
        setup: &str,
        statements: &[String],
        names: &[String],
        rx: Arc<Mutex<mpsc::Receiver<Batch>>>,
        counts: &std::sync::Mutex<HashMap<usize, u64>>,
    ) -> Result<()> {
        let recv = || async { rx.lock().await.recv().await };
        let mut conn = connect(self.url).await?;
        let result: Result<()> = async {
            sqlx::raw_sql(AssertSqlSafe(setup.to_string()))
                .execute(&mut conn)
                .await
                .map_err(|e| self.failed(format!("preparing a loading session: {e}")))?;
            let mut pending: Option<Batch> = None;
            loop {
                let first = match pending.take() {
                    Some(b) => b,
                    None => match recv().await {
                        Some(b) => b,
                        None => break,
                    },
                };
                let table = first.table;
                let load_failed = |e: sqlx::Error| {
                    self.failed(format!("loading the rows of {}: {e}", names[table]))
                };
                let mut copy = conn
                    .copy_in_raw(statements[table].trim_end())
                    .await
                    .map_err(load_failed)?;
                copy.send(first.data).await.map_err(load_failed)?;
                loop {
                    match recv().await {
                        Some(b) if b.table == table => {
                            copy.send(b.data).await.map_err(load_failed)?;
                        }
                        other => {
                            pending = other;
                            break;
                        }
                    }
                }
                let rows = copy.finish().await.map_err(load_failed)?;
                if let Ok(mut c) = counts.lock() {
                    *c.entry(table).or_default() += rows;
                }
                if pending.is_none() {
                    break;
                }
            }
            Ok(())
        }
        .await;
        // Leave the queue so the dispatcher notices, whatever happened.
        if result.is_err() {
            rx.lock().await.close();
        }
        let _ = conn.close().await;
        result
    }

    /// `pg_restore --use-list` of just `entries` (in their order) from the archive's head;
    /// nothing when there are none.
    async fn restore_listed<'e>(
        &self,
        entries: impl Iterator<Item = &'e archive::TocEntry>,
        jobs: Option<String>,
        toc_path: &std::path::Path,
    ) -> Result<()> {
        let lines: Vec<String> = entries
            .map(|e| format!("{}; {} {} {}", e.dump_id, e.desc, e.namespace, e.tag))
            .collect();
        if lines.is_empty() {
            return Ok(());
        }
        let mut list = tempfile::Builder::new()
            .prefix("ferry-list-")
            .tempfile()
            .map_err(BackupError::io("a temporary restore list"))?;
        writeln!(list, "{}", lines.join("\n"))
            .and_then(|()| list.flush())
            .map_err(BackupError::io(list.path().display()))?;
        let mut args = vec![format!("--use-list={}", list.path().display())];
        args.extend(jobs);
        self.pg_restore_file(&args, toc_path).await
    }

    fn pg_restore_cmd(&self) -> tokio::process::Command {
        let (dbname, password) = libpq_target(self.url).unwrap_or_default();
        let mut cmd = self.pg_restore.command();
        cmd.args(["--exit-on-error", "--no-password"])
            .arg(format!("--dbname={dbname}"))
            .args(self.owners.args())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(p) = password {
            cmd.env("PGPASSWORD", p);
        }
        cmd
    }

    async fn pg_restore_file(&self, args: &[String], file: &std::path::Path) -> Result<()> {
        let mut cmd = self.pg_restore_cmd();
        cmd.args(args).arg(file);
        let mut child = self.pg_restore.spawn(&mut cmd)?;
        let stderr = collect_stderr(&mut child);
        self.finish_tool(child, stderr).await
    }

    async fn finish_tool(
        &self,
        child: tokio::process::Child,
        stderr: tokio::task::JoinHandle<Vec<u8>>,
    ) -> Result<()> {
        match wait_tool("pg_restore", &self.url.database_name(), child, stderr).await {
            Ok(()) => Ok(()),
            Err(BackupError::ToolFailed { stderr, .. }) => {
                Err(self.failed(format!("pg_restore: {stderr}")))
            }
            Err(e) => Err(e),
        }
    }
}

/// What a load did.
pub(crate) struct Loaded {
    /// How many connections loaded the rows (1 when one `pg_restore` restored the archive).
    pub jobs: usize,
    /// With the parallel load: the rows of each table (`schema.table`) that had data, as the
    /// server counted them while loading; `None` when `pg_restore` loaded them.
    pub rows: Option<HashMap<String, u64>>,
}

/// The rows (by `schema.table`) and bytes (by the table as statements name it) loaded.
struct Rows {
    rows: HashMap<String, u64>,
    bytes: HashMap<String, u64>,
}

/// A batch of whole rows of one table.
struct Batch {
    /// Index of the table's entry in the table of contents.
    table: usize,
    data: Bytes,
}

/// Whether [`Load::parallel`] can load this archive.
fn parallel_loadable(toc: &Toc) -> bool {
    !toc.compressed
        && toc.entries.iter().all(|e| match e.desc.as_str() {
            "TABLE DATA" => e.copy_stmt.starts_with("COPY "),
            "BLOBS" | "BLOB" => false,
            _ => true,
        })
}

/// SQL each loading connection runs first: the archive's client encoding and string syntax,
/// no time limits and an empty search path (as `pg_restore` sets them on its own sessions: a
/// role's `statement_timeout` must not cut a long `COPY` or index build), and the restore role.
fn session_setup(toc: &Toc, owners: &Owners) -> String {
    let mut sql = String::from(
        "SET statement_timeout = 0;\nSET lock_timeout = 0;\nSET idle_in_transaction_session_timeout = 0;\n\
         SELECT pg_catalog.set_config('search_path', '', false);\n",
    );
    for e in &toc.entries {
        if matches!(e.desc.as_str(), "ENCODING" | "STDSTRINGS") {
            sql.push_str(&e.defn);
            sql.push('\n');
        }
    }
    if let Some(role) = &owners.role {
        sql.push_str(&format!("SET ROLE {};\n", quote_ident(role)));
    }
    sql
}

/// `pg_restore` ends a table's rows with `\.`; an archive does not, but a trailing one is not a row.
fn strip_end_marker(buf: &mut Vec<u8>) {
    if buf == b"\\.\n" || buf.ends_with(b"\n\\.\n") {
        buf.truncate(buf.len() - 3);
    }
}

/// Runs futures concurrently on this task and returns the first error (the others are
/// dropped with it), or `Ok` when all succeeded.
pub(super) async fn join_all_ok<F>(futures: impl Iterator<Item = F>) -> Result<()>
where
    F: std::future::Future<Output = Result<()>>,
{
    let mut set: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(move |cx| {
        let mut i = 0;
        while i < set.len() {
            match set[i].as_mut().poll(cx) {
                std::task::Poll::Ready(Ok(())) => {
                    set.swap_remove(i);
                }
                std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => i += 1,
            }
        }
        if set.is_empty() {
            std::task::Poll::Ready(Ok(()))
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_marker_is_not_a_row() {
        let mut b = b"1\ta\n\\.\n".to_vec();
        strip_end_marker(&mut b);
        assert_eq!(b, b"1\ta\n");
        let mut b = b"1\t\\\\.\n".to_vec();
        strip_end_marker(&mut b);
        assert_eq!(
            b, b"1\t\\\\.\n",
            "an escaped backslash before a dot is data"
        );
    }
}
