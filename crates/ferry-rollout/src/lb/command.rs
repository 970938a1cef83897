//! Without a `[load_balancer]`: the environment's `drain_command` and `undrain_command` (each
//! optional, `{host}` and the other placeholders filled in), for a load balancer ferry does not
//! drive, a service mesh, or DNS. Commands cannot report sessions, so a drain is done when its
//! command returns; a failed or stopped host is simply not undrained.

use std::collections::BTreeMap;

use super::{LbFut, LoadBalancer, ServerState};
use crate::runner::{self, Placeholders};

pub struct Commands {
    pub drain: Option<String>,
    pub undrain: Option<String>,
    /// Everything but `host`, which each call fills.
    pub values: OwnedPlaceholders,
}

#[derive(Debug, Clone, Default)]
pub struct OwnedPlaceholders {
    pub version: String,
    pub digest: String,
    pub name: String,
    pub env: String,
    pub undeploy: String,
}

impl OwnedPlaceholders {
    pub fn for_host<'a>(&'a self, host: &'a str) -> Placeholders<'a> {
        Placeholders {
            host,
            version: &self.version,
            digest: &self.digest,
            name: &self.name,
            env: &self.env,
            undeploy: &self.undeploy,
        }
    }
}

impl Commands {
    async fn run(&self, key: &str, template: Option<&String>, host: &str) -> Result<(), String> {
        let Some(t) = template else {
            return Ok(());
        };
        let cmd = runner::fill(t, &self.values.for_host(host));
        let outcome = runner::run(&cmd).await;
        tracing::info!(host, key, status = %outcome.status, "load balancer command ran");
        if outcome.success {
            Ok(())
        } else {
            Err(format!("{key} `{cmd}` {}", outcome.describe()))
        }
    }
}

impl LoadBalancer for Commands {
    fn describe(&self) -> String {
        "drain_command/undrain_command".into()
    }

    fn states(&self) -> LbFut<'_, Option<BTreeMap<String, ServerState>>> {
        Box::pin(async { Ok(None) })
    }

    fn drain<'a>(&'a self, host: &'a str) -> LbFut<'a, ()> {
        Box::pin(self.run("drain_command", self.drain.as_ref(), host))
    }

    fn ready<'a>(&'a self, host: &'a str) -> LbFut<'a, ()> {
        Box::pin(self.run("undrain_command", self.undrain.as_ref(), host))
    }

    fn maint<'a>(&'a self, _host: &'a str) -> LbFut<'a, ()> {
        // Drained already; not undraining it is what keeps it out.
        Box::pin(async { Ok(()) })
    }

    fn counts_sessions(&self) -> bool {
        false
    }
}
