//! The harness of ferry's end-to-end tests: the real `ferry` binary (built by this crate, see
//! `bin/ferry.rs`) against real databases and S3-compatible servers, from `ferry-testkit`.

pub use ferry_testkit::db::*;
pub use ferry_testkit::faults;
pub use ferry_testkit::fleet;
pub use ferry_testkit::haproxy;
pub use ferry_testkit::registry;
pub use ferry_testkit::s3;
pub use ferry_testkit::traffic;
