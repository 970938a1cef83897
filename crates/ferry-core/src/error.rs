//! Errors from configuration and URL handling. Every one of them is the user's input being wrong,
//! so the CLI maps all of them to exit code 2.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("cannot read config file {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    ConfigParse { path: PathBuf, message: String },
    #[error(
        "config file {path}: `{key}` refers to ${{{var}}}, which is not set; export {var} or change the value"
    )]
    MissingVar {
        path: PathBuf,
        key: String,
        var: String,
    },
    #[error(
        "environment `{name}` is not defined in {path}; defined: {defined}. Add an [env.{name}] section or pass another --env"
    )]
    UnknownEnv {
        name: String,
        path: String,
        defined: String,
    },
    #[error("invalid database URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "no database URL: pass --database-url, set DATABASE_URL, or set database_url in an [env.NAME] section of ferry.toml and select it with --env NAME"
    )]
    NoDatabaseUrl,
    #[error("invalid value `{value}` for {what}: {reason}")]
    BadValue {
        what: String,
        value: String,
        reason: String,
    },
}
