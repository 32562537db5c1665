//! Pod sandboxes: what gives a (non-hostNetwork) pod its network namespace and IPs. Pluggable;
//! [`NetnsSandboxes`] backs each pod with a real `nightcap_testsupport::NetnsPod`.

use std::{fmt::Debug, net::IpAddr, path::PathBuf};

use nightcap_testsupport::NetnsPod;

use crate::error::{Error, Result};

/// Identity of the pod a sandbox is made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (a recreated pod has a new one, and gets a new sandbox).
    pub uid: String,
    /// Node the pod runs on.
    pub node: String,
}

/// A live pod sandbox; removed when dropped.
pub trait Sandbox: Send + Sync + Debug {
    /// Pod IPs, IPv4 first (become `status.podIP`/`podIPs`).
    fn ips(&self) -> Vec<IpAddr>;
    /// The network namespace the pod's processes join, if any.
    fn netns_path(&self) -> Option<PathBuf>;
}

/// Creates sandboxes for pods.
pub trait SandboxProvider: Send + Sync + Debug {
    /// Make the sandbox of one pod.
    fn create(&self, pod: &PodRef) -> Result<Box<dyn Sandbox>>;
}

/// Backs every pod with a real network namespace + veth ([`NetnsPod`], with a pause process).
/// Needs root; pod IPs come from the NetnsPod address pool.
#[derive(Debug, Default, Clone)]
pub struct NetnsSandboxes {
    /// Namespace name prefix (default `ncpod`).
    pub prefix: Option<String>,
}

#[derive(Debug)]
struct NetnsSandbox(NetnsPod);

impl Sandbox for NetnsSandbox {
    fn ips(&self) -> Vec<IpAddr> {
        vec![IpAddr::V4(self.0.ipv4()), IpAddr::V6(self.0.ipv6())]
    }
    fn netns_path(&self) -> Option<PathBuf> {
        Some(self.0.netns_path())
    }
}

impl SandboxProvider for NetnsSandboxes {
    fn create(&self, pod: &PodRef) -> Result<Box<dyn Sandbox>> {
        let mut b = NetnsPod::builder().with_pause();
        if let Some(p) = &self.prefix {
            b = b.prefix(p.clone());
        }
        let netns = b.build().map_err(|e| {
            Error::Config(format!(
                "creating the network namespace of pod {}/{} on {}: {e}",
                pod.namespace, pod.name, pod.node
            ))
        })?;
        Ok(Box::new(NetnsSandbox(netns)))
    }
}
