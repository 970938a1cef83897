//! End-to-end tests of the `ferry` binary against real databases. See `tests/lib.rs` for the
//! harness and DEVELOPERS.md for the servers.

// `per_engine!`, the per-engine test macro every test crate shares.
#[macro_use]
extern crate ferry_testkit;

mod adopt;
mod backup;
mod backup_s3;
mod cli;
mod compat;
mod concurrency;
mod ddl_lock;
mod deploy;
mod engines;
mod network;
mod passwords;
mod promote;
mod promote_oci;
mod rollout;
mod snapshots;
