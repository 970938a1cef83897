//! Real S3-compatible servers on loopback, one per test: `s3s-fs` (a filesystem-backed server
//! that checks SigV4 signatures) and moto (which has what s3s-fs lacks: ListMultipartUploads
//! and multipart ETags). Each runs on a free port with a temporary directory and is killed when
//! its handle drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Once};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use ferry_store::StoreOptions;

pub const ACCESS_KEY: &str = "ferrytestaccesskey";
pub const SECRET_KEY: &str = "ferrytestsecretkey";
const REGION: &str = "us-east-1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    S3sFs,
    Moto,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::S3sFs => "s3s-fs",
            Kind::Moto => "moto_server",
        }
    }

    fn env_var(self) -> &'static str {
        match self {
            Kind::S3sFs => "FERRY_TEST_S3S_FS",
            Kind::Moto => "FERRY_TEST_MOTO",
        }
    }

    fn install(self) -> &'static str {
        match self {
            Kind::S3sFs => "cargo install s3s-fs@0.14.1 --locked --features binary",
            Kind::Moto => "pip install 'moto[server]>=5.2.5'",
        }
    }

    /// `FERRY_TEST_…`, else the binary on PATH, else (s3s-fs) in cargo's bin directory.
    fn binary(self) -> Option<PathBuf> {
        let cargo_bin = (self == Kind::S3sFs)
            .then(|| {
                std::env::var_os("CARGO_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
            })
            .flatten()
            .map(|home| home.join("bin").join(self.name()));
        crate::server::find_binary(self.env_var(), self.name(), cargo_bin.as_slice())
    }
}

/// The store finds its credentials through the AWS chain, i.e. the process environment. Set it
/// once, before any store or client exists, so no test reads the environment while another
/// writes it.
pub fn test_credentials_in_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: every test calls this before it starts a runtime thread or reads the
        // environment through the SDK, and `Once` makes the other tests wait until it is done,
        // so nothing reads the environment while it changes.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
            std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
            std::env::set_var("AWS_REGION", REGION);
            // A developer's own session or endpoint must not leak into the tests.
            std::env::remove_var("AWS_SESSION_TOKEN");
            std::env::remove_var("AWS_PROFILE");
            std::env::remove_var("AWS_ENDPOINT_URL");
            std::env::remove_var("AWS_ENDPOINT_URL_S3");
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        }
    });
}

/// A running server, killed on drop.
pub struct Server {
    pub kind: Kind,
    binary: PathBuf,
    port: u16,
    child: KillHandle,
    /// s3s-fs keeps its objects in `dir/data`; both servers log to `dir/log`.
    dir: tempfile::TempDir,
}

/// Kills the server from anywhere, e.g. from inside a body the store is reading.
#[derive(Clone)]
pub struct KillHandle(Arc<Mutex<Option<Child>>>);

impl KillHandle {
    pub fn kill(&self) {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut child) = guard.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Server {
    /// Starts a server of `kind`, or returns `None` (loudly) when it is not installed and this
    /// is not CI. Under `CI=true` a missing server is a failure.
    pub fn start(kind: Kind) -> Option<Server> {
        test_credentials_in_env();
        let Some(binary) = kind.binary() else {
            let msg = format!(
                "{} not found: set {} to its path or install it with `{}`",
                kind.name(),
                kind.env_var(),
                kind.install()
            );
            crate::server::missing(&msg);
            return None;
        };
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::create_dir(dir.path().join("data")).expect("data directory");
        let mut server = Server {
            kind,
            binary,
            port: 0,
            child: KillHandle(Arc::new(Mutex::new(None))),
            dir,
        };
        server.spawn();
        Some(server)
    }

    /// Starts the server again on the same data directory (and a new port).
    pub fn restart(&mut self) {
        self.child.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let _spawning = crate::server::spawning();
        let port = crate::server::free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("server log");
        let mut command = Command::new(&self.binary);
        match self.kind {
            Kind::S3sFs => command
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(self.dir.path().join("data")),
            Kind::Moto => command.args(["-H", "127.0.0.1", "-p", &port.to_string()]),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("server log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()));
        *self.child.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        self.port = port;
        self.wait_until_listening();
    }

    /// Waits for the port to accept connections, failing early if the server exits.
    fn wait_until_listening(&self) {
        crate::server::wait_until_listening(
            self.kind.name(),
            self.port,
            || {
                let mut guard = self.child.0.lock().unwrap_or_else(|e| e.into_inner());
                guard.as_mut().and_then(|c| c.try_wait().ok().flatten())
            },
            || self.log(),
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Environment variables that point a `ferry` process at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    pub fn kill_handle(&self) -> KillHandle {
        self.child.clone()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn options(&self, part_size: Option<usize>) -> StoreOptions {
        StoreOptions {
            endpoint: Some(self.endpoint()),
            region: Some(REGION.into()),
            part_size,
            ..Default::default()
        }
    }

    /// A plain SDK client for what the store does not do: buckets, ListMultipartUploads.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                ACCESS_KEY,
                SECRET_KEY,
                None,
                None,
                "ferry-test",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub async fn create_bucket(&self, bucket: &str) {
        self.client()
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "CreateBucket {bucket} on {}: {}",
                    self.kind.name(),
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            });
    }

    /// Opens the store `s3://bucket/prefix` on this server.
    pub async fn store(
        &self,
        bucket_and_prefix: &str,
        part_size: Option<usize>,
    ) -> std::sync::Arc<dyn ferry_store::ObjectStore> {
        ferry_store::open(
            &format!("s3://{bucket_and_prefix}"),
            &self.options(part_size),
        )
        .await
        .expect("open the S3 store")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill();
    }
}
