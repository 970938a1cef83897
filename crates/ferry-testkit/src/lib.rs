//! Test support shared by ferry's test suites: real servers, never mocks.
//!
//! - [`db`]: a database of one's own per test on PostgreSQL, MySQL/MariaDB or SQLite, dropped
//!   afterwards, plus helpers to run the `ferry` binary.
//! - [`s3`]: an S3-compatible server (s3s-fs or moto) on a free loopback port per test.
//! - [`faults`]: servers that accept and never answer, and a proxy that answers errors or
//!   stalls in front of a real server, for tests of timeouts and retries.
//! - [`registry`]: an OCI registry (Debian's `docker-registry`) on a free loopback port per
//!   test, optionally behind Basic auth, with helpers to push an image and check tags.
//! - [`fleet`]: real HTTP hosts on loopback ports (a Python script) and the deploy command
//!   that restarts them with a new version, for rollouts.
//! - [`haproxy`]: a real HAProxy in front of a fleet, with its Runtime API on a unix socket and
//!   a TCP port.
//! - [`traffic`]: clients sending requests through a load balancer for the whole of a rollout,
//!   keeping every failed request.
//!
//! Contract: a test whose server cannot be reached fails under `CI=true` with a message saying
//! how to start or install it; elsewhere it prints `SKIPPED (no server)` and returns. It never
//! passes silently.

pub mod db;
#[macro_use]
mod per_engine;
pub mod faults;
pub mod fleet;
pub mod haproxy;
pub mod registry;
pub mod s3;
mod server;
pub mod traffic;
