//! Per-test stores and the fixtures on them. Per-test databases are `ferry_testkit::db::TestDb`
//! (one server-finding and missing-server rule for every test crate).

use std::sync::Arc;

use ferry_backup::{Backups, Options, Progress, Quiet};

pub fn quiet() -> Arc<dyn Progress> {
    Quiet::arc()
}

/// A store in a temporary directory, and a `Backups` over it.
pub struct Store {
    pub dir: tempfile::TempDir,
    pub backups: Backups,
}

pub async fn store_with(options: Options) -> Store {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("store").display());
    let store = ferry_store::open(&url, &Default::default()).await.unwrap();
    Store {
        backups: Backups::with_options(store, options),
        dir,
    }
}

/// Another `Backups` over the same store directory, with other options.
pub async fn reopen(store: &Store, options: Options) -> Backups {
    let url = format!("file://{}", store.dir.path().join("store").display());
    let s = ferry_store::open(&url, &Default::default()).await.unwrap();
    Backups::with_options(s, options)
}

pub async fn store() -> Store {
    store_with(Options::default()).await
}

/// A directory holding an executable `name` that prints to stderr and exits 1.
pub fn fake_tool_dir(names: &[&str]) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for name in names {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo \"fake (PostgreSQL) 99.0 Distrib 99.0-MariaDB\"; exit 0; fi\n\
             printf 'partial output'\necho 'fake dump failed: connection to postgres://u:hunter2@h/db lost' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// The stored data object of backup `id` (`data.zst` or `data.gz`).
pub fn data_file(store: &Store, id: &str) -> std::path::PathBuf {
    let dir = store.dir.path().join("store/backups").join(id);
    ["data.zst", "data.gz"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("backup {id} has no data object in {}", dir.display()))
}

/// Flips one byte in the middle of a backup's stored data.
pub fn corrupt(store: &Store, id: &str) {
    let path = data_file(store, id);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
}

/// Store keys under `backups/`.
pub fn stored_files(store: &Store) -> Vec<String> {
    let root = store.dir.path().join("store");
    let mut out = Vec::new();
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    walk(&root, &root, &mut out);
    out.sort();
    out
}
