//! The gateway's one error type.

/// Everything that can go wrong while starting or serving the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed (opening, listing, signing, reading) or a name or file was refused.
    #[error(transparent)]
    Storage(#[from] nightcap_storage::Error),

    /// A Kubernetes API call failed.
    #[error("Kubernetes API call ({what}) failed: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// kube's reason.
        #[source]
        source: kube::Error,
    },

    /// The gateway's configuration (token file, share key, listen address) is unusable.
    #[error("gateway configuration: {reason}")]
    Config {
        /// What is wrong and what to do.
        reason: String,
    },

    /// The process could not be set up (async runtime).
    #[error(transparent)]
    Process(#[from] nightcap_process::Error),
}

/// Result with the gateway's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
