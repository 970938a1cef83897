//! OCI registries as artifact locations: `oci://HOST[:PORT]/REPO[:TAG]`, spoken to through a
//! small client of the distribution API (`/v2/…`) on `reqwest`.
//!
//! An image's digest is its **manifest digest** (an image manifest or an index). Ferry carries
//! the manifest bytes itself and hashes them: [`ArtifactLocation::read`] returns them, so a
//! manifest that does not hash to its digest is [`PromoteError::Tampered`]. Blobs (config and
//! layers) are content-addressed by the registry, which checks their digest when they are
//! uploaded (`PUT …?digest=`), so ferry streams them without hashing them again.
//!
//! A copy between two repositories ([`ArtifactLocation::copy_to`]) copies every blob the
//! destination lacks (for an index, every child manifest and its blobs first): within one
//! registry by a cross-repository mount (no payload through ferry); between registries by a
//! streamed GET → PUT, never holding a blob in memory. Then it PUTs the manifest bytes
//! unchanged, with their own media type, and checks that the destination resolves the digest
//! to itself. [`ArtifactLocation::make_live`] points the environment's tag at the digest.
//!
//! Never: send credentials over plain HTTP to anything but loopback or a registry the user
//! marked insecure; print or log credentials.

//! Files along the seams: `reference.rs` (locations and image references), `credentials.rs`
//! (where credentials come from: the caller, docker's `config.json`, credential helpers),
//! `auth.rs` (answering challenges), `client.rs` (the HTTP client: timeouts, retries, manifest
//! and blob requests) and `location.rs` (the [`ArtifactLocation`](crate::ArtifactLocation)
//! implementation: resolve, copy, make live).

mod auth;
mod client;
mod credentials;
mod location;
mod reference;

pub use client::{MANIFEST_TYPES, RegistryOptions};
pub use credentials::Credentials;
pub use location::OciLocation;
pub use reference::{ImageRef, OciUrl, looks_like_image};
