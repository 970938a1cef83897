//! Servers that misbehave the way real networks do, on loopback, for tests of what ferry does
//! then: [`Silent`] accepts connections and never answers (a hung server, not a dead one), and
//! [`Proxy`] stands in front of a real server (an S3 server, a registry) and, connection by
//! connection, forwards, answers an error status itself, or stops forwarding once a number of
//! bytes went through.
//!
//! Each runs on its own thread with its own runtime, so it keeps serving while the test blocks
//! on a `ferry` process, and stops when its handle drops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// A listener on a free loopback port that runs `serve` for each connection on its own thread
/// until dropped.
struct Background {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    fn start<F, Fut>(serve: F) -> Background
    where
        F: Fn(usize, TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready, bound) = std::sync::mpsc::channel();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for a test server");
            rt.block_on(async move {
                let listener = TcpListener::bind(("127.0.0.1", 0))
                    .await
                    .expect("bind a loopback port");
                ready
                    .send(listener.local_addr().expect("local address"))
                    .expect("report the port");
                let mut stopped = stopped;
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        conn = listener.accept() => {
                            let Ok((stream, _)) = conn else { continue };
                            let n = count.fetch_add(1, Ordering::SeqCst);
                            tokio::spawn(serve(n, stream));
                        }
                    }
                }
            });
            // Dropping the runtime drops every connection task and its sockets.
        });
        let addr = bound.recv().expect("the test server's port");
        Background {
            addr,
            accepted,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts every connection, reads whatever is sent, and never answers or closes.
pub struct Silent(Background);

impl Silent {
    pub fn start() -> Silent {
        Silent(Background::start(|_, mut stream| async move {
            let mut buf = vec![0u8; 64 * 1024];
            // Read (so the client's writes never block) and hold the socket until the client
            // goes away or the server stops.
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            // The client closed its side: keep ours open anyway, as a hung server does.
            std::future::pending::<()>().await;
        }))
    }

    /// `127.0.0.1:PORT`, as in registry references.
    pub fn host(&self) -> String {
        self.0.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`, as an S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.0.addr)
    }

    /// How many connections it accepted so far.
    pub fn accepted(&self) -> usize {
        self.0.accepted.load(Ordering::SeqCst)
    }
}

/// What [`Proxy`] does with one connection.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Reads the request's head, answers `status` with these headers and no body, and closes.
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
    },
    /// Forwards, but stops passing the client's bytes on (and holds the connection) once this
    /// many went through: a server that stalls in the middle of a request body.
    StallAfter(u64),
}

/// A TCP proxy in front of `upstream` that applies `plan(n)` to its n-th connection (from 0):
/// a [`Fault`], or `None` to forward untouched.
pub struct Proxy {
    background: Background,
    faults: Arc<AtomicUsize>,
}

impl Proxy {
    pub fn start(
        upstream: SocketAddr,
        plan: impl Fn(usize) -> Option<Fault> + Send + Sync + 'static,
    ) -> Proxy {
        let plan = Arc::new(plan);
        let faults = Arc::new(AtomicUsize::new(0));
        let served = faults.clone();
        let background = Background::start(move |n, client| {
            let fault = plan(n);
            let served = served.clone();
            async move {
                if fault.is_some() {
                    served.fetch_add(1, Ordering::SeqCst);
                }
                match fault {
                    Some(Fault::Answer { status, headers }) => {
                        answer(client, status, &headers).await
                    }
                    Some(Fault::StallAfter(limit)) => forward(client, upstream, Some(limit)).await,
                    None => forward(client, upstream, None).await,
                }
            }
        });
        Proxy { background, faults }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.background.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.background.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.background.accepted.load(Ordering::SeqCst)
    }

    /// Connections that got a [`Fault`] so far.
    pub fn faults(&self) -> usize {
        self.faults.load(Ordering::SeqCst)
    }
}

/// The reason phrase of the statuses tests use.
fn reason(status: u16) -> &'static str {
    match status {
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

async fn answer(mut client: TcpStream, status: u16, headers: &[(String, String)]) {
    // The request's head, so the answer is an answer to it; its body (if any) is drained below.
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let mut text = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: 0\r\nConnection: close\r\n",
        reason(status)
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    let _ = client.write_all(text.as_bytes()).await;
    let _ = client.shutdown().await;
    // Read what the client still sends until it closes, so closing does not reset the
    // connection under an answer it has not read yet.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(n) = client.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

async fn forward(client: TcpStream, upstream: SocketAddr, stall_after: Option<u64>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut passed = 0u64;
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let allowed = match stall_after {
                Some(limit) => (limit.saturating_sub(passed) as usize).min(n),
                None => n,
            };
            if server_write.write_all(&buf[..allowed]).await.is_err() {
                break;
            }
            passed += allowed as u64;
            if allowed < n {
                // Stalled: hold both sockets, pass nothing more.
                std::future::pending::<()>().await;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let down = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    #[test]
    fn a_silent_server_accepts_and_never_answers() {
        let silent = Silent::start();
        let mut conn = std::net::TcpStream::connect(silent.host()).unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 16];
        let err = conn.read(&mut buf).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{err}"
        );
        assert_eq!(silent.accepted(), 1);
    }

    #[test]
    fn the_proxy_answers_faults_then_forwards() {
        // Upstream: a server that answers every request with 200 and "up".
        let upstream = Background::start(|_, mut stream| async move {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nup")
                .await;
        });
        let proxy = Proxy::start(upstream.addr, |n| {
            (n == 0).then(|| Fault::Answer {
                status: 429,
                headers: vec![("Retry-After".into(), "1".into())],
            })
        });
        let get = || {
            let mut conn = std::net::TcpStream::connect(proxy.host()).unwrap();
            conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            conn.read_to_string(&mut out).unwrap();
            out
        };
        let first = get();
        assert!(first.starts_with("HTTP/1.1 429"), "{first}");
        assert!(first.contains("Retry-After: 1"), "{first}");
        let second = get();
        assert!(
            second.starts_with("HTTP/1.1 200") && second.ends_with("up"),
            "{second}"
        );
        assert_eq!((proxy.connections(), proxy.faults()), (2, 1));
    }
}
