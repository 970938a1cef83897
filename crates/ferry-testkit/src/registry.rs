//! A real OCI registry on loopback, one per test: Debian's `docker-registry` (CNCF
//! distribution) with filesystem storage in a temporary directory, optionally behind htpasswd
//! (Basic) auth. Plus helpers that speak the registry API directly, independent of ferry's
//! client, to push a small image and to check what ferry did.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sha2::{Digest as _, Sha256};

const ENV_VAR: &str = "FERRY_TEST_REGISTRY";
const INSTALL: &str = "apt-get install -y docker-registry apache2-utils";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// A running `docker-registry`, killed on drop.
pub struct Registry {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
    auth: Option<(String, String)>,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

/// An image pushed by [`Registry::push_image`].
#[derive(Debug, Clone)]
pub struct Image {
    /// `sha256:<hex>` of the manifest.
    pub digest: String,
    pub manifest: Vec<u8>,
    /// The layer's size in bytes.
    pub layer_size: usize,
}

fn binary() -> Option<PathBuf> {
    crate::server::find_binary(
        ENV_VAR,
        "docker-registry",
        &[PathBuf::from("/usr/bin/docker-registry")],
    )
}

fn missing(what: &str) -> Option<Registry> {
    crate::server::missing(&format!(
        "{what}; install it with `{INSTALL}` (or set {ENV_VAR} to the binary)"
    ));
    None
}

impl Registry {
    /// Starts a registry; with `auth`, behind htpasswd Basic auth for that user. Returns
    /// `None` (loudly) when `docker-registry` is not installed and this is not CI; under
    /// `CI=true` that is a failure.
    pub fn start(auth: Option<(&str, &str)>) -> Option<Registry> {
        let Some(binary) = binary() else {
            return missing("docker-registry not found");
        };
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut auth_yaml = String::new();
        if let Some((user, pass)) = auth {
            let out = match Command::new("htpasswd").args(["-Bbn", user, pass]).output() {
                Ok(out) if out.status.success() => out.stdout,
                Ok(out) => panic!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr)),
                Err(_) => return missing("htpasswd (apache2-utils) not found"),
            };
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, out).expect("htpasswd file");
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: ferry-test\n    path: {}\n",
                path.display()
            );
        }
        let _spawning = crate::server::spawning();
        let port = crate::server::free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: ferry-test-secret\n{auth_yaml}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let log = std::fs::File::create(dir.path().join("log")).expect("registry log");
        let child = Command::new(&binary)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("registry log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the registry client");
        let mut registry = Registry {
            port,
            child,
            dir,
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
            http: reqwest::Client::new(),
            rt,
        };
        registry.wait_until_listening();
        Some(registry)
    }

    fn wait_until_listening(&mut self) {
        let (port, log) = (self.port, self.dir.path().join("log"));
        let child = &mut self.child;
        crate::server::wait_until_listening(
            "docker-registry",
            port,
            || child.try_wait().ok().flatten(),
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// `127.0.0.1:PORT`, as in image references and `oci://` URLs.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/v2/{path}", self.host())
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, url);
        match &self.auth {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        }
    }

    fn push_blob(&self, repo: &str, bytes: Vec<u8>) -> String {
        let digest = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
        self.rt.block_on(async {
            let resp = self
                .request(
                    reqwest::Method::POST,
                    &self.url(&format!("{repo}/blobs/uploads/")),
                )
                .send()
                .await
                .expect("start a blob upload");
            assert_eq!(resp.status().as_u16(), 202, "start upload: {resp:?}");
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .expect("upload location")
                .to_string();
            let mut url = if location.starts_with('/') {
                format!("http://{}{location}", self.host())
            } else {
                location
            };
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&format!("digest={digest}"));
            let resp = self
                .request(reqwest::Method::PUT, &url)
                .header("content-type", "application/octet-stream")
                .body(bytes)
                .send()
                .await
                .expect("upload a blob");
            assert_eq!(resp.status().as_u16(), 201, "upload blob: {resp:?}");
        });
        digest
    }

    /// Builds a small image (one random layer of `layer_size` bytes in a tar.gz, a config, an
    /// OCI image manifest), pushes it to `repo` under `tag`, and returns it.
    pub fn push_image(&self, repo: &str, tag: &str, layer_size: usize) -> Image {
        let content: Vec<u8> = (0..layer_size).map(|_| rand::random::<u8>()).collect();
        let tar = tar_of("app/payload.bin", &content);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gzip");
        let layer = gz.finish().expect("gzip");
        let diff_id = format!("sha256:{}", hex(&Sha256::digest(&tar)));
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/app/payload.bin"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }))
        .expect("config JSON");
        let (config_size, layer_len) = (config.len(), layer.len());
        let config_digest = self.push_blob(repo, config);
        let layer_digest = self.push_blob(repo, layer);
        let manifest = serde_json::to_vec_pretty(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer_len,
            }],
        }))
        .expect("manifest JSON");
        let digest = format!("sha256:{}", hex(&Sha256::digest(&manifest)));
        self.rt.block_on(async {
            let resp = self
                .request(
                    reqwest::Method::PUT,
                    &self.url(&format!("{repo}/manifests/{tag}")),
                )
                .header("content-type", MANIFEST_TYPE)
                .body(manifest.clone())
                .send()
                .await
                .expect("put the manifest");
            assert_eq!(resp.status().as_u16(), 201, "put manifest: {resp:?}");
        });
        Image {
            digest,
            manifest,
            layer_size: layer_len,
        }
    }

    /// What `repo:reference` (a tag or digest) resolves to, and its manifest bytes; `None`
    /// when absent. The digest is computed from the bytes, not taken from a header.
    pub fn manifest(&self, repo: &str, reference: &str) -> Option<(String, Vec<u8>)> {
        self.rt.block_on(async {
            let resp = self
                .request(
                    reqwest::Method::GET,
                    &self.url(&format!("{repo}/manifests/{reference}")),
                )
                .header(
                    "accept",
                    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
                )
                .send()
                .await
                .expect("get a manifest");
            if resp.status().as_u16() == 404 {
                return None;
            }
            assert!(resp.status().is_success(), "get manifest: {resp:?}");
            let bytes = resp.bytes().await.expect("manifest bytes").to_vec();
            Some((format!("sha256:{}", hex(&Sha256::digest(&bytes))), bytes))
        })
    }

    /// The digest `repo:tag` resolves to.
    pub fn resolve(&self, repo: &str, tag: &str) -> Option<String> {
        self.manifest(repo, tag).map(|(d, _)| d)
    }

    /// Overwrites the stored bytes of a blob (a manifest is stored as one) with other bytes of
    /// the same length, behind the registry's back.
    pub fn tamper_blob(&self, digest: &str) {
        let hex = digest.trim_start_matches("sha256:");
        let path = self
            .dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        let mut bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        // Pretty JSON (a manifest) stays valid JSON with a tab for an indenting space, so the
        // registry still serves it; anything else gets its last byte flipped.
        match bytes.windows(2).position(|w| w == b"\n ") {
            Some(i) => bytes[i + 1] = b'\t',
            None => {
                let last = bytes.len() - 1;
                bytes[last] ^= 0x20;
            }
        }
        std::fs::write(&path, bytes).expect("tamper with a blob");
    }

    /// The registry's storage directory.
    pub fn storage(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A ustar archive with one regular file.
fn tar_of(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |field: &mut [u8], value: u64| {
        let text = format!("{value:0width$o}\0", width = field.len() - 1);
        field.copy_from_slice(text.as_bytes());
    };
    octal(&mut header[100..108], 0o644);
    octal(&mut header[108..116], 0);
    octal(&mut header[116..124], 0);
    octal(&mut header[124..136], content.len() as u64);
    octal(&mut header[136..148], 1_700_000_000);
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u64 = header.iter().map(|&b| u64::from(b)).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_serves_a_pushed_image_by_tag_and_digest() {
        let Some(reg) = Registry::start(Some(("tester", "secret"))) else {
            return;
        };
        let image = reg.push_image("app", "v1", 1000);
        assert_eq!(
            reg.resolve("app", "v1").as_deref(),
            Some(image.digest.as_str())
        );
        let (digest, bytes) = reg.manifest("app", &image.digest).unwrap();
        assert_eq!((digest, bytes), (image.digest.clone(), image.manifest));
        assert_eq!(reg.resolve("app", "nope"), None);
        reg.tamper_blob(&image.digest);
        assert_ne!(reg.resolve("app", "v1"), Some(image.digest));
    }

    #[test]
    fn tar_headers_are_valid() {
        let tar = tar_of("a.txt", b"hello");
        assert_eq!(tar.len(), 512 + 512 + 1024);
        let stored: u64 =
            u64::from_str_radix(std::str::from_utf8(&tar[148..154]).unwrap(), 8).unwrap();
        let mut header = tar[..512].to_vec();
        header[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, header.iter().map(|&b| u64::from(b)).sum::<u64>());
    }
}
