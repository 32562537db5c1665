//! The scheduler's error type.

use kube::runtime::finalizer;

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
    /// A Kubernetes API call did not answer in time.
    #[error("Kubernetes API call timed out while {action}; is the API server reachable?")]
    Timeout {
        /// What the scheduler was doing.
        action: String,
    },
    /// The PacketCapture has no namespace, name or UID (it did not come from the API server).
    #[error(
        "PacketCapture {0} lacks metadata.{1}; only objects read from the API server can be scheduled"
    )]
    MissingMetadata(String, &'static str),
    /// An object could not be turned into JSON (a bug).
    #[error("Failed to serialise {what}: {source}")]
    Serialize {
        /// What.
        what: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// A watch cache stopped (the controller is shutting down).
    #[error("The {0} cache stopped; the scheduler is shutting down")]
    CacheClosed(&'static str),
    /// A deleted capture still has Jobs that are stopping (not a failure: retried shortly).
    #[error("Capture Jobs are still stopping; the finalizer stays until they are gone")]
    CleanupPending,
    /// Adding or removing the finalizer, or the reconcile behind it, failed.
    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    /// Could not connect to Kubernetes.
    #[error("Cannot create a Kubernetes client ({0}); set KUBECONFIG or run in a pod")]
    Client(#[source] kube::Error),
    /// The metrics/health endpoint could not start.
    #[error("Cannot serve metrics on {addr}: {source}; choose another --metrics-addr")]
    Serve {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A configuration value is unusable.
    #[error("Invalid configuration: {0}")]
    Config(String),
    /// The process could not be set up (the async runtime).
    #[error(transparent)]
    Process(#[from] nightcap_process::Error),
}

impl Error {
    /// Whether this is [`Error::CleanupPending`], directly or behind the finalizer.
    pub fn is_cleanup_pending(&self) -> bool {
        match self {
            Self::CleanupPending => true,
            Self::Finalizer(e) => matches!(
                e.as_ref(),
                finalizer::Error::CleanupFailed(inner) | finalizer::Error::ApplyFailed(inner)
                    if inner.is_cleanup_pending()
            ),
            _ => false,
        }
    }

    /// A short, bounded name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "Kube",
            Self::Timeout { .. } => "Timeout",
            Self::MissingMetadata(..) => "MissingMetadata",
            Self::CacheClosed(_) => "CacheClosed",
            Self::CleanupPending => "CleanupPending",
            Self::Finalizer(e) => match e.as_ref() {
                finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => {
                    inner.kind()
                }
                _ => "Finalizer",
            },
            Self::Client(_) => "Client",
            Self::Serialize { .. } => "Serialize",
            Self::Serve { .. } => "Serve",
            Self::Config(_) => "Config",
            Self::Process(_) => "Process",
        }
    }
}

/// Result with the scheduler's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
