//! The crate's error type.

use crate::status::ApiError;

/// Errors of the test cluster (server start-up, clients, kubelet, schema checks).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listening socket could not be bound.
    #[error(
        "cannot listen on 127.0.0.1:{port}: {source}; pick another port or pass 0 for a free one"
    )]
    Bind {
        /// Requested port.
        port: u16,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The user is not in the policy.
    #[error("user {0:?} is not in the test policy; add it with Policy::user(User::new(..))")]
    UnknownUser(String),
    /// A kube client could not be built.
    #[error("building a kube client: {0}")]
    Client(#[source] kube::Error),
    /// A kube API call failed.
    #[error("Kubernetes API call failed ({what}): {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// The server rejected an in-process operation.
    #[error("the API server rejected the request: {0}")]
    Api(ApiError),
    /// Bad configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// File or process I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A kustomization or manifest file could not be read as the install reader expects.
    #[error("{}: {reason}", path.display())]
    Manifest {
        /// The file or directory.
        path: std::path::PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// kubernetes-validate rejected objects, or could not run.
    #[error("schema check failed: {0}")]
    SchemaCheck(String),
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
