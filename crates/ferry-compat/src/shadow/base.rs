//! The kept shadow base: a database (PostgreSQL) or file (SQLite) with the migrations up to the
//! base applied, kept between checks and copied for each shadow database, so that a check costs
//! in proportion to the new migrations instead of the whole history.
//!
//! A base is named by a hash of the engine, ferry's version (the history table's layout) and the
//! version and checksum of every migration up to the base: `ferry_base_<16 hex>`. Another
//! history, an edited migration or another ferry gets another base, so a base is never stale.
//! It is trusted only when complete: built under a temporary name, then closed to connections
//! and renamed (PostgreSQL) or renamed into place (SQLite), in one step each; two checks that
//! build the same base at once both finish, and the one whose rename comes second drops its
//! own copy. Nothing but a copy ever reads it, so it stays exactly at the base; a copy that
//! PostgreSQL refuses because a session is connected is tried again. After a base is built the
//! newest few are kept and older ones dropped; `ferry compat clean` removes them all.
//! MySQL/MariaDB has no database copy that is both fast and exact (views, triggers, routines
//! and events would have to be re-created one by one), so there every check applies the base;
//! ARCHITECTURE.md has the figures of a copy table by table.

use std::path::{Path, PathBuf};

use ferry_core::scratch::{self, Scratch, ScratchOptions};
use ferry_core::{DatabaseUrl, Engine};
use ferry_migrate::{MigrateOptions, Migration, Migrator, Quiet};

use super::database::{Shadow, shadow_err, unique_name};
use crate::CompatError;

/// Every kept base's name starts with this.
pub const PREFIX: &str = "ferry_base_";

/// Where kept bases live and how many stay.
#[derive(Debug, Clone)]
pub struct KeptBase {
    /// SQLite's base files (databases on a server stay on that server).
    pub dir: PathBuf,
    /// How many bases stay after a new one is built (the newest).
    pub keep: usize,
}

impl KeptBase {
    /// Three bases in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        KeptBase { dir, keep: 3 }
    }
}

/// The base name of the migrations up to `base` on `engine`.
pub(super) fn name(engine: Engine, migrations: &[Migration], base: i64) -> String {
    let mut key = format!("{engine}\n{}\n", env!("CARGO_PKG_VERSION"));
    let mut sorted: Vec<&Migration> = migrations.iter().filter(|m| m.version <= base).collect();
    sorted.sort_by_key(|m| m.version);
    for m in sorted {
        key.push_str(&format!("{} {}\n", m.version, m.checksum));
    }
    let hash = ferry_migrate::source::checksum(&key);
    format!("{PREFIX}{}", &hash[..16])
}

/// Where the kept base of `name` is: a database name, or a file for SQLite.
fn location(engine: Engine, kept: &KeptBase, name: &str) -> String {
    match engine {
        Engine::Sqlite => kept.dir.join(format!("{name}.db")).display().to_string(),
        _ => name.to_string(),
    }
}

/// Kept bases of one check: the base's name and the lock that makes the parts of a long
/// release build it once.
pub(super) struct Bases<'a> {
    server: &'a DatabaseUrl,
    kept: &'a KeptBase,
    migrations: &'a [Migration],
    base: i64,
    name: String,
    building: tokio::sync::Mutex<()>,
}

impl<'a> Bases<'a> {
    /// `None` where there is nothing to keep: no base, or MySQL.
    pub(super) fn new(
        server: &'a DatabaseUrl,
        kept: Option<&'a KeptBase>,
        migrations: &'a [Migration],
        base: Option<i64>,
    ) -> Option<Self> {
        let (kept, base) = (kept?, base?);
        if server.engine() == Engine::MySql {
            return None;
        }
        Some(Bases {
            server,
            kept,
            migrations,
            base,
            name: name(server.engine(), migrations, base),
            building: tokio::sync::Mutex::new(()),
        })
    }

    /// A shadow database at the base: a copy of the kept base, built first when there is none.
    pub(super) async fn shadow(&self) -> Result<Shadow, CompatError> {
        let engine = self.server.engine();
        let at = location(engine, self.kept, &self.name);
        if let Some(shadow) = Shadow::clone_of(self.server, &at).await? {
            return Ok(shadow);
        }
        // One part builds; the others wait and copy what it built.
        let _building = self.building.lock().await;
        if let Some(shadow) = Shadow::clone_of(self.server, &at).await? {
            return Ok(shadow);
        }
        self.build().await?;
        match Shadow::clone_of(self.server, &at).await? {
            Some(shadow) => Ok(shadow),
            // Removed again at once (`ferry compat clean`): go on without it.
            None => Shadow::create(self.server).await,
        }
    }

    /// Builds the base under a temporary name, then makes it visible under its own name in one
    /// step, then drops the bases beyond the newest few.
    async fn build(&self) -> Result<(), CompatError> {
        let started = std::time::Instant::now();
        let migrator = Migrator::new(self.migrations.to_vec(), MigrateOptions::default());
        let temporary = format!("{}_{}", self.name, &unique_name()["ferry_shadow_".len()..]);
        match self.server.engine() {
            Engine::Sqlite => {
                std::fs::create_dir_all(&self.kept.dir).map_err(|e| {
                    shadow_err(
                        &format!("cannot create {} for kept bases", self.kept.dir.display()),
                        self.server,
                    )(sqlx::Error::Io(e))
                })?;
                let file = self.kept.dir.join(format!("{temporary}.tmp"));
                let built = apply_to(&migrator, &sqlite_url(&file)?, self.base).await;
                // A base file is copied on its own: the write-ahead log must be folded in.
                let complete =
                    built.is_ok() && !Path::new(&format!("{}-wal", file.display())).exists();
                if complete {
                    let to = self.kept.dir.join(format!("{}.db", self.name));
                    std::fs::rename(&file, &to).map_err(|e| {
                        shadow_err(
                            &format!("cannot keep the base {}", to.display()),
                            self.server,
                        )(sqlx::Error::Io(e))
                    })?;
                } else {
                    for suffix in ["", "-wal", "-shm", "-journal"] {
                        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
                    }
                    built?;
                }
            }
            _ => {
                let options = ScratchOptions {
                    throwaway: true,
                    ..Default::default()
                };
                let scratch = Scratch::create(self.server, &temporary, &options)
                    .await
                    .map_err(shadow_err(
                        "cannot create the kept base database",
                        self.server,
                    ))?;
                let sealed = match apply_to(&migrator, scratch.url(), self.base).await {
                    Ok(()) => self.seal(&temporary).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = sealed {
                    if let Err(d) = scratch::drop_database(self.server, &temporary).await {
                        tracing::warn!(database = %temporary, error = %d, "compat: could not drop an unfinished base");
                    }
                    return Err(e);
                }
            }
        }
        tracing::debug!(
            base = %self.name,
            ms = started.elapsed().as_millis() as u64,
            "compat: built the kept base"
        );
        self.prune().await;
        Ok(())
    }

    /// Closes the finished database `temporary` to connections and renames it to the base's
    /// name, trying again while the session that filled it is still ending. When another check
    /// sealed the same base first, drops this copy.
    async fn seal(&self, temporary: &str) -> Result<(), CompatError> {
        let mut pause = std::time::Duration::from_millis(5);
        loop {
            match scratch::seal(self.server, temporary, &self.name).await {
                Ok(()) => return Ok(()),
                Err(e) if scratch::is_duplicate(&e) => {
                    tracing::debug!(base = %self.name, "compat: another check kept the same base first");
                    return scratch::drop_database(self.server, temporary)
                        .await
                        .map_err(shadow_err("cannot drop a duplicate base", self.server));
                }
                Err(e) if scratch::is_in_use(&e) && pause < std::time::Duration::from_secs(2) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => {
                    return Err(shadow_err("cannot keep the base database", self.server)(e));
                }
            }
        }
    }

    /// Drops the complete bases beyond the newest `keep` (never one being built: its name is
    /// longer). A failure only costs disk space, so it is logged.
    async fn prune(&self) {
        let complete = |name: &str| {
            name.len() == PREFIX.len() + 16
                && name[PREFIX.len()..].bytes().all(|b| b.is_ascii_hexdigit())
        };
        match self.server.engine() {
            Engine::Sqlite => {
                let mut files: Vec<(std::time::SystemTime, PathBuf)> =
                    std::fs::read_dir(&self.kept.dir)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter_map(|e| {
                            let name = e.file_name().to_str()?.strip_suffix(".db")?.to_string();
                            let modified = e.metadata().ok()?.modified().ok()?;
                            complete(&name).then_some((modified, e.path()))
                        })
                        .collect();
                files.sort_by_key(|f| std::cmp::Reverse(f.0));
                for (_, f) in files.into_iter().skip(self.kept.keep) {
                    let _ = std::fs::remove_file(f);
                }
            }
            _ => {
                let names = match scratch::list(self.server, PREFIX).await {
                    Ok(names) => names,
                    Err(e) => {
                        tracing::warn!(error = %e, "compat: could not list the kept bases");
                        return;
                    }
                };
                let old = names
                    .into_iter()
                    .filter(|n| complete(n))
                    .skip(self.kept.keep);
                for name in old {
                    if let Err(e) = scratch::drop_database(self.server, &name).await {
                        tracing::warn!(database = %name, error = %e, "compat: could not drop an old base");
                    }
                }
            }
        }
    }
}

fn sqlite_url(file: &Path) -> Result<DatabaseUrl, CompatError> {
    Ok(DatabaseUrl::parse(&format!("sqlite:{}", file.display()))?)
}

/// Applies the migrations up to `base` to the database at `url`, over one connection that is
/// closed after.
async fn apply_to(migrator: &Migrator, url: &DatabaseUrl, base: i64) -> Result<(), CompatError> {
    let mut driver = ferry_migrate::connect(url).await?;
    let applied = migrator
        .up(driver.as_mut(), Some(base), false, &Quiet)
        .await;
    let closed = driver.close().await;
    applied?;
    closed?;
    Ok(())
}

/// Removes every kept base on the server of `server` (or, for SQLite, in `kept.dir`), and
/// unfinished ones left by a check that was killed, but never one a running check is building;
/// returns what it removed.
pub async fn clean(server: &DatabaseUrl, kept: &KeptBase) -> Result<Vec<String>, CompatError> {
    let mut removed = Vec::new();
    match server.engine() {
        Engine::Sqlite => {
            let entries = match std::fs::read_dir(&kept.dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
                Err(e) => {
                    return Err(shadow_err(
                        &format!("cannot read {}", kept.dir.display()),
                        server,
                    )(sqlx::Error::Io(e)));
                }
            };
            let mut files: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(PREFIX))
                })
                .collect();
            files.sort();
            for f in files {
                std::fs::remove_file(&f).map_err(|e| {
                    shadow_err(&format!("cannot remove {}", f.display()), server)(sqlx::Error::Io(
                        e,
                    ))
                })?;
                removed.push(f.display().to_string());
            }
        }
        _ => {
            let names = scratch::list(server, PREFIX)
                .await
                .map_err(shadow_err("cannot list the kept bases", server))?;
            for name in names {
                // A base being built has its builder connected: that check is left alone.
                let dropped = scratch::drop_unused(server, &name)
                    .await
                    .map_err(shadow_err(&format!("cannot drop {name}"), server))?;
                if dropped {
                    removed.push(name);
                } else {
                    tracing::info!(database = %name, "compat: a check is building this base; left alone");
                }
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(version: i64, up: &str) -> Migration {
        Migration {
            version,
            name: format!("m{version}"),
            up: up.to_string(),
            down: None,
            checksum: ferry_migrate::source::checksum(up),
            up_transaction: true,
            down_transaction: true,
            path: PathBuf::from(format!("{version}_m{version}.up.sql")),
            layout: ferry_migrate::Layout::Native,
        }
    }

    #[test]
    fn the_name_changes_with_the_base_its_migrations_and_the_engine() {
        let ms = [
            m(1, "CREATE TABLE a (id int);"),
            m(2, "CREATE TABLE b (id int);"),
        ];
        let at_1 = name(Engine::Postgres, &ms, 1);
        assert!(
            at_1.starts_with(PREFIX) && at_1.len() == PREFIX.len() + 16,
            "{at_1}"
        );
        assert!(at_1.len() < 64, "fits a database name");
        // Only the migrations up to the base count, in version order whatever the input order.
        let reversed = [ms[1].clone(), ms[0].clone()];
        assert_eq!(name(Engine::Postgres, &reversed, 1), at_1);
        assert_ne!(name(Engine::Postgres, &ms, 2), at_1);
        assert_ne!(name(Engine::Sqlite, &ms, 1), at_1);
        let edited = [m(1, "CREATE TABLE a (id bigint);"), ms[1].clone()];
        assert_ne!(
            name(Engine::Postgres, &edited, 1),
            at_1,
            "an edited migration"
        );
    }
}
