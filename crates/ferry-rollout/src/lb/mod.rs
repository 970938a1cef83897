//! The load-balancer seam: take a host out of traffic, see its sessions drain, put it back, or
//! leave it out for good. One implementation per kind: [`haproxy`] (its Runtime API) and
//! [`command`] (the environment's `drain_command`/`undrain_command`, for anything else).
//!
//! The trait is narrow on purpose: the rollout algorithm in `lib.rs` owns the order of the
//! steps (drain, wait, deploy, settle, check, ready) once; a backend only knows how to do each.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

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

pub type States = Option<BTreeMap<String, ServerState>>;

/// Reads of [`LoadBalancer::states`] shared between the hosts of a batch. A host that changed
/// its server at `since` (drained it, readied it) may only trust a read *sent* after `since`;
/// any such read, its own or another host's, will do. Ten hosts drained at once thus cost one
/// or two reads of the backend's tables instead of ten, and none of them sees a stale one.
pub struct SharedStates {
    last: tokio::sync::Mutex<Option<(Instant, Arc<States>)>>,
}

impl SharedStates {
    pub fn new() -> Self {
        SharedStates {
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The last read sent at or after `since`, or a new one. One read at a time: a host that
    /// waits here gets the read that was in flight if it is fresh enough. Failed reads are not
    /// kept, so the next caller tries again.
    pub async fn after(
        &self,
        lb: &dyn LoadBalancer,
        since: Instant,
    ) -> Result<Arc<States>, String> {
        let mut last = self.last.lock().await;
        if let Some((sent, states)) = last.as_ref()
            && *sent >= since
        {
            return Ok(states.clone());
        }
        let sent = Instant::now();
        let states = Arc::new(lb.states().await?);
        *last = Some((sent, states.clone()));
        Ok(states)
    }
}

impl Default for SharedStates {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A load balancer whose table read takes 20 ms and is counted (the reads are the thing
    /// under test here; the real HAProxy behind this cache is in `tests/it/rollout.rs`).
    struct Counted(AtomicUsize);

    impl LoadBalancer for Counted {
        fn describe(&self) -> String {
            "counted".into()
        }
        fn states(&self) -> LbFut<'_, States> {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let n = self.0.fetch_add(1, Ordering::SeqCst) as u64;
                let state = ServerState {
                    admin: AdminState::Ready,
                    up: true,
                    sessions: n,
                    status: "UP".into(),
                };
                Ok(Some(BTreeMap::from([("h1".to_string(), state)])))
            })
        }
        fn drain<'a>(&'a self, _: &'a str) -> LbFut<'a, ()> {
            Box::pin(async { Ok(()) })
        }
        fn ready<'a>(&'a self, _: &'a str) -> LbFut<'a, ()> {
            Box::pin(async { Ok(()) })
        }
        fn maint<'a>(&'a self, _: &'a str) -> LbFut<'a, ()> {
            Box::pin(async { Ok(()) })
        }
        fn counts_sessions(&self) -> bool {
            true
        }
    }

    fn read_no(s: &States) -> u64 {
        s.as_ref().expect("a table")["h1"].sessions
    }

    #[tokio::test]
    async fn hosts_asking_at_once_share_one_read_and_a_later_change_gets_a_new_one() {
        let lb = Counted(AtomicUsize::new(0));
        let shared = SharedStates::new();
        let since = Instant::now();
        let reads = futures_util::future::join_all((0..10).map(|_| shared.after(&lb, since))).await;
        assert!(reads.iter().all(|r| read_no(r.as_ref().unwrap()) == 0));
        assert_eq!(lb.0.load(Ordering::SeqCst), 1);

        // Changed after that read was sent: the cached one is stale, a new one is sent.
        let later = Instant::now();
        let r = shared.after(&lb, later).await.unwrap();
        assert_eq!(read_no(&r), 1);
        assert_eq!(lb.0.load(Ordering::SeqCst), 2);
        // An older change is satisfied by the newest read.
        let r = shared.after(&lb, since).await.unwrap();
        assert_eq!(read_no(&r), 1);
        assert_eq!(lb.0.load(Ordering::SeqCst), 2);
    }
}
