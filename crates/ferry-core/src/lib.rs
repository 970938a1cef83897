//! What every ferry crate shares: the `ferry.toml` configuration, database URLs and their engines,
//! and the errors those produce.
//!
//! Contract: nothing here prints, and only [`scratch`] talks to a database (it creates and drops
//! the scratch databases of restore checks, compat proofs and tests, with one rule for each). A [`DatabaseUrl`] never shows its password:
//! its `Display` and `Debug` are redacted, and the only way to the secret is the explicit
//! [`DatabaseUrl::expose`], which drivers call when they connect.
//!
//! Key decision: configuration is *resolved* in one place. The CLI gathers flags and environment
//! variables into a [`config::Overrides`], and [`config::resolve`] applies the precedence
//! flags > environment > file > defaults, so no library re-reads the environment behind its back.

pub mod actor;
pub mod config;
pub mod deploy;
pub mod env;
pub mod error;
pub mod fleet;
pub mod scratch;
pub mod url;

pub use config::{ConfigFile, Overrides, Settings};
pub use error::CoreError;
pub use url::{DatabaseUrl, Engine};
