//! The deploy lock of an environment: a lease in the central store, held by one run at a time.
//!
//! Layout: `deploys/<env>/lock/<gen:010>.json`, an append-only log. Each object is one
//! generation of the lock: `held` (a holder and an expiry: taken or renewed) or `released`.
//! The newest generation is the lock's state. Every change (take, renew, take over, release)
//! creates the next generation with create-if-absent, so of two runs that read the same state
//! and act on it exactly one wins, on a directory and on S3 alike, with no conditional
//! replace needed. After creating its generation a run lists the log again and checks that
//! its generation is still the newest; together with pruning only below the newest
//! generation, that makes a run with a stale view (which could otherwise recreate a pruned
//! generation number) see that it lost.
//!
//! A held lock is **stale** when its lease expired (the holder stopped renewing: killed, its
//! machine gone), or at once when the holder ran on this machine (same host name) and its
//! process no longer exists (checked through `/proc/<pid>`, with the process's start time
//! guarding against a reused pid). A stale lock is taken over; the caller is told whose it
//! was, so the deployment it belonged to can be marked `interrupted`.
//!
//! Renewals run on a background task until [`Lease::release`]; a renewal that finds another
//! holder marks the lease lost, and the deploy stops at its next step.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_store::{ObjectStore, PutMode, StoreError};
use serde::{Deserialize, Serialize};

use crate::error::{DeployError, Result};

/// Who holds (or held) a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub actor: String,
    pub host: String,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    /// The process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22), so a
    /// reused pid is not mistaken for the holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    /// What the holder is doing: `deploy` or `rollback`.
    pub command: String,
    /// The deployment record the holder writes, once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<u64>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} on {}, pid {}, since {})",
            self.actor,
            self.command,
            self.host,
            self.pid,
            self.started_at.format("%Y-%m-%d %H:%M:%S UTC")
        )?;
        if let Some(d) = self.deploy {
            write!(f, ", deployment {d}")?;
        }
        Ok(())
    }
}

impl Holder {
    /// This process, as a holder.
    pub fn this_process(actor: &str, command: &str) -> Holder {
        let pid = std::process::id();
        Holder {
            actor: actor.to_string(),
            host: hostname(),
            pid,
            started_at: Utc::now(),
            pid_start: process_start(pid),
            command: command.to_string(),
            deploy: None,
        }
    }

    /// Whether the holder's process is known to be gone: it ran on this machine and no
    /// process with its pid (and start time) exists. On another machine nobody can tell.
    pub fn gone_from_this_host(&self) -> bool {
        if self.host != hostname() || !std::path::Path::new("/proc/self").exists() {
            return false;
        }
        match process_start(self.pid) {
            None => true,
            Some(start) => self.pid_start.is_some_and(|s| s != start),
        }
    }
}

/// The machine's host name (`/proc/sys/kernel/hostname`, else `localhost`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A process's start time (clock ticks after boot), `None` when it does not exist.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    // Fields after the name start at 3 (state); starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// How long a lease lasts and how often it is renewed.
#[derive(Debug, Clone, Copy)]
pub struct LeaseOptions {
    pub ttl: Duration,
    pub renew_every: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            ttl: Duration::from_secs(120),
            renew_every: Duration::from_secs(20),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockState {
    Held,
    Released,
}

/// One generation of the lock, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockRecord {
    pub generation: u64,
    pub state: LockState,
    pub holder: Holder,
    pub expires_at: DateTime<Utc>,
    pub written_at: DateTime<Utc>,
    /// The holder this generation took the lock from (a stale lock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_over: Option<Holder>,
}

/// What the lock of an environment looks like now (`ferry deploy status`).
#[derive(Debug, Clone, Serialize)]
pub struct LockStatus {
    /// `free`, `held`, or `stale` (held, but the lease expired or the holder is gone).
    pub state: &'static str,
    pub holder: Option<Holder>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Why a held lock counts as stale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_because: Option<String>,
}

fn prefix(env: &str) -> String {
    format!("deploys/{env}/lock/")
}

fn key(env: &str, generation: u64) -> String {
    format!("{}{generation:010}.json", prefix(env))
}

/// Generation numbers in the log, ascending.
async fn generations(store: &dyn ObjectStore, env: &str) -> Result<Vec<u64>> {
    let p = prefix(env);
    let objects = store.list(&p).await.map_err(DeployError::store(format!(
        "listing the deploy lock of `{env}` in {}",
        store.url()
    )))?;
    let mut out: Vec<u64> = objects
        .iter()
        .filter_map(|m| {
            m.key
                .strip_prefix(&p)?
                .strip_suffix(".json")
                .filter(|n| n.len() == 10)?
                .parse()
                .ok()
        })
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// The newest generation, or `None` for a lock never taken.
async fn newest(store: &dyn ObjectStore, env: &str) -> Result<Option<LockRecord>> {
    // A generation can be pruned between the list and the read: list again.
    for _ in 0..8 {
        let Some(&g) = generations(store, env).await?.last() else {
            return Ok(None);
        };
        let k = key(env, g);
        match store.get_bytes(&k).await {
            Ok(bytes) => {
                return serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                    DeployError::BadRecord {
                        key: k,
                        store: store.url(),
                        message: e.to_string(),
                    }
                });
            }
            Err(StoreError::NotFound { .. }) => continue,
            Err(e) => {
                return Err(DeployError::store(format!(
                    "reading {k} in {}",
                    store.url()
                ))(e));
            }
        }
    }
    Err(DeployError::Store {
        context: format!("reading the deploy lock of `{env}`"),
        source: StoreError::NotFound { key: prefix(env) },
    })
}

/// Why a held lock is stale, or `None` when it is live.
fn stale_because(r: &LockRecord, now: DateTime<Utc>) -> Option<String> {
    if r.expires_at < now {
        return Some(format!(
            "its lease expired at {} (the holder stopped renewing it)",
            r.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
        ));
    }
    if r.holder.gone_from_this_host() {
        return Some(format!(
            "its process {} on this machine ({}) no longer exists",
            r.holder.pid, r.holder.host
        ));
    }
    None
}

/// The lock's state, read-only.
pub async fn status(store: &dyn ObjectStore, env: &str) -> Result<LockStatus> {
    let now = Utc::now();
    Ok(match newest(store, env).await? {
        None => LockStatus {
            state: "free",
            holder: None,
            expires_at: None,
            stale_because: None,
        },
        Some(r) if r.state == LockState::Released => LockStatus {
            state: "free",
            holder: Some(r.holder),
            expires_at: None,
            stale_because: None,
        },
        Some(r) => {
            let stale = stale_because(&r, now);
            LockStatus {
                state: if stale.is_some() { "stale" } else { "held" },
                holder: Some(r.holder),
                expires_at: Some(r.expires_at),
                stale_because: stale,
            }
        }
    })
}

/// Writes generation `g`; `Ok(false)` when another run wrote it (or a later one) first.
async fn write_generation(store: &dyn ObjectStore, env: &str, record: &LockRecord) -> Result<bool> {
    let k = key(env, record.generation);
    let bytes = serde_json::to_vec_pretty(record).map_err(|e| DeployError::BadRecord {
        key: k.clone(),
        store: store.url(),
        message: e.to_string(),
    })?;
    match store.put_bytes(&k, bytes, PutMode::IfAbsent).await {
        Ok(()) => {}
        Err(StoreError::AlreadyExists { .. }) => return Ok(false),
        Err(e) => {
            return Err(DeployError::store(format!(
                "writing the deploy lock of `{env}` ({k}) in {}",
                store.url()
            ))(e));
        }
    }
    // Still the newest? A run with a stale view may have recreated a pruned generation; it
    // learns here that it lost, and removes its object (harmless below the newest anyway).
    let newest = generations(store, env).await?.last().copied();
    if newest == Some(record.generation) {
        Ok(true)
    } else {
        let _ = store.delete(&k).await;
        Ok(false)
    }
}

/// The result of trying to take the lock.
pub enum Acquired {
    /// Taken; `took_over` is the stale holder it replaced, with why it was stale.
    Taken {
        lease: Lease,
        took_over: Option<(Holder, String)>,
    },
    /// A live holder has it.
    Held(Box<LockRecord>),
}

/// A held lease, renewed in the background until released.
pub struct Lease {
    inner: Arc<Inner>,
    renewer: tokio::task::JoinHandle<()>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    env: String,
    options: LeaseOptions,
    state: tokio::sync::Mutex<LeaseState>,
    lost: AtomicBool,
    lost_to: std::sync::Mutex<Option<String>>,
}

struct LeaseState {
    generation: u64,
    holder: Holder,
}

fn expiry(options: &LeaseOptions) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(options.ttl).unwrap_or(chrono::Duration::seconds(120))
}

impl Lease {
    /// Takes the lock of `env` for `holder`, or reports the live holder. A stale lock is
    /// taken over.
    pub async fn acquire(
        store: Arc<dyn ObjectStore>,
        env: &str,
        holder: Holder,
        options: LeaseOptions,
    ) -> Result<Acquired> {
        loop {
            let current = newest(store.as_ref(), env).await?;
            let now = Utc::now();
            let (generation, took_over) = match &current {
                None => (1, None),
                Some(r) if r.state == LockState::Released => (r.generation + 1, None),
                Some(r) => match stale_because(r, now) {
                    None => return Ok(Acquired::Held(Box::new(r.clone()))),
                    Some(why) => (r.generation + 1, Some((r.holder.clone(), why))),
                },
            };
            let record = LockRecord {
                generation,
                state: LockState::Held,
                holder: holder.clone(),
                expires_at: expiry(&options),
                written_at: now,
                took_over: took_over.as_ref().map(|(h, _)| h.clone()),
            };
            if !write_generation(store.as_ref(), env, &record).await? {
                // Another run acted on the same state first: look again.
                continue;
            }
            if let Some((h, why)) = &took_over {
                tracing::warn!(env, holder = %h, reason = %why, "took over a stale deploy lock");
            }
            tracing::info!(env, generation, "deploy lock taken");
            let inner = Arc::new(Inner {
                store,
                env: env.to_string(),
                options,
                state: tokio::sync::Mutex::new(LeaseState { generation, holder }),
                lost: AtomicBool::new(false),
                lost_to: std::sync::Mutex::new(None),
            });
            let renewer = tokio::spawn(renew_loop(inner.clone()));
            return Ok(Acquired::Taken {
                lease: Lease { inner, renewer },
                took_over,
            });
        }
    }

    /// Whether another run took the lock from this one.
    pub fn lost(&self) -> Option<String> {
        if self.inner.lost.load(Ordering::SeqCst) {
            Some(
                self.inner
                    .lost_to
                    .lock()
                    .ok()
                    .and_then(|g| g.clone())
                    .unwrap_or_else(|| "another run".into()),
            )
        } else {
            None
        }
    }

    /// Records the deployment this lease belongs to in the lock (renews it at once).
    pub async fn set_deploy(&self, deploy: u64) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        state.holder.deploy = Some(deploy);
        renew_locked(&self.inner, &mut state).await
    }

    /// Stops renewing and releases the lock; prunes the log below the release.
    pub async fn release(mut self) -> Result<()> {
        self.renewer.abort();
        let _ = (&mut self.renewer).await;
        let inner = self.inner.clone();
        if inner.lost.load(Ordering::SeqCst) {
            return Ok(());
        }
        let state = inner.state.lock().await;
        // The store, not memory, says which generation is ours: an aborted renewal may have
        // written one more than `state` knows.
        let Some(current) = newest(inner.store.as_ref(), &inner.env).await? else {
            return Ok(());
        };
        if current.state != LockState::Held || !same_run(&current.holder, &state.holder) {
            tracing::warn!(env = %inner.env, "the deploy lock was taken over before it was released");
            return Ok(());
        }
        let record = LockRecord {
            generation: current.generation + 1,
            state: LockState::Released,
            holder: state.holder.clone(),
            expires_at: Utc::now(),
            written_at: Utc::now(),
            took_over: None,
        };
        if !write_generation(inner.store.as_ref(), &inner.env, &record).await? {
            tracing::warn!(env = %inner.env, "the deploy lock was taken over before it was released");
            return Ok(());
        }
        // Earlier generations are history nobody reads: keep the log short.
        for g in generations(inner.store.as_ref(), &inner.env).await? {
            if g < record.generation {
                let _ = inner.store.delete(&key(&inner.env, g)).await;
            }
        }
        tracing::info!(env = %inner.env, "deploy lock released");
        Ok(())
    }
}

impl Drop for Lease {
    /// A lease dropped without [`Lease::release`] (an error path) stops renewing, so it
    /// expires on its own.
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Whether two holders are the same run (the deployment it names may have been added since).
fn same_run(a: &Holder, b: &Holder) -> bool {
    a.actor == b.actor && a.host == b.host && a.pid == b.pid && a.started_at == b.started_at
}

async fn renew_locked(inner: &Inner, state: &mut LeaseState) -> Result<()> {
    if inner.lost.load(Ordering::SeqCst) {
        return Err(DeployError::LostLock {
            env: inner.env.clone(),
            holder: inner
                .lost_to
                .lock()
                .ok()
                .and_then(|g| g.clone())
                .unwrap_or_else(|| "another run".into()),
        });
    }
    let record = LockRecord {
        generation: state.generation + 1,
        state: LockState::Held,
        holder: state.holder.clone(),
        expires_at: expiry(&inner.options),
        written_at: Utc::now(),
        took_over: None,
    };
    if write_generation(inner.store.as_ref(), &inner.env, &record).await? {
        state.generation = record.generation;
        // The generation before is no longer the state; keep the log short.
        let _ = inner
            .store
            .delete(&key(&inner.env, record.generation - 1))
            .await;
        return Ok(());
    }
    let who = newest(inner.store.as_ref(), &inner.env)
        .await
        .ok()
        .flatten()
        .map(|r| r.holder.to_string())
        .unwrap_or_else(|| "another run".into());
    inner.lost.store(true, Ordering::SeqCst);
    if let Ok(mut g) = inner.lost_to.lock() {
        *g = Some(who.clone());
    }
    tracing::error!(env = %inner.env, holder = %who, "lost the deploy lock");
    Err(DeployError::LostLock {
        env: inner.env.clone(),
        holder: who,
    })
}

async fn renew_loop(inner: Arc<Inner>) {
    loop {
        tokio::time::sleep(inner.options.renew_every).await;
        let mut state = inner.state.lock().await;
        match renew_locked(&inner, &mut state).await {
            Ok(()) => {}
            Err(DeployError::LostLock { .. }) => return,
            // A store hiccup: try again at the next tick; the lease outlives a few misses.
            Err(e) => {
                tracing::warn!(env = %inner.env, error = %e, "could not renew the deploy lock")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What keeps a test's store alive: its directory, or its S3 server.
    enum Keep {
        Dir(#[allow(dead_code)] tempfile::TempDir),
        S3(#[allow(dead_code)] ferry_testkit::s3::Server),
    }

    /// Where the lock lives in a test: a directory, or a bucket on a real S3-compatible
    /// server (moto, whose conditional PUT is atomic the way S3's is; s3s-fs 0.14 checks
    /// `If-None-Match` before it streams the body, so two creates can both win there).
    #[derive(Clone, Copy)]
    enum Backend {
        Dir,
        S3,
    }

    /// `None` (loudly, failing under `CI=true`) when the S3 server is not installed.
    async fn store(backend: Backend) -> Option<(Keep, Arc<dyn ObjectStore>)> {
        match backend {
            Backend::Dir => {
                let dir = tempfile::tempdir().unwrap();
                let s = ferry_store::open(dir.path().to_str().unwrap(), &Default::default())
                    .await
                    .unwrap();
                Some((Keep::Dir(dir), s))
            }
            Backend::S3 => {
                let server = ferry_testkit::s3::Server::start(ferry_testkit::s3::Kind::Moto)?;
                server.create_bucket("ferry").await;
                let s = server.store("ferry/central", None).await;
                Some((Keep::S3(server), s))
            }
        }
    }

    /// One `#[tokio::test]` per backend for each `async fn(Backend)`.
    macro_rules! on_every_store {
        ($($name:ident),* $(,)?) => {$(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn dir() {
                    super::$name(super::Backend::Dir).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn s3() {
                    super::$name(super::Backend::S3).await
                }
            }
        )*};
    }

    on_every_store!(
        a_live_lock_refuses_and_a_released_one_is_free,
        renewals_keep_a_short_lease_alive_and_expiry_makes_it_stale,
        a_holder_whose_process_is_gone_is_stale_at_once,
        of_many_concurrent_takers_exactly_one_wins,
        a_stale_view_that_recreates_a_pruned_generation_loses,
    );

    fn holder(actor: &str) -> Holder {
        Holder::this_process(actor, "deploy")
    }

    fn short() -> LeaseOptions {
        LeaseOptions {
            ttl: Duration::from_millis(600),
            renew_every: Duration::from_millis(100),
        }
    }

    async fn a_live_lock_refuses_and_a_released_one_is_free(backend: Backend) {
        let Some((_keep, s)) = store(backend).await else {
            return;
        };
        let Acquired::Taken { lease, took_over } =
            Lease::acquire(s.clone(), "dev", holder("a"), LeaseOptions::default())
                .await
                .unwrap()
        else {
            panic!("free lock not taken")
        };
        assert!(took_over.is_none());
        match Lease::acquire(s.clone(), "dev", holder("b"), LeaseOptions::default())
            .await
            .unwrap()
        {
            Acquired::Held(r) => assert_eq!(r.holder.actor, "a"),
            Acquired::Taken { .. } => panic!("a held lock was taken"),
        }
        assert_eq!(status(s.as_ref(), "dev").await.unwrap().state, "held");
        lease.release().await.unwrap();
        assert_eq!(status(s.as_ref(), "dev").await.unwrap().state, "free");
        // The log was pruned down to the release.
        assert_eq!(generations(s.as_ref(), "dev").await.unwrap().len(), 1);
        let Acquired::Taken { lease, .. } =
            Lease::acquire(s.clone(), "dev", holder("b"), LeaseOptions::default())
                .await
                .unwrap()
        else {
            panic!("released lock not taken")
        };
        lease.release().await.unwrap();
    }

    async fn renewals_keep_a_short_lease_alive_and_expiry_makes_it_stale(backend: Backend) {
        let Some((_keep, s)) = store(backend).await else {
            return;
        };
        let Acquired::Taken { lease, .. } = Lease::acquire(s.clone(), "dev", holder("a"), short())
            .await
            .unwrap()
        else {
            panic!()
        };
        // Three lease lengths later the renewals have kept it held.
        tokio::time::sleep(Duration::from_millis(1800)).await;
        assert!(lease.lost().is_none());
        assert!(matches!(
            Lease::acquire(s.clone(), "dev", holder("b"), short())
                .await
                .unwrap(),
            Acquired::Held(_)
        ));
        // A holder that stops renewing (its machine vanished) goes stale once the lease ends.
        lease.renewer.abort();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let (taken, why) = loop {
            match Lease::acquire(s.clone(), "dev", holder("b"), short())
                .await
                .unwrap()
            {
                Acquired::Taken { lease, took_over } => break (lease, took_over),
                Acquired::Held(_) => {
                    assert!(std::time::Instant::now() < deadline, "never went stale");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let (old, why) = why.expect("a takeover names the stale holder");
        assert_eq!(old.actor, "a");
        assert!(why.contains("expired"), "{why}");
        // The first holder learns it lost the lock at its next renewal.
        let mut state = lease.inner.state.lock().await;
        assert!(matches!(
            renew_locked(&lease.inner, &mut state).await,
            Err(DeployError::LostLock { .. })
        ));
        drop(state);
        assert!(lease.lost().is_some());
        taken.release().await.unwrap();
    }

    async fn a_holder_whose_process_is_gone_is_stale_at_once(backend: Backend) {
        let Some((_keep, s)) = store(backend).await else {
            return;
        };
        // A real process that has exited: its pid is free.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = Holder {
            pid,
            pid_start: None,
            ..holder("killed")
        };
        let record = LockRecord {
            generation: 7,
            state: LockState::Held,
            holder: dead,
            expires_at: Utc::now() + chrono::Duration::hours(1),
            written_at: Utc::now(),
            took_over: None,
        };
        assert!(write_generation(s.as_ref(), "dev", &record).await.unwrap());
        assert_eq!(status(s.as_ref(), "dev").await.unwrap().state, "stale");
        let Acquired::Taken { lease, took_over } =
            Lease::acquire(s.clone(), "dev", holder("next"), LeaseOptions::default())
                .await
                .unwrap()
        else {
            panic!("a dead holder's lock was not taken over")
        };
        let (old, why) = took_over.unwrap();
        assert_eq!(old.actor, "killed");
        assert!(why.contains("no longer exists"), "{why}");
        lease.release().await.unwrap();
    }

    async fn of_many_concurrent_takers_exactly_one_wins(backend: Backend) {
        let Some((_keep, s)) = store(backend).await else {
            return;
        };
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                Lease::acquire(s, "dev", holder(&format!("r{i}")), LeaseOptions::default())
                    .await
                    .unwrap()
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            if let Acquired::Taken { lease, .. } = t.await.unwrap() {
                winners.push(lease);
            }
        }
        assert_eq!(winners.len(), 1);
        for w in winners {
            w.release().await.unwrap();
        }
    }

    async fn a_stale_view_that_recreates_a_pruned_generation_loses(backend: Backend) {
        let Some((_keep, s)) = store(backend).await else {
            return;
        };
        let Acquired::Taken { lease, .. } =
            Lease::acquire(s.clone(), "dev", holder("a"), LeaseOptions::default())
                .await
                .unwrap()
        else {
            panic!()
        };
        lease.set_deploy(1).await.unwrap(); // generation 2; generation 1 pruned
        assert_eq!(generations(s.as_ref(), "dev").await.unwrap(), vec![2]);
        // A run that read generation 0 long ago now writes generation 1, which is free again.
        let stale = LockRecord {
            generation: 1,
            state: LockState::Held,
            holder: holder("b"),
            expires_at: expiry(&LeaseOptions::default()),
            written_at: Utc::now(),
            took_over: None,
        };
        assert!(!write_generation(s.as_ref(), "dev", &stale).await.unwrap());
        assert_eq!(
            newest(s.as_ref(), "dev")
                .await
                .unwrap()
                .unwrap()
                .holder
                .actor,
            "a"
        );
        lease.release().await.unwrap();
    }
}
