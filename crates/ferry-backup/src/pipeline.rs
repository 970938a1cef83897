//! The byte pipelines, both with bounded memory and no temporary copy on disk:
//! - backup: dump stdout → (async reader task) → gzip or zstd + SHA-256 (blocking thread) →
//!   store body;
//! - restore/verify: store object → SHA-256 + gunzip or zstd (blocking thread) → decompressed
//!   bytes, the compression being the one the manifest records.
//!
//! Channels between the stages hold a few chunks of [`CHUNK`] bytes, so memory stays under a few
//! MiB whatever the database size. Compression runs on a blocking thread so it never stalls the
//! async runtime that drives the upload.
//!
//! A failure anywhere becomes an error *in the stream* before its end, so the store never
//! completes an object from a failed dump: the body fails at EOF if the tool exited non-zero or
//! wrote nothing.

use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::mpsc;

use crate::engine::{BoxFut, ByteStream};
use crate::error::{BackupError, Result};
use crate::manifest::{Compression, Manifest};
use crate::{Phase, Progress};

pub(crate) const CHUNK: usize = 256 * 1024;
const DEPTH: usize = 4;

/// An `AsyncRead` over a channel of chunks; an `Err` item fails the read.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if !self.current.is_empty() {
                let n = self.current.len().min(buf.remaining());
                buf.put_slice(&self.current[..n]);
                self.current.advance(n);
                return Poll::Ready(Ok(()));
            }
            match std::task::ready!(self.rx.poll_recv(cx)) {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// Rate-limited progress reports.
struct Meter<'a> {
    progress: &'a dyn Progress,
    phase: Phase,
    started: Instant,
    last: Instant,
    total: Option<u64>,
}

impl<'a> Meter<'a> {
    fn new(progress: &'a dyn Progress, phase: Phase, total: Option<u64>) -> Self {
        let now = Instant::now();
        Self {
            progress,
            phase,
            started: now,
            last: now,
            total,
        }
    }

    fn tick(&mut self, done: u64, force: bool) {
        let now = Instant::now();
        if force || now.duration_since(self.last).as_millis() >= 100 {
            self.last = now;
            let secs = now.duration_since(self.started).as_secs_f64();
            let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
            self.progress.bytes(self.phase, done, self.total, rate);
        }
    }
}

/// What the backup pipeline measured.
#[derive(Debug, Clone)]
pub(crate) struct Totals {
    pub raw_bytes: u64,
    pub compressed_bytes: u64,
    pub sha256: String,
}

/// The compressing side, writing into a buffer the pipeline empties after every chunk.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(compression: Compression, level: i32) -> std::io::Result<Self> {
        let buf = Vec::with_capacity(CHUNK);
        Ok(match compression {
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                buf,
                flate2::Compression::new(level.clamp(0, 9) as u32),
            )),
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(buf, level)?),
        })
    }

    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Zstd(e) => e.write_all(data),
        }
    }

    /// The compressed bytes produced so far.
    fn take(&mut self) -> Vec<u8> {
        match self {
            Encoder::Gzip(e) => std::mem::take(e.get_mut()),
            Encoder::Zstd(e) => std::mem::take(e.get_mut()),
        }
    }

    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

enum Msg {
    Data(Bytes),
    End,
    Fail(String),
}

/// Starts the backup pipeline over a dump. Returns the body for `put_stream` and a future with
/// the totals, or the dump's own error (so a tool failure is reported as such, not as a store
/// I/O error).
pub(crate) fn compress(
    mut raw: ByteStream,
    finish: BoxFut<'static, ()>,
    tool: String,
    database: String,
    (compression, level): (Compression, i32),
    progress: Arc<dyn Progress>,
) -> (ByteStream, BoxFut<'static, Totals>) {
    let (raw_tx, mut raw_rx) = mpsc::channel::<Msg>(DEPTH);
    let (out_tx, out_rx) = mpsc::channel::<std::io::Result<Bytes>>(DEPTH);
    let dump_error: Arc<Mutex<Option<BackupError>>> = Arc::default();

    let slot = dump_error.clone();
    let reader = tokio::spawn(async move {
        let mut meter = Meter::new(&*progress, Phase::Dump, None);
        let mut total = 0u64;
        let outcome: Result<()> = async {
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = raw
                    .read(&mut buf)
                    .await
                    .map_err(|source| BackupError::ToolSpawn {
                        tool: tool.clone(),
                        source,
                    })?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                total += n as u64;
                meter.tick(total, false);
                if raw_tx.send(Msg::Data(Bytes::from(buf))).await.is_err() {
                    return Err(BackupError::Internal("compressor stopped".into()));
                }
            }
            finish.await?;
            if total == 0 {
                return Err(BackupError::EmptyDump {
                    tool: tool.clone(),
                    database: database.clone(),
                });
            }
            Ok(())
        }
        .await;
        meter.tick(total, true);
        match outcome {
            Ok(()) => {
                let _ = raw_tx.send(Msg::End).await;
                Ok(total)
            }
            Err(e) => {
                let _ = raw_tx.send(Msg::Fail(e.to_string())).await;
                if let Ok(mut s) = slot.lock() {
                    *s = Some(e);
                }
                Err(())
            }
        }
    });

    let compressor =
        tokio::task::spawn_blocking(move || -> std::result::Result<(u64, String), String> {
            let mut hasher = Sha256::new();
            let mut compressed = 0u64;
            let mut enc = Some(Encoder::new(compression, level).map_err(|e| e.to_string())?);
            let mut emit =
                |bytes: Vec<u8>, hasher: &mut Sha256| -> std::result::Result<(), String> {
                    if bytes.is_empty() {
                        return Ok(());
                    }
                    hasher.update(&bytes);
                    compressed += bytes.len() as u64;
                    out_tx
                        .blocking_send(Ok(Bytes::from(bytes)))
                        .map_err(|_| "the store stopped reading".to_string())
                };
            loop {
                match raw_rx.blocking_recv() {
                    Some(Msg::Data(chunk)) => {
                        let e = enc.as_mut().ok_or("the compressor finished early")?;
                        e.write_all(&chunk).map_err(|e| e.to_string())?;
                        let out = e.take();
                        emit(out, &mut hasher)?;
                    }
                    Some(Msg::End) => {
                        let e = enc.take().ok_or("the compressor finished early")?;
                        let out = e.finish().map_err(|e| e.to_string())?;
                        emit(out, &mut hasher)?;
                        break;
                    }
                    Some(Msg::Fail(msg)) => {
                        let _ = out_tx.blocking_send(Err(std::io::Error::other(msg.clone())));
                        return Err(msg);
                    }
                    None => {
                        let msg = "the dump reader stopped".to_string();
                        let _ = out_tx.blocking_send(Err(std::io::Error::other(msg.clone())));
                        return Err(msg);
                    }
                }
            }
            Ok((compressed, hex::encode(hasher.finalize())))
        });

    let body: ByteStream = Box::pin(ChannelReader {
        rx: out_rx,
        current: Bytes::new(),
    });
    let done = Box::pin(async move {
        let raw = reader.await;
        let comp = compressor.await;
        if let Some(e) = dump_error.lock().ok().and_then(|mut s| s.take()) {
            return Err(e);
        }
        let raw_bytes = raw
            .map_err(|e| BackupError::Internal(format!("dump reader: {e}")))?
            .map_err(|()| BackupError::Internal("dump reader failed".into()))?;
        let (compressed_bytes, sha256) = comp
            .map_err(|e| BackupError::Internal(format!("compressor: {e}")))?
            .map_err(BackupError::Internal)?;
        Ok(Totals {
            raw_bytes,
            compressed_bytes,
            sha256,
        })
    });
    (body, done)
}

/// Counts and hashes what is read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// The decompressing side, over the hashing reader of the stored object.
enum Decoder<R: Read> {
    Gzip(Box<flate2::bufread::GzDecoder<std::io::BufReader<HashingReader<R>>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, std::io::BufReader<HashingReader<R>>>>),
}

impl<R: Read> Decoder<R> {
    fn new(compression: Compression, inner: HashingReader<R>) -> std::io::Result<Self> {
        Ok(match compression {
            // Over a BufReader of ferry's own, so the bytes it read ahead past the end of the
            // gzip member are not lost (flate2's `read::GzDecoder` would drop them).
            Compression::Gzip => Decoder::Gzip(Box::new(flate2::bufread::GzDecoder::new(
                std::io::BufReader::new(inner),
            ))),
            // One frame, as ferry writes it; bytes after it are found as trailing garbage.
            Compression::Zstd => Decoder::Zstd(Box::new(
                zstd::stream::read::Decoder::new(inner)?.single_frame(),
            )),
        })
    }

    /// Compressed bytes read so far.
    fn compressed(&self) -> u64 {
        match self {
            Decoder::Gzip(d) => d.get_ref().get_ref().count,
            Decoder::Zstd(d) => d.get_ref().get_ref().count,
        }
    }

    /// The hashing reader back, after reading whatever follows the compressed stream into
    /// `rest`.
    fn finish(self, rest: &mut Vec<u8>) -> std::io::Result<HashingReader<R>> {
        match self {
            Decoder::Gzip(d) => {
                let mut buffered = d.into_inner();
                buffered.read_to_end(rest)?;
                Ok(buffered.into_inner())
            }
            Decoder::Zstd(d) => {
                let mut buffered = d.finish();
                buffered.read_to_end(rest)?;
                Ok(buffered.into_inner())
            }
        }
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}

/// Streams a stored object through SHA-256 and its decompressor, checking it against `manifest`. Returns
/// the decompressed bytes (which fail with an error instead of ending when the object does not
/// match) and a future that resolves once the check passed.
///
/// See also [`checksum`], the cheaper pass that reads the object without decompressing it.
pub(crate) fn decode(
    object: ByteStream,
    manifest: &Manifest,
    progress: Arc<dyn Progress>,
    phase: Phase,
) -> (ByteStream, BoxFut<'static, ()>) {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(DEPTH);
    let bridge = tokio_util::io::SyncIoBridge::new(object);
    let m = manifest.clone();
    let worker = tokio::task::spawn_blocking(move || -> Result<()> {
        let corrupt = |reason: String| BackupError::Corrupt {
            id: m.id.clone(),
            reason,
        };
        let mut meter = Meter::new(&*progress, phase, Some(m.compressed_bytes));
        let hashing = HashingReader {
            inner: bridge,
            hasher: Sha256::new(),
            count: 0,
        };
        let kind = m.compression.as_str();
        let mut raw = 0u64;
        let outcome: Result<()> = (|| {
            let mut dec = Decoder::new(m.compression, hashing)
                .map_err(|e| corrupt(format!("cannot start the {kind} decoder ({e})")))?;
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = dec
                    .read(&mut buf)
                    .map_err(|e| corrupt(format!("the {kind} stream is damaged ({e})")))?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                raw += n as u64;
                meter.tick(dec.compressed(), false);
                if raw > m.raw_bytes {
                    return Err(corrupt(format!(
                        "it decompresses to more than the {} bytes its manifest records",
                        m.raw_bytes
                    )));
                }
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return Err(BackupError::Internal("restore stopped reading".into()));
                }
            }
            let mut rest = Vec::new();
            let hashing = dec
                .finish(&mut rest)
                .map_err(|e| corrupt(format!("cannot read it to the end ({e})")))?;
            meter.tick(hashing.count, true);
            if !rest.is_empty() {
                return Err(corrupt(format!(
                    "{} bytes follow the end of the {kind} stream",
                    rest.len()
                )));
            }
            let sha = hex::encode(hashing.hasher.finalize());
            if hashing.count != m.compressed_bytes {
                return Err(corrupt(format!(
                    "the stored object has {} bytes, its manifest says {}",
                    hashing.count, m.compressed_bytes
                )));
            }
            if sha != m.sha256 {
                return Err(corrupt(format!(
                    "SHA-256 of the stored object is {sha}, its manifest says {}",
                    m.sha256
                )));
            }
            if raw != m.raw_bytes {
                return Err(corrupt(format!(
                    "it decompresses to {raw} bytes, its manifest says {}",
                    m.raw_bytes
                )));
            }
            Ok(())
        })();
        if let Err(e) = &outcome {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
        outcome
    });
    let stream: ByteStream = Box::pin(ChannelReader {
        rx,
        current: Bytes::new(),
    });
    let verified = Box::pin(async move {
        worker
            .await
            .map_err(|e| BackupError::Internal(format!("decompressor: {e}")))?
    });
    (stream, verified)
}

/// Reads the stored object once, without decompressing it, and checks its size and SHA-256
/// against the manifest. A flipped or missing byte anywhere fails here.
pub(crate) async fn checksum(
    mut object: ByteStream,
    manifest: &Manifest,
    progress: &dyn Progress,
) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let corrupt = |reason: String| BackupError::Corrupt {
        id: manifest.id.clone(),
        reason,
    };
    let mut meter = Meter::new(progress, Phase::Verify, Some(manifest.compressed_bytes));
    let mut hasher = Sha256::new();
    let mut count = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = object
            .read(&mut buf)
            .await
            .map_err(|e| corrupt(format!("reading it failed ({e})")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        count += n as u64;
        meter.tick(count, false);
    }
    meter.tick(count, true);
    if count != manifest.compressed_bytes {
        return Err(corrupt(format!(
            "its data object has {count} bytes, its manifest records {}",
            manifest.compressed_bytes
        )));
    }
    let sha = hex::encode(hasher.finalize());
    if sha != manifest.sha256 {
        return Err(corrupt(format!(
            "its SHA-256 is {sha}, its manifest records {}",
            manifest.sha256
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Quiet;

    fn ok_finish() -> BoxFut<'static, ()> {
        Box::pin(async { Ok(()) })
    }

    async fn run(
        raw: &'static [u8],
        finish: BoxFut<'static, ()>,
    ) -> (Result<Totals>, Vec<u8>, bool) {
        run_with(raw, finish, Compression::Gzip).await
    }

    async fn run_with(
        raw: &'static [u8],
        finish: BoxFut<'static, ()>,
        compression: Compression,
    ) -> (Result<Totals>, Vec<u8>, bool) {
        let (mut body, done) = compress(
            Box::pin(raw),
            finish,
            "t".into(),
            "db".into(),
            (compression, compression.default_level()),
            Arc::new(Quiet),
        );
        let mut out = Vec::new();
        let read_ok = body.read_to_end(&mut out).await.is_ok();
        (done.await, out, read_ok)
    }

    #[tokio::test]
    async fn round_trip_and_checks() {
        for compression in [Compression::Gzip, Compression::Zstd] {
            round_trip_and_checks_with(compression).await;
        }
    }

    async fn round_trip_and_checks_with(compression: Compression) {
        let data: &'static [u8] = Box::leak(
            (0..3 * CHUNK + 5)
                .map(|i| (i % 251) as u8 ^ (i / 7) as u8)
                .collect::<Vec<u8>>()
                .into_boxed_slice(),
        );
        let (totals, gz, ok) = run_with(data, ok_finish(), compression).await;
        assert!(ok);
        let totals = totals.unwrap();
        assert_eq!(totals.raw_bytes, data.len() as u64);
        assert_eq!(totals.compressed_bytes, gz.len() as u64);
        assert_eq!(totals.sha256, hex::encode(Sha256::digest(&gz)));
        let manifest = Manifest {
            id: "x".into(),
            created_at: chrono::Utc::now(),
            engine: "sqlite".into(),
            server_version: String::new(),
            database: String::new(),
            url: String::new(),
            schema_version: None,
            label: None,
            tool: String::new(),
            ferry_version: String::new(),
            raw_bytes: totals.raw_bytes,
            compression,
            compressed_bytes: totals.compressed_bytes,
            sha256: totals.sha256.clone(),
            duration_ms: 0,
            tables: vec![],
        };
        let (mut s, v) = decode(
            Box::pin(std::io::Cursor::new(gz.clone())),
            &manifest,
            Arc::new(Quiet),
            Phase::Verify,
        );
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.unwrap();
        v.await.unwrap();
        assert_eq!(back, data);

        let mut bad = gz.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        let (mut s, v) = decode(
            Box::pin(std::io::Cursor::new(bad)),
            &manifest,
            Arc::new(Quiet),
            Phase::Verify,
        );
        let mut sink = Vec::new();
        assert!(s.read_to_end(&mut sink).await.is_err());
        assert!(matches!(v.await, Err(BackupError::Corrupt { .. })));

        // Bytes after the compressed stream are refused too.
        let mut long = gz.clone();
        long.extend_from_slice(b"junk");
        let padded = Manifest {
            compressed_bytes: long.len() as u64,
            sha256: hex::encode(Sha256::digest(&long)),
            ..manifest
        };
        let (mut s, v) = decode(
            Box::pin(std::io::Cursor::new(long)),
            &padded,
            Arc::new(Quiet),
            Phase::Verify,
        );
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
        let err = v.await.unwrap_err().to_string();
        assert!(err.contains("follow the end"), "{compression:?}: {err}");
    }

    #[tokio::test]
    async fn failing_or_empty_dump_fails_the_body() {
        let failing: BoxFut<'static, ()> = Box::pin(async {
            Err(BackupError::ToolFailed {
                tool: "pg_dump".into(),
                database: "db".into(),
                status: "exit status: 1".into(),
                stderr: "boom".into(),
            })
        });
        let (res, _, ok) = run(b"partial", failing).await;
        assert!(!ok, "the body must fail");
        assert!(matches!(res, Err(BackupError::ToolFailed { .. })));
        let (res, _, ok) = run(b"", ok_finish()).await;
        assert!(!ok);
        assert!(matches!(res, Err(BackupError::EmptyDump { .. })));
    }
}
