//! Capture targets: an interface in the current namespace, a named namespace, the namespace that
//! holds a pod IP (found by scanning namespaces), or the node's interface that carries a pod IP's
//! packets (found by netlink in the process's own namespace, no namespace entered).

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
};

use nightcap_ebpf::{View, hostside, netns};

use crate::{Error, Result};

/// Default interface inside a pod's namespace.
pub const DEFAULT_POD_IFNAME: &str = "eth0";

/// What to capture on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// An interface in the capture process's own namespace.
    Interface(String),
    /// An interface (default `eth0`) in a named namespace (`/var/run/netns/NAME`).
    Netns {
        /// Namespace name.
        name: String,
        /// Interface inside it.
        interface: Option<String>,
    },
    /// The namespace and interface that hold this address (a pod IP), found by scanning
    /// `/var/run/netns/*` and `/proc/*/ns/net` and entered with `setns`.
    PodIp(IpAddr),
    /// The interface of the capture process's own (the node's) namespace that carries this
    /// address's packets: the host side of the pod's veth, the bridge port its MAC is behind,
    /// or the interface holding it (a `hostNetwork` pod); see [`nightcap_ebpf::hostside`].
    /// Directions are recorded as the pod sees them.
    HostSide(IpAddr),
    /// A namespace file found by someone else (e.g. `/proc/PID/ns/net`) and an interface.
    Path {
        /// Namespace file.
        path: PathBuf,
        /// Interface inside it.
        interface: String,
    },
}

/// Who a target is, for the pcapng interface block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetMeta {
    /// Pod namespace and name, when the target is a pod (`if_name` becomes `namespace/pod`).
    pub pod: Option<(String, String)>,
    /// Pod UID.
    pub pod_uid: Option<String>,
}

/// A target resolved to a namespace and an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTarget {
    /// Namespace file (`None`: the capture process's own namespace).
    pub netns: Option<PathBuf>,
    /// Short namespace label for names (`NAME`, `pid:1234`, or `host`).
    pub netns_label: String,
    /// Interface name inside the namespace.
    pub interface: String,
    /// Interface index, when the target was resolved to one (host-side targets).
    pub ifindex: Option<u32>,
    /// Whose point of view directions take: [`View::Peer`] for the node's end of a pod's link.
    pub view: View,
    /// For host-side targets: how the interface was found (`route to IP`, `port of bridge B
    /// for MAC M`, `holds IP`).
    pub found_by: Option<String>,
}

impl ResolvedTarget {
    fn in_netns(netns: Option<PathBuf>, netns_label: String, interface: String) -> Self {
        Self {
            netns,
            netns_label,
            interface,
            ifindex: None,
            view: View::Interface,
            found_by: None,
        }
    }

    /// `netns/interface`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.netns_label, self.interface)
    }

    /// The pcapng interface description: where the packets were read.
    pub fn description(&self) -> String {
        match &self.found_by {
            Some(how) => format!(
                "captured on node interface {} ({how}); directions as the pod sees them",
                self.interface
            ),
            None => format!("{} in netns {}", self.interface, self.netns_label),
        }
    }
}

/// Resolves a target spec.
pub fn resolve(spec: &TargetSpec) -> Result<ResolvedTarget> {
    match spec {
        TargetSpec::Interface(name) => {
            Ok(ResolvedTarget::in_netns(None, "host".into(), name.clone()))
        }
        TargetSpec::Netns { name, interface } => {
            let path = netns::named(name).map_err(|source| Error::Target {
                target: format!("netns {name}"),
                source,
            })?;
            Ok(ResolvedTarget::in_netns(
                Some(path),
                name.clone(),
                interface
                    .clone()
                    .unwrap_or_else(|| DEFAULT_POD_IFNAME.to_owned()),
            ))
        }
        TargetSpec::Path { path, interface } => Ok(ResolvedTarget::in_netns(
            Some(path.clone()),
            label_for(path),
            interface.clone(),
        )),
        TargetSpec::PodIp(ip) => find_by_ip(*ip),
        TargetSpec::HostSide(ip) => host_side(*ip),
    }
}

/// Resolves a pod IP to the node's interface carrying its packets (no namespace entered).
pub fn host_side(ip: IpAddr) -> Result<ResolvedTarget> {
    let found = hostside::find(ip).map_err(|source| Error::Target {
        target: format!("pod IP {ip}"),
        source,
    })?;
    let found_by = match &found.via {
        hostside::Via::Route => format!("route to {ip}"),
        hostside::Via::Bridge { bridge, mac } => format!(
            "port of bridge {bridge} for {ip}'s MAC {}",
            mac.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        ),
        hostside::Via::Local => format!("holds {ip}"),
    };
    Ok(ResolvedTarget {
        netns: None,
        netns_label: "host".into(),
        interface: found.name.clone(),
        ifindex: Some(found.ifindex),
        view: if found.is_peer() {
            View::Peer
        } else {
            View::Interface
        },
        found_by: Some(found_by),
    })
}

fn label_for(path: &Path) -> String {
    let s = path.to_string_lossy();
    if let Some(rest) = s.strip_prefix("/proc/") {
        let pid = rest.split('/').next().unwrap_or(rest);
        return format!("pid:{pid}");
    }
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| s.into_owned())
}

/// Candidate namespace files: named namespaces first, then every process's; one per inode.
/// Also the first file the process was not allowed to look at (a missing capability).
fn candidates() -> (Vec<PathBuf>, Option<(PathBuf, nightcap_ebpf::Error)>) {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut refused = None;
    let mut push = |p: PathBuf| match netns::inode(&p) {
        Ok(ino) => {
            if seen.insert(ino) {
                out.push(p);
            }
        }
        Err(e) => {
            if e.missing_capability().is_some() && refused.is_none() {
                refused = Some((p, e));
            }
        }
    };
    if let Ok(dir) = std::fs::read_dir(netns::NAMED_NETNS_DIR) {
        let mut named: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        named.sort();
        named.into_iter().for_each(&mut push);
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        let mut pids: Vec<u32> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        for pid in pids {
            push(PathBuf::from(format!("/proc/{pid}/ns/net")));
        }
    }
    (out, refused)
}

/// Finds the namespace and interface holding `ip`, scanning `/var/run/netns/*` and
/// `/proc/*/ns/net` (deduplicated by inode). Loopback interfaces are skipped.
pub fn find_by_ip(ip: IpAddr) -> Result<ResolvedTarget> {
    let own = netns::inode(Path::new("/proc/self/ns/net")).ok();
    let mut found = Vec::new();
    // A namespace that cannot be entered (setns) is reported before one that cannot be looked
    // at (/proc/PID/ns/net): without the first, no namespace can be searched at all.
    let (candidates, not_visible) = candidates();
    let mut refused = None;
    for path in candidates {
        let is_own = own.is_some() && netns::inode(&path).ok() == own;
        let ifaces = match netns::run_in(if is_own { None } else { Some(&path) }, netns::interfaces)
        {
            Ok(i) => i,
            Err(e) => {
                // The process exited meanwhile, or a permission is missing (reported when
                // nothing is found).
                if e.missing_capability().is_some() && refused.is_none() {
                    refused = Some((path.clone(), e));
                }
                continue;
            }
        };
        for (name, addrs) in ifaces {
            if name != "lo" && addrs.contains(&ip) {
                found.push(ResolvedTarget::in_netns(
                    if is_own { None } else { Some(path.clone()) },
                    if is_own {
                        "host".into()
                    } else {
                        label_for(&path)
                    },
                    name,
                ));
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(match refused.or(not_visible) {
            // Namespaces it could not look into may hold the address.
            Some((path, source)) => Error::Target {
                target: format!("pod IP {ip} (searching {})", path.display()),
                source,
            },
            None => Error::PodIpNotFound { ip },
        }),
        _ => Err(Error::PodIpAmbiguous {
            ip,
            places: found.iter().map(ResolvedTarget::label).collect(),
        }),
    }
}
