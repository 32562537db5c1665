//! Capture targets: an interface in the current namespace, a named namespace, or the
//! namespace that holds a pod IP (the resolver of DESIGN.md §4).

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
};

use nightcap_ebpf::netns;

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
    /// The namespace and interface that hold this address (a pod IP).
    PodIp(IpAddr),
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
}

impl ResolvedTarget {
    /// `netns/interface`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.netns_label, self.interface)
    }
}

/// Resolves a target spec.
pub fn resolve(spec: &TargetSpec) -> Result<ResolvedTarget> {
    match spec {
        TargetSpec::Interface(name) => Ok(ResolvedTarget {
            netns: None,
            netns_label: "host".into(),
            interface: name.clone(),
        }),
        TargetSpec::Netns { name, interface } => {
            let path = netns::named(name).map_err(|source| Error::Target {
                target: format!("netns {name}"),
                source,
            })?;
            Ok(ResolvedTarget {
                netns: Some(path),
                netns_label: name.clone(),
                interface: interface
                    .clone()
                    .unwrap_or_else(|| DEFAULT_POD_IFNAME.to_owned()),
            })
        }
        TargetSpec::Path { path, interface } => Ok(ResolvedTarget {
            netns: Some(path.clone()),
            netns_label: label_for(path),
            interface: interface.clone(),
        }),
        TargetSpec::PodIp(ip) => find_by_ip(*ip),
    }
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
fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut push = |p: PathBuf| {
        if let Ok(ino) = netns::inode(&p)
            && seen.insert(ino)
        {
            out.push(p);
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
    out
}

/// Finds the namespace and interface holding `ip`, scanning `/var/run/netns/*` and
/// `/proc/*/ns/net` (deduplicated by inode). Loopback interfaces are skipped.
pub fn find_by_ip(ip: IpAddr) -> Result<ResolvedTarget> {
    let own = netns::inode(Path::new("/proc/self/ns/net")).ok();
    let mut found = Vec::new();
    for path in candidates() {
        let is_own = own.is_some() && netns::inode(&path).ok() == own;
        let ifaces = match netns::run_in(if is_own { None } else { Some(&path) }, netns::interfaces)
        {
            Ok(i) => i,
            Err(_) => continue, // the process exited meanwhile, or no permission
        };
        for (name, addrs) in ifaces {
            if name != "lo" && addrs.contains(&ip) {
                found.push(ResolvedTarget {
                    netns: if is_own { None } else { Some(path.clone()) },
                    netns_label: if is_own {
                        "host".into()
                    } else {
                        label_for(&path)
                    },
                    interface: name,
                });
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::PodIpNotFound { ip }),
        _ => Err(Error::PodIpAmbiguous {
            ip,
            places: found.iter().map(ResolvedTarget::label).collect(),
        }),
    }
}
