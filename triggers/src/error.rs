//! The one error type of the crate.

use std::{net::SocketAddr, path::PathBuf};

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Boxed error from a dependency whose error types differ per call (async-nats, JetStream).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the triggers component.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read.
    #[error("cannot read the triggers configuration {path}: {source}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file is not valid YAML/JSON for [`crate::Config`].
    #[error(
        "invalid triggers configuration {path}: {source} (see runbooks/triggers.md for the format)"
    )]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_yaml::Error,
    },
    /// The configuration parsed but is not usable.
    #[error("invalid triggers configuration: {field}: {message}")]
    ConfigInvalid {
        /// The offending field, e.g. `nats.auth`.
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A secret file named in the configuration could not be read.
    #[error("cannot read {what} from {path}: {source}")]
    SecretRead {
        /// What the file holds (`webhook bearer token`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An incoming event payload was refused (malformed JSON, unknown fields, wrong version).
    #[error("{message}")]
    BadPayload {
        /// Precise, user-facing description (with line and column where JSON is malformed).
        message: String,
    },
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// No Kubernetes client configuration was found.
    #[error("cannot configure a Kubernetes client (in-cluster or KUBECONFIG): {0}")]
    KubeConfig(#[from] kube::config::InferConfigError),
    /// Connecting to NATS failed.
    #[error("cannot connect to NATS at {servers}: {source}")]
    NatsConnect {
        /// Server URLs.
        servers: String,
        /// Why.
        source: BoxError,
    },
    /// A NATS core subscription could not be made.
    #[error("cannot subscribe to NATS subject {subject:?}: {source}")]
    NatsSubscribe {
        /// Subject.
        subject: String,
        /// Why.
        source: BoxError,
    },
    /// A JetStream stream or consumer could not be set up or read.
    #[error("JetStream stream {stream:?} consumer {consumer:?}: {what}: {source}")]
    JetStream {
        /// Stream name.
        stream: String,
        /// Durable consumer name.
        consumer: String,
        /// What was being done.
        what: &'static str,
        /// Why.
        source: BoxError,
    },
    /// A listener could not bind its address.
    #[error("cannot listen on {addr}: {source} (is another process using the port?)")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// An HTTP server stopped with an error.
    #[error("HTTP server on {addr} failed: {source}")]
    Serve {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The async runtime could not be started.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The capture store of `nightcap local` (its state database) failed (transient).
    #[error("capture store: {0}")]
    Store(String),
}

impl Error {
    /// Whether retrying the same request can never succeed (the API server refused it: schema,
    /// validation, admission, 404 of the namespace). Network errors, timeouts, 409 conflicts,
    /// 429 and 5xx are transient; so is 403, because fixing RBAC makes a retry succeed.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Kube(kube::Error::Api(s)) => {
                (400..500).contains(&s.code) && !matches!(s.code, 403 | 408 | 409 | 429)
            }
            Self::BadPayload { .. } | Self::ConfigInvalid { .. } | Self::ConfigParse { .. } => true,
            _ => false,
        }
    }

    /// The API server's status code, for API errors.
    pub fn api_code(&self) -> Option<u16> {
        match self {
            Self::Kube(kube::Error::Api(s)) => Some(s.code),
            _ => None,
        }
    }
}
