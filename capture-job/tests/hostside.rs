//! Capturing a pod on the node's side of its veth (`TargetSpec::HostSide`): the same packets as
//! inside the pod, with the pod's directions in the pcapng files and for the `outbound` atom.
//! Real traffic through a veth; files read back with tshark. Needs root.

mod common;

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use common::*;
use nightcap_capture_job::{TargetMeta, TargetSpec};
use nightcap_testsupport::{NetnsPod, require_root};

fn meta(pod: &str) -> TargetMeta {
    TargetMeta {
        pod: Some(("team-a".into(), pod.into())),
        pod_uid: Some(format!("uid-{pod}")),
    }
}

#[test]
fn host_side_capture_records_the_pods_directions() {
    require_root();
    let pod = NetnsPod::new();
    let rt = runtime();
    let _g = rt.enter();
    let dir = tempdir("hostside");
    let cap = start(
        options(
            Some("udp port 6011 or (outbound and udp port 6012)"),
            &dir.path().join("spool"),
            "hostside",
        ),
        local_store(&dir.path().join("out")),
    );
    // The same pod twice: from the node (no namespace entered) and inside it, for comparison.
    cap.add_target(
        &TargetSpec::HostSide(IpAddr::V4(pod.ipv4())),
        &meta("web-0"),
    )
    .expect("attach on the host side");
    cap.add_target(
        &TargetSpec::Netns {
            name: pod.name().into(),
            interface: None,
        },
        &meta("web-0-inside"),
    )
    .expect("attach inside");
    let to_host = |port| SocketAddr::new(IpAddr::V4(pod.host_ipv4()), port);
    let to_pod = |port| SocketAddr::new(IpAddr::V4(pod.ipv4()), port);
    pod.send_udp(to_host(6011), 4, 20).expect("pod sends");
    pod.send_udp(to_host(6012), 2, 20)
        .expect("pod sends (outbound filter)");
    let node = UdpSocket::bind("0.0.0.0:0").expect("socket");
    for _ in 0..3 {
        node.send_to(&[0u8; 20], to_pod(6011)).expect("node sends");
    }
    for _ in 0..5 {
        node.send_to(&[0u8; 20], to_pod(6012))
            .expect("node sends (inbound: filtered out)");
    }
    std::thread::sleep(Duration::from_millis(300));
    cap.stop();
    let s = rt.block_on(cap.finish()).expect("finish");
    assert_eq!(s.packets_written, 2 * (4 + 2 + 3), "{s:?}");
    let files = pcapng_files(&dir.path().join("out"));
    assert_eq!(files.len(), 1);
    let lines = tshark(
        &files[0],
        &[
            "frame.interface_name",
            "frame.packet_flags_direction",
            "udp.dstport",
            "frame.interface_description",
        ],
    );
    let count = |name: &str, direction: &str, port: &str| {
        lines
            .iter()
            .filter(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                f.len() >= 3 && f[0] == name && f[1] == direction && f[2] == port
            })
            .count()
    };
    // pcapng epb_flags direction: 1 inbound, 2 outbound (tshark prints the number).
    for name in ["team-a/web-0", "team-a/web-0-inside"] {
        assert_eq!(count(name, "0x00000002", "6011"), 4, "{name}: {lines:#?}");
        assert_eq!(count(name, "0x00000001", "6011"), 3, "{name}: {lines:#?}");
        assert_eq!(count(name, "0x00000002", "6012"), 2, "{name}: {lines:#?}");
    }
    let host_desc = lines
        .iter()
        .find(|l| l.starts_with("team-a/web-0\t"))
        .and_then(|l| l.split('\t').nth(3))
        .expect("description");
    assert!(
        host_desc.contains(pod.host_veth()) && host_desc.contains("route to"),
        "the description names the node interface: {host_desc}"
    );
}
