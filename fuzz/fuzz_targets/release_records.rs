//! ferry-promote's release-record reader: `Promoter::releases` on a file store whose
//! `releases/staging/<seq:010>.json` records are the input (split at 0xFF bytes, which JSON
//! never contains; record i gets sequence number i + 1).
//!
//! Invariants when the history reads: newest first with strictly decreasing sequence numbers;
//! the newest is the only `live` one and is what `live` says; `previous` is an earlier release
//! of another digest that is not bad; the report serializes to JSON (`--output json`).
#![no_main]

use std::sync::{Arc, OnceLock};

use ferry_promote::{EnvSpec, Promoter, Status};
use libfuzzer_sys::fuzz_target;

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
    let dir = tmp.path().join("releases").join("staging");
    std::fs::create_dir_all(&dir).expect("releases dir");
    for (i, doc) in data.split(|b| *b == 0xff).take(8).enumerate() {
        std::fs::write(dir.join(format!("{:010}.json", i + 1)), doc).expect("record");
    }
    let url = format!("file://{}", tmp.path().display());
    runtime().block_on(async {
        let store = ferry_store::open(&url, &ferry_store::StoreOptions::default())
            .await
            .expect("file store");
        let env = EnvSpec {
            name: "staging".into(),
            artifacts: None,
            requires: None,
            freeze: Vec::new(),
        };
        let promoter =
            Promoter::new(Arc::clone(&store), vec![env], ferry_store::StoreOptions::default())
                .expect("promoter");
        let releases = match promoter.releases("staging").await {
            Ok(r) => r,
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        };
        let history = &releases.history;
        for pair in history.windows(2) {
            assert!(pair[0].seq > pair[1].seq, "history not newest first");
        }
        assert_eq!(releases.live.as_ref(), history.first(), "live is not the newest");
        let lives = history.iter().filter(|r| r.status == Status::Live).count();
        assert_eq!(lives, usize::from(!history.is_empty()), "live count");
        if let Some(live) = history.first() {
            assert_eq!(live.status, Status::Live);
        }
        if let Some(prev) = &releases.previous {
            let live = releases.live.as_ref().expect("previous without live");
            assert_ne!(prev.digest, live.digest, "previous is the live digest");
            assert!(prev.seq < live.seq, "previous is not earlier");
            let newest = history
                .iter()
                .find(|r| r.digest == prev.digest)
                .expect("previous is in the history");
            assert_ne!(newest.status, Status::Bad, "previous is bad");
        }
        serde_json::to_string(&releases.history).expect("history serializes");
        serde_json::to_string(&releases.live).expect("live serializes");
    });
});
