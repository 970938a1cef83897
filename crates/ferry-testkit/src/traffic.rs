//! Client traffic through a load balancer for the whole of a rollout or a deploy: a few
//! clients send `GET`s in a loop until stopped, and every answer that is not a 200 (or a
//! connection error) is kept, so a test can assert that no request failed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Requests to one URL until [`Traffic::finish`]: counts the 200s and keeps every failure.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    /// Starts `clients` loops on the current tokio runtime (a multi-threaded one, so that a
    /// test blocked on a `ferry` process does not stop them).
    pub fn start(url: String, clients: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failed, http, url) = (
                    stop.clone(),
                    ok.clone(),
                    failed.clone(),
                    http.clone(),
                    url.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match http.get(&url).send().await {
                            Ok(r) if r.status() == 200 => {
                                let _ = r.text().await;
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => failed
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(format!("HTTP {}", r.status())),
                            Err(e) => failed
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(e.to_string()),
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    /// Stops the clients: (requests that got a 200, every failure).
    pub async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("traffic client");
        }
        let failed = self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (self.ok.load(Ordering::Relaxed), failed)
    }

    /// Stops the clients and panics, naming the first failures, unless every request
    /// succeeded and at least `min_ok` went through. Returns the number that did.
    pub async fn assert_none_failed(self, during: &str, min_ok: usize) -> usize {
        let (ok, failed) = self.finish().await;
        assert!(
            failed.is_empty(),
            "{} of {} requests through the load balancer failed during {during}: {:?}",
            failed.len(),
            ok + failed.len(),
            &failed[..failed.len().min(5)]
        );
        assert!(
            ok >= min_ok,
            "only {ok} requests went through during {during}"
        );
        ok
    }
}
