//! The scheduler's error type.

/// Everything that can go wrong in the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed while {action}: {source}")]
    Kube {
        /// What the scheduler was doing.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// An object could not be turned into JSON (a bug: every type here serialises).
    #[error("Failed to serialise {what}: {source}")]
    Serialize {
        /// What was being serialised.
        what: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// The PacketCapture has no namespace, name or UID (it did not come from the API server).
    #[error(
        "PacketCapture {0} lacks metadata.{1}; only objects read from the API server can be scheduled"
    )]
    MissingMetadata(String, &'static str),
}

/// Result with the scheduler's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
