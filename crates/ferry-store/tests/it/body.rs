//! Request bodies for uploads: deterministic bytes whose value depends on their position (so a
//! reordered or repeated part changes the hash), with events at chosen offsets: an error, as
//! when a dump tool dies, or a callback, such as killing the server.

use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

pub const MIB: usize = 1024 * 1024;

pub enum Event {
    Fail,
    Call(Box<dyn FnOnce() + Send>),
    /// Never yields another byte, nor an end: a writer that hangs.
    Stall,
}

pub struct Body {
    pos: u64,
    len: u64,
    /// Sorted by offset; the first is next.
    events: Vec<(u64, Event)>,
}

impl Body {
    pub fn new(len: usize) -> Self {
        Self {
            pos: 0,
            len: len as u64,
            events: Vec::new(),
        }
    }

    /// Fails the read that reaches `at`.
    pub fn failing_at(self, at: usize) -> Self {
        self.with_event(at, Event::Fail)
    }

    /// Calls `f` when the reads reach `at`, then goes on.
    pub fn calling_at(self, at: usize, f: impl FnOnce() + Send + 'static) -> Self {
        self.with_event(at, Event::Call(Box::new(f)))
    }

    /// Hangs at `at`, after any other event there.
    pub fn stalling_at(self, at: usize) -> Self {
        self.with_event(at, Event::Stall)
    }

    fn with_event(mut self, at: usize, event: Event) -> Self {
        self.events.push((at as u64, event));
        // Stable: events at one offset happen in the order they were added.
        self.events.sort_by_key(|(at, _)| *at);
        self
    }

    pub fn boxed(self) -> ferry_store::ByteStream {
        Box::pin(self)
    }
}

/// The byte at `pos` of every body.
fn byte_at(pos: u64) -> u8 {
    // splitmix64 of the 8-byte block, then the byte within it.
    let mut z = (pos / 8).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    z.to_le_bytes()[(pos % 8) as usize]
}

impl AsyncRead for Body {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        while let Some((at, event)) = self.events.first() {
            if *at > self.pos {
                break;
            }
            if matches!(event, Event::Stall) {
                return Poll::Pending;
            }
            match self.events.remove(0).1 {
                Event::Stall => unreachable!(),
                Event::Fail => {
                    return Poll::Ready(Err(std::io::Error::other("the dump tool died half-way")));
                }
                Event::Call(f) => f(),
            }
        }
        let until = self
            .events
            .first()
            .map_or(self.len, |(at, _)| *at)
            .min(self.len);
        let n = (until - self.pos).min(buf.remaining() as u64) as usize;
        let start = self.pos;
        let chunk: Vec<u8> = (start..start + n as u64).map(byte_at).collect();
        buf.put_slice(&chunk);
        self.pos += n as u64;
        Poll::Ready(Ok(()))
    }
}

/// The SHA-256 of the first `len` body bytes.
pub fn expected_sha256(len: usize) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut pos = 0u64;
    let mut block = vec![0u8; 64 * 1024];
    while pos < len as u64 {
        let n = (len as u64 - pos).min(block.len() as u64) as usize;
        for (i, b) in block[..n].iter_mut().enumerate() {
            *b = byte_at(pos + i as u64);
        }
        hasher.update(&block[..n]);
        pos += n as u64;
    }
    hasher.finalize().into()
}

/// The SHA-256 and length of everything `stream` yields.
pub async fn sha256_of(mut stream: ferry_store::ByteStream) -> ([u8; 32], usize) {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf).await.expect("read the object back");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n;
    }
    (hasher.finalize().into(), total)
}
