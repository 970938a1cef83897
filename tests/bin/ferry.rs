//! The `ferry` binary, built as part of this test crate so that `cargo test` always tests the
//! current code (cargo does not rebuild another package's binaries for a package's tests).
//! It is the same three lines as `crates/ferry-cli/src/main.rs`.

fn main() -> std::process::ExitCode {
    ferry_cli::main()
}
