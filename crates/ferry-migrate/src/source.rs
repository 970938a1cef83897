//! Loading migrations from a directory.
//!
//! Owns file names, file contents and checksums: it detects which of the four accepted layouts a
//! directory uses (native = sqlx/golang-migrate, diesel, Flyway, dbmate), parses every migration and
//! returns them sorted by version. It never touches a database and never prints.
//!
//! Loading is all-or-nothing: one bad file fails the whole directory. Applying the valid prefix of a
//! directory whose later files are broken is how half-deployed schemas happen, so a typo must stop
//! the deploy before anything runs.
//!
//! Checksums are taken over [`normalize`]d text, so a BOM, CRLF line endings or trailing whitespace
//! added by an editor or by git's autocrlf never look like an edited migration.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The naming scheme of a migrations directory. Detected per directory; one directory uses one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `<version>_<name>.up.sql` + optional `<version>_<name>.down.sql` (sqlx, golang-migrate).
    Native,
    /// Folder `<version>_<name>/` with `up.sql`, optional `down.sql` and `metadata.toml`.
    Diesel,
    /// `V<version>__<name>.sql` + optional undo `U<version>__<name>.sql`.
    Flyway,
    /// One `<version>_<name>.sql` with `-- migrate:up` / `-- migrate:down` sections.
    Dbmate,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Native => "native",
            Layout::Diesel => "diesel",
            Layout::Flyway => "flyway",
            Layout::Dbmate => "dbmate",
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One migration as found on disk, text already normalized.
#[derive(Debug, Clone)]
pub struct Migration {
    pub version: i64,
    /// The part of the name after the version, e.g. `add_email`.
    pub name: String,
    /// The up SQL, normalized (see [`normalize`]).
    pub up: String,
    /// `None` when there is no down script or it is empty/whitespace-only: irreversible.
    pub down: Option<String>,
    /// Lowercase hex SHA-256 of the normalized `up`.
    pub checksum: String,
    /// `false` when the up script must run outside a transaction.
    pub up_transaction: bool,
    /// `false` when the down script must run outside a transaction.
    pub down_transaction: bool,
    /// The up file (diesel: the `up.sql` inside the folder; dbmate: the single file).
    pub path: PathBuf,
    pub layout: Layout,
}

impl Migration {
    pub fn reversible(&self) -> bool {
        self.down.is_some()
    }

    /// `<version>_<name>`, used in every message.
    pub fn label(&self) -> String {
        format!("{}_{}", self.version, self.name)
    }
}

/// First-line directive that makes a script run outside a transaction.
const NO_TRANSACTION: &str = "-- ferry:no-transaction";

const NAMING_SCHEMES: &str = "accepted names (one scheme per directory):
  native (sqlx, golang-migrate): <version>_<name>.up.sql, optional <version>_<name>.down.sql
  diesel: folder <version>_<name>/ holding up.sql, optional down.sql and metadata.toml
  flyway: V<version>__<name>.sql, optional undo U<version>__<name>.sql
  dbmate: <version>_<name>.sql with `-- migrate:up` and `-- migrate:down` sections";

/// Why a migrations directory could not be loaded (or a new migration not created).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "migrations directory `{}` does not exist; create it (`ferry migrate new NAME` does) or \
         point ferry at the right one with `--migrations DIR` or `[migrations] dir` in ferry.toml",
        path.display()
    )]
    MissingDir { path: PathBuf },

    #[error(
        "migrations path `{}` is not a directory; point `--migrations DIR` or `[migrations] dir` \
         in ferry.toml at the folder that holds the migration files",
        path.display()
    )]
    NotADirectory { path: PathBuf },

    #[error("cannot read `{}`: {source}; check that it exists and that ferry may read it", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot write `{}`: {source}; check that the directory is writable", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "`{}` is not valid UTF-8 (first bad byte at offset {offset}); re-save it with UTF-8 encoding",
        path.display()
    )]
    NotUtf8 { path: PathBuf, offset: usize },

    #[error(
        "`{}` does not match any migration naming scheme; rename it, or move it out of the \
         migrations directory (README and *.md files and hidden entries are ignored)\n{}",
        path.display(),
        NAMING_SCHEMES
    )]
    UnrecognizedName { path: PathBuf },

    #[error(
        "the migrations directory mixes layouts: `{}` is {first_layout} but `{}` is \
         {second_layout}; a directory must use one layout, so rename the files to one scheme\n{}",
        first.display(),
        second.display(),
        NAMING_SCHEMES
    )]
    MixedLayouts {
        first: PathBuf,
        first_layout: Layout,
        second: PathBuf,
        second_layout: Layout,
    },

    #[error(
        "migration version {version} is used twice, by `{}` and `{}`; give one of them a new version",
        first.display(),
        second.display()
    )]
    DuplicateVersion {
        version: i64,
        first: PathBuf,
        second: PathBuf,
    },

    #[error(
        "the version `{digits}` of `{}` does not fit in a 64-bit integer; use a shorter version \
         such as a yyyymmddHHMMSS timestamp",
        path.display()
    )]
    VersionOverflow { path: PathBuf, digits: String },

    #[error(
        "`{}` and `{}`: Flyway orders version {first_text} before {second_text}, but ferry orders versions \
         on their digits ({first} vs {second}), which would apply them in another order. Rename them so \
         their digits sort the same way (give every version the same number of parts: V1_0, V1_1, V2_0), or use whole-number versions",
        first_path.display(),
        second_path.display()
    )]
    FlywayOrder {
        first_path: PathBuf,
        first_text: String,
        first: i64,
        second_path: PathBuf,
        second_text: String,
        second: i64,
    },

    #[error(
        "`{}` is a rollback without its migration: there is no `{}`; add the up file or delete this one",
        path.display(),
        expected_up.display()
    )]
    OrphanDown {
        path: PathBuf,
        version: i64,
        expected_up: PathBuf,
    },

    #[error(
        "`{}` is a plain `<version>_<name>.sql` file without dbmate markers, so ferry cannot tell \
         the up from the down; rename it to `<version>_<name>.up.sql` (plus an optional \
         `<version>_<name>.down.sql`), or add a `-- migrate:up` line above the up SQL and a \
         `-- migrate:down` line above the rollback SQL to use the dbmate format",
        path.display()
    )]
    PlainSql { path: PathBuf },

    #[error(
        "dbmate migration `{}` has no `-- migrate:up` line; add one above the up SQL (and \
         `-- migrate:down` above the rollback SQL)",
        path.display()
    )]
    MissingUpMarker { path: PathBuf },

    #[error("dbmate migration `{}`, line {line}: {problem}", path.display())]
    InvalidDbmate {
        path: PathBuf,
        line: usize,
        problem: String,
    },

    #[error("diesel migration folder `{}` has no up.sql; add it, or delete the folder", path.display())]
    DieselMissingUp { path: PathBuf },

    #[error(
        "`{}` would never run: a diesel migration folder may only hold up.sql, down.sql and \
         metadata.toml; merge it into up.sql or down.sql, or move it out",
        path.display()
    )]
    DieselUnexpectedFile { path: PathBuf },

    #[error(
        "invalid diesel metadata `{}`: {message}; the only setting is `run_in_transaction = false`",
        path.display()
    )]
    DieselMetadata { path: PathBuf, message: String },

    #[error(
        "`{}`, line {line}: `-- ferry:no-transaction` only counts on the first non-empty line of a \
         script; move it there",
        path.display()
    )]
    MisplacedDirective { path: PathBuf, line: usize },

    #[error(
        "invalid migration name `{name}` for `{}`: use only letters, digits, `_`, `-` and spaces \
         (dashes and spaces become `_`)",
        dir.display()
    )]
    InvalidName { dir: PathBuf, name: String },

    #[error(
        "invalid migration version `{version}` for `{}`: use digits only, such as a \
         yyyymmddHHMMSS timestamp",
        dir.display()
    )]
    InvalidVersion { dir: PathBuf, version: String },

    #[error("`{}` already exists; pick another name or edit the existing file", path.display())]
    AlreadyExists { path: PathBuf },

    #[error(
        "`{}` uses the {layout} layout, and `ferry migrate new` writes native .up.sql/.down.sql \
         files that would mix layouts; create the migration by hand in the {layout} scheme",
        dir.display()
    )]
    NotNativeDir { dir: PathBuf, layout: Layout },
}

/// Loads every migration in `dir`, sorted by version ascending. Either all files are valid or it
/// returns an error and nothing else happens. What [`load_dir_with_warnings`] would warn about
/// goes to `tracing`.
pub fn load_dir(dir: &Path) -> Result<Vec<Migration>, SourceError> {
    let loaded = load_dir_with_warnings(dir)?;
    for w in &loaded.warnings {
        tracing::warn!(path = %w.path.display(), "{}", w.message);
    }
    Ok(loaded.migrations)
}

/// A directory's migrations and what in it was skipped.
#[derive(Debug)]
pub struct Loaded {
    pub migrations: Vec<Migration>,
    pub warnings: Vec<SourceWarning>,
}

/// Something in a migrations directory that was skipped rather than refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceWarning {
    pub path: PathBuf,
    /// A sentence that names the file and what to do about it.
    pub message: String,
}

/// Like [`load_dir`], and returns the warnings instead of logging them: in a directory whose
/// migrations are diesel folders, a top-level file is not a migration (diesel reads only
/// folders) and is skipped with a warning naming it. In every other layout a file that is no
/// migration stays an error: there it is almost always a misnamed migration.
pub fn load_dir_with_warnings(dir: &Path) -> Result<Loaded, SourceError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(SourceError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SourceError::MissingDir {
                path: dir.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(SourceError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    }

    let mut entries = scan(dir)?;
    let layout = single_layout(&entries);
    let mut warnings = Vec::new();
    if let Ok(Some(Layout::Diesel)) = layout {
        entries.retain(|e| {
            let stray = matches!(e.kind, Kind::Stray | Kind::Plain);
            if stray {
                warnings.push(SourceWarning {
                    message: format!(
                        "`{}` is not a migration: in a diesel-layout directory only folders are \
                         migrations, so this file was skipped; move it out of the directory to \
                         silence this warning",
                        e.path.display()
                    ),
                    path: e.path.clone(),
                });
            }
            !stray
        });
    } else if let Some(stray) = entries.iter().find(|e| matches!(e.kind, Kind::Stray)) {
        return Err(SourceError::UnrecognizedName {
            path: stray.path.clone(),
        });
    }
    let layout = layout?;
    if let Some(plain) = entries.iter().find(|e| matches!(e.kind, Kind::Plain)) {
        let path = plain.path.clone();
        return Err(if layout == Some(Layout::Dbmate) {
            SourceError::MissingUpMarker { path }
        } else {
            SourceError::PlainSql { path }
        });
    }
    check_duplicates(entries.iter().filter(|e| e.kind.is_primary()))?;
    check_duplicates(
        entries
            .iter()
            .filter(|e| matches!(e.kind, Kind::FlywayUndo)),
    )?;

    let mut migrations: Vec<Migration> = match layout {
        None => Vec::new(),
        Some(Layout::Native) => build_native(dir, &entries)?,
        Some(Layout::Diesel) => entries.iter().map(load_diesel).collect::<Result<_, _>>()?,
        Some(Layout::Flyway) => build_flyway(dir, &entries)?,
        // Plain files were rejected above and any other kind would be a mixed layout.
        Some(Layout::Dbmate) => entries
            .iter()
            .filter_map(|e| match &e.kind {
                Kind::Dbmate(raw) => Some(parse_dbmate(e, raw)),
                _ => None,
            })
            .collect::<Result<_, _>>()?,
    };
    migrations.sort_by_key(|m| m.version);
    for m in migrations.iter().filter(|m| m.up.is_empty()) {
        tracing::warn!(path = %m.path.display(), "migration {} has an empty up script", m.label());
    }
    tracing::debug!(
        dir = %dir.display(),
        layout = layout.map_or("none", Layout::as_str),
        count = migrations.len(),
        "loaded migrations"
    );
    Ok(Loaded {
        migrations,
        warnings,
    })
}

/// Normalization used for checksums and stored text: strip a UTF-8 BOM, CRLF/CR -> LF, strip
/// trailing spaces and tabs on every line, drop trailing empty lines; keep one final `\n` if the
/// result is non-empty.
pub fn normalize(sql: &str) -> String {
    // Every leading BOM: an editor that saves a file "as UTF-8 with BOM" twice leaves two, and
    // the second would reach the database as part of the first statement.
    let sql = sql.trim_start_matches('\u{feff}');
    let sql = sql.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(sql.len() + 1);
    for line in sql.split('\n') {
        out.push_str(line.trim_end_matches([' ', '\t']));
        out.push('\n');
    }
    let kept = out.trim_end_matches('\n').len();
    if kept == 0 {
        return String::new();
    }
    out.truncate(kept + 1);
    out
}

/// Lowercase hex SHA-256 of an already [`normalize`]d up script.
pub fn checksum(normalized_up: &str) -> String {
    hex::encode(Sha256::digest(normalized_up.as_bytes()))
}

/// Helper for `ferry migrate new NAME`: writes empty `<dir>/<version>_<name>.up.sql` and
/// `.down.sql` (creating `dir`) and returns their paths. Spaces and dashes in `name` become `_`.
///
/// Both files start empty on purpose: an empty down marks the migration irreversible until someone
/// writes the rollback, instead of a placeholder comment that would "roll back" by doing nothing.
pub fn new_pair(dir: &Path, version: &str, name: &str) -> Result<(PathBuf, PathBuf), SourceError> {
    // The digit check rejects `+5`, which `parse` alone would accept.
    let version_num = if version.bytes().all(|b| b.is_ascii_digit()) {
        version.parse::<i64>().ok()
    } else {
        None
    };
    let Some(version_num) = version_num else {
        return Err(SourceError::InvalidVersion {
            dir: dir.to_path_buf(),
            version: version.to_string(),
        });
    };
    let clean = name.trim().replace([' ', '-'], "_");
    if clean.is_empty() || !clean.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(SourceError::InvalidName {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        });
    }
    let up = dir.join(format!("{version}_{clean}.up.sql"));
    let down = dir.join(format!("{version}_{clean}.down.sql"));
    for path in [&up, &down] {
        if fs::symlink_metadata(path).is_ok() {
            return Err(SourceError::AlreadyExists { path: path.clone() });
        }
    }
    // A broken directory is reported by the next load; it must not block writing a new file.
    if dir.is_dir()
        && let Ok(existing) = load_dir(dir)
    {
        if let Some(m) = existing.iter().find(|m| m.layout != Layout::Native) {
            return Err(SourceError::NotNativeDir {
                dir: dir.to_path_buf(),
                layout: m.layout,
            });
        }
        if let Some(m) = existing.iter().find(|m| m.version == version_num) {
            return Err(SourceError::DuplicateVersion {
                version: version_num,
                first: m.path.clone(),
                second: up,
            });
        }
    }
    fs::create_dir_all(dir).map_err(|source| SourceError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    create_empty(&up)?;
    if let Err(e) = create_empty(&down) {
        // Leave nothing half-made behind; the up file was created by this call a moment ago.
        let _ = fs::remove_file(&up);
        return Err(e);
    }
    Ok((up, down))
}

fn create_empty(path: &Path) -> Result<(), SourceError> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(SourceError::AlreadyExists {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(SourceError::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// What a directory entry is, judged by its name (and, for plain `.sql` files, its markers).
enum Kind {
    NativeUp,
    NativeDown,
    Diesel,
    FlywayUp,
    FlywayUndo,
    /// Holds the raw file text, already read to find the markers.
    Dbmate(String),
    /// `<version>_<name>.sql` without any dbmate marker.
    Plain,
    /// A file whose name is no migration in any layout: a refusal, except beside diesel's
    /// folders (diesel reads only folders, so such a file never was a migration there).
    Stray,
}

impl Kind {
    fn layout(&self) -> Option<Layout> {
        match self {
            Kind::NativeUp | Kind::NativeDown => Some(Layout::Native),
            Kind::Diesel => Some(Layout::Diesel),
            Kind::FlywayUp | Kind::FlywayUndo => Some(Layout::Flyway),
            Kind::Dbmate(_) => Some(Layout::Dbmate),
            Kind::Plain | Kind::Stray => None,
        }
    }

    /// The entry that defines a migration (as opposed to a separate rollback file).
    fn is_primary(&self) -> bool {
        matches!(
            self,
            Kind::NativeUp | Kind::Diesel | Kind::FlywayUp | Kind::Dbmate(_)
        )
    }
}

struct Entry {
    path: PathBuf,
    kind: Kind,
    version: i64,
    /// The version exactly as written in the name, e.g. `2019-02-26-002946` or `1_1`.
    version_text: String,
    name: String,
}

/// Lists `dir` in name order, skipping ignored entries and classifying the rest.
fn scan(dir: &Path) -> Result<Vec<Entry>, SourceError> {
    let mut entries = Vec::new();
    for name in sorted_names(dir)? {
        let path = dir.join(&name);
        let Some(name) = name.to_str() else {
            return Err(SourceError::UnrecognizedName { path });
        };
        if is_ignored(name) {
            continue;
        }
        let meta = fs::metadata(&path).map_err(|source| SourceError::Read {
            path: path.clone(),
            source,
        })?;
        entries.push(classify(path, name, meta.is_dir())?);
    }
    Ok(entries)
}

fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>, SourceError> {
    let read_err = |source| SourceError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for item in fs::read_dir(dir).map_err(read_err)? {
        names.push(item.map_err(read_err)?.file_name());
    }
    names.sort();
    Ok(names)
}

fn is_ignored(name: &str) -> bool {
    name.starts_with('.')
        || name.eq_ignore_ascii_case("README")
        || name.to_ascii_lowercase().ends_with(".md")
}

fn classify(path: PathBuf, name: &str, is_dir: bool) -> Result<Entry, SourceError> {
    let found = if is_dir {
        split_diesel(name).map(|(v, n)| (Kind::Diesel, v, n))
    } else if let Some(stem) = name.strip_suffix(".up.sql") {
        split_numeric(stem).map(|(v, n)| (Kind::NativeUp, v, n))
    } else if let Some(stem) = name.strip_suffix(".down.sql") {
        split_numeric(stem).map(|(v, n)| (Kind::NativeDown, v, n))
    } else if let Some(stem) = name.strip_suffix(".sql") {
        if let Some(rest) = stem.strip_prefix('V') {
            split_flyway(rest).map(|(v, n)| (Kind::FlywayUp, v, n))
        } else if let Some(rest) = stem.strip_prefix('U') {
            split_flyway(rest).map(|(v, n)| (Kind::FlywayUndo, v, n))
        } else if let Some((v, n)) = split_numeric(stem) {
            let text = read_text(&path)?;
            let has_marker = text.lines().any(|l| parse_marker(l).is_some());
            Some((
                if has_marker {
                    Kind::Dbmate(text)
                } else {
                    Kind::Plain
                },
                v,
                n,
            ))
        } else {
            None
        }
    } else {
        None
    };
    let Some((kind, version_text, name)) = found else {
        if is_dir {
            return Err(SourceError::UnrecognizedName { path });
        }
        return Ok(Entry {
            path,
            kind: Kind::Stray,
            version: 0,
            version_text: String::new(),
            name: String::new(),
        });
    };
    let digits: String = version_text.chars().filter(char::is_ascii_digit).collect();
    let Ok(version) = digits.parse::<i64>() else {
        return Err(SourceError::VersionOverflow { path, digits });
    };
    Ok(Entry {
        path,
        kind,
        version,
        version_text: version_text.to_string(),
        name: name.to_string(),
    })
}

/// `<digits>_<name>`: the version is everything before the first `_` (sqlx, golang-migrate, dbmate).
fn split_numeric(stem: &str) -> Option<(&str, &str)> {
    let (version, name) = stem.split_once('_')?;
    let ok = !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty();
    ok.then_some((version, name))
}

/// Diesel folder names: the version is made of digits, `-` and `_` (`2019-02-26-002946`) and ends at
/// the last `_` before the first other character, so names may start with digits (`..._2fa`).
fn split_diesel(dir_name: &str) -> Option<(&str, &str)> {
    let prefix_len = dir_name
        .find(|c: char| !(c.is_ascii_digit() || c == '-' || c == '_'))
        .unwrap_or(dir_name.len());
    let sep = dir_name[..prefix_len].rfind('_')?;
    let (version, name) = (&dir_name[..sep], &dir_name[sep + 1..]);
    let ok = version.starts_with(|c: char| c.is_ascii_digit()) && !name.is_empty();
    ok.then_some((version, name))
}

/// Flyway after the `V`/`U` prefix: `<version>__<name>`, the version made of digits, `.` and `_`.
fn split_flyway(rest: &str) -> Option<(&str, &str)> {
    let (version, name) = rest.split_once("__")?;
    let ok = version.starts_with(|c: char| c.is_ascii_digit())
        && version
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '_')
        && !name.is_empty();
    ok.then_some((version, name))
}

fn single_layout(entries: &[Entry]) -> Result<Option<Layout>, SourceError> {
    let mut first: Option<(Layout, &Path)> = None;
    for entry in entries {
        let Some(layout) = entry.kind.layout() else {
            continue;
        };
        match first {
            None => first = Some((layout, entry.path.as_path())),
            Some((seen, seen_path)) if seen != layout => {
                return Err(SourceError::MixedLayouts {
                    first: seen_path.to_path_buf(),
                    first_layout: seen,
                    second: entry.path.clone(),
                    second_layout: layout,
                });
            }
            Some(_) => {}
        }
    }
    Ok(first.map(|(layout, _)| layout))
}

fn check_duplicates<'a>(entries: impl Iterator<Item = &'a Entry>) -> Result<(), SourceError> {
    let mut seen: HashMap<i64, &Path> = HashMap::new();
    for entry in entries {
        if let Some(first) = seen.insert(entry.version, &entry.path) {
            return Err(SourceError::DuplicateVersion {
                version: entry.version,
                first: first.to_path_buf(),
                second: entry.path.clone(),
            });
        }
    }
    Ok(())
}

fn build_native(dir: &Path, entries: &[Entry]) -> Result<Vec<Migration>, SourceError> {
    let stem = |e: &Entry| format!("{}_{}", e.version_text, e.name);
    let ups: HashSet<String> = entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::NativeUp))
        .map(stem)
        .collect();
    let downs: HashSet<String> = entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::NativeDown))
        .map(stem)
        .collect();
    if let Some(orphan) = entries
        .iter()
        .find(|e| matches!(e.kind, Kind::NativeDown) && !ups.contains(&stem(e)))
    {
        return Err(SourceError::OrphanDown {
            path: orphan.path.clone(),
            version: orphan.version,
            expected_up: dir.join(format!("{}.up.sql", stem(orphan))),
        });
    }
    let mut out = Vec::new();
    for up in entries.iter().filter(|e| matches!(e.kind, Kind::NativeUp)) {
        let down_path = downs
            .contains(&stem(up))
            .then(|| dir.join(format!("{}.down.sql", stem(up))));
        out.push(from_files(
            up,
            Layout::Native,
            &up.path,
            down_path.as_deref(),
            true,
        )?);
    }
    Ok(out)
}

fn build_flyway(dir: &Path, entries: &[Entry]) -> Result<Vec<Migration>, SourceError> {
    let ups: HashSet<i64> = entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::FlywayUp))
        .map(|e| e.version)
        .collect();
    let undos: HashMap<i64, &Path> = entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::FlywayUndo))
        .map(|e| (e.version, e.path.as_path()))
        .collect();
    if let Some(orphan) = entries
        .iter()
        .find(|e| matches!(e.kind, Kind::FlywayUndo) && !ups.contains(&e.version))
    {
        return Err(SourceError::OrphanDown {
            path: orphan.path.clone(),
            version: orphan.version,
            expected_up: dir.join(format!("V{}__{}.sql", orphan.version_text, orphan.name)),
        });
    }
    refuse_flyway_reordering(entries)?;
    entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::FlywayUp))
        .map(|up| {
            from_files(
                up,
                Layout::Flyway,
                &up.path,
                undos.get(&up.version).copied(),
                true,
            )
        })
        .collect()
}

/// Flyway compares dotted versions part by part (1 < 1.1 < 2); ferry's versions are the digits
/// joined (1, 11, 2). Where the two orders disagree, applying in ferry's order would run
/// migrations in an order nobody tested, so the directory is refused instead.
fn refuse_flyway_reordering(entries: &[Entry]) -> Result<(), SourceError> {
    let parts = |text: &str| -> Vec<u128> {
        let mut v: Vec<u128> = text
            .split(['.', '_'])
            .map(|p| p.parse().unwrap_or(u128::MAX))
            .collect();
        while v.len() > 1 && v.last() == Some(&0) {
            v.pop();
        }
        v
    };
    let mut ups: Vec<&Entry> = entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::FlywayUp))
        .collect();
    ups.sort_by_key(|e| e.version);
    for pair in ups.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if parts(&a.version_text) > parts(&b.version_text) {
            return Err(SourceError::FlywayOrder {
                first_path: b.path.clone(),
                first_text: b.version_text.clone(),
                first: b.version,
                second_path: a.path.clone(),
                second_text: a.version_text.clone(),
                second: a.version,
            });
        }
    }
    Ok(())
}

/// Diesel's `metadata.toml`. Unknown keys are rejected: a misspelt `run_in_transaction` must not
/// silently run a migration inside a transaction.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DieselMeta {
    #[serde(default = "yes")]
    run_in_transaction: bool,
}

fn yes() -> bool {
    true
}

fn load_diesel(entry: &Entry) -> Result<Migration, SourceError> {
    let (mut up, mut down, mut meta) = (None, None, None);
    for name in sorted_names(&entry.path)? {
        let path = entry.path.join(&name);
        let name = name.to_string_lossy();
        match name.as_ref() {
            n if n.starts_with('.') => {}
            "up.sql" => up = Some(path),
            "down.sql" => down = Some(path),
            "metadata.toml" => meta = Some(path),
            n if n.to_ascii_lowercase().ends_with(".sql") => {
                return Err(SourceError::DieselUnexpectedFile { path });
            }
            _ => {}
        }
    }
    let Some(up) = up else {
        return Err(SourceError::DieselMissingUp {
            path: entry.path.clone(),
        });
    };
    let run_in_transaction = match meta {
        None => true,
        Some(path) => {
            let text = read_text(&path)?;
            toml::from_str::<DieselMeta>(&text)
                .map_err(|e| SourceError::DieselMetadata {
                    path,
                    message: e.message().to_string(),
                })?
                .run_in_transaction
        }
    };
    from_files(
        entry,
        Layout::Diesel,
        &up,
        down.as_deref(),
        run_in_transaction,
    )
}

/// Builds a migration whose up and down live in separate files (native, diesel, Flyway).
fn from_files(
    entry: &Entry,
    layout: Layout,
    up_path: &Path,
    down_path: Option<&Path>,
    transaction: bool,
) -> Result<Migration, SourceError> {
    let (up, up_tx) = read_script(up_path)?;
    let (down, down_tx) = match down_path {
        Some(path) => read_script(path)?,
        None => (String::new(), true),
    };
    Ok(Migration {
        version: entry.version,
        name: entry.name.clone(),
        checksum: checksum(&up),
        up,
        down: non_empty(down),
        up_transaction: transaction && up_tx,
        down_transaction: transaction && down_tx,
        path: up_path.to_path_buf(),
        layout,
    })
}

/// Reads and normalizes one script; the flag is `false` when it asks to run outside a transaction.
fn read_script(path: &Path) -> Result<(String, bool), SourceError> {
    let text = normalize(&read_text(path)?);
    let lines: Vec<&str> = text.lines().collect();
    let transaction = directive_transaction(path, &lines, 1)?;
    Ok((text, transaction))
}

fn read_text(path: &Path) -> Result<String, SourceError> {
    let bytes = fs::read(path).map_err(|source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| SourceError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })
}

/// A down script with nothing but whitespace and comments (diesel generates such placeholders)
/// would "roll back" by doing nothing, so it counts as missing: the migration is irreversible.
fn non_empty(text: String) -> Option<String> {
    (!crate::sql::is_blank(&text)).then_some(text)
}

/// Looks for [`NO_TRANSACTION`] on the first non-empty line of `lines` (normalized text, whose line
/// `i` is line `first_line + i` of the file). Returns whether the script runs in a transaction. The
/// directive anywhere else is an error rather than silently ignored.
fn directive_transaction(
    path: &Path,
    lines: &[&str],
    first_line: usize,
) -> Result<bool, SourceError> {
    let mut transaction = true;
    let mut seen_content = false;
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == NO_TRANSACTION {
            if seen_content {
                return Err(SourceError::MisplacedDirective {
                    path: path.to_path_buf(),
                    line: first_line + i,
                });
            }
            transaction = false;
        }
        seen_content = true;
    }
    Ok(transaction)
}

/// Recognizes `-- migrate:up [options]` / `-- migrate:down [options]`; returns (is_up, options).
fn parse_marker(line: &str) -> Option<(bool, &str)> {
    let rest = line
        .trim()
        .strip_prefix("--")?
        .trim_start()
        .strip_prefix("migrate:")?;
    let (is_up, options) = if let Some(options) = rest.strip_prefix("up") {
        (true, options)
    } else {
        (false, rest.strip_prefix("down")?)
    };
    (options.is_empty() || options.starts_with(char::is_whitespace)).then_some((is_up, options))
}

/// dbmate marker options; only `transaction:true|false` exists. Anything else is an error so a typo
/// cannot silently keep a script inside a transaction.
fn marker_transaction(path: &Path, line: usize, options: &str) -> Result<bool, SourceError> {
    let mut transaction = true;
    for option in options.split_whitespace() {
        transaction = match option {
            "transaction:false" => false,
            "transaction:true" => true,
            _ => {
                return Err(SourceError::InvalidDbmate {
                    path: path.to_path_buf(),
                    line,
                    problem: format!(
                        "unknown marker option `{option}`; the only option is `transaction:false`"
                    ),
                });
            }
        };
    }
    Ok(transaction)
}

/// Splits a dbmate file into its sections. `-- ferry:no-transaction` may open a section, or open
/// the file (before `-- migrate:up`), where it applies to both sections.
fn parse_dbmate(entry: &Entry, raw: &str) -> Result<Migration, SourceError> {
    let path = &entry.path;
    let invalid = |line: usize, problem: &str| SourceError::InvalidDbmate {
        path: path.clone(),
        line,
        problem: problem.to_string(),
    };
    let text = normalize(raw);
    let lines: Vec<&str> = text.lines().collect();
    let (mut up, mut down) = (None, None);
    for (i, line) in lines.iter().enumerate() {
        match parse_marker(line) {
            Some((true, _)) if up.is_some() => {
                return Err(invalid(
                    i + 1,
                    "second `-- migrate:up` marker; put each migration in its own file",
                ));
            }
            Some((false, _)) if down.is_some() => {
                return Err(invalid(
                    i + 1,
                    "second `-- migrate:down` marker; put each migration in its own file",
                ));
            }
            Some((true, options)) => up = Some((i, options)),
            Some((false, options)) => down = Some((i, options)),
            None => {}
        }
    }
    let Some((up_at, up_options)) = up else {
        return Err(SourceError::MissingUpMarker { path: path.clone() });
    };
    if let Some((down_at, _)) = down
        && down_at < up_at
    {
        return Err(invalid(
            down_at + 1,
            "`-- migrate:down` comes before `-- migrate:up`; put the up section first",
        ));
    }
    let preamble = &lines[..up_at];
    if let Some(i) = preamble.iter().position(|l| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with("--")
    }) {
        return Err(invalid(
            i + 1,
            "SQL before `-- migrate:up` would never run; move it into the up or down section",
        ));
    }
    let file_tx = directive_transaction(path, preamble, 1)?;

    let up_end = down.map_or(lines.len(), |(i, _)| i);
    let up_lines = &lines[up_at + 1..up_end];
    let up_marker_tx = marker_transaction(path, up_at + 1, up_options)?;
    let up_section_tx = directive_transaction(path, up_lines, up_at + 2)?;
    let up_text = normalize(&up_lines.join("\n"));

    let (down_text, down_tx) = match down {
        None => (None, file_tx),
        Some((down_at, options)) => {
            let down_lines = &lines[down_at + 1..];
            let marker_tx = marker_transaction(path, down_at + 1, options)?;
            let section_tx = directive_transaction(path, down_lines, down_at + 2)?;
            (
                non_empty(normalize(&down_lines.join("\n"))),
                file_tx && marker_tx && section_tx,
            )
        }
    };
    Ok(Migration {
        version: entry.version,
        name: entry.name.clone(),
        checksum: checksum(&up_text),
        up: up_text,
        down: down_text,
        up_transaction: file_tx && up_marker_tx && up_section_tx,
        down_transaction: down_tx,
        path: path.clone(),
        layout: Layout::Dbmate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn load_fixture(name: &str) -> Vec<Migration> {
        match load_dir(&fixture(name)) {
            Ok(migrations) => migrations,
            Err(e) => panic!("fixture {name} should load: {e}"),
        }
    }

    fn load_err(dir: &Path) -> SourceError {
        match load_dir(dir) {
            Ok(ms) => panic!("{} should fail, loaded {:?}", dir.display(), labels(&ms)),
            Err(e) => e,
        }
    }

    fn labels(ms: &[Migration]) -> Vec<String> {
        ms.iter().map(Migration::label).collect()
    }

    fn write(dir: &Path, rel: &str, contents: &str) {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn file_name(path: &Path) -> &str {
        path.file_name().unwrap().to_str().unwrap()
    }

    /// (reversible, up_transaction, down_transaction) per migration.
    fn flags(ms: &[Migration]) -> Vec<(bool, bool, bool)> {
        ms.iter()
            .map(|m| (m.reversible(), m.up_transaction, m.down_transaction))
            .collect()
    }

    /// The three schema migrations every layout fixture holds: the second runs outside a
    /// transaction, the third has an empty down.
    const SCHEMA_FLAGS: [(bool, bool, bool); 3] = [
        (true, true, true),
        (true, false, false),
        (false, true, true),
    ];

    fn assert_consistent(ms: &[Migration], layout: Layout) {
        for m in ms {
            assert_eq!(m.layout, layout, "{}", m.label());
            assert_eq!(m.checksum, checksum(&m.up), "{}", m.label());
            assert_eq!(
                m.up,
                normalize(&m.up),
                "{} up is stored normalized",
                m.label()
            );
        }
    }

    #[test]
    fn flyway_dotted_versions_that_would_reorder_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for v in ["1", "1.1", "2"] {
            std::fs::write(dir.path().join(format!("V{v}__m.sql")), "SELECT 1;").unwrap();
        }
        let err = load_dir(dir.path()).unwrap_err();
        assert!(matches!(err, SourceError::FlywayOrder { .. }), "{err:?}");
        assert!(err.to_string().contains("V1.1__m.sql"), "{err}");
        // Same number of parts: both tools agree (10 < 11 < 20).
        let dir = tempfile::tempdir().unwrap();
        for v in ["1_0", "1_1", "2_0"] {
            std::fs::write(dir.path().join(format!("V{v}__m.sql")), "SELECT 1;").unwrap();
        }
        let versions: Vec<i64> = load_dir(dir.path())
            .unwrap()
            .iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(versions, [10, 11, 20]);
    }

    #[test]
    fn native_fixture() {
        let ms = load_fixture("native");
        assert_eq!(
            labels(&ms),
            [
                "20240101120000_create_users",
                "20240102120000_create_posts",
                "20240103120000_add_user_name"
            ]
        );
        assert_eq!(flags(&ms), SCHEMA_FLAGS);
        assert_eq!(file_name(&ms[0].path), "20240101120000_create_users.up.sql");
        assert_eq!(ms[0].down.as_deref(), Some("DROP TABLE users;\n"));
        assert!(ms[0].up.starts_with("CREATE TABLE users ("));
        assert_consistent(&ms, Layout::Native);
    }

    #[test]
    fn diesel_fixture() {
        let ms = load_fixture("diesel");
        assert_eq!(
            labels(&ms),
            [
                "0_diesel_initial_setup",
                "20240101120000_create_users",
                "20240102120000_create_posts",
                "20240103120000_add_user_name"
            ]
        );
        assert_eq!(flags(&ms[..1]), [(true, true, true)]);
        assert_eq!(
            flags(&ms[1..]),
            SCHEMA_FLAGS,
            "metadata.toml turns off both transactions"
        );
        assert!(
            ms[1]
                .path
                .ends_with("2024-01-01-120000_create_users/up.sql")
        );
        assert_consistent(&ms, Layout::Diesel);
    }

    #[test]
    fn flyway_fixture() {
        let ms = load_fixture("flyway");
        // V1, V1_1 and V1.2: the version is the digits concatenated.
        assert_eq!(
            labels(&ms),
            ["1_create_users", "11_create_posts", "12_add_user_name"]
        );
        assert_eq!(flags(&ms), SCHEMA_FLAGS);
        assert_eq!(file_name(&ms[1].path), "V1_1__create_posts.sql");
        assert_eq!(
            ms[1].down.as_deref(),
            Some("-- ferry:no-transaction\nDROP TABLE posts;\n")
        );
        assert_consistent(&ms, Layout::Flyway);
    }

    #[test]
    fn dbmate_fixture() {
        let ms = load_fixture("dbmate");
        assert_eq!(
            labels(&ms),
            [
                "20240101120000_create_users",
                "20240102120000_create_posts",
                "20240103120000_add_user_name"
            ]
        );
        assert_eq!(flags(&ms), SCHEMA_FLAGS);
        assert_eq!(ms[0].down.as_deref(), Some("DROP TABLE users;\n"));
        assert!(
            !ms[0].up.contains("migrate:"),
            "markers are not part of the sections"
        );
        assert_eq!(file_name(&ms[2].path), "20240103120000_add_user_name.sql");
        assert_consistent(&ms, Layout::Dbmate);
    }

    #[test]
    fn every_layout_fixture_holds_the_same_schema() {
        // Comments (the no-transaction directive) differ between layouts; the SQL must not.
        let sql = |m: &Migration| -> Vec<String> {
            m.up.lines()
                .filter(|l| !l.starts_with("--"))
                .map(str::to_string)
                .collect()
        };
        let native: Vec<_> = load_fixture("native").iter().map(sql).collect();
        let diesel = load_fixture("diesel");
        let others = [
            ("diesel", diesel[1..].iter().map(sql).collect::<Vec<_>>()),
            ("flyway", load_fixture("flyway").iter().map(sql).collect()),
            ("dbmate", load_fixture("dbmate").iter().map(sql).collect()),
        ];
        for (layout, ups) in others {
            assert_eq!(ups, native, "{layout} fixture differs from native");
        }
    }

    #[test]
    fn edge_fixture_has_the_checksums_of_edge_clean() {
        let raw = fs::read(fixture("edge/20240101120000_create_users.up.sql")).unwrap();
        assert!(
            raw.starts_with(b"\xEF\xBB\xBF"),
            "edge fixture lost its BOM"
        );
        assert!(
            raw.windows(2).any(|w| w == b"\r\n"),
            "edge fixture lost its CRLF (git autocrlf?)"
        );
        assert!(
            raw.windows(2).any(|w| w == b" \r"),
            "edge fixture lost its trailing whitespace"
        );
        assert!(raw.contains(&b'\t'), "edge fixture lost its tabs");

        let edge = load_fixture("edge");
        let clean = load_fixture("edge_clean");
        assert_eq!(edge.len(), 3);
        assert_eq!(labels(&edge), labels(&clean));
        for (e, c) in edge.iter().zip(&clean) {
            assert_eq!(e.checksum, c.checksum, "{}", e.label());
            assert_eq!(e.up, c.up, "{}", e.label());
            assert_eq!(e.down, c.down, "{}", e.label());
            assert_eq!(
                (e.up_transaction, e.down_transaction),
                (c.up_transaction, c.down_transaction)
            );
        }
        assert!(
            !edge[1].up_transaction,
            "directive behind a BOM and with trailing spaces counts"
        );
        assert!(
            !edge[2].reversible(),
            "whitespace-only down is irreversible"
        );
    }

    #[test]
    fn bad_duplicate() {
        let err = load_err(&fixture("bad_duplicate"));
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                SourceError::DuplicateVersion {
                    version: 20240101120000,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(msg.contains("20240101120000_create_people.up.sql"), "{msg}");
        assert!(msg.contains("20240101120000_create_users.up.sql"), "{msg}");
    }

    #[test]
    fn bad_orphan_down() {
        let err = load_err(&fixture("bad_orphan_down"));
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                SourceError::OrphanDown {
                    version: 20240102120000,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            msg.contains("20240102120000_create_posts.down.sql"),
            "{msg}"
        );
        assert!(
            msg.contains("20240102120000_create_posts.up.sql"),
            "names the missing up: {msg}"
        );
    }

    #[test]
    fn loose_files_beside_diesel_folders_are_warnings() {
        let dir = fixture("diesel_loose_file");
        let loaded = load_dir_with_warnings(&dir).expect("loads");
        assert_eq!(
            labels(&loaded.migrations),
            [
                "20240101120000_create_users",
                "20240103120000_add_user_name"
            ]
        );
        let named: Vec<&str> = loaded.warnings.iter().map(|w| file_name(&w.path)).collect();
        assert_eq!(named, ["20240105000000_seed.sql", "data_oauth_github.sql"]);
        for w in &loaded.warnings {
            assert!(
                w.message.contains(file_name(&w.path))
                    && w.message.contains("not a migration")
                    && w.message.contains("move it out"),
                "{}",
                w.message
            );
        }
        // `load_dir` loads the same migrations (and logs the warnings).
        assert_eq!(labels(&load_dir(&dir).unwrap()), labels(&loaded.migrations));
    }

    #[test]
    fn loose_files_stay_refusals_outside_diesel_directories() {
        // The same loose file beside native files is a misnamed migration.
        let dir = tmp();
        write(
            dir.path(),
            "20240101120000_a.up.sql",
            "CREATE TABLE a (id int);\n",
        );
        write(dir.path(), "data_oauth_github.sql", "SELECT 1;\n");
        let err = load_err(dir.path());
        assert!(
            matches!(err, SourceError::UnrecognizedName { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("data_oauth_github.sql"), "{err}");
        // A file of another layout beside diesel folders is still a mixed directory.
        let dir = tmp();
        write(
            dir.path(),
            "2024-01-01-120000_a/up.sql",
            "CREATE TABLE a (id int);\n",
        );
        write(
            dir.path(),
            "20240102120000_b.up.sql",
            "CREATE TABLE b (id int);\n",
        );
        assert!(matches!(
            load_err(dir.path()),
            SourceError::MixedLayouts { .. }
        ));
        // A folder that is no migration is still refused in a diesel directory.
        let dir = tmp();
        write(
            dir.path(),
            "2024-01-01-120000_a/up.sql",
            "CREATE TABLE a (id int);\n",
        );
        write(dir.path(), "seeds/github.sql", "SELECT 1;\n");
        assert!(matches!(
            load_err(dir.path()),
            SourceError::UnrecognizedName { .. }
        ));
    }

    #[test]
    fn bad_name() {
        let err = load_err(&fixture("bad_name"));
        let msg = err.to_string();
        assert!(
            matches!(err, SourceError::UnrecognizedName { .. }),
            "{err:?}"
        );
        assert!(msg.contains("create_posts.sql"), "{msg}");
        for scheme in ["native", "diesel", "flyway", "dbmate"] {
            assert!(msg.contains(scheme), "lists the {scheme} scheme: {msg}");
        }
    }

    #[test]
    fn bad_utf8() {
        let err = load_err(&fixture("bad_utf8"));
        let msg = err.to_string();
        assert!(matches!(err, SourceError::NotUtf8 { .. }), "{err:?}");
        assert!(msg.contains("20240101120000_create_users.up.sql"), "{msg}");
    }

    #[test]
    fn bad_mixed() {
        let err = load_err(&fixture("bad_mixed"));
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                SourceError::MixedLayouts {
                    first_layout: Layout::Native,
                    second_layout: Layout::Flyway,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(msg.contains("20240101120000_create_users.up.sql"), "{msg}");
        assert!(msg.contains("V2__create_posts.sql"), "{msg}");
    }

    #[test]
    fn missing_dir_names_the_dir_and_the_settings() {
        let dir = tmp();
        let missing = dir.path().join("nope");
        let err = load_err(&missing);
        let msg = err.to_string();
        assert!(matches!(err, SourceError::MissingDir { .. }), "{err:?}");
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
        assert!(
            msg.contains("--migrations DIR") && msg.contains("[migrations] dir"),
            "{msg}"
        );

        write(dir.path(), "file", "");
        assert!(matches!(
            load_err(&dir.path().join("file")),
            SourceError::NotADirectory { .. }
        ));
    }

    #[test]
    fn empty_and_ignored_entries_give_no_migrations() {
        let dir = tmp();
        assert!(load_dir(dir.path()).unwrap().is_empty());
        for name in [
            "README",
            "README.md",
            "notes.md",
            ".keep",
            ".gitkeep",
            ".hidden.sql",
            ".cache/x",
        ] {
            write(dir.path(), name, "garbage");
        }
        assert!(load_dir(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn plain_sql_is_rejected_with_the_expected_names() {
        let dir = tmp();
        write(dir.path(), "1_a.up.sql", "SELECT 1;");
        write(dir.path(), "2_b.sql", "SELECT 2;");
        let err = load_err(dir.path());
        let msg = err.to_string();
        assert!(matches!(err, SourceError::PlainSql { .. }), "{err:?}");
        assert!(
            msg.contains("2_b.sql") && msg.contains(".up.sql") && msg.contains("-- migrate:up"),
            "{msg}"
        );

        // Alone (sqlx's "simple" migrations) it gets the same explanation.
        fs::remove_file(dir.path().join("1_a.up.sql")).unwrap();
        assert!(matches!(load_err(dir.path()), SourceError::PlainSql { .. }));
    }

    #[test]
    fn dbmate_file_without_up_marker() {
        let dir = tmp();
        write(dir.path(), "1_a.sql", "-- migrate:up\nSELECT 1;\n");
        write(dir.path(), "2_b.sql", "SELECT 2;\n");
        let err = load_err(dir.path());
        assert!(
            matches!(&err, SourceError::MissingUpMarker { path } if path.ends_with("2_b.sql")),
            "{err:?}"
        );
        assert!(err.to_string().contains("2_b.sql"));

        write(dir.path(), "2_b.sql", "-- migrate:down\nSELECT 2;\n");
        assert!(matches!(
            load_err(dir.path()),
            SourceError::MissingUpMarker { .. }
        ));
    }

    #[test]
    fn dbmate_sections_options_and_directives() {
        let dir = tmp();
        write(
            dir.path(),
            "1_opts.sql",
            "-- migrate:up transaction:false\nSELECT 1;\n-- migrate:down\nSELECT 2;\n",
        );
        write(
            dir.path(),
            "2_section.sql",
            "-- migrate:up\n\n  -- ferry:no-transaction \nSELECT 1;\n",
        );
        write(
            dir.path(),
            "3_file.sql",
            "\u{feff}-- ferry:no-transaction\r\n--migrate:up\r\nSELECT 1;\r\n--migrate:down\r\nSELECT 2;\r\n",
        );
        write(
            dir.path(),
            "4_down.sql",
            "-- a comment\n-- migrate:up\nSELECT 1;\n-- migrate:down transaction:false\n",
        );
        let ms = load_dir(dir.path()).unwrap();
        assert_eq!(
            flags(&ms),
            [
                (true, false, true),
                (false, false, true),
                (true, false, false),
                (false, true, false)
            ]
        );
        assert_eq!(ms[0].up, "SELECT 1;\n");
        assert_eq!(ms[0].down.as_deref(), Some("SELECT 2;\n"));
        assert_eq!(
            ms[1].up, "\n  -- ferry:no-transaction\nSELECT 1;\n",
            "leading whitespace is kept"
        );
    }

    #[test]
    fn dbmate_structure_errors() {
        let cases = [
            (
                "-- migrate:down\nSELECT 2;\n-- migrate:up\nSELECT 1;\n",
                1,
                "comes before",
            ),
            (
                "-- migrate:up\nSELECT 1;\n-- migrate:up\nSELECT 2;\n",
                3,
                "second `-- migrate:up`",
            ),
            (
                "-- migrate:up\n-- migrate:down\n-- migrate:down\n",
                3,
                "second `-- migrate:down`",
            ),
            ("SELECT 0;\n-- migrate:up\nSELECT 1;\n", 1, "never run"),
            (
                "-- migrate:up transaction:flase\nSELECT 1;\n",
                1,
                "transaction:flase",
            ),
        ];
        for (text, want_line, want) in cases {
            let dir = tmp();
            write(dir.path(), "1_a.sql", text);
            match load_err(dir.path()) {
                SourceError::InvalidDbmate {
                    line,
                    problem,
                    path,
                } => {
                    assert_eq!(line, want_line, "{text}");
                    assert!(problem.contains(want), "{problem}");
                    assert!(path.ends_with("1_a.sql"));
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn no_transaction_directive_detection() {
        let dir = tmp();
        write(
            dir.path(),
            "1_a.up.sql",
            "\u{feff}\n\n \t-- ferry:no-transaction\t \nSELECT 1;\n",
        );
        write(
            dir.path(),
            "1_a.down.sql",
            "-- ferry:no-transaction\r\nSELECT 2;\r\n",
        );
        write(
            dir.path(),
            "2_b.up.sql",
            "-- FERRY:no-transaction\nSELECT 1;\n",
        );
        write(
            dir.path(),
            "3_c.up.sql",
            "-- ferry:no-transaction because reasons\nSELECT 1;\n",
        );
        let ms = load_dir(dir.path()).unwrap();
        assert_eq!(
            flags(&ms),
            [
                (true, false, false),
                (false, true, true),
                (false, true, true)
            ]
        );

        write(
            dir.path(),
            "4_d.up.sql",
            "-- header\n\n-- ferry:no-transaction\nSELECT 1;\n",
        );
        let err = load_err(dir.path());
        assert!(
            matches!(&err, SourceError::MisplacedDirective { line: 3, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("4_d.up.sql"));
    }

    #[test]
    fn diesel_folder_rules() {
        let dir = tmp();
        write(dir.path(), "2019-02-26-002946_2fa/up.sql", "SELECT 1;");
        write(dir.path(), "2019-02-26-002946_2fa/README.md", "notes");
        write(dir.path(), "2019-02-26-002946_2fa/.swp", "x");
        let ms = load_dir(dir.path()).unwrap();
        assert_eq!(labels(&ms), ["20190226002946_2fa"]);
        assert!(!ms[0].reversible());

        write(dir.path(), "2019-02-26-002946_2fa/seed.sql", "SELECT 2;");
        let err = load_err(dir.path());
        assert!(
            matches!(err, SourceError::DieselUnexpectedFile { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("seed.sql"));
        fs::remove_file(dir.path().join("2019-02-26-002946_2fa/seed.sql")).unwrap();

        write(
            dir.path(),
            "2019-02-26-002946_2fa/metadata.toml",
            "run_in_transation = false\n",
        );
        let err = load_err(dir.path());
        assert!(matches!(err, SourceError::DieselMetadata { .. }), "{err:?}");
        assert!(err.to_string().contains("metadata.toml"));

        fs::create_dir(dir.path().join("2020-01-01-000000_empty")).unwrap();
        fs::remove_file(dir.path().join("2019-02-26-002946_2fa/metadata.toml")).unwrap();
        let err = load_err(dir.path());
        assert!(
            matches!(err, SourceError::DieselMissingUp { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("2020-01-01-000000_empty"));

        write(dir.path(), "2020-01-01-000000_empty/up.sql", "SELECT 1;");
        write(dir.path(), "20190226002946_same/up.sql", "SELECT 1;");
        let err = load_err(dir.path());
        assert!(
            matches!(
                err,
                SourceError::DuplicateVersion {
                    version: 20190226002946,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("2019-02-26-002946_2fa") && msg.contains("20190226002946_same"),
            "{msg}"
        );
    }

    #[test]
    fn flyway_orphan_undo_and_version_collision() {
        let dir = tmp();
        write(dir.path(), "V1__a.sql", "SELECT 1;");
        write(dir.path(), "U2__b.sql", "SELECT 2;");
        let err = load_err(dir.path());
        assert!(
            matches!(err, SourceError::OrphanDown { version: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("U2__b.sql") && err.to_string().contains("V2__b.sql"));

        fs::remove_file(dir.path().join("U2__b.sql")).unwrap();
        write(dir.path(), "V1.1__b.sql", "SELECT 2;");
        write(dir.path(), "V11__c.sql", "SELECT 3;");
        let err = load_err(dir.path());
        assert!(
            matches!(err, SourceError::DuplicateVersion { version: 11, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn version_overflow() {
        let dir = tmp();
        write(dir.path(), "99999999999999999999_huge.up.sql", "SELECT 1;");
        let err = load_err(dir.path());
        assert!(
            matches!(err, SourceError::VersionOverflow { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("99999999999999999999_huge.up.sql"));
    }

    #[test]
    fn unrecognized_names() {
        for name in [
            "1-a.up.sql",
            "V__x.sql",
            "Vx__y.sql",
            "1_.up.sql",
            "_a.up.sql",
            "1_a.up.sql~",
            "R__view.sql",
        ] {
            let dir = tmp();
            write(dir.path(), name, "SELECT 1;");
            let err = load_err(dir.path());
            assert!(
                matches!(err, SourceError::UnrecognizedName { .. }),
                "{name}: {err:?}"
            );
            assert!(err.to_string().contains(name), "{name}");
        }
        let dir = tmp();
        fs::create_dir(dir.path().join("archive")).unwrap();
        assert!(matches!(
            load_err(dir.path()),
            SourceError::UnrecognizedName { .. }
        ));
    }

    #[test]
    fn native_names_may_start_with_digits_and_leading_zeros_are_one_version() {
        let dir = tmp();
        write(dir.path(), "001_2fa.up.sql", "SELECT 1;");
        write(dir.path(), "002_x.up.sql", "SELECT 2;");
        assert_eq!(labels(&load_dir(dir.path()).unwrap()), ["1_2fa", "2_x"]);
        write(dir.path(), "2_y.up.sql", "SELECT 3;");
        assert!(matches!(
            load_err(dir.path()),
            SourceError::DuplicateVersion { version: 2, .. }
        ));
    }

    #[test]
    fn normalize_cases() {
        let cases = [
            ("", ""),
            (" \t\r\n\n  \n", ""),
            ("SELECT 1;", "SELECT 1;\n"),
            ("\u{feff}SELECT 1;\r\n", "SELECT 1;\n"),
            ("a\rb\r", "a\nb\n"),
            ("a \t\r\n\tb\t\n\n\n", "a\n\tb\n"),
            ("\n\na\n\n\nb\n", "\n\na\n\n\nb\n"),
            ("  indented  ", "  indented\n"),
            ("x\u{feff}", "x\u{feff}\n"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), want, "{input:?}");
            assert_eq!(normalize(want), want, "idempotent on {want:?}");
        }
    }

    /// Found by the `migration_dir` fuzz target: with two leading BOMs only one was stripped,
    /// so the stored up script started with U+FEFF and normalizing it again changed it.
    #[test]
    fn normalize_strips_every_leading_bom_and_is_idempotent() {
        assert_eq!(normalize("\u{feff}\u{feff}SELECT 1;\r\n"), "SELECT 1;\n");
        for text in [
            "\u{feff}\u{feff}a \r\n\r\n",
            "a\r\r\nb\t\n\n",
            "\u{feff}",
            " \n\t",
        ] {
            let once = normalize(text);
            assert_eq!(normalize(&once), once, "{text:?}");
        }
    }

    #[test]
    fn checksum_is_lowercase_sha256_hex() {
        assert_eq!(
            checksum(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            checksum("SELECT 1;\n"),
            checksum(&normalize("\u{feff}SELECT 1;  \r\n\r\n"))
        );
        assert_ne!(checksum("SELECT 1;\n"), checksum("SELECT 2;\n"));
    }

    #[test]
    fn new_pair_writes_a_loadable_native_pair() {
        let root = tmp();
        let dir = root.path().join("db/migrations");
        let (up, down) = new_pair(&dir, "20240101120000", "add email-index").unwrap();
        assert_eq!(up, dir.join("20240101120000_add_email_index.up.sql"));
        assert_eq!(down, dir.join("20240101120000_add_email_index.down.sql"));
        let ms = load_dir(&dir).unwrap();
        assert_eq!(labels(&ms), ["20240101120000_add_email_index"]);
        assert!(!ms[0].reversible(), "an unwritten down is irreversible");

        let err = new_pair(&dir, "20240101120000", "add_email_index").unwrap_err();
        assert!(matches!(err, SourceError::AlreadyExists { .. }), "{err:?}");
        let err = new_pair(&dir, "20240101120000", "other").unwrap_err();
        assert!(
            matches!(err, SourceError::DuplicateVersion { .. }),
            "{err:?}"
        );
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            2,
            "refusals write nothing"
        );

        new_pair(&dir, "20240102120000", "second").unwrap();
        assert_eq!(load_dir(&dir).unwrap().len(), 2);
    }

    #[test]
    fn new_pair_refusals() {
        let root = tmp();
        for name in ["", "  ", "drop;table", "naïve", "a/b", "a.b"] {
            let err = new_pair(root.path(), "1", name).unwrap_err();
            assert!(
                matches!(err, SourceError::InvalidName { .. }),
                "{name:?}: {err:?}"
            );
        }
        for version in ["", "12a", "-1", "99999999999999999999"] {
            let err = new_pair(root.path(), version, "x").unwrap_err();
            assert!(
                matches!(err, SourceError::InvalidVersion { .. }),
                "{version:?}: {err:?}"
            );
        }
        let err = new_pair(&fixture("diesel"), "20990101000000", "x").unwrap_err();
        assert!(
            matches!(
                err,
                SourceError::NotNativeDir {
                    layout: Layout::Diesel,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            fs::read_dir(root.path()).unwrap().count(),
            0,
            "refusals write nothing"
        );
    }

    #[test]
    fn layout_serializes_lowercase_and_label_joins_version_and_name() {
        assert_eq!(
            toml::Value::try_from(Layout::Flyway).unwrap(),
            toml::Value::String("flyway".into())
        );
        assert_eq!(Layout::Dbmate.to_string(), "dbmate");
        let m = &load_fixture("diesel")[0];
        assert_eq!(m.label(), "0_diesel_initial_setup");
    }
}
