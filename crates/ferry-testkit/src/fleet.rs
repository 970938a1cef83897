//! A fleet of real HTTP hosts on loopback ports for rollout tests, and the deploy command that
//! releases a version to one of them (`fleet/host.py`, run with `python3`): it records that it
//! was called, writes the version the host's `/version` answers, and restarts the host for
//! real (the old process is killed, in-flight requests with it; the new one may answer 503
//! for a warm-up moment). A test switches a host's behaviour with files in its state
//! directory (see the script's doc), so the server and the deploy command stay one program.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const SCRIPT: &str = include_str!("../fleet/host.py");
const ENV_VAR: &str = "FERRY_TEST_PYTHON";
const INSTALL: &str = "apt-get install -y python3";

/// Running hosts `h1` … `hN`, killed on drop.
pub struct Fleet {
    dir: tempfile::TempDir,
    python: PathBuf,
    script: PathBuf,
    hosts: Vec<FleetHost>,
    children: Vec<Child>,
}

#[derive(Debug, Clone)]
pub struct FleetHost {
    pub name: String,
    pub port: u16,
    pub state: PathBuf,
}

impl FleetHost {
    pub fn health_url(&self) -> String {
        format!("http://127.0.0.1:{}/_status", self.port)
    }

    pub fn version_url(&self) -> String {
        format!("http://127.0.0.1:{}/version", self.port)
    }
}

fn python() -> Option<PathBuf> {
    crate::server::find_binary(ENV_VAR, "python3", &[PathBuf::from("/usr/bin/python3")])
}

impl Fleet {
    /// Starts `n` hosts answering `version`. `None` (loudly) without python3, outside CI.
    pub fn start(n: usize, version: &str) -> Option<Fleet> {
        let Some(python) = python() else {
            crate::server::missing(&format!(
                "python3 not found (the fleet hosts are a Python script); install it with `{INSTALL}` or set {ENV_VAR}"
            ));
            return None;
        };
        let dir = tempfile::tempdir().expect("temporary directory");
        let script = dir.path().join("host.py");
        std::fs::write(&script, SCRIPT).expect("write host.py");
        let mut fleet = Fleet {
            dir,
            python,
            script,
            hosts: Vec::new(),
            children: Vec::new(),
        };
        for i in 1..=n {
            fleet.add(&format!("h{i}"), version);
        }
        Some(fleet)
    }

    fn add(&mut self, name: &str, version: &str) {
        let state = self.dir.path().join(name);
        std::fs::create_dir_all(&state).expect("host state directory");
        std::fs::write(state.join("version"), format!("{version}\n")).expect("version file");
        let _spawning = crate::server::spawning();
        let port = crate::server::free_port();
        std::fs::write(state.join("port"), port.to_string()).expect("port file");
        let log = std::fs::File::create(state.join("log")).expect("log file");
        let mut child = Command::new(&self.python)
            .arg(&self.script)
            .arg("serve")
            .arg(&state)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start a fleet host");
        let log_path = state.join("log");
        crate::server::wait_until_listening(
            &format!("fleet host {name}"),
            port,
            || child.try_wait().ok().flatten(),
            || std::fs::read_to_string(&log_path).unwrap_or_default(),
        );
        self.children.push(child);
        self.hosts.push(FleetHost {
            name: name.to_string(),
            port,
            state,
        });
    }

    pub fn hosts(&self) -> &[FleetHost] {
        &self.hosts
    }

    pub fn host(&self, name: &str) -> &FleetHost {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no fleet host {name}"))
    }

    /// The directory holding every host's state directory (named after the host).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The deploy command for `ferry.toml`: `{host}` and `{version}` are ferry's placeholders.
    pub fn deploy_command(&self) -> String {
        format!(
            "{} {} deploy {}/{{host}} {{version}}",
            self.python.display(),
            self.script.display(),
            self.dir.path().display()
        )
    }

    /// `[[env.<env>.hosts]]` entries for every host, with health and version URLs.
    pub fn hosts_toml(&self, env: &str) -> String {
        self.hosts
            .iter()
            .map(|h| {
                format!(
                    "[[env.{env}.hosts]]\nname = \"{}\"\nhealth_url = \"{}\"\nversion_url = \"{}\"\n",
                    h.name,
                    h.health_url(),
                    h.version_url()
                )
            })
            .collect()
    }

    /// What the host's `/version` answers now.
    pub fn version(&self, name: &str) -> String {
        std::fs::read_to_string(self.host(name).state.join("version"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The versions the deploy command was called with for this host, in order.
    pub fn deploys(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.host(name).state.join("deploys.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn switch(&self, name: &str, file: &str, content: Option<&str>) {
        let path = self.host(name).state.join(file);
        match content {
            Some(c) => std::fs::write(path, c).expect("switch file"),
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// `/_status` answers 500 (true) or 200 (false).
    pub fn set_unhealthy(&self, name: &str, unhealthy: bool) {
        self.switch(name, "unhealthy", unhealthy.then_some(""));
    }

    /// Deploying `version` leaves the host unhealthy; deploying another heals it.
    pub fn break_on_deploy(&self, name: &str, version: &str) {
        self.switch(name, "break_on_deploy", Some(version));
    }

    /// A deploy of `version` to this host hangs until [`Fleet::unblock`], then fails without
    /// releasing it (a deploy killed mid-rollout).
    pub fn block_deploy(&self, name: &str, version: &str) {
        self.switch(name, "block_deploy", Some(version));
    }

    /// A deploy command is hanging on this host's `block_deploy`.
    pub fn deploy_blocked(&self, name: &str) -> bool {
        self.host(name).state.join("blocked").exists()
    }

    pub fn unblock(&self, name: &str) {
        self.switch(name, "block_deploy", None);
    }

    /// The deploy command exits with `code` for this host.
    pub fn fail_deploy(&self, name: &str, code: i32) {
        self.switch(name, "fail_deploy", Some(&code.to_string()));
    }

    /// After each restart every host answers 503 for `ms`.
    pub fn set_warmup_ms(&self, ms: u64) {
        for h in &self.hosts {
            self.switch(&h.name, "warmup_ms", Some(&ms.to_string()));
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Restarted hosts are not our children: their pid files say who they are.
        for h in &self.hosts {
            if let Ok(pid) = std::fs::read_to_string(h.state.join("pid"))
                && let Ok(pid) = pid.trim().parse::<i32>()
                && pid > 0
            {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
