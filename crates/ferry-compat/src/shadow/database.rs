//! The shadow database's life: created on the server the check was pointed at (through
//! `ferry_core::scratch`, keeping the creating connection to drop it) or as a temporary SQLite
//! file, and dropped afterwards.

use ferry_core::scratch::{self, Scratch, ScratchOptions};
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
pub(super) fn unique_name() -> String {
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
    /// A shadow file named `name` in the temporary directory (not created yet).
    fn sqlite(name: String) -> Result<Shadow, CompatError> {
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

    pub(super) async fn create(server: &DatabaseUrl) -> Result<Shadow, CompatError> {
        let name = unique_name();
        match server.engine() {
            Engine::Sqlite => Shadow::sqlite(name),
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

    /// A copy of the kept base database `base` on the server of `server` (PostgreSQL's
    /// `CREATE DATABASE … TEMPLATE`), or of the base file `base` (SQLite). `None` when the base
    /// is not there (never built, or removed by `ferry compat clean` or another check's
    /// pruning meanwhile). PostgreSQL refuses to copy a database while a session is connected
    /// to it; nothing connects to a sealed base, but a copy is tried again for about two
    /// seconds before that is reported.
    pub(super) async fn clone_of(
        server: &DatabaseUrl,
        base: &str,
    ) -> Result<Option<Shadow>, CompatError> {
        let name = unique_name();
        match server.engine() {
            Engine::Sqlite => {
                let shadow = Shadow::sqlite(name)?;
                let file = shadow.file.clone().unwrap_or_default();
                match std::fs::copy(base, &file) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => {
                        let _ = std::fs::remove_file(&file);
                        return Err(shadow_err(
                            &format!("cannot copy the kept base {base}"),
                            server,
                        )(sqlx::Error::Io(e)));
                    }
                }
                Ok(Some(shadow))
            }
            engine => {
                let options = ScratchOptions {
                    throwaway: true,
                    keep_connection: true,
                    template: Some(base.to_string()),
                    ..Default::default()
                };
                let mut pause = std::time::Duration::from_millis(10);
                loop {
                    match Scratch::create(server, &name, &options).await {
                        Ok(scratch) => {
                            return Ok(Some(Shadow {
                                engine,
                                url: scratch.url().clone(),
                                scratch: Some(scratch),
                                name,
                                file: None,
                            }));
                        }
                        Err(e) if scratch::is_missing(&e) => return Ok(None),
                        Err(e)
                            if scratch::is_in_use(&e)
                                && pause < std::time::Duration::from_secs(1) =>
                        {
                            tracing::debug!(base, "compat: the kept base is in use; trying again");
                            tokio::time::sleep(pause).await;
                            pause *= 2;
                        }
                        Err(e) => {
                            return Err(shadow_err(
                                &format!("cannot copy the kept base database {base}"),
                                server,
                            )(e));
                        }
                    }
                }
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
