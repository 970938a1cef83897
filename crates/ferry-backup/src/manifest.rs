//! The manifest: what a backup contains, written last as its commit marker. The JSON keys are a
//! contract (`ferry backup show --json`, other tools reading the store); never rename them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{BackupError, Result};

/// Where a backup's objects live: `backups/<id>/data.gz` (or `data.zst`) and
/// `backups/<id>/manifest.json`.
pub(crate) const PREFIX: &str = "backups/";
pub(crate) const MANIFEST: &str = "manifest.json";

pub(crate) fn data_key(id: &str, compression: Compression) -> String {
    format!("{PREFIX}{id}/{}", compression.data_file())
}

/// How a backup's data object is compressed. A manifest without the key is from a ferry that
/// only wrote gzip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip (zlib-rs): readable by any `gunzip`.
    #[default]
    Gzip,
    /// Zstandard: smaller and faster at the same speed budget; `zstd -d` reads it.
    Zstd,
}

impl Compression {
    /// The data object's file name in the store.
    pub fn data_file(self) -> &'static str {
        match self {
            Compression::Gzip => "data.gz",
            Compression::Zstd => "data.zst",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// `gzip` or `zstd`, as `[backup] compression` spells them.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The levels a user may choose.
    pub fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Compression::Gzip => 0..=9,
            Compression::Zstd => 1..=19,
        }
    }

    /// The level used when none is given: the fastest that keeps a PostgreSQL backup no
    /// larger than `pg_dump -Fc`'s (zstd; ARCHITECTURE.md has the figures), or gzip's
    /// fastest.
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Gzip => 1,
            Compression::Zstd => 3,
        }
    }
}

pub(crate) fn manifest_key(id: &str) -> String {
    format!("{PREFIX}{id}/{MANIFEST}")
}

/// One backup's description. Serialized with exactly these keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Sortable by time: `20261123T093012Z-1a2b3c` (UTC second, then 6 random hex digits).
    pub id: String,
    pub created_at: DateTime<Utc>,
    /// `postgres`, `mysql` or `sqlite`.
    pub engine: String,
    pub server_version: String,
    /// Database name (PostgreSQL, MySQL) or file path (SQLite).
    pub database: String,
    /// The source URL with its password redacted.
    pub url: String,
    /// Highest successfully applied version in `ferry_migrations`, `None` without that table.
    pub schema_version: Option<i64>,
    pub label: Option<String>,
    /// The dump tool and its version, e.g. `pg_dump 15.19`, or `sqlite VACUUM INTO`.
    pub tool: String,
    pub ferry_version: String,
    /// Size of the dump before compression.
    pub raw_bytes: u64,
    /// How the data object is compressed (absent in manifests of older ferry: gzip).
    #[serde(default)]
    pub compression: Compression,
    /// Size of the stored data object (`data.gz` or `data.zst`).
    pub compressed_bytes: u64,
    /// SHA-256 (hex) of the stored data object.
    pub sha256: String,
    pub duration_ms: u64,
    pub tables: Vec<TableRows>,
}

/// A table and its row count at the moment of the snapshot. Names are schema-qualified on
/// PostgreSQL (`public.users`), bare on MySQL and SQLite.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableRows {
    pub name: String,
    pub rows: i64,
}

/// A new id for a backup created at `at`.
pub(crate) fn new_id(at: DateTime<Utc>) -> String {
    format!(
        "{}-{:06x}",
        at.format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// Ids are used in store keys and scratch database names, so only a strict shape is accepted.
pub(crate) fn check_id(id: &str) -> Result<()> {
    let ok = id.len() <= 64
        && !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(BackupError::BadId { id: id.to_string() })
    }
}

/// The id as a database identifier: `ferry_verify_20261123t093012z_1a2b3c`.
pub(crate) fn scratch_name(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let mut name = format!("ferry_verify_{clean}");
    name.truncate(63);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_are_safe() {
        let a = new_id("2026-11-23T09:30:12Z".parse().unwrap());
        let b = new_id("2026-11-23T09:30:13Z".parse().unwrap());
        assert!(a.starts_with("20261123T093012Z-") && a.len() == 23, "{a}");
        assert!(a < b);
        check_id(&a).unwrap();
        assert!(check_id("../etc").is_err());
        assert!(check_id("").is_err());
        assert_eq!(
            scratch_name("20261123T093012Z-1a2b3c"),
            "ferry_verify_20261123t093012z_1a2b3c"
        );
    }

    #[test]
    fn json_keys_are_the_contract() {
        let m = Manifest {
            id: "20261123T093012Z-1a2b3c".into(),
            created_at: "2026-11-23T09:30:12Z".parse().unwrap(),
            engine: "postgres".into(),
            server_version: "15.19".into(),
            database: "app".into(),
            url: "postgres://u:***@h/app".into(),
            schema_version: Some(3),
            label: None,
            tool: "pg_dump 15.19".into(),
            ferry_version: "0.0.0".into(),
            raw_bytes: 10,
            compression: Compression::Zstd,
            compressed_bytes: 5,
            sha256: "ab".into(),
            duration_ms: 7,
            tables: vec![TableRows {
                name: "public.t".into(),
                rows: 1,
            }],
        };
        let v = serde_json::to_value(&m).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut expected = vec![
            "id",
            "created_at",
            "engine",
            "server_version",
            "database",
            "url",
            "schema_version",
            "label",
            "tool",
            "ferry_version",
            "raw_bytes",
            "compression",
            "compressed_bytes",
            "sha256",
            "duration_ms",
            "tables",
        ];
        let mut keys_sorted = keys.clone();
        keys_sorted.sort();
        expected.sort();
        assert_eq!(keys_sorted, expected);
        assert_eq!(v["tables"][0]["name"], "public.t");
        assert_eq!(v["compression"], "zstd");
        let back: Manifest = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, m);
        // A manifest of a ferry that only wrote gzip has no such key.
        let mut old = v;
        old.as_object_mut().unwrap().remove("compression");
        let back: Manifest = serde_json::from_value(old).unwrap();
        assert_eq!(back.compression, Compression::Gzip);
        assert_eq!(
            data_key(&back.id, back.compression),
            "backups/20261123T093012Z-1a2b3c/data.gz"
        );
    }
}
