//! `ferry.toml`: `ferry_core::config::load` and `resolve` on a file written from the input, and
//! `${VAR}` expansion.
//!
//! The input is the file. A first line `# env: NAME` (a TOML comment) selects the environment,
//! as `--env NAME` would. Variables: `PW` and `PWS` are passwords (the second with the
//! characters that need percent-encoding), other upper-case names expand to `v_<name>`, the
//! rest are unset.
//!
//! Invariants: no panic; the string values of environments other than the selected one are
//! exactly as written (a dev run never needs production's variables); values without `$` are
//! unchanged; `$$`-escaping any text and expanding it gives the text back; a database URL with a
//! password never shows the password, in its `Display` or in an error.
#![no_main]

use std::path::PathBuf;

use ferry_core::config::{self, Overrides};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "hunter2s3cret";
const SECRET_ODD: &str = "p/ss+w@rd:x%2B";

fn lookup(name: &str) -> Option<String> {
    match name {
        "PW" => Some(SECRET.to_string()),
        "PWS" => Some(SECRET_ODD.to_string()),
        n if !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') =>
        {
            Some(format!("v_{}", n.to_ascii_lowercase()))
        }
        _ => None,
    }
}

thread_local! {
    static FILE: (tempfile::TempDir, PathBuf) = {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ferry.toml");
        (dir, path)
    };
}

fn env_strings(v: &toml::Value, name: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(section) = v.get("env").and_then(|e| e.get(name)).and_then(|s| s.as_table()) {
        for key in ["database_url", "artifacts", "requires"] {
            if let Some(s) = section.get(key).and_then(|s| s.as_str()) {
                out.push((key.to_string(), s.to_string()));
            }
        }
    }
    out
}

fn field(section: &ferry_core::config::EnvSection, key: &str) -> Option<String> {
    match key {
        "database_url" => section.database_url.clone(),
        "artifacts" => section.artifacts.clone(),
        _ => section.requires.clone(),
    }
}

/// True when `secret` is the password of a `scheme://user:password@host…` URL and appears
/// nowhere else in it.
fn has_password(url: &str, secret: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    url.matches(secret).count() == 1
        && rest
            .find(&format!(":{secret}@"))
            .is_some_and(|at| !rest[..at].contains(['/', '@', ':', '?', '#']))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    let escaped = text.replace('$', "$$");
    assert_eq!(
        config::expand_vars(&escaped, &|_| None),
        Ok(text.to_string()),
        "escaping with $$ does not round-trip"
    );
    let _ = config::expand_vars(text, &lookup);

    let selected = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# env: "))
        .map(|s| s.trim().to_string());

    FILE.with(|(_, path)| {
        std::fs::write(path, data).expect("write ferry.toml");
        let loaded = config::load(path, selected.as_deref(), &lookup);
        if let (Ok(file), Ok(raw)) = (&loaded, toml::from_str::<toml::Value>(text)) {
            let chosen = selected
                .clone()
                .or_else(|| file.default_env.clone());
            for (name, section) in &file.env {
                for (key, written) in env_strings(&raw, name) {
                    let got = field(section, &key);
                    if Some(name) != chosen.as_ref() || !written.contains('$') {
                        assert_eq!(
                            got.as_deref(),
                            Some(written.as_str()),
                            "env.{name}.{key} was changed (selected env: {chosen:?})"
                        );
                    }
                }
            }
        }

        let over = Overrides {
            config: Some(path.clone()),
            env: selected.clone(),
            ..Overrides::default()
        };
        match config::resolve(&over, &lookup) {
            Ok(settings) => {
                if let Some(url) = &settings.database_url {
                    for secret in [SECRET, SECRET_ODD] {
                        if has_password(url.expose(), secret) {
                            assert!(!url.to_string().contains(secret), "URL display shows the password");
                            assert!(!format!("{url:?}").contains(secret), "URL debug shows the password");
                        }
                    }
                }
                let _ = settings.store_url();
            }
            Err(e) => {
                let message = e.to_string();
                if let ferry_core::CoreError::BadUrl { .. } = e
                    && !text.contains(SECRET)
                    && !text.contains(SECRET_ODD)
                {
                    let file = config::load(path, selected.as_deref(), &lookup).ok();
                    let urls = file
                        .iter()
                        .flat_map(|f| f.env.values())
                        .filter_map(|s| s.database_url.clone());
                    for url in urls {
                        for secret in [SECRET, SECRET_ODD] {
                            if has_password(&url, secret) {
                                assert!(
                                    !message.contains(secret),
                                    "an invalid URL's error shows its password: {message}"
                                );
                            }
                        }
                    }
                }
            }
        }
    });
});
