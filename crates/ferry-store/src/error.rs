//! Store errors. Each names the object (key and store) it concerns.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid store URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("object {key} does not exist in the store")]
    NotFound { key: String },
    #[error("object {key} already exists in the store")]
    AlreadyExists { key: String },
    #[error("store I/O on {key}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the copy of {key} has SHA-256 {actual}, not the expected {expected}; the source object's bytes changed since they were stored, so nothing was copied"
    )]
    ChecksumMismatch {
        key: String,
        expected: String,
        actual: String,
    },
    #[error("S3 {operation} on {key} failed{}: {message}", tries(.attempts))]
    S3 {
        operation: &'static str,
        key: String,
        message: String,
        /// How many times the request was sent (1 when it was not retried).
        attempts: u32,
    },
}

fn tries(attempts: &u32) -> String {
    if *attempts > 1 {
        format!(" after {attempts} attempts")
    } else {
        String::new()
    }
}

impl StoreError {
    pub fn io(key: &str, source: std::io::Error) -> Self {
        StoreError::Io {
            key: key.to_string(),
            source,
        }
    }
}
