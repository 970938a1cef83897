//! The load-balancer seam: take a host out of traffic, see its sessions drain, put it back, or
//! leave it out for good. One implementation per kind: [`haproxy`] (its Runtime API) and
//! [`command`] (the environment's `drain_command`/`undrain_command`, for anything else).
//!
//! The trait is narrow on purpose: the rollout algorithm in `lib.rs` owns the order of the
//! steps (drain, wait, deploy, settle, check, ready) once; a backend only knows how to do each.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

pub mod command;
pub mod haproxy;

pub type LbFut<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// How an administrator set a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    Ready,
    Drain,
    Maint,
}

/// What the load balancer says about one host's server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub admin: AdminState,
    /// False when its health checks have it down.
    pub up: bool,
    /// Current plus queued sessions.
    pub sessions: u64,
    /// The load balancer's own word for it (HAProxy's `status`: `UP`, `DRAIN`, `MAINT`, ...).
    pub status: String,
}

pub trait LoadBalancer: Send + Sync {
    /// For messages: `HAProxy at unix:///run/haproxy/admin.sock, backend app`.
    fn describe(&self) -> String;

    /// The state of every server the load balancer knows, by host name; `None` when this
    /// kind cannot tell (commands).
    fn states(&self) -> LbFut<'_, Option<BTreeMap<String, ServerState>>>;

    /// Stop sending the host new requests; in-flight ones finish.
    fn drain<'a>(&'a self, host: &'a str) -> LbFut<'a, ()>;

    /// Send it traffic again.
    fn ready<'a>(&'a self, host: &'a str) -> LbFut<'a, ()>;

    /// Keep it out of traffic until a person looks (a failed or stopped host).
    fn maint<'a>(&'a self, host: &'a str) -> LbFut<'a, ()>;

    /// Whether [`LoadBalancer::states`] reports sessions (so draining can wait for 0).
    fn counts_sessions(&self) -> bool;
}
