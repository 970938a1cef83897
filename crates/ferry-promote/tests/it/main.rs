//! ferry-promote's integration tests: real stores only, a directory and S3-compatible servers
//! on loopback (s3s-fs and moto). Each scenario runs on every store that has what it needs.

mod copies;
mod harness;
mod scenarios;
