//! Three environments (dev → staging → production) over a central store, on a directory or an
//! S3-compatible server; the production environment lives in a bucket of its own on S3, as it
//! often does in real deployments.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ferry_promote::{Promoter, PushRequest};
use ferry_store::{ObjectStore, PutMode, StoreOptions};
use ferry_testkit::s3::{Kind, Server};
use sha2::{Digest as _, Sha256};

/// 2026-11-30 is a Monday, 2026-11-27 a Friday.
pub const MONDAY: &str = "2026-11-30T10:00:00Z";
pub const FRIDAY: &str = "2026-11-27T10:00:00Z";

pub fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("a test time")
        .with_timezone(&Utc)
}

/// `sha256:<hex>` computed here, independently of the crate under test.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub struct Setup {
    pub central_url: String,
    pub dev_url: String,
    pub staging_url: String,
    pub production_url: String,
    pub options: StoreOptions,
    pub dir: tempfile::TempDir,
    /// Whether the server computes the SHA-256 of a server-side copy itself (moto, as AWS S3
    /// does), so that ferry reads nothing back.
    pub server_checksums: bool,
    _server: Option<Server>,
}

impl Setup {
    pub fn file() -> Setup {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = |name: &str| format!("file://{}", dir.path().join(name).display());
        Setup {
            central_url: url("central"),
            dev_url: url("envs/dev"),
            staging_url: url("envs/staging"),
            production_url: url("prod-artifacts"),
            options: StoreOptions::default(),
            server_checksums: false,
            _server: None,
            dir,
        }
    }

    pub async fn s3(kind: Kind) -> Option<Setup> {
        let server = Server::start(kind)?;
        server.create_bucket("ferry").await;
        server.create_bucket("prod-artifacts").await;
        Some(Setup {
            central_url: "s3://ferry/central".into(),
            dev_url: "s3://ferry/envs/dev".into(),
            staging_url: "s3://ferry/envs/staging".into(),
            production_url: "s3://prod-artifacts/app".into(),
            options: server.options(None),
            dir: tempfile::tempdir().expect("temporary directory"),
            server_checksums: kind == Kind::Moto,
            _server: Some(server),
        })
    }

    /// Writes `ferry.toml` with the three environments (`production_extra` is appended to
    /// `[env.production]`) and reads it back the way the CLI does.
    pub fn config(&self, production_extra: &str) -> ferry_core::ConfigFile {
        let text = format!(
            "[store]\nurl = \"{}\"\n\n[env.dev]\nartifacts = \"{}\"\n\n\
             [env.staging]\nartifacts = \"{}\"\nrequires = \"dev\"\n\n\
             [env.production]\nartifacts = \"{}\"\nrequires = \"staging\"\n{production_extra}\n",
            self.central_url, self.dev_url, self.staging_url, self.production_url
        );
        let path = self.dir.path().join("ferry.toml");
        std::fs::write(&path, text).expect("write ferry.toml");
        ferry_core::config::load(&path, None, &|_| None).expect("ferry.toml parses")
    }

    pub async fn store(&self, url: &str) -> Arc<dyn ObjectStore> {
        ferry_store::open(url, &self.options)
            .await
            .expect("open store")
    }

    pub async fn promoter(&self, production_extra: &str) -> Promoter {
        let config = self.config(production_extra);
        Promoter::from_config(
            self.store(&self.central_url).await,
            &config,
            self.options.clone(),
        )
        .expect("valid environments")
    }

    /// A small artifact file built by the test.
    pub fn artifact(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write artifact");
        path
    }

    /// The bytes of an artifact as stored at `url`, if present.
    pub async fn stored(&self, url: &str, digest: &str) -> Option<Vec<u8>> {
        let key = format!("artifacts/sha256/{}", digest.trim_start_matches("sha256:"));
        match self.store(url).await.get_bytes(&key).await {
            Ok(bytes) => Some(bytes),
            Err(ferry_store::StoreError::NotFound { .. }) => None,
            Err(e) => panic!("reading {key} at {url}: {e}"),
        }
    }

    /// Replaces the stored bytes of an artifact behind ferry's back.
    pub async fn tamper(&self, url: &str, digest: &str, bytes: &[u8]) {
        let key = format!("artifacts/sha256/{}", digest.trim_start_matches("sha256:"));
        self.store(url)
            .await
            .put_bytes(&key, bytes.to_vec(), PutMode::Overwrite)
            .await
            .expect("tamper");
    }

    pub async fn push(&self, p: &Promoter, version: &str, bytes: &[u8], now: &str) -> String {
        let path = self.artifact(&format!("app-{version}.bin"), bytes);
        let report = p
            .push(PushRequest {
                path,
                name: "app".into(),
                version: version.into(),
                actor: "tester@ci".into(),
                now: at(now),
            })
            .await
            .expect("push");
        assert_eq!(report.digest.to_string(), sha256(bytes));
        assert_eq!(report.reference, format!("app@{}", sha256(bytes)));
        report.reference
    }
}

/// Runs a scenario on the file store, s3s-fs and moto (each test skips loudly, or fails
/// under CI, when its server is not installed).
#[macro_export]
macro_rules! on_every_store {
    ($scenario:ident) => {
        on_every_store!($scenario, file, s3s_fs, moto);
    };
    ($scenario:ident, $($store:ident),+) => {
        mod $scenario {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $store() {
                    if let Some(setup) = $crate::harness::setup(stringify!($store)).await {
                        super::$scenario(setup).await;
                    }
                }
            )+
        }
    };
}

pub async fn setup(store: &str) -> Option<Setup> {
    match store {
        "file" => Some(Setup::file()),
        "s3s_fs" => Setup::s3(Kind::S3sFs).await,
        "moto" => Setup::s3(Kind::Moto).await,
        other => panic!("no store named {other}"),
    }
}
