//! SHA-256 digests (always written `sha256:<hex>`), artifact references, and a reader that hashes
//! what passes through it and fails at its end when the bytes do not match the expected digest.
//! That failure is what keeps a tampered artifact from ever completing at its destination.

use std::fmt;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use crate::error::PromoteError;

/// A SHA-256 content digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    /// The lowercase hex of the hash, without the `sha256:` prefix.
    pub fn bytes(&self) -> [u8; 32] {
        self.0
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The digest of a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = PromoteError;

    /// Accepts `sha256:<64 hex>` only: a bare hex string could be mistaken for a version.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PromoteError::BadReference {
            reference: s.to_string(),
            reason: "a digest is written sha256:<64 hex digits>".into(),
        };
        let hex_part = s.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex_part.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part.to_ascii_lowercase(), &mut out).map_err(|_| bad())?;
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What a user wrote to name an artifact, before it is resolved to a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `sha256:<hex>`
    Digest(Digest),
    /// `NAME@sha256:<hex>`
    NamedDigest { name: String, digest: Digest },
    /// `NAME@VERSION` or `NAME:VERSION`
    Version { name: String, version: String },
    /// `REGISTRY/REPO@sha256:<hex>` or `REGISTRY/REPO:TAG`: an image in an OCI registry,
    /// recognised by its registry host (see [`crate::oci::looks_like_image`]).
    Image(crate::oci::ImageRef),
}

impl FromStr for Reference {
    type Err = PromoteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| PromoteError::BadReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.starts_with("sha256:") {
            return Ok(Reference::Digest(s.parse()?));
        }
        if crate::oci::looks_like_image(s) {
            return Ok(Reference::Image(s.parse()?));
        }
        let (name, rest) = s
            .split_once('@')
            .or_else(|| s.split_once(':'))
            .ok_or_else(|| {
                bad("use NAME@sha256:<hex>, sha256:<hex>, NAME@VERSION, NAME:VERSION, or an image REGISTRY/REPO@sha256:<hex> or REGISTRY/REPO:TAG")
            })?;
        check_name(name).map_err(|reason| bad(&reason))?;
        if rest.starts_with("sha256:") {
            return Ok(Reference::NamedDigest {
                name: name.to_string(),
                digest: rest.parse()?,
            });
        }
        check_version(rest).map_err(|reason| bad(&reason))?;
        Ok(Reference::Version {
            name: name.to_string(),
            version: rest.to_string(),
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Digest(d) => write!(f, "{d}"),
            Reference::NamedDigest { name, digest } => write!(f, "{name}@{digest}"),
            Reference::Version { name, version } => write!(f, "{name}@{version}"),
            Reference::Image(image) => write!(f, "{image}"),
        }
    }
}

/// Artifact and environment names become store keys, so they are restricted to characters
/// that mean the same on every backend.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    check_part(name, "name", |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
    })
}

pub(crate) fn check_version(version: &str) -> Result<(), String> {
    check_part(version, "version", |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+')
    })
}

fn check_part(text: &str, what: &str, ok: impl Fn(char) -> bool) -> Result<(), String> {
    if text.is_empty() || text.len() > 128 {
        return Err(format!("a {what} has 1 to 128 characters"));
    }
    if text.starts_with('.') || !text.chars().all(ok) {
        return Err(format!(
            "`{text}` is not a valid {what}: use letters, digits, `.`, `_`, `-`{} and do not start with `.`",
            if what == "version" { ", `+`" } else { "" }
        ));
    }
    Ok(())
}

/// The outcome of a [`Verifying`] stream, readable after it ended (or failed).
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome(Arc<Mutex<Option<(Digest, u64)>>>);

impl Outcome {
    /// The digest and length of everything read, once the stream reached its end.
    pub(crate) fn get(&self) -> Option<(Digest, u64)> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Hashes the bytes it passes on. At the end, when an `expected` digest was given and the bytes
/// do not match it, the last read is an error instead of EOF, so a store never completes the
/// object (see `ferry-store`'s "complete or absent" contract).
pub(crate) struct Verifying<R> {
    inner: R,
    hasher: Option<Sha256>,
    len: u64,
    expected: Option<Digest>,
    outcome: Outcome,
}

impl<R> Verifying<R> {
    pub(crate) fn new(inner: R, expected: Option<Digest>) -> (Self, Outcome) {
        let outcome = Outcome::default();
        let me = Verifying {
            inner,
            hasher: Some(Sha256::new()),
            len: 0,
            expected,
            outcome: outcome.clone(),
        };
        (me, outcome)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Verifying<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            // No room: an empty read here is not the end of the stream.
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if !new.is_empty() {
                    if let Some(h) = this.hasher.as_mut() {
                        h.update(new);
                    }
                    this.len += new.len() as u64;
                    return Poll::Ready(Ok(()));
                }
                // End of stream: settle the digest once.
                if let Some(h) = this.hasher.take() {
                    let actual = Digest(h.finalize().into());
                    *this.outcome.0.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((actual, this.len));
                }
                match (this.expected, this.outcome.get()) {
                    (Some(want), Some((got, _))) if want != got => {
                        Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("the bytes hash to {got}, not {want}"),
                        )))
                    }
                    _ => Poll::Ready(Ok(())),
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn digests_and_references_parse() {
        let d = Digest::of(b"hello");
        let text = d.to_string();
        assert!(text.starts_with("sha256:") && text.len() == 71);
        assert_eq!(text.parse::<Digest>().unwrap(), d);
        assert!("abc".parse::<Digest>().is_err());
        assert!(d.hex().parse::<Digest>().is_err());

        assert_eq!(text.parse::<Reference>().unwrap(), Reference::Digest(d));
        assert_eq!(
            format!("app@{text}").parse::<Reference>().unwrap(),
            Reference::NamedDigest {
                name: "app".into(),
                digest: d
            }
        );
        for r in ["app@1.2.3+build", "app:1.2.3+build"] {
            assert_eq!(
                r.parse::<Reference>().unwrap(),
                Reference::Version {
                    name: "app".into(),
                    version: "1.2.3+build".into()
                }
            );
        }
        for bad in ["app", "@1.0", "app@", "../x@1", "app@a/b", "app@sha256:12"] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }

        // Images are recognised by their registry host; store references keep their meaning.
        for image in [
            format!("127.0.0.1:5000/app@{text}"),
            "localhost/app:1.2.3".to_string(),
            "registry.example.com/team/app:1.2.3".to_string(),
        ] {
            assert!(
                matches!(image.parse::<Reference>().unwrap(), Reference::Image(_)),
                "{image}"
            );
        }
        assert!("team/app:1".parse::<Reference>().is_err());
        assert!("registry.example.com/app".parse::<Reference>().is_err());
    }

    #[tokio::test]
    async fn verifying_reader_fails_at_the_end_on_a_mismatch() {
        let (mut ok, outcome) = Verifying::new(&b"hello"[..], Some(Digest::of(b"hello")));
        let mut out = Vec::new();
        ok.read_to_end(&mut out).await.unwrap();
        assert_eq!(outcome.get(), Some((Digest::of(b"hello"), 5)));

        let (mut bad, outcome) = Verifying::new(&b"hellO"[..], Some(Digest::of(b"hello")));
        let err = bad.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(outcome.get(), Some((Digest::of(b"hellO"), 5)));
    }
}
