//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in storage, uploads, listing and retention.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key prefix with forbidden segments.
    #[error(
        "invalid key prefix {prefix:?}: {reason}; use '/'-separated ASCII segments like 'captures/prod'"
    )]
    InvalidPrefix {
        /// The prefix as given.
        prefix: String,
        /// What is wrong.
        reason: String,
    },

    /// An object key outside the layout `{prefix}/{namespace}/{capture}/{uid}/{node}/{start}-{seq}.pcapng`.
    #[error("object key {key:?} is not a nightcap capture key: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// What is wrong.
        reason: String,
    },

    /// A namespace, capture name, uid or node name that may not appear in a key.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// Which component (`namespace`, `capture`, `uid`, `node`).
        what: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong.
        reason: String,
    },

    /// A store configuration that cannot be used.
    #[error("invalid store configuration: {reason}")]
    InvalidConfig {
        /// What is wrong and what to do.
        reason: String,
    },

    /// The object store refused to be built from the configuration.
    #[error("cannot open the {backend} store: {source}")]
    OpenStore {
        /// `s3`, `local`, `gcs`, `azure`, ….
        backend: &'static str,
        /// The object store's reason.
        #[source]
        source: object_store::Error,
    },

    /// A local file could not be read (uploads) or written.
    #[error("cannot read {path}: {source}")]
    LocalIo {
        /// The local file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },

    /// A local file changed while it was being uploaded (its checksum or size differs between
    /// the two reads); the partial upload was aborted. Close files before uploading them.
    #[error("{path} changed while being uploaded to {key}; upload aborted")]
    FileChanged {
        /// The local file.
        path: PathBuf,
        /// The destination key.
        key: String,
    },

    /// An upload made while the file was written ([`crate::upload::LiveUpload`]) did not
    /// complete; the caller uploads the closed file instead.
    #[error("uploading {key} while it was written stopped: {reason}")]
    LiveStopped {
        /// The destination key.
        key: String,
        /// Why.
        reason: String,
    },

    /// An upload failed (after the retries, for retryable errors).
    #[error("upload to {key} failed after {attempts} attempt(s): {source}")]
    UploadFailed {
        /// The destination key.
        key: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        #[source]
        source: object_store::Error,
    },

    /// Listing failed.
    #[error("listing {prefix} failed: {source}")]
    ListFailed {
        /// The listed prefix.
        prefix: String,
        /// The object store's reason.
        #[source]
        source: object_store::Error,
    },

    /// Reading an object failed.
    #[error("reading {key} failed: {source}")]
    ReadFailed {
        /// The key.
        key: String,
        /// The object store's reason.
        #[source]
        source: object_store::Error,
    },

    /// Deleting an object failed.
    #[error("deleting {key} failed: {source}")]
    DeleteFailed {
        /// The key.
        key: String,
        /// The object store's reason.
        #[source]
        source: object_store::Error,
    },

    /// Signing a URL failed.
    #[error("signing a URL for {key} failed: {source}")]
    SignFailed {
        /// The key.
        key: String,
        /// The object store's reason.
        #[source]
        source: object_store::Error,
    },
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
