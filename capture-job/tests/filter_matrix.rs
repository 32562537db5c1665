//! Every construct of the filter language, IPv4 and IPv6, on real traffic through a veth: each
//! filtered capture, read back with tshark, holds exactly the packets tcpdump selects from an
//! unfiltered capture of the same traffic — none missing, none extra. Needs root.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    process::Command,
    time::Duration,
};

use common::*;
use nightcap_capture_job::{TargetMeta, TargetSpec};
use nightcap_testsupport::{NetnsPod, require_root};

fn send_traffic(pod: &NetnsPod) {
    let h4 = IpAddr::V4(pod.host_ipv4());
    let h6 = IpAddr::V6(pod.host_ipv6());
    for host in [h4, h6] {
        for (i, port) in [53u16, 5353, 8080, 9000].into_iter().enumerate() {
            pod.send_udp(SocketAddr::new(host, port), 3, 20 + i * 7)
                .expect("udp from pod");
        }
        for port in [80u16, 443] {
            // Closed ports: SYN out, RST back. The refusal is the point.
            let _ = pod.tcp_connect(SocketAddr::new(host, port));
        }
    }
    // Traffic into the pod from the host side.
    let s4 = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("host socket");
    for _ in 0..2 {
        s4.send_to(&[7u8; 33], (pod.ipv4(), 7777))
            .expect("udp to pod");
    }
    let s6 = UdpSocket::bind("[::]:0").expect("host socket v6");
    for _ in 0..2 {
        s6.send_to(&[7u8; 44], SocketAddr::new(IpAddr::V6(pod.ipv6()), 7777))
            .expect("udp6 to pod");
    }
    std::thread::sleep(Duration::from_millis(300));
}

/// The tcpdump expression selecting what nightcap's `f` selects: tcpdump's IPv4 `host`/`net`
/// also match ARP packets naming the address; nightcap's match IP packets only (documented).
fn expected_expr(f: &str) -> String {
    let v4_host_or_net =
        (f.starts_with("host ") || f.starts_with("src host ") || f.starts_with("net "))
            && !f.contains(':');
    if v4_host_or_net {
        format!("ip and ({f})")
    } else {
        f.to_owned()
    }
}

#[test]
fn filter_matrix_matches_tcpdump_exactly_v4_and_v6() {
    require_root();
    let pod = NetnsPod::new();
    let net4 = format!("{}/30", {
        let o = pod.host_ipv4().octets();
        Ipv4Addr::new(o[0], o[1], o[2], o[3] & 0xfc)
    });
    let filters: Vec<String> = vec![
        "udp".into(),
        "tcp".into(),
        "icmp".into(),
        "icmp6".into(),
        "ip".into(),
        "ip6".into(),
        "port 53".into(),
        "udp dst port 5353".into(),
        "src port 7777 or dst port 7777".into(),
        "portrange 5000-9000".into(),
        "tcp dst portrange 80-443".into(),
        // nightcap's host/net match IP packets only; tcpdump's also match ARP, so the
        // tcpdump side of these two is asked for `ip and …` (see expected_expr).
        format!("host {}", pod.ipv4()),
        format!("src host {}", pod.host_ipv4()),
        format!("dst host {}", pod.host_ipv6()),
        format!("net {net4}"),
        format!("ip host {}", pod.ipv4()),
        "net fd00::/8".into(),
        format!("ip6 and src net {}/128", pod.ipv6()),
        "not udp".into(),
        "udp and not port 53".into(),
        "(tcp or icmp) and ip6".into(),
        "udp port 53 or tcp dst port 443".into(),
        "! (ip6 || port 53) && udp".into(),
        "src or dst port 8080".into(),
        "tcp dst port 80 or 443".into(),
    ];
    let rt = runtime();
    let _guard = rt.enter();
    let target = TargetSpec::Netns {
        name: pod.name().into(),
        interface: None,
    };
    let all_dir = tempdir("matrix-all");
    let all = start(
        options(None, &all_dir.path().join("spool"), "all"),
        local_store(&all_dir.path().join("out")),
    );
    all.add_target(&target, &TargetMeta::default())
        .expect("attach unfiltered");
    let mut runs = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let dir = tempdir("matrix");
        let cap = start(
            options(Some(f), &dir.path().join("spool"), &format!("f{i}")),
            local_store(&dir.path().join("out")),
        );
        cap.add_target(&target, &TargetMeta::default())
            .unwrap_or_else(|e| panic!("attach {f}: {e}"));
        runs.push((f.clone(), dir, cap));
    }
    std::thread::sleep(Duration::from_millis(300));
    send_traffic(&pod);
    for (_, _, cap) in &runs {
        cap.stop();
    }
    all.stop();
    let all_summary = rt.block_on(all.finish()).expect("unfiltered finishes");
    assert!(all_summary.packets_written > 40, "{all_summary:?}");
    let all_file = pcapng_files(&all_dir.path().join("out"));
    assert_eq!(all_file.len(), 1, "one unfiltered file");

    let mut failures = Vec::new();
    for (f, dir, cap) in runs {
        let summary = rt.block_on(cap.finish()).expect("capture finishes");
        let files = pcapng_files(&dir.path().join("out"));
        let got = files.first().map(|p| tuples(p)).unwrap_or_default();
        let expected_file = dir.path().join("expected.pcap");
        let out = Command::new("tcpdump")
            .arg("-r")
            .arg(&all_file[0])
            .arg("-w")
            .arg(&expected_file)
            .arg(expected_expr(&f))
            .output()
            .expect("tcpdump runs");
        assert!(
            out.status.success(),
            "tcpdump {f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = tuples(&expected_file);
        if got != want {
            failures.push(format!("{f}: nightcap {got:#?}\ntcpdump {want:#?}"));
        }
        assert_eq!(summary.packets_dropped, 0, "{f}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Direction cannot be checked with tcpdump on a file; check it against what was sent.
#[test]
fn direction_filters_select_by_who_sent_the_packet() {
    require_root();
    let pod = NetnsPod::new();
    let rt = runtime();
    let _guard = rt.enter();
    let target = TargetSpec::Netns {
        name: pod.name().into(),
        interface: None,
    };
    let mut caps = Vec::new();
    for f in ["outbound and udp", "inbound and udp"] {
        let dir = tempdir("direction");
        let cap = start(
            options(Some(f), &dir.path().join("spool"), "dir"),
            local_store(&dir.path().join("out")),
        );
        cap.add_target(&target, &TargetMeta::default())
            .expect("attach");
        caps.push((f, dir, cap));
    }
    std::thread::sleep(Duration::from_millis(200));
    send_traffic(&pod);
    let pod_addrs = [pod.ipv4().to_string(), pod.ipv6().to_string()];
    for (f, dir, cap) in caps {
        cap.stop();
        rt.block_on(cap.finish()).expect("finish");
        let files = pcapng_files(&dir.path().join("out"));
        let lines = tshark(&files[0], &["ip.src", "ipv6.src", "udp.dstport"]);
        let from_pod = lines
            .iter()
            .filter(|l| {
                pod_addrs
                    .iter()
                    .any(|a| l.split('\t').take(2).any(|c| c == a))
            })
            .count();
        if f.starts_with("outbound") {
            assert_eq!(
                lines.len(),
                24,
                "{f}: 2 families x 4 ports x 3 packets: {lines:?}"
            );
            assert_eq!(from_pod, lines.len(), "{f}: {lines:?}");
        } else {
            assert_eq!(lines.len(), 4, "{f}: 2 + 2 datagrams to the pod: {lines:?}");
            assert_eq!(from_pod, 0, "{f}: {lines:?}");
        }
    }
}
