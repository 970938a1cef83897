//! Database URLs: which engine a URL means, and how to show it without its password.

use std::fmt;

use crate::CoreError;

/// The database engines ferry supports; the URL scheme decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    Postgres,
    MySql,
    Sqlite,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::MySql => "mysql",
            Engine::Sqlite => "sqlite",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A database URL whose password never reaches output: `Display` and `Debug` redact it.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    raw: String,
    engine: Engine,
}

impl DatabaseUrl {
    /// Parses a URL and decides its engine from the scheme: `sqlite:`, `postgres://` or
    /// `postgresql://`, `mysql://` or `mariadb://`.
    pub fn parse(raw: &str) -> Result<Self, CoreError> {
        let raw = raw.trim();
        let bad = |reason: &str| CoreError::BadUrl {
            url: redact(raw),
            reason: reason.to_string(),
        };
        let scheme = raw
            .split_once(':')
            .map(|(s, _)| s.to_ascii_lowercase())
            .ok_or_else(|| {
                bad("it has no scheme; use sqlite:PATH, postgres://... or mysql://...")
            })?;
        let engine = match scheme.as_str() {
            "sqlite" => Engine::Sqlite,
            "postgres" | "postgresql" => Engine::Postgres,
            "mysql" | "mariadb" => Engine::MySql,
            other => {
                return Err(bad(&format!(
                    "unknown scheme `{other}`; use sqlite:, postgres://, postgresql://, mysql:// or mariadb://"
                )));
            }
        };
        if engine != Engine::Sqlite {
            let parsed = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
            if parsed.host_str().unwrap_or("").is_empty()
                && !parsed
                    .query_pairs()
                    .any(|(k, _)| k == "host" || k == "socket")
            {
                return Err(bad("it names no host"));
            }
        } else if raw["sqlite:".len()..].trim_start_matches('/').is_empty() {
            return Err(bad("it names no file; use sqlite:path/to/file.db"));
        }
        Ok(Self {
            raw: raw.to_string(),
            engine,
        })
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The URL with its password, for drivers that connect. Never print this.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// The URL as sqlx understands it (`mariadb://` is spelled `mysql://` there).
    pub fn for_driver(&self) -> String {
        match self.raw.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mariadb") => {
                format!("mysql://{rest}")
            }
            _ => self.raw.clone(),
        }
    }

    /// The URL with its password replaced by `***`, safe for output, logs and manifests.
    pub fn redacted(&self) -> String {
        redact(&self.raw)
    }

    /// The database name (PostgreSQL/MySQL) or file path (SQLite), for messages and manifests.
    pub fn database_name(&self) -> String {
        match self.engine {
            Engine::Sqlite => sqlite_path(&self.raw).to_string(),
            _ => url::Url::parse(&self.raw)
                .ok()
                .map(|u| u.path().trim_start_matches('/').to_string())
                .unwrap_or_default(),
        }
    }
}

/// The pieces of a server URL, percent-decoded the way the drivers decode them: `%2B` is `+`,
/// and a raw `+` in the user info is a `+` (never a space, which is form encoding, not URLs).
/// What client tools get as arguments and, for the password, environment. `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct UrlParts {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub database: String,
    /// The query parameters (`sslmode`, `socket`, ...), decoded as sqlx decodes them.
    pub query: Vec<(String, String)>,
}

impl UrlParts {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The password of the user info, else of a `password=` query parameter.
    pub fn any_password(&self) -> Option<&str> {
        self.password.as_deref().or_else(|| self.param("password"))
    }
}

impl fmt::Debug for UrlParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UrlParts")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

fn percent_decoded(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

impl DatabaseUrl {
    fn server_url(&self) -> Result<url::Url, CoreError> {
        let bad = |reason: String| CoreError::BadUrl {
            url: self.redacted(),
            reason,
        };
        if self.engine == Engine::Sqlite {
            return Err(bad("a SQLite URL names a file, not a server".into()));
        }
        url::Url::parse(&self.raw).map_err(|e| bad(e.to_string()))
    }

    /// The decoded pieces of a PostgreSQL or MySQL URL (an error for SQLite).
    pub fn parts(&self) -> Result<UrlParts, CoreError> {
        let parsed = self.server_url()?;
        Ok(UrlParts {
            host: parsed
                .host_str()
                .filter(|h| !h.is_empty())
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string()),
            port: parsed.port(),
            user: (!parsed.username().is_empty()).then(|| percent_decoded(parsed.username())),
            password: parsed.password().map(percent_decoded),
            database: percent_decoded(parsed.path().trim_start_matches('/')),
            query: parsed
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        })
    }

    /// The same server, user, password and parameters, with database `name` (PostgreSQL,
    /// MySQL); the scratch databases of restore checks, compat proofs and tests.
    pub fn with_database(&self, name: &str) -> Result<DatabaseUrl, CoreError> {
        let mut parsed = self.server_url()?;
        const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'_')
            .remove(b'-')
            .remove(b'.');
        let encoded: String = percent_encoding::utf8_percent_encode(name, SEGMENT).collect();
        parsed.set_path(&format!("/{encoded}"));
        Ok(DatabaseUrl {
            raw: parsed.to_string(),
            engine: self.engine,
        })
    }
}

/// The file path part of a `sqlite:` URL, without query parameters.
pub fn sqlite_path(raw: &str) -> &str {
    let rest = &raw[raw.find(':').map(|i| i + 1).unwrap_or(0)..];
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    rest.split('?').next().unwrap_or(rest)
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

/// Replaces the password of any URL-shaped string with `***`, and `password=` query values too.
/// Works on strings that do not parse as URLs (it is used on error text), so it is textual.
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // userinfo ends at the last '@' before the first '/', '?', '#' or whitespace.
        let stop = |c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace();
        let mut end = tail.find(stop).unwrap_or(tail.len());
        // A password with a raw `/`, `?` or `#` (not percent-encoded) ends that early:
        // `u:p/w@host` is no `host:port`, so the userinfo runs to the word's last '@'.
        let cut = &tail[..end];
        if !cut.contains('@')
            && !cut.starts_with('[')
            && cut.split_once(':').is_some_and(|(_, port)| {
                port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit())
            })
        {
            let word = tail.find(char::is_whitespace).unwrap_or(tail.len());
            if let Some(at) = tail[..word].rfind('@') {
                end = at + tail[at..].find(stop).unwrap_or(tail.len() - at);
            }
        }
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    redact_query_password(&out)
}

fn redact_query_password(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let lower = rest.to_ascii_lowercase();
        let found = ["password=", "pass=", "pwd="]
            .iter()
            .filter_map(|k| {
                lower.find(k).and_then(|i| {
                    let before = lower[..i].chars().last();
                    matches!(before, Some('?') | Some('&') | Some(' ') | None)
                        .then_some((i, k.len()))
                })
            })
            .min();
        match found {
            Some((i, klen)) => {
                out.push_str(&rest[..i + klen]);
                out.push_str("***");
                let after = &rest[i + klen..];
                let end = after
                    .find(|c: char| c == '&' || c.is_whitespace())
                    .unwrap_or(after.len());
                rest = &after[end..];
            }
            None => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_follows_scheme() {
        let cases = [
            ("sqlite:app.db", Engine::Sqlite),
            ("sqlite://./app.db", Engine::Sqlite),
            ("postgres://u@h/db", Engine::Postgres),
            ("postgresql://u@h/db", Engine::Postgres),
            ("mysql://u@h/db", Engine::MySql),
            ("MariaDB://u@h/db", Engine::MySql),
        ];
        for (url, engine) in cases {
            assert_eq!(DatabaseUrl::parse(url).unwrap().engine(), engine, "{url}");
        }
    }

    #[test]
    fn bad_urls_are_rejected_without_leaking_the_password() {
        let err = DatabaseUrl::parse("oracle://scott:tiger@h/db")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown scheme `oracle`"), "{err}");
        assert!(!err.contains("tiger"), "{err}");
        assert!(DatabaseUrl::parse("no-scheme").is_err());
        assert!(DatabaseUrl::parse("sqlite:").is_err());
    }

    #[test]
    fn display_and_debug_redact() {
        let url = DatabaseUrl::parse("postgres://app:s3cr%40t@db.example:5432/app?sslmode=require")
            .unwrap();
        assert_eq!(
            url.to_string(),
            "postgres://app:***@db.example:5432/app?sslmode=require"
        );
        assert!(!format!("{url:?}").contains("s3cr"));
        assert_eq!(url.database_name(), "app");
        assert!(url.expose().contains("s3cr%40t"));
    }

    /// Found by the `config` fuzz target: an invalid URL's error showed a password holding a
    /// raw `/` (`invalid database URL `mysql://u:p/ss+w@rd@h/db``), because the textual
    /// redaction ended the authority at that `/`.
    #[test]
    fn redact_hides_passwords_with_raw_slashes_question_marks_and_hashes() {
        assert_eq!(
            redact("invalid database URL `mysql://u:p/ss+w@rd:x%2B@h/db?x=1`: invalid port number"),
            "invalid database URL `mysql://u:***@h/db?x=1`: invalid port number"
        );
        assert_eq!(redact("postgres://u:p?ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            redact("postgres://u:p#ss@h/db x"),
            "postgres://u:***@h/db x"
        );
        // A port, an IPv6 host and an `@` later in the URL are not passwords.
        for kept in [
            "postgres://h:5432/db?email=a@b",
            "postgres://[::1]:5432/db?x=a@b",
            "mysql://h/db?x=a@b c@d",
        ] {
            assert_eq!(redact(kept), kept);
        }
        let url = DatabaseUrl::parse("postgres://u:pa/ss@h/db");
        let shown = match url {
            Ok(u) => u.to_string(),
            Err(e) => e.to_string(),
        };
        assert!(!shown.contains("pa/ss"), "{shown}");
    }

    #[test]
    fn redact_handles_text_and_query_passwords() {
        assert_eq!(
            redact("error connecting to mysql://root:pw@127.0.0.1:3306/x: refused"),
            "error connecting to mysql://root:***@127.0.0.1:3306/x: refused"
        );
        assert_eq!(
            redact("postgres://h/db?user=a&password=secret&x=1"),
            "postgres://h/db?user=a&password=***&x=1"
        );
        assert_eq!(redact("postgres://user@h/db"), "postgres://user@h/db");
        assert_eq!(redact("no url here"), "no url here");
    }

    #[test]
    fn mariadb_scheme_is_spelled_mysql_for_the_driver() {
        let url = DatabaseUrl::parse("mariadb://root@127.0.0.1/app").unwrap();
        assert_eq!(url.for_driver(), "mysql://root@127.0.0.1/app");
    }

    #[test]
    fn parts_decode_percent_escapes_and_keep_a_raw_plus() {
        // The password is `a+b%2Bc@d:e/f` after decoding: a raw `+` stays a `+`.
        let url = DatabaseUrl::parse(
            "postgres://us%40er:a+b%252Bc%40d%3Ae%2Ff@db.example:6543/my%20db?sslmode=disable",
        )
        .unwrap();
        let p = url.parts().unwrap();
        assert_eq!(p.user.as_deref(), Some("us@er"));
        assert_eq!(p.password.as_deref(), Some("a+b%2Bc@d:e/f"));
        assert_eq!(p.host.as_deref(), Some("db.example"));
        assert_eq!(p.port, Some(6543));
        assert_eq!(p.database, "my db");
        assert_eq!(p.param("sslmode"), Some("disable"));
        assert!(!format!("{p:?}").contains("a+b"), "{p:?}");
        let plus = DatabaseUrl::parse("mysql://u:x+y@h/db")
            .unwrap()
            .parts()
            .unwrap();
        assert_eq!(plus.password.as_deref(), Some("x+y"));
        assert!(DatabaseUrl::parse("sqlite:a.db").unwrap().parts().is_err());
    }

    #[test]
    fn with_database_keeps_everything_but_the_name() {
        let url = DatabaseUrl::parse(
            "postgres://u:p%2Bw+d@h:5433/app?sslmode=require&application_name=x",
        )
        .unwrap();
        let scratch = url.with_database("ferry_scratch_1").unwrap();
        assert_eq!(
            scratch.expose(),
            "postgres://u:p%2Bw+d@h:5433/ferry_scratch_1?sslmode=require&application_name=x"
        );
        assert_eq!(scratch.engine(), Engine::Postgres);
        assert_eq!(scratch.database_name(), "ferry_scratch_1");
        let bare = DatabaseUrl::parse("mariadb://root@127.0.0.1").unwrap();
        assert_eq!(
            bare.with_database("t").unwrap().expose(),
            "mariadb://root@127.0.0.1/t"
        );
        assert_eq!(
            bare.with_database("t").unwrap().for_driver(),
            "mysql://root@127.0.0.1/t"
        );
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(sqlite_path("sqlite://./a.db?mode=rwc"), "./a.db");
        assert_eq!(sqlite_path("sqlite:a.db"), "a.db");
        assert_eq!(sqlite_path("sqlite:///tmp/a.db"), "/tmp/a.db");
    }
}
