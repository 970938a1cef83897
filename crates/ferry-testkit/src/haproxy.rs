//! A real HAProxy (Debian's `haproxy`) on loopback, one per test, in front of a [`Fleet`]: an
//! HTTP frontend on a free port, one backend whose servers are named after the hosts (with HTTP
//! health checks on `/_status`), and the Runtime API on a unix socket and on a TCP port, both
//! `level admin`. Its own small Runtime API client (std sockets, independent of ferry's) lets a
//! test read what ferry did to each server.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fleet::Fleet;

const ENV_VAR: &str = "FERRY_TEST_HAPROXY";
const INSTALL: &str = "apt-get install -y haproxy";

/// A running `haproxy -db`, killed on drop.
pub struct Haproxy {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    admin_port: u16,
    backend: String,
}

fn binary() -> Option<PathBuf> {
    crate::server::find_binary(ENV_VAR, "haproxy", &[PathBuf::from("/usr/sbin/haproxy")])
}

impl Haproxy {
    /// Starts HAProxy with backend `backend` over every host of `fleet`, and waits until it
    /// reports them all up. `None` (loudly) when haproxy is not installed, outside CI.
    pub fn start(fleet: &Fleet, backend: &str) -> Option<Haproxy> {
        let Some(bin) = binary() else {
            crate::server::missing(&format!(
                "haproxy not found; install it with `{INSTALL}` (or set {ENV_VAR} to the binary)"
            ));
            return None;
        };
        let dir = tempfile::tempdir().expect("temporary directory");
        let _spawning = crate::server::spawning();
        let port = crate::server::free_port();
        let admin_port = crate::server::free_port();
        let servers: String = fleet
            .hosts()
            .iter()
            .map(|h| format!("    server {} 127.0.0.1:{}\n", h.name, h.port))
            .collect();
        let config = format!(
            "global\n    stats socket {sock} mode 600 level admin\n    stats socket ipv4@127.0.0.1:{admin_port} level admin\n    stats timeout 10s\n\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n    option http-server-close\n\n\
             frontend fe\n    bind 127.0.0.1:{port}\n    default_backend {backend}\n\n\
             backend {backend}\n    balance roundrobin\n    option httpchk GET /_status\n    default-server check inter 200ms fall 2 rise 2\n{servers}",
            sock = dir.path().join("admin.sock").display(),
        );
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, config).expect("haproxy.cfg");
        let log = std::fs::File::create(dir.path().join("log")).expect("log");
        let mut child = Command::new(bin)
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        let log_path = dir.path().join("log");
        crate::server::wait_until_listening(
            "haproxy",
            port,
            || child.try_wait().ok().flatten(),
            || std::fs::read_to_string(&log_path).unwrap_or_default(),
        );
        drop(_spawning);
        let h = Haproxy {
            child,
            dir,
            port,
            admin_port,
            backend: backend.to_string(),
        };
        h.wait_until(Duration::from_secs(20), "every server UP", |h| {
            fleet.hosts().iter().all(|s| h.status(&s.name) == "UP")
        });
        Some(h)
    }

    /// The frontend, e.g. `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `unix://…/admin.sock`, for `[load_balancer] admin`.
    pub fn admin_unix(&self) -> String {
        format!("unix://{}", self.dir.path().join("admin.sock").display())
    }

    /// `tcp://127.0.0.1:PORT`, for `[load_balancer] admin`.
    pub fn admin_tcp(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.admin_port)
    }

    /// `[env.<env>.load_balancer]` over the unix socket.
    pub fn load_balancer_toml(&self, env: &str) -> String {
        format!(
            "[env.{env}.load_balancer]\nkind = \"haproxy\"\nadmin = \"{}\"\nbackend = \"{}\"\n",
            self.admin_unix(),
            self.backend
        )
    }

    /// One Runtime API command over the unix socket; HAProxy's whole answer.
    pub fn command(&self, cmd: &str) -> String {
        let mut s = UnixStream::connect(self.dir.path().join("admin.sock")).expect("admin socket");
        s.write_all(format!("{cmd}\n").as_bytes()).expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }

    fn stat_field(&self, server: &str, field: &str) -> String {
        let out = self.command(&format!("show stat {} 4 -1", self.backend));
        let mut lines = out.lines();
        let head: Vec<&str> = lines
            .next()
            .unwrap_or("")
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let i = head.iter().position(|c| *c == field).expect("stat field");
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.get(1) == Some(&server))
            .and_then(|f| f.get(i).map(|s| s.to_string()))
            .unwrap_or_default()
    }

    /// HAProxy's status word for a server: `UP`, `DOWN`, `DRAIN`, `MAINT`, `UP 1/2`, ...
    pub fn status(&self, server: &str) -> String {
        self.stat_field(server, "status")
    }

    /// Sets a server's administrative state (`ready`, `drain`, `maint`).
    pub fn set_state(&self, server: &str, state: &str) {
        let out = self.command(&format!(
            "set server {}/{server} state {state}",
            self.backend
        ));
        assert!(out.trim().is_empty(), "haproxy: {out}");
    }

    /// Waits for a condition on HAProxy, with a deadline.
    pub fn wait_until(&self, within: Duration, what: &str, cond: impl Fn(&Haproxy) -> bool) {
        let end = Instant::now() + within;
        while !cond(self) {
            if Instant::now() > end {
                panic!(
                    "haproxy: not {what} within {within:?}; stats:\n{}",
                    self.command(&format!("show stat {} 4 -1", self.backend))
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
