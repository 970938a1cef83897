//! Small real example hosts for the deploy tests: each is an HTTP server on a free loopback
//! port answering `GET /health` (200, or 500 while it runs a version the test marked
//! unhealthy) and `GET /version` (what its deploy command last installed). The deploy command
//! (`hosts/deploy.sh HOST VERSION`) writes the version file; for a version the test marked
//! blocking it hangs (signalling `blocked`) until unblocked, then fails without installing.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub struct Hosts {
    dir: PathBuf,
    hosts: Vec<(String, u16)>,
    stop: Arc<AtomicBool>,
}

impl Hosts {
    /// Starts `n` hosts (`h1`, `h2`, …) keeping their state under `dir/hosts`.
    pub fn start(dir: &Path, n: usize) -> Hosts {
        let dir = dir.join("hosts");
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("deploy.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nd='{}'\nif [ -e \"$d/block-$2\" ]; then\n  touch \"$d/blocked\"\n  while [ -e \"$d/block-$2\" ]; do sleep 0.05; done\n  exit 1\nfi\necho \"$2\" > \"$d/$1.version\"\n",
                dir.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut hosts = Vec::new();
        for i in 1..=n {
            let name = format!("h{i}");
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let port = listener.local_addr().unwrap().port();
            let (d, h, s) = (dir.clone(), name.clone(), stop.clone());
            std::thread::spawn(move || serve(listener, &d, &h, &s));
            hosts.push((name, port));
        }
        Hosts { dir, hosts, stop }
    }

    /// The fleet keys of `[env.<env>]` for these hosts.
    pub fn toml(&self, env: &str) -> String {
        let mut t = String::new();
        for (name, port) in &self.hosts {
            t.push_str(&format!(
                "\n[[env.{env}.hosts]]\nname = \"{name}\"\nhealth_url = \"http://127.0.0.1:{port}/health\"\nversion_url = \"http://127.0.0.1:{port}/version\"\n"
            ));
        }
        t
    }

    /// The keys that go directly in `[env.<env>]` (before any sub-table).
    pub fn env_keys(&self) -> String {
        format!(
            "deploy_command = \"{}/deploy.sh {{host}} {{version}}\"\nsettle_seconds = 0\nhealth_timeout_seconds = 2\n",
            self.dir.display()
        )
    }

    pub fn version(&self, host: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{host}.version")))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "none".into())
    }

    pub fn assert_all_on(&self, version: &str) {
        for (name, _) in &self.hosts {
            assert_eq!(self.version(name), version, "host {name}");
        }
    }

    /// Hosts running `version` answer 500 on /health.
    pub fn unhealthy_on(&self, version: &str) {
        std::fs::write(self.dir.join(format!("unhealthy-{version}")), "").unwrap();
    }

    /// Deploying `version` hangs until [`Hosts::unblock`].
    pub fn block_on(&self, version: &str) {
        std::fs::write(self.dir.join(format!("block-{version}")), "").unwrap();
    }

    /// A deploy command is hanging on a blocked version.
    pub fn blocked(&self) -> bool {
        self.dir.join("blocked").exists()
    }

    pub fn unblock(&self) {
        for e in std::fs::read_dir(&self.dir).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with("block") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.unblock();
    }
}

fn serve(listener: TcpListener, dir: &Path, name: &str, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let mut conn = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(_) => return,
        };
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 2048];
        let n = conn.read(&mut buf).unwrap_or(0);
        let req = String::from_utf8_lossy(&buf[..n]);
        let path = req.split_whitespace().nth(1).unwrap_or("/");
        let version = std::fs::read_to_string(dir.join(format!("{name}.version")))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "none".into());
        let (status, body) = match path {
            "/health" if dir.join(format!("unhealthy-{version}")).exists() => {
                ("500 Internal Server Error", "unhealthy".to_string())
            }
            "/health" => ("200 OK", "ok".to_string()),
            "/version" => ("200 OK", version),
            _ => ("404 Not Found", "no".to_string()),
        };
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
