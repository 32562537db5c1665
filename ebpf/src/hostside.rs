//! The host-side interface of a pod IP, found in the calling thread's (the node's) network
//! namespace with `NETLINK_ROUTE` requests only: no `setns`, no `/proc`, no capability.
//!
//! 1. The route the node would use for the address (`RTM_GETROUTE`, what `ip route get IP`
//!    prints). A route without a gateway out of a device that is not a bridge names the pod's
//!    host-side device (a veth of a ptp, Calico, kindnet or AWS VPC CNI style network).
//! 2. The route's device is a bridge (`cni0`, `docker0`): the node's neighbour entry of the
//!    address on that bridge gives the pod's MAC address (`RTM_GETNEIGH`), and the bridge's
//!    forwarding database (`RTM_GETNEIGH`, `AF_BRIDGE`, `NDA_MASTER` = the bridge) the port
//!    that MAC was learnt on. The neighbour entry exists once the node has exchanged a packet
//!    with the pod; until then the lookup fails with [`HostSideError::NoNeighbour`], which is
//!    worth retrying ([`HostSideError::retryable`]).
//! 3. The address is one of the node's own (`RTN_LOCAL`: a `hostNetwork` pod): the interface
//!    holding it (`RTM_GETADDR`).
//!
//! Nothing here changes kernel state: the requests only read.

use std::{fmt, net::IpAddr};

use crate::{Error, Result, netlink::Netlink};

/// How the host-side interface was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The route to the address leaves through this device.
    Route,
    /// The route leaves through this bridge; the interface is the bridge port the address's MAC
    /// was learnt on.
    Bridge {
        /// The bridge's name.
        bridge: String,
        /// The pod's MAC address.
        mac: [u8; 6],
    },
    /// The address is the node's own, held by this interface.
    Local,
}

/// The node's interface that carries a pod's packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInterface {
    /// Interface index in the node's namespace.
    pub ifindex: u32,
    /// Interface name.
    pub name: String,
    /// How it was found.
    pub via: Via,
}

impl HostInterface {
    /// Whether the interface is the far end of the pod's link (a veth peer or bridge port), so
    /// what it receives the pod sent. False for [`Via::Local`]: the pod shares the node's
    /// interface.
    pub fn is_peer(&self) -> bool {
        !matches!(self.via, Via::Local)
    }
}

/// Which step found nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostSideError {
    /// No route to the address at all.
    #[error(
        "no route to {ip} in the node's network namespace (route lookup: {reason}); check the \
         pod runs on this node"
    )]
    NoRoute {
        /// The address.
        ip: IpAddr,
        /// The kernel's answer.
        reason: String,
    },
    /// The route goes through a gateway: the address is not on a device of this node.
    #[error(
        "the route to {ip} goes through gateway {gateway} on {dev}, so the pod is not behind a \
         device of this node; if it runs here, the CNI does not route pod IPs to a per-pod \
         device: use --capture-attach=netns"
    )]
    Gateway {
        /// The address.
        ip: IpAddr,
        /// The gateway.
        gateway: IpAddr,
        /// The route's device.
        dev: String,
    },
    /// The route leaves through a bridge, but the node has no neighbour entry for the address
    /// on it yet (it has not exchanged a packet with the pod).
    #[error(
        "{ip} is behind bridge {bridge}, and the node has no neighbour entry for it there yet \
         (no packet between node and pod so far); retried"
    )]
    NoNeighbour {
        /// The address.
        ip: IpAddr,
        /// The bridge.
        bridge: String,
    },
    /// The bridge does not know which port the pod's MAC is behind.
    #[error(
        "{ip} has MAC {mac} on bridge {bridge}, but the bridge's forwarding database has no \
         port for that MAC (entry aged out or not learnt yet); retried"
    )]
    NoFdbEntry {
        /// The address.
        ip: IpAddr,
        /// The MAC, `aa:bb:…`.
        mac: String,
        /// The bridge.
        bridge: String,
    },
    /// The address is the node's own, but no interface lists it.
    #[error("{ip} is a local address of the node, but no interface holds it")]
    NoLocalInterface {
        /// The address.
        ip: IpAddr,
    },
    /// The route is of a kind no interface carries (unreachable, blackhole, …).
    #[error("the route to {ip} is of type {kind} (not a device route); check the pod's IP")]
    NotADevice {
        /// The address.
        ip: IpAddr,
        /// `rtm_type`.
        kind: u8,
    },
}

impl HostSideError {
    /// Whether the same lookup may succeed later without anything changing in nightcap (the
    /// node learns the pod's MAC with its first packets).
    pub fn retryable(&self) -> bool {
        matches!(self, Self::NoNeighbour { .. } | Self::NoFdbEntry { .. })
    }
}

struct Mac([u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// The node's interface carrying `ip`'s packets, looked up in the calling thread's network
/// namespace (see the module documentation for the steps).
pub fn find(ip: IpAddr) -> Result<HostInterface> {
    let nl = Netlink::open()?;
    let route = match nl.route_get(ip)? {
        Ok(r) => r,
        Err(reason) => return Err(HostSideError::NoRoute { ip, reason }.into()),
    };
    const RTN_UNICAST: u8 = 1;
    const RTN_LOCAL: u8 = 2;
    match route.kind {
        RTN_LOCAL => {
            let ifindex = nl
                .address_holder(ip)?
                .ok_or(HostSideError::NoLocalInterface { ip })?;
            let link = nl.link(ifindex)?;
            return Ok(HostInterface {
                ifindex,
                name: link.name,
                via: Via::Local,
            });
        }
        RTN_UNICAST => {}
        kind => return Err(HostSideError::NotADevice { ip, kind }.into()),
    }
    let Some(oif) = route.oif else {
        return Err(HostSideError::NoRoute {
            ip,
            reason: "the route names no device".into(),
        }
        .into());
    };
    let link = nl.link(oif)?;
    if let Some(gateway) = route.gateway {
        return Err(HostSideError::Gateway {
            ip,
            gateway,
            dev: link.name,
        }
        .into());
    }
    if link.kind.as_deref() != Some("bridge") {
        return Ok(HostInterface {
            ifindex: oif,
            name: link.name,
            via: Via::Route,
        });
    }
    let bridge = link.name;
    let Some(mac) = nl.neighbour(ip, oif)? else {
        return Err(HostSideError::NoNeighbour { ip, bridge }.into());
    };
    let Some(port) = nl.fdb_port(oif, mac)? else {
        return Err(HostSideError::NoFdbEntry {
            ip,
            mac: Mac(mac).to_string(),
            bridge,
        }
        .into());
    };
    let port_link = nl.link(port)?;
    Ok(HostInterface {
        ifindex: port,
        name: port_link.name,
        via: Via::Bridge { bridge, mac },
    })
}

impl From<HostSideError> for Error {
    fn from(e: HostSideError) -> Self {
        Self::HostSide(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_which_step_found_nothing() {
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        let no_neigh = HostSideError::NoNeighbour {
            ip,
            bridge: "cni0".into(),
        };
        assert!(no_neigh.retryable());
        assert!(
            no_neigh.to_string().contains("no neighbour entry"),
            "{no_neigh}"
        );
        let fdb = HostSideError::NoFdbEntry {
            ip,
            mac: Mac([2, 0, 0, 0, 0, 0xab]).to_string(),
            bridge: "cni0".into(),
        };
        assert!(fdb.retryable());
        assert!(fdb.to_string().contains("02:00:00:00:00:ab"), "{fdb}");
        let gw = HostSideError::Gateway {
            ip,
            gateway: "10.0.0.1".parse().expect("gw"),
            dev: "eth0".into(),
        };
        assert!(!gw.retryable());
        assert!(gw.to_string().contains("--capture-attach=netns"), "{gw}");
    }
}
