//! Benchmark: nightcap vs `tcpdump -w`, same interface, same filter, same run.
//!
//! A sendmmsg UDP generator floods from inside a network namespace for 5 s; nightcap
//! (`nightcap-capture`) and tcpdump capture the namespace's eth0 at the same time. Printed per
//! scenario and tool: packets sent / captured / dropped, CPU seconds (user+sys) while capturing,
//! ns of CPU per captured packet, peak RSS, and nightcap/tcpdump ratios. No assertions on time.
//!
//! Run as root: `cargo bench -p nightcap-capture-job --bench capture`.
//! Scenarios: 64-byte packets, all kept; 64-byte packets, 1 in 1000 kept; 1400-byte packets.

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nightcap_testsupport::NetnsPod;

const BIN: &str = env!("CARGO_BIN_EXE_nightcap-capture");
const FLOOD: Duration = Duration::from_secs(5);
const BATCH: usize = 64;

/// Sends UDP from inside the pod with sendmmsg, as fast as it can, for FLOOD. Every
/// `selective`-th datagram goes to port 7001, the rest to 7000 (selective = 1: all to 7001).
fn generate(pod: &NetnsPod, dst: SocketAddr, payload: usize, selective: u64) -> u64 {
    let sock = pod
        .udp_socket(SocketAddr::new(
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            0,
        ))
        .expect("generator socket");
    let data = vec![0x5au8; payload];
    let IpAddr::V4(ip) = dst.ip() else {
        panic!("IPv4 destination")
    };
    let addr = |port: u16| {
        // SAFETY: sockaddr_in is plain data.
        let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        a.sin_family = libc::AF_INET as u16;
        a.sin_port = u16::to_be(port);
        a.sin_addr.s_addr = u32::from_ne_bytes(ip.octets());
        a
    };
    let mut addrs = [addr(7000), addr(7001)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: data.len(),
    };
    // SAFETY: plain data.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    let mut sent = 0u64;
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < FLOOD {
        for h in msgs.iter_mut() {
            n += 1;
            let which = usize::from(n.is_multiple_of(selective));
            h.msg_hdr.msg_name = (&mut addrs[which] as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
            h.msg_hdr.msg_iov = &mut iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: msgs points to BATCH valid headers whose buffers outlive the call.
        let rc = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
        if rc > 0 {
            sent += rc as u64;
        }
    }
    sent
}

/// CPU time (user+sys) of all live threads of a process, in seconds, from schedstat (ns
/// resolution; /proc/PID/stat counts 10 ms ticks).
fn cpu_seconds(pid: u32) -> f64 {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    ns as f64 / 1e9
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

#[derive(Debug, Default)]
struct Row {
    captured: u64,
    dropped: u64,
    cpu: f64,
    rss: f64,
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

fn scenario(pod: &NetnsPod, label: &str, filter: &str, payload: usize, selective: u64, dir: &Path) {
    let spool = dir.join("spool");
    let out = dir.join("out");
    let pcap = dir.join("tcpdump.pcap");
    let nightcap = Command::new(BIN)
        .args(["--netns", pod.name(), "--filter", filter])
        .args([
            "--rotate-bytes",
            "100GiB",
            "--spool-max-bytes",
            "100GiB",
            "--rotate-seconds",
            "3600",
        ])
        .args(["--ring-block-size", "1MiB", "--ring-blocks", "16"])
        .arg("--spool-dir")
        .arg(&spool)
        .args(["--output", &format!("file://{}", out.display())])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nightcap-capture");
    let tcpdump = pod
        .command("tcpdump")
        .args(["-i", "eth0", "-n", "-B", "16384", "-s", "262144", "-w"])
        .arg(&pcap)
        .arg(filter)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tcpdump");
    std::thread::sleep(Duration::from_secs(2));
    // Sinks on the host so the flood is not answered with ICMP port unreachable.
    let _sinks: Vec<std::net::UdpSocket> = [7000, 7001]
        .into_iter()
        .map(|p| std::net::UdpSocket::bind((pod.host_ipv4(), p)).expect("sink socket"))
        .collect();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let (n0, t0) = (cpu_seconds(nightcap.id()), cpu_seconds(tcpdump.id()));
    let sent = generate(
        pod,
        SocketAddr::new(IpAddr::V4(pod.host_ipv4()), 7000),
        payload,
        selective,
    );
    std::thread::sleep(Duration::from_secs(1));
    let mut nc = Row {
        cpu: cpu_seconds(nightcap.id()) - n0,
        rss: peak_rss_mib(nightcap.id()),
        ..Row::default()
    };
    let mut td = Row {
        cpu: cpu_seconds(tcpdump.id()) - t0,
        rss: peak_rss_mib(tcpdump.id()),
        ..Row::default()
    };
    signal(&tcpdump, libc::SIGINT);
    signal(&nightcap, libc::SIGTERM);
    let t_out = tcpdump.wait_with_output().expect("tcpdump exits");
    let n_out = nightcap.wait_with_output().expect("nightcap exits");
    let json: serde_json::Value =
        serde_json::from_slice(&n_out.stdout).unwrap_or(serde_json::Value::Null);
    nc.captured = json["packets_written"].as_u64().unwrap_or(0);
    nc.dropped = json["packets_dropped"].as_u64().unwrap_or(0);
    let stderr = String::from_utf8_lossy(&t_out.stderr);
    let num = |suffix: &str| {
        stderr
            .lines()
            .find(|l| l.ends_with(suffix))
            .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    td.captured = num("packets captured");
    td.dropped = num("packets dropped by kernel");
    let expected = sent / selective;
    println!(
        "\n## {label}: filter '{filter}', {}-byte frames, sent {sent} in 5 s ({:.2} M pps), \
         expected matches {expected}; load average before: {}",
        payload + 42,
        sent as f64 / 5e6,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "| tool | captured | dropped | lost vs expected | CPU s (user+sys) | ns CPU / captured pkt | peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, r) in [("nightcap", &nc), ("tcpdump -w", &td)] {
        let lost = expected.saturating_sub(r.captured);
        println!(
            "| {name} | {} | {} | {lost} ({:.2}%) | {:.2} | {:.0} | {:.1} |",
            r.captured,
            r.dropped,
            100.0 * lost as f64 / expected.max(1) as f64,
            r.cpu,
            1e9 * r.cpu / r.captured.max(1) as f64,
            r.rss
        );
    }
    println!(
        "ratio nightcap/tcpdump: CPU {:.2}, CPU per captured packet {:.2}",
        nc.cpu / td.cpu.max(1e-9),
        (nc.cpu / nc.captured.max(1) as f64) / (td.cpu / td.captured.max(1) as f64).max(1e-18)
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    if !nightcap_testsupport::util::is_root() {
        eprintln!("benchmark skipped: needs root (network namespaces, AF_PACKET)");
        return;
    }
    // cargo bench passes --bench; `cargo test --benches` passes nothing we use. Run only as a
    // benchmark so test runs stay short.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let pod = NetnsPod::new();
    let base = std::env::var_os("NIGHTCAP_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("nightcap-bench-{}", std::process::id()));
    for (label, filter, payload, selective) in [
        ("64 B, all match", "udp", 22, 1),
        ("64 B, 1 in 1000 match", "udp dst port 7001", 22, 1000),
        ("1400 B, all match", "udp", 1358, 1),
    ] {
        let dir = base.join(label.replace([' ', ','], "_"));
        std::fs::create_dir_all(&dir).expect("bench dir");
        scenario(&pod, label, filter, payload, selective, &dir);
    }
    let _ = std::fs::remove_dir_all(&base);
}
