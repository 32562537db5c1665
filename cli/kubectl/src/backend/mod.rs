//! Where captures live: a cluster's API server (kube-rs, the user's kubeconfig) or one host's
//! `nightcap local` API (`--server URL --token T`). Both give the same verbs the same objects.

mod kube_api;
mod local;

use std::time::Duration;

use futures::{StreamExt, stream::BoxStream};
use jiff::Timestamp;
use nightcap_api::{CaptureSchedule, CaptureTrigger, PacketCapture};

pub use kube_api::KubeBackend;
pub use local::LocalBackend;

use crate::{
    args::ConnArgs,
    error::{Error, Result},
    gateway::Gateway,
};

/// One Event about a capture, from either kind of backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventView {
    /// `Normal` or `Warning`.
    pub type_: String,
    /// CamelCase reason.
    pub reason: String,
    /// What happened.
    pub message: String,
    /// How often.
    pub count: i32,
    /// When it last happened.
    pub last: Option<Timestamp>,
}

/// The backend the flags select.
#[derive(Debug)]
pub enum Backend {
    /// A Kubernetes cluster.
    Kube(KubeBackend),
    /// One `nightcap local` host.
    Local(LocalBackend),
}

impl Backend {
    /// `--server` picks one host; otherwise the kubeconfig.
    pub async fn connect(conn: &ConnArgs) -> Result<Self> {
        match &conn.server {
            Some(url) => Ok(Self::Local(LocalBackend::new(url, conn)?)),
            None => Ok(Self::Kube(KubeBackend::connect(conn).await?)),
        }
    }

    /// The namespace verbs act in.
    pub fn namespace(&self) -> &str {
        match self {
            Self::Kube(k) => &k.namespace,
            Self::Local(l) => &l.namespace,
        }
    }

    /// Captures of `ns` (every readable namespace when `None`).
    pub async fn list(
        &self,
        ns: Option<&str>,
        selector: Option<&str>,
    ) -> Result<Vec<PacketCapture>> {
        match self {
            Self::Kube(k) => k.list(ns, selector).await,
            Self::Local(l) => l.list("packetcaptures", ns, selector).await,
        }
    }

    /// One capture.
    pub async fn get(&self, ns: &str, name: &str) -> Result<PacketCapture> {
        match self {
            Self::Kube(k) => k.get(ns, name).await,
            Self::Local(l) => l.get(ns, name).await,
        }
    }

    /// Creates `pc` in its namespace.
    pub async fn create(&self, pc: &PacketCapture) -> Result<PacketCapture> {
        match self {
            Self::Kube(k) => k.create(pc).await,
            Self::Local(l) => l.create(pc).await,
        }
    }

    /// Asks the scheduler to stop the capture; its files are kept.
    pub async fn stop(&self, ns: &str, name: &str, reason: &str) -> Result<PacketCapture> {
        match self {
            Self::Kube(k) => k.stop(ns, name, reason).await,
            Self::Local(l) => l.stop(ns, name, reason).await,
        }
    }

    /// Deletes the capture.
    pub async fn delete(&self, ns: &str, name: &str, keep_files: bool) -> Result<()> {
        match self {
            Self::Kube(k) => k.delete(ns, name).await,
            Self::Local(l) => l.delete(ns, name, keep_files).await,
        }
    }

    /// Events about the capture, oldest first.
    pub async fn events(&self, ns: &str, name: &str) -> Result<Vec<EventView>> {
        let mut events = match self {
            Self::Kube(k) => k.events(ns, name).await?,
            Self::Local(l) => l.events(ns, name).await?,
        };
        events.sort_by_key(|e| e.last);
        Ok(events)
    }

    /// CaptureTriggers.
    pub async fn triggers(
        &self,
        ns: Option<&str>,
        sel: Option<&str>,
    ) -> Result<Vec<CaptureTrigger>> {
        match self {
            Self::Kube(k) => k.list_any(ns, sel).await,
            Self::Local(l) => l.list("capturetriggers", ns, sel).await,
        }
    }

    /// CaptureSchedules.
    pub async fn schedules(
        &self,
        ns: Option<&str>,
        sel: Option<&str>,
    ) -> Result<Vec<CaptureSchedule>> {
        match self {
            Self::Kube(k) => k.list_any(ns, sel).await,
            Self::Local(l) => l.list("captureschedules", ns, sel).await,
        }
    }

    /// The capture each time it changes, starting with its current state.
    pub fn changes<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxStream<'a, Result<PacketCapture>> {
        match self {
            Self::Kube(k) => k.changes(ns, name),
            // The local API has no watch: poll once a second.
            Self::Local(l) => futures::stream::unfold(true, move |first| async move {
                if !first {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Some((l.get(ns, name).await, false))
            })
            .boxed(),
        }
    }

    /// The gateway that serves this backend's files.
    pub async fn gateway(&self, conn: &ConnArgs) -> Result<Gateway> {
        match self {
            Self::Kube(k) => k.gateway(conn).await,
            Self::Local(l) => Ok(l.gateway(conn)),
        }
    }
}

/// A `{"items": [...]}` body.
#[derive(Debug, serde::Deserialize)]
struct Items<T> {
    #[serde(default = "Vec::new")]
    items: Vec<T>,
}

fn missing(what: &str) -> Error {
    Error::Config(format!("{what} is required"))
}
