//! `ferry_migrate::source::load_dir` on a real directory built from the input.
//!
//! Input format (text): a line `== RELATIVE/PATH` starts a file, the lines up to the next such
//! line are its contents; `==/ RELATIVE/PATH` makes an empty directory. Paths have at most two
//! components (a diesel folder and a file in it). So the corpus is readable, and a seed is just a
//! fixture directory written out (fuzz/README.md).
//!
//! Invariants when the directory loads: versions strictly increase; each checksum is the
//! checksum of the stored up text, which is already normalized (and so is the down); a down is
//! never blank; loading again gives the same migrations.
#![no_main]

use std::path::Path;

use ferry_migrate::source::{checksum, load_dir, normalize};
use ferry_migrate::sql::is_blank;
use libfuzzer_sys::fuzz_target;

fn component_ok(c: &str) -> bool {
    !c.is_empty() && c != "." && c != ".." && c.len() <= 120 && !c.contains('\0')
}

fn build(root: &Path, input: &str) {
    let mut files: Vec<(String, String, bool)> = Vec::new();
    for line in input.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if let Some(path) = bare.strip_prefix("==/ ") {
            files.push((path.to_string(), String::new(), true));
        } else if let Some(path) = bare.strip_prefix("== ") {
            files.push((path.to_string(), String::new(), false));
        } else if let Some(last) = files.last_mut() {
            last.1.push_str(line);
        }
    }
    for (path, contents, is_dir) in files.into_iter().take(12) {
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() > 2 || !parts.iter().all(|c| component_ok(c)) {
            continue;
        }
        let target = root.join(&path);
        // Clashes (a file where a folder should be) are skipped: the directory is what it is.
        if parts.len() == 2 && std::fs::create_dir_all(root.join(parts[0])).is_err() {
            continue;
        }
        if is_dir {
            let _ = std::fs::create_dir_all(&target);
        } else {
            let _ = std::fs::write(&target, contents.as_bytes());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let base = Path::new("/dev/shm");
    let tmp = if base.is_dir() {
        tempfile::tempdir_in(base)
    } else {
        tempfile::tempdir()
    }
    .expect("temp dir");
    let dir = tmp.path().join("migrations");
    std::fs::create_dir(&dir).expect("migrations dir");
    build(&dir, &input);

    let first = load_dir(&dir);
    let Ok(migrations) = first else {
        // Every error must render (and name something); rendering must not panic.
        let _ = first.map_err(|e| e.to_string());
        return;
    };
    for pair in migrations.windows(2) {
        assert!(
            pair[0].version < pair[1].version,
            "versions out of order or duplicated: {} then {}",
            pair[0].label(),
            pair[1].label()
        );
    }
    for m in &migrations {
        assert!(!m.name.is_empty(), "{}: empty name", m.label());
        assert!(m.version >= 0, "{}: negative version", m.label());
        assert_eq!(m.checksum, checksum(&m.up), "{}: checksum", m.label());
        assert_eq!(normalize(&m.up), m.up, "{}: up not normalized", m.label());
        if let Some(down) = &m.down {
            assert!(!is_blank(down), "{}: blank down {down:?}", m.label());
            assert_eq!(&normalize(down), down, "{}: down not normalized", m.label());
        }
        assert!(m.path.starts_with(&dir), "{}: path {:?}", m.label(), m.path);
    }
    let again = load_dir(&dir).expect("a directory that loaded once loads again");
    let key = |ms: &[ferry_migrate::Migration]| {
        ms.iter()
            .map(|m| {
                (
                    m.version,
                    m.name.clone(),
                    m.up.clone(),
                    m.down.clone(),
                    m.checksum.clone(),
                    m.up_transaction,
                    m.down_transaction,
                    m.layout,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&migrations), key(&again), "loading twice differs");
});
