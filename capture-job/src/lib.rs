//! nightcap-capture-job: the process that turns packets into files in object storage.
//!
//! A [`Capture`] loads the eBPF filter once, opens an AF_PACKET ring per target (an interface
//! here, a named network namespace, or the namespace holding a pod IP), writes pcapng files in a
//! bounded spool, rotates them by size or age, and hands each closed file to the storage
//! [`Uploader`](nightcap_storage::Uploader). Targets can be added and removed while it runs
//! (the Kubernetes mode does that as pods come and go). [`run`] is `nightcap capture`.
//!
//! This crate must never delete a spooled file before its upload is confirmed, never widen the
//! user's filter, and never write outside its spool directory and the configured store.

mod capture;
mod cli;
pub mod engine;
mod kube_mode;
pub mod pcapng;
pub mod spool;
pub mod target;
mod writer;

use std::{net::IpAddr, path::Path};

pub use capture::{Capture, CaptureOptions, Summary, TargetId};
pub use cli::{CaptureArgs, run};
pub use engine::{EngineStats, FileIdentity, StopReason};
pub use kube_mode::KubeArgs;
pub use target::{TargetMeta, TargetSpec};

/// Everything that can go wrong in a capture.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The filter expression or structured filters cannot be compiled.
    #[error("invalid filter: {0}")]
    Filter(#[from] nightcap_api::filter::FilterError),
    /// A target could not be found or opened.
    #[error("target {target}: {source}")]
    Target {
        /// The target as given.
        target: String,
        /// Why.
        #[source]
        source: nightcap_ebpf::Error,
    },
    /// The kernel side failed (filter load, ring).
    #[error(transparent)]
    Kernel(#[from] nightcap_ebpf::Error),
    /// No namespace has an interface with this address.
    #[error(
        "no network namespace on this host has an interface with address {ip}; check the pod \
         runs on this node (kubectl get pod -o wide) or pass --netns"
    )]
    PodIpNotFound {
        /// The address.
        ip: IpAddr,
    },
    /// Several namespaces have it.
    #[error("address {ip} is on several interfaces ({}); pass --netns and --interface", places.join(", "))]
    PodIpAmbiguous {
        /// The address.
        ip: IpAddr,
        /// Where it was found.
        places: Vec<String>,
    },
    /// Storage (configuration, key, upload).
    #[error(transparent)]
    Storage(#[from] nightcap_storage::Error),
    /// A local file operation.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was done.
        action: &'static str,
        /// The file.
        path: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A bad option.
    #[error("{0}")]
    Invalid(String),
    /// The capture was already stopped.
    #[error("the capture has stopped")]
    Stopped,
}

impl Error {
    pub(crate) fn io(path: &Path, action: &'static str, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.display().to_string(),
            source,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
