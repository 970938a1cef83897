//! ferry-store's integration tests: the S3 backend against real servers on loopback.

mod body;
mod copy;
mod s3;
