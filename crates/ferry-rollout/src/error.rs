//! Errors that stop a rollout (or a smoke run) before it touches a host. What goes wrong *on*
//! a host is not an error: it is that host's status and detail in the report.

use ferry_core::CoreError;

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// A fleet key of `ferry.toml` is invalid (the message names it).
    #[error(transparent)]
    Config(#[from] CoreError),
    #[error(
        "environment `{env}` has no deploy_command; add deploy_command = \"./deploy.sh {{host}} {{version}}\" to [env.{env}] in ferry.toml"
    )]
    NoDeployCommand { env: String },
    #[error(
        "host `{host}` is not one of the hosts of environment `{env}` ({known}); check [[env.{env}.hosts]]"
    )]
    UnknownHost {
        env: String,
        host: String,
        known: String,
    },
    /// The load balancer could not be asked before the rollout: nothing was touched.
    #[error(
        "cannot read the state of backend `{backend}` from HAProxy at {admin}: {message}; check that HAProxy runs with `stats socket ... level admin` there and that the backend exists"
    )]
    LoadBalancer {
        admin: String,
        backend: String,
        message: String,
    },
    #[error("cannot create an HTTP client for health checks: {0}")]
    Http(String),
}

impl RolloutError {
    /// Bad input (the CLI's exit 2), as opposed to a failure to reach something (exit 1).
    pub fn is_invalid_input(&self) -> bool {
        !matches!(
            self,
            RolloutError::LoadBalancer { .. } | RolloutError::Http(_)
        )
    }
}
