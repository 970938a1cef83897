//! ferry-backup's manifest reader: `Backups::show` and `Backups::list` on a file store whose
//! `backups/<id>/manifest.json` objects are the input (split at 0xFF bytes, which JSON never
//! contains; up to three backups with fixed ids).
//!
//! Invariants: no panic; a manifest that reads names its own backup and survives a JSON round
//! trip unchanged; `list` returns exactly the readable manifests, newest first.
#![no_main]

use std::sync::{Arc, OnceLock};

use ferry_backup::{Backups, Manifest};
use libfuzzer_sys::fuzz_target;

const IDS: [&str; 3] = [
    "20261123T093012Z-1a2b3c",
    "20261124T000000Z-000001",
    "20261125T101010Z-abcdef",
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("temp dir");
    let docs: Vec<&[u8]> = data.split(|b| *b == 0xff).take(IDS.len()).collect();
    for (id, doc) in IDS.iter().zip(&docs) {
        let dir = tmp.path().join("backups").join(id);
        std::fs::create_dir_all(&dir).expect("backup dir");
        std::fs::write(dir.join("manifest.json"), doc).expect("manifest");
    }
    let url = format!("file://{}", tmp.path().display());
    runtime().block_on(async {
        let store = ferry_store::open(&url, &ferry_store::StoreOptions::default())
            .await
            .expect("file store");
        let backups = Backups::new(Arc::clone(&store));
        let mut readable: Vec<Manifest> = Vec::new();
        for id in IDS.iter().take(docs.len()) {
            match backups.show(id).await {
                Ok(m) => {
                    assert_eq!(m.id, *id, "show returned another backup's manifest");
                    let json = serde_json::to_vec_pretty(&m).expect("manifest serializes");
                    let back: Manifest = serde_json::from_slice(&json).expect("re-reads");
                    assert_eq!(back, m, "manifest changed in a JSON round trip");
                    readable.push(m);
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
        let listed = backups.list().await.expect("list never fails on a bad manifest");
        assert_eq!(listed.len(), readable.len(), "list and show disagree");
        for m in &readable {
            assert!(listed.contains(m), "list misses readable backup {}", m.id);
        }
        for pair in listed.windows(2) {
            assert!(
                (pair[0].created_at, &pair[0].id) >= (pair[1].created_at, &pair[1].id),
                "list is not newest first"
            );
        }
    });
});
