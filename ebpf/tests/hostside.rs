//! Finding the node's interface of a pod IP with real routes, a real bridge and real neighbour
//! and forwarding tables; capturing on it with the peer view. Needs root.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Command,
    time::{Duration, Instant},
};

use nightcap_api::filter::compile_expression;
use nightcap_ebpf::{
    Error, Filter, HostSideError, PacketRing, RingConfig, View,
    hostside::{self, Via},
    netns,
};
use nightcap_testsupport::{NetnsPod, require_root, util::unique_name};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn host_side_err(e: Error) -> HostSideError {
    match e {
        Error::HostSide(h) => h,
        other => panic!("expected a host-side lookup error, got {other}"),
    }
}

/// A bridge with two veth ports, each into its own namespace (a cni0-style node), all removed
/// on drop.
struct BridgeNode {
    bridge: String,
    ports: Vec<String>,
    namespaces: Vec<String>,
    pod_ips: Vec<Ipv4Addr>,
}

impl BridgeNode {
    fn new() -> Self {
        let pid = std::process::id();
        let tag = format!("{:05x}", (pid ^ rand_u16()) & 0xfffff);
        // 10.207.0.0/16 is not used by the harness's pods (10.200.0.0/16); the third octet
        // keeps parallel test processes apart.
        let octet = (pid % 250) as u8 + 1;
        let mut node = Self {
            bridge: format!("ncbr{tag}"),
            ports: Vec::new(),
            namespaces: Vec::new(),
            pod_ips: Vec::new(),
        };
        ip(&["link", "add", &node.bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("10.207.{octet}.1/24"),
            "dev",
            &node.bridge,
        ]);
        ip(&["link", "set", &node.bridge, "up"]);
        for i in 0..2u8 {
            let ns = unique_name("ncbrpod");
            let port = format!("ncbp{tag}{i}");
            ip(&["netns", "add", &ns]);
            node.namespaces.push(ns.clone());
            ip(&[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            node.ports.push(port.clone());
            ip(&["link", "set", &port, "master", &node.bridge]);
            ip(&["link", "set", &port, "up"]);
            let pod_ip = Ipv4Addr::new(10, 207, octet, 2 + i);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{pod_ip}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            node.pod_ips.push(pod_ip);
        }
        node
    }

    /// Sends a datagram from the node to `pod`, so the node resolves its MAC (neighbour
    /// entry) and the bridge learns the port behind it from the pod's ARP reply (forwarding
    /// database); both happen asynchronously, so callers look up until they find it.
    fn send_to(&self, pod: usize) {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("socket");
        socket
            .send_to(b"hello", SocketAddr::new(IpAddr::V4(self.pod_ips[pod]), 9))
            .expect("send to the pod");
    }
}

impl Drop for BridgeNode {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

fn rand_u16() -> u32 {
    u32::from(
        std::time::UNIX_EPOCH
            .elapsed()
            .map_or(0, |d| d.subsec_nanos()) as u16,
    )
}

#[test]
fn a_routed_pod_ip_is_its_host_side_veth() {
    require_root();
    let pod = NetnsPod::new();
    for addr in [IpAddr::V4(pod.ipv4()), IpAddr::V6(pod.ipv6())] {
        let found = hostside::find(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
        assert_eq!(found.name, pod.host_veth(), "{addr}");
        assert_eq!(found.via, Via::Route);
        assert!(found.is_peer());
    }
}

#[test]
fn a_local_address_is_the_interface_holding_it() {
    require_root();
    let pod = NetnsPod::new();
    // The node's side of the pod's veth holds 10.200.x.1: what a hostNetwork pod's IP is.
    let found = hostside::find(IpAddr::V4(pod.host_ipv4())).expect("local address");
    assert_eq!(found.name, pod.host_veth());
    assert_eq!(found.via, Via::Local);
    assert!(
        !found.is_peer(),
        "a hostNetwork pod shares the node's interface"
    );
}

#[test]
fn no_route_and_gateway_routes_say_so() {
    require_root();
    let pod = NetnsPod::new();
    // Inside the pod, everything but its /30 goes through the gateway on eth0.
    let err = netns::run_in(Some(&pod.netns_path()), || {
        hostside::find("203.0.113.7".parse().expect("ip"))
    })
    .expect_err("behind a gateway");
    let err = host_side_err(err);
    assert!(
        matches!(&err, HostSideError::Gateway { dev, .. } if dev == "eth0"),
        "{err}"
    );
    assert!(!err.retryable());
    // A namespace with no route at all.
    let empty = unique_name("ncnoroute");
    ip(&["netns", "add", &empty]);
    let path = netns::named(&empty).expect("named netns");
    let res = netns::run_in(Some(&path), || {
        hostside::find("10.200.0.2".parse().expect("ip"))
    });
    let _ = Command::new("ip").args(["netns", "del", &empty]).status();
    let err = host_side_err(res.expect_err("no route"));
    assert!(matches!(err, HostSideError::NoRoute { .. }), "{err}");
    assert!(
        err.to_string().starts_with("no route to 10.200.0.2"),
        "{err}"
    );
}

#[test]
fn a_bridged_pod_ip_is_the_bridge_port_of_its_mac() {
    require_root();
    let node = BridgeNode::new();
    // Nothing exchanged yet: no neighbour entry, and the error says it is worth retrying.
    let err = host_side_err(
        hostside::find(IpAddr::V4(node.pod_ips[0])).expect_err("no neighbour entry yet"),
    );
    assert!(
        matches!(&err, HostSideError::NoNeighbour { bridge, .. } if *bridge == node.bridge),
        "{err}"
    );
    assert!(err.retryable());
    assert!(
        err.to_string().contains("no neighbour entry"),
        "the message names the step: {err}"
    );
    for pod in [1, 0] {
        node.send_to(pod);
        let deadline = Instant::now() + Duration::from_secs(5);
        let found = loop {
            match hostside::find(IpAddr::V4(node.pod_ips[pod])) {
                Ok(found) => break found,
                Err(Error::HostSide(e)) if e.retryable() && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("pod {pod}: {e}"),
            }
        };
        assert_eq!(found.name, node.ports[pod], "pod {pod}");
        match &found.via {
            Via::Bridge { bridge, .. } => assert_eq!(*bridge, node.bridge),
            other => panic!("found by {other:?}"),
        }
        assert!(found.is_peer());
    }
}

/// On the node's side of the veth the pod's packets arrive as received; with the peer view
/// they are the pod's outbound packets, for the `outbound` filter atom and for the ring.
#[test]
fn the_peer_view_sees_directions_as_the_pod_does() {
    require_root();
    let pod = NetnsPod::new();
    let found = hostside::find(IpAddr::V4(pod.ipv4())).expect("host side");
    let table = compile_expression("outbound and udp dst port 5454").expect("filter");
    let mut filter = Filter::load_for(&table, 128, View::Peer).expect("load");
    assert_eq!(filter.view(), View::Peer);
    let mut ring = PacketRing::open_index(
        found.ifindex,
        &found.name,
        &mut filter,
        RingConfig {
            block_size: 1 << 16,
            block_count: 4,
            block_timeout_ms: 10,
        },
    )
    .expect("ring on the host side");
    assert_eq!(ring.view(), View::Peer);
    let to_host = SocketAddr::new(IpAddr::V4(pod.host_ipv4()), 5454);
    pod.send_udp(to_host, 7, 40).expect("pod sends");
    // Sent by the node to the pod: inbound for the pod, so the filter drops them.
    let from_host = std::net::UdpSocket::bind("0.0.0.0:0").expect("socket");
    for _ in 0..5 {
        from_host
            .send_to(&[0u8; 40], SocketAddr::new(IpAddr::V4(pod.ipv4()), 5454))
            .expect("node sends");
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 7 && Instant::now() < deadline {
        ring.drain(64, |p| got.push(p.outbound));
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    ring.drain(64, |p| got.push(p.outbound));
    assert_eq!(got, vec![true; 7], "the pod's 7 packets, marked outbound");
    assert_eq!(filter.counters().expect("counters").matched, 7);
}
