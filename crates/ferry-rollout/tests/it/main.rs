//! Rollouts and smoke checks against real parts: HAProxy (its Runtime API), fleets of real HTTP
//! hosts restarted by a real deploy command (`ferry-testkit`'s `fleet`), PostgreSQL, MariaDB and
//! SQLite.

mod rollout;
mod smoke;

use std::sync::Mutex;
use std::time::Instant;

use ferry_core::config::ConfigFile;
use ferry_rollout::{FleetConfig, HostPhase, RolloutObserver, Target};

pub const OLD: &str = "1.0.0";
pub const NEW: &str = "2.0.0";

pub fn target(version: &str) -> Target {
    Target {
        env: "prod".into(),
        name: "app".into(),
        version: version.into(),
        digest: format!("sha256:{}", version.replace('.', "").repeat(22)),
    }
}

/// The fleet keys of `[env.prod]`, parsed as ferry parses `ferry.toml`.
pub fn fleet_config(body: &str) -> FleetConfig {
    let text = format!("[env.prod]\n{body}");
    let file: ConfigFile = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let fleet = file.env["prod"].fleet.clone();
    fleet.validate("prod").expect("valid fleet config");
    fleet
}

/// Records every phase with its time; optionally acts on one (a test switching a host).
#[derive(Default)]
pub struct Recorder {
    pub events: Mutex<Vec<(String, HostPhase, Instant)>>,
    #[allow(clippy::type_complexity)]
    pub on: Option<Box<dyn Fn(&str, HostPhase) + Send + Sync>>,
}

impl RolloutObserver for Recorder {
    fn host(&self, name: &str, phase: HostPhase) {
        if let Some(f) = &self.on {
            f(name, phase);
        }
        self.events
            .lock()
            .unwrap()
            .push((name.to_string(), phase, Instant::now()));
    }
}

impl Recorder {
    pub fn first(&self, name: &str, phase: HostPhase) -> Option<Instant> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .find(|(n, p, _)| n == name && *p == phase)
            .map(|(_, _, t)| *t)
    }

    pub fn phases(&self, name: &str) -> Vec<HostPhase> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, p, _)| *p)
            .collect()
    }
}
