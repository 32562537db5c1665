//! Errors of `nightcap local`.

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file or a flag is wrong; nothing started.
    #[error("{0}")]
    Config(String),
    /// The state directory or database cannot be used.
    #[error("state: {0}")]
    State(String),
    /// A database call failed.
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored object does not serialize.
    #[error("state encoding: {0}")]
    Json(#[from] serde_json::Error),
    /// A trigger component failed.
    #[error(transparent)]
    Triggers(#[from] nightcap_triggers::Error),
    /// The gateway failed.
    #[error(transparent)]
    Gateway(#[from] nightcap_gateway::Error),
    /// The process could not be set up (the async runtime).
    #[error(transparent)]
    Process(#[from] nightcap_process::Error),
    /// A listener could not be bound, or another I/O failure.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
