//! HAProxy through its Runtime API (`stats socket ... level admin`), over a unix socket or TCP.
//! One connection per command, in non-interactive mode: HAProxy answers and closes.
//!
//! - `set server <backend>/<host> state drain|ready|maint` moves a host; HAProxy answers
//!   nothing on success and a sentence on failure.
//! - `show servers state <backend>` gives each server's operational state (0 stopped, 1
//!   starting, 2 running, 3 stopping) and administrative flags (maintenance 0x01/0x02/0x04/0x20/
//!   0x40, drain 0x08/0x10).
//! - `show stat <backend> 4 -1` gives current (`scur`) and queued (`qcur`) sessions per server.
//!
//! Both tables are read by their header line, not by column position, so a newer HAProxy that
//! adds columns still parses.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_core::fleet::AdminAddress;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{AdminState, LbFut, LoadBalancer, ServerState};

pub struct Haproxy {
    admin: AdminAddress,
    backend: String,
    timeout: Duration,
    /// At most [`ADMIN_CONNECTIONS`] commands in flight at once.
    permits: tokio::sync::Semaphore,
}

/// How many admin connections ferry holds open at once. HAProxy serves at most `stats maxconn`
/// (10 by default) connections on its stats socket and queues a few more; beyond that a unix
/// socket refuses a connection at once (`EAGAIN`). A batch of ten hosts readied together, each
/// then reading both tables, would be thirty; monitoring and operators share the socket too.
/// Each command takes a fraction of a millisecond, so waiting for a permit costs little.
const ADMIN_CONNECTIONS: usize = 4;

const MAINT_FLAGS: u32 = 0x01 | 0x02 | 0x04 | 0x20 | 0x40;
const DRAIN_FLAGS: u32 = 0x08 | 0x10;

impl Haproxy {
    pub fn new(admin: AdminAddress, backend: &str, timeout: Duration) -> Self {
        Haproxy {
            admin,
            backend: backend.to_string(),
            timeout,
            permits: tokio::sync::Semaphore::new(ADMIN_CONNECTIONS),
        }
    }

    /// Sends one command and returns HAProxy's whole answer. A unix socket whose queue is full
    /// (others are using it) is tried again, backing off, until the command's timeout.
    pub async fn command(&self, cmd: &str) -> Result<String, String> {
        let run = async {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|e| format!("{}: {e}", self.admin))?;
            match &self.admin {
                AdminAddress::Unix(path) => {
                    let mut pause = Duration::from_millis(2);
                    let s = loop {
                        match tokio::net::UnixStream::connect(path).await {
                            Ok(s) => break s,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                tracing::debug!(admin = %self.admin, "haproxy: admin socket busy; trying again");
                                tokio::time::sleep(pause).await;
                                pause = (pause * 2).min(Duration::from_millis(50));
                            }
                            Err(e) => return Err(format!("connecting to {}: {e}", self.admin)),
                        }
                    };
                    talk(s, cmd).await
                }
                AdminAddress::Tcp(addr) => {
                    let s = tokio::net::TcpStream::connect(addr.as_str())
                        .await
                        .map_err(|e| format!("connecting to {}: {e}", self.admin))?;
                    talk(s, cmd).await
                }
            }
        };
        tokio::time::timeout(self.timeout, run).await.map_err(|_| {
            format!(
                "{} did not answer `{cmd}` within {:?}",
                self.admin, self.timeout
            )
        })?
    }

    async fn set_state(&self, host: &str, state: &str) -> Result<(), String> {
        let cmd = format!("set server {}/{host} state {state}", self.backend);
        let answer = self.command(&cmd).await?;
        let answer = answer.trim();
        if answer.is_empty() {
            tracing::info!(backend = %self.backend, host, state, "haproxy server state set");
            Ok(())
        } else {
            Err(format!("HAProxy refused `{cmd}`: {answer}"))
        }
    }

    async fn read_states(&self) -> Result<BTreeMap<String, ServerState>, String> {
        // Two connections at once: the answers are read one after the other by HAProxy anyway,
        // but neither waits for the other's round trip.
        let servers_cmd = format!("show servers state {}", self.backend);
        let stat_cmd = format!("show stat {} 4 -1", self.backend);
        let (servers, stat) = tokio::join!(self.command(&servers_cmd), self.command(&stat_cmd));
        parse(&self.backend, &servers?, &stat?)
    }
}

async fn talk<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, cmd: &str) -> Result<String, String> {
    s.write_all(format!("{cmd}\n").as_bytes())
        .await
        .map_err(|e| format!("sending `{cmd}`: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .await
        .map_err(|e| format!("reading the answer to `{cmd}`: {e}"))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The header of a table: `# a b c` (space-separated) or `# a,b,c` (CSV).
fn header(line: &str, sep: char) -> Vec<String> {
    line.trim_start_matches('#')
        .trim()
        .split(sep)
        .map(|s| s.trim().to_string())
        .collect()
}

fn parse(
    backend: &str,
    servers: &str,
    stat: &str,
) -> Result<BTreeMap<String, ServerState>, String> {
    let unexpected = |what: &str, text: &str| {
        format!(
            "unexpected answer to `{what}`: {}",
            text.trim().lines().next().unwrap_or("(nothing)")
        )
    };
    // `show servers state`: a version line, a header, one row per server.
    let mut lines = servers.lines().filter(|l| !l.trim().is_empty());
    let version = lines.next().unwrap_or("");
    if version.trim().parse::<u32>().is_err() {
        return Err(unexpected(
            &format!("show servers state {backend}"),
            servers,
        ));
    }
    let mut cols: Vec<String> = Vec::new();
    let mut states = BTreeMap::new();
    for line in lines {
        if line.starts_with('#') {
            cols = header(line, ' ');
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let get = |name: &str| {
            cols.iter()
                .position(|c| c == name)
                .and_then(|i| fields.get(i).copied())
        };
        let (Some(be), Some(name), Some(op), Some(admin)) = (
            get("be_name"),
            get("srv_name"),
            get("srv_op_state"),
            get("srv_admin_state"),
        ) else {
            return Err(unexpected(
                &format!("show servers state {backend}"),
                servers,
            ));
        };
        if be != backend {
            continue;
        }
        let admin: u32 = admin.parse().unwrap_or(0);
        let op: u32 = op.parse().unwrap_or(0);
        states.insert(
            name.to_string(),
            ServerState {
                admin: if admin & MAINT_FLAGS != 0 {
                    AdminState::Maint
                } else if admin & DRAIN_FLAGS != 0 {
                    AdminState::Drain
                } else {
                    AdminState::Ready
                },
                up: op != 0,
                sessions: 0,
                status: String::new(),
            },
        );
    }
    // `show stat`: CSV with a `# pxname,svname,...` header.
    let mut lines = stat.lines().filter(|l| !l.trim().is_empty());
    let head = lines.next().unwrap_or("");
    if !head.starts_with("# pxname") {
        return Err(unexpected(&format!("show stat {backend} 4 -1"), stat));
    }
    let cols = header(head, ',');
    let idx = |name: &str| cols.iter().position(|c| c == name);
    let (Some(px), Some(sv), Some(scur), Some(qcur), Some(status)) = (
        idx("pxname"),
        idx("svname"),
        idx("scur"),
        idx("qcur"),
        idx("status"),
    ) else {
        return Err(unexpected(&format!("show stat {backend} 4 -1"), stat));
    };
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f.get(px).copied() != Some(backend) {
            continue;
        }
        let Some(state) = f.get(sv).and_then(|n| states.get_mut(*n)) else {
            continue;
        };
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        state.sessions = n(scur) + n(qcur);
        state.status = f.get(status).copied().unwrap_or("").to_string();
    }
    Ok(states)
}

impl LoadBalancer for Haproxy {
    fn describe(&self) -> String {
        format!("HAProxy at {}, backend {}", self.admin, self.backend)
    }

    fn states(&self) -> LbFut<'_, Option<BTreeMap<String, ServerState>>> {
        Box::pin(async move { self.read_states().await.map(Some) })
    }

    fn drain<'a>(&'a self, host: &'a str) -> LbFut<'a, ()> {
        Box::pin(self.set_state(host, "drain"))
    }

    fn ready<'a>(&'a self, host: &'a str) -> LbFut<'a, ()> {
        Box::pin(self.set_state(host, "ready"))
    }

    fn maint<'a>(&'a self, host: &'a str) -> LbFut<'a, ()> {
        Box::pin(self.set_state(host, "maint"))
    }

    fn counts_sessions(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // As HAProxy 2.6 answers (columns trimmed to the first ones of each table plus status).
    const SERVERS: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight\n\
        3 app 1 h1 127.0.0.1 2 0 1\n3 app 2 h2 127.0.0.1 2 8 1\n3 app 3 h3 127.0.0.1 0 1 1\n4 other 1 h1 127.0.0.1 2 0 1\n\n";
    const STAT: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,status,\n\
        app,h1,0,0,2,5,,10,UP,\napp,h2,1,1,0,3,,7,DRAIN,\napp,h3,0,0,0,0,,0,MAINT,\n\n";

    #[test]
    fn reads_states_and_sessions_by_column_name() {
        let s = parse("app", SERVERS, STAT).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s["h1"].admin, AdminState::Ready);
        assert!(s["h1"].up);
        assert_eq!(s["h1"].sessions, 2);
        assert_eq!(s["h2"].admin, AdminState::Drain);
        assert_eq!(s["h2"].sessions, 1);
        assert_eq!(s["h3"].admin, AdminState::Maint);
        assert!(!s["h3"].up);
        assert_eq!(s["h3"].status, "MAINT");
    }

    /// A stats socket whose queue is full refuses a connection at once (`EAGAIN`); the command
    /// waits and is tried again instead of failing the host it was sent for.
    #[tokio::test]
    async fn a_full_admin_socket_queue_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let socket =
            socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&socket2::SockAddr::unix(&path).unwrap())
            .unwrap();
        socket.listen(0).unwrap();
        socket.set_nonblocking(true).unwrap();
        let listener =
            tokio::net::UnixListener::from_std(std::os::unix::net::UnixListener::from(socket))
                .unwrap();
        // Fill the queue: connections that nobody accepts, until the kernel refuses one.
        let mut queued = Vec::new();
        loop {
            match tokio::net::UnixStream::connect(&path).await {
                Ok(s) => queued.push(s),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            assert!(queued.len() < 64, "the queue never filled");
        }

        let haproxy = Haproxy::new(
            AdminAddress::Unix(path.clone()),
            "app",
            Duration::from_secs(5),
        );
        // Its first poll tries to connect, and the kernel refuses: it must wait, not fail.
        let mut command = std::pin::pin!(haproxy.command("show info"));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            std::future::Future::poll(command.as_mut(), &mut cx).is_pending(),
            "the command gave up on a full queue"
        );

        // The queued ones end (their clients are gone), then the command's own connection is
        // served once it gets in.
        let n = queued.len();
        drop(queued);
        let serve = async {
            for _ in 0..=n {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut line = Vec::new();
                let mut byte = [0u8; 1];
                while !line.ends_with(b"\n") {
                    match s.read(&mut byte).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => line.push(byte[0]),
                    }
                }
                if line == b"show info\n" {
                    s.write_all(b"Name: HAProxy\n").await.unwrap();
                    return;
                }
            }
            panic!("the command never connected");
        };
        let (answer, ()) = tokio::join!(command, serve);
        let answer = answer.unwrap();
        assert_eq!(answer, "Name: HAProxy\n");
    }

    #[test]
    fn an_unknown_backend_is_an_error_naming_the_answer() {
        let e = parse("nope", "Can't find backend.\n", STAT).unwrap_err();
        assert!(e.contains("Can't find backend"), "{e}");
    }
}
