//! What every test server (S3, registry) needs to start: its binary, a free loopback port that
//! nobody else in the process is handed at the same time, the wait until it listens, and the
//! rule for a server that is not installed.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const START_DEADLINE: Duration = Duration::from_secs(60);

/// `$env_var` when set, else `name` on `PATH`, else the first of `fallbacks` that exists.
pub(crate) fn find_binary(env_var: &str, name: &str, fallbacks: &[PathBuf]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .chain(fallbacks.iter().cloned())
        .find(|p| p.is_file())
}

/// A server that is not installed: a failure under `CI=true`, a loud skip elsewhere.
pub(crate) fn missing(msg: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED (no server): {msg}");
}

/// Held from choosing a port until the server listens on it. `free_port` finds a port and
/// releases it; until the server has bound it, another test thread could be handed the same
/// one and end up talking to this server. One lock for every kind of server (test binaries
/// run one at a time, so a process-wide lock is enough).
pub(crate) fn spawning() -> MutexGuard<'static, ()> {
    static SPAWNING: Mutex<()> = Mutex::new(());
    SPAWNING.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits for `port` to accept connections, failing early (with the server's log) when
/// `exited` reports that the server is gone.
pub(crate) fn wait_until_listening(
    what: &str,
    port: u16,
    mut exited: impl FnMut() -> Option<ExitStatus>,
    log: impl Fn() -> String,
) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Some(status) = exited() {
            panic!(
                "{what} exited ({status}) before listening on {addr}; its log:\n{}",
                log()
            );
        }
        if Instant::now() > deadline {
            panic!(
                "{what} did not listen on {addr} within {START_DEADLINE:?}; its log:\n{}",
                log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
