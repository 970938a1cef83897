//! The shadow database's life: created on the server the check was pointed at (through
//! `ferry_core::scratch`, keeping the creating connection to drop it) or as a temporary SQLite
//! file, and dropped afterwards.

use ferry_core::scratch::{Scratch, ScratchOptions};
use ferry_core::{DatabaseUrl, Engine};

use crate::CompatError;

pub(super) struct Shadow {
    pub(super) engine: Engine,
    pub(super) url: DatabaseUrl,
    /// The database on a server (`None` for SQLite's file), with the connection that created
    /// it kept to drop it.
    scratch: Option<Scratch>,
    name: String,
    file: Option<std::path::PathBuf>,
}

/// Unique per process and call, short enough for MySQL's 64-character names, and safe to splice
/// into `CREATE DATABASE` (digits and underscores only).
fn unique_name() -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("ferry_shadow_{}_{n}_{nanos}", std::process::id())
}

pub(super) fn shadow_err(
    context: &str,
    url: &DatabaseUrl,
) -> impl FnOnce(sqlx::Error) -> CompatError {
    let context = format!("{context} ({})", url.redacted());
    move |source| CompatError::Shadow {
        context,
        source: Box::new(source),
    }
}

impl Shadow {
    pub(super) async fn create(server: &DatabaseUrl) -> Result<Shadow, CompatError> {
        let name = unique_name();
        match server.engine() {
            Engine::Sqlite => {
                let file = std::env::temp_dir().join(format!("{name}.db"));
                let url = DatabaseUrl::parse(&format!("sqlite:{}", file.display()))?;
                Ok(Shadow {
                    engine: Engine::Sqlite,
                    url,
                    scratch: None,
                    name,
                    file: Some(file),
                })
            }
            engine => {
                let options = ScratchOptions {
                    throwaway: true,
                    keep_connection: true,
                    ..Default::default()
                };
                let scratch = Scratch::create(server, &name, &options)
                    .await
                    .map_err(shadow_err("cannot create the shadow database", server))?;
                Ok(Shadow {
                    engine,
                    url: scratch.url().clone(),
                    scratch: Some(scratch),
                    name,
                    file: None,
                })
            }
        }
    }

    pub(super) async fn destroy(self) {
        let result = match self.scratch {
            None => Ok(()),
            Some(scratch) => scratch.drop().await,
        };
        if let Err(e) = result {
            tracing::warn!(database = %self.name, error = %e, "compat: could not drop the shadow database");
        }
        if let Some(f) = self.file {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", f.display()));
            }
        }
    }
}
