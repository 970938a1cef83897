//! Promotion errors. Each names the artifact, environment or object it concerns and the way out.
//! The doc comment of each variant says which exit-code class it belongs to; the CLI's
//! `exit_code` owns the numbers (1 failed, 2 invalid input, 3 refused by a safety check).

use ferry_store::StoreError;

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// Invalid input (2).
    #[error("`{reference}` is not an artifact reference: {reason}")]
    BadReference { reference: String, reason: String },

    /// Invalid input (2).
    #[error(
        "environment `{env}` is not defined in the configuration (defined: {defined}); add an [env.{env}] section"
    )]
    UnknownEnv { env: String, defined: String },

    /// Invalid input (2): the configuration of an environment is wrong.
    #[error("environment `{env}`: {reason}")]
    BadEnvConfig { env: String, reason: String },

    /// Invalid input (2).
    #[error("artifact location `{url}` cannot be opened here: {reason}")]
    UnsupportedLocation { url: String, reason: String },

    /// Invalid input (2).
    #[error("`{url}` is not an OCI location: {reason} (e.g. oci://registry.example.com/app-prod)")]
    BadOciUrl { url: String, reason: String },

    /// Invalid input (2): an image where a store artifact is expected, or the reverse.
    #[error("{0}")]
    KindMismatch(String),

    /// Invalid input (2): the registry wants credentials ferry does not have, or refused them.
    #[error("registry {registry}: {reason}")]
    RegistryAuth { registry: String, reason: String },

    /// Failed (1): the registry is unreachable or answered something unexpected.
    #[error("registry {registry}: {context}: {message}")]
    Registry {
        registry: String,
        context: String,
        message: String,
    },

    /// Refused (3): a registry resolves the image to another digest than the one promoted.
    #[error(
        "{location} resolves to {actual}, not {digest}: the registry did not keep the manifest bytes ferry gave it. Nothing was promoted; check the registry (a proxy rewriting manifests?) and retry"
    )]
    RegistryMismatch {
        location: String,
        digest: Digest,
        actual: String,
    },

    /// Failed (1): the release is recorded, but its location (an OCI tag) does not point at it.
    #[error(
        "release {seq} of `{env}` ({digest}) is recorded, but {location} could not be pointed at it: {source}. Run `{retry}` to apply it again"
    )]
    NotLive {
        env: String,
        seq: u64,
        digest: Digest,
        location: String,
        retry: String,
        #[source]
        source: Box<PromoteError>,
    },

    /// Invalid input (2).
    #[error("{what}; run `ferry releases --env <ENV>` or `ferry artifact push` to see what exists")]
    NotFound { what: String },

    /// Invalid input (2).
    #[error("local file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// Invalid input (2): a flag combination or value is not allowed.
    #[error("{0}")]
    Invalid(String),

    /// Refused (3): a version is immutable.
    #[error(
        "{name}@{version} was already pushed as {existing}, and these bytes are {digest}; a version names one artifact forever: push under a new version"
    )]
    VersionTaken {
        name: String,
        version: String,
        existing: Digest,
        digest: Digest,
    },

    /// Refused (3): stage skipping.
    #[error(
        "{digest} was never live in `{required}`, which `{env}` requires first; promote it to `{required}` (and let it prove itself there) before `{env}`"
    )]
    NotLiveInRequired {
        digest: Digest,
        env: String,
        required: String,
    },

    /// Refused (3): the artifact was rolled back as bad where it had to prove itself.
    #[error(
        "{digest} was rolled back as bad in `{required}` (release {seq}), which `{env}` requires first; promote a fixed build instead"
    )]
    BadInRequired {
        digest: Digest,
        env: String,
        required: String,
        seq: u64,
    },

    /// Refused (3).
    #[error(
        "`{env}` is in a freeze window now ({now}, window {window}); wait until it ends, or pass --override-freeze with --reason explaining why"
    )]
    Frozen {
        env: String,
        now: String,
        window: String,
    },

    /// Refused (3): the bytes do not match their digest; nothing was recorded.
    #[error(
        "artifact {digest} at {location} does not match its digest (its bytes hash to {actual}): it was changed after it was pushed. Nothing was promoted; delete that object and push the artifact again from a trusted build"
    )]
    Tampered {
        digest: Digest,
        location: String,
        actual: Digest,
    },

    /// Refused (3): a rollback target that was itself rolled back as bad.
    #[error(
        "release {seq} ({digest}) of `{env}` was rolled back as bad; roll back to another release, or bring it back deliberately with `ferry promote`"
    )]
    RollbackToBad {
        env: String,
        seq: u64,
        digest: Digest,
    },

    /// Refused (3).
    #[error("{0}")]
    NothingToRollBack(String),

    /// Failed (1): another promotion or rollback took this sequence number first.
    #[error(
        "release {seq} of `{env}` was recorded by someone else at the same time; nothing was recorded for this run. Check `ferry releases --env {env}` and retry"
    )]
    Conflict { env: String, seq: u64 },

    /// Failed (1).
    #[error(
        "release record {key} in {store} is unreadable: {message}; it is part of the append-only history, restore it from the store's versioning or backups"
    )]
    BadRecord {
        key: String,
        store: String,
        message: String,
    },

    /// Failed (1).
    #[error("{context}: {source}")]
    Store {
        context: String,
        #[source]
        source: StoreError,
    },
}

pub type Result<T, E = PromoteError> = std::result::Result<T, E>;

impl PromoteError {
    pub(crate) fn store(context: impl Into<String>) -> impl FnOnce(StoreError) -> PromoteError {
        let context = context.into();
        move |source| PromoteError::Store { context, source }
    }

    /// True for the refusals of a safety check (the CLI's exit code 3).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            PromoteError::VersionTaken { .. }
                | PromoteError::NotLiveInRequired { .. }
                | PromoteError::BadInRequired { .. }
                | PromoteError::Frozen { .. }
                | PromoteError::Tampered { .. }
                | PromoteError::RollbackToBad { .. }
                | PromoteError::NothingToRollBack(_)
                | PromoteError::RegistryMismatch { .. }
        )
    }
}
