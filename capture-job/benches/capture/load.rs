//! The bench's load and its measurements: the UDP generator inside the pod's namespace, and the
//! CPU and memory of the capturing processes as the kernel accounts them.

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd,
    process::Child,
    time::{Duration, Instant},
};

use nightcap_testsupport::NetnsPod;

/// Flood length: 5 s, or `NIGHTCAP_BENCH_SECONDS` (e.g. 40 for a >10 GB capture at 1400 B).
pub(crate) fn flood_len() -> Duration {
    let secs = std::env::var("NIGHTCAP_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(5);
    Duration::from_secs(secs.max(1))
}
const BATCH: usize = 64;

/// Generator threads: 1, or `NIGHTCAP_BENCH_SENDERS` (each with its own sockets; with 2 the
/// senders take both cores and the capture competes with them for CPU).
pub(crate) fn senders() -> usize {
    std::env::var("NIGHTCAP_BENCH_SENDERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1)
}

/// Packets per second each sender thread paces itself to (`NIGHTCAP_BENCH_PPS` / senders), or
/// None: as fast as it can.
pub(crate) fn paced_rate() -> Option<f64> {
    std::env::var("NIGHTCAP_BENCH_PPS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|r| *r > 0.0)
        .map(|r| r / senders() as f64)
}

/// Sends UDP from inside the pod with sendmmsg, as fast as it can, for [`flood_len`]. Every
/// `selective`-th datagram goes to port 7001, the rest to 7000 (selective = 1: all to 7001).
///
/// Each port has its own connected socket (no per-packet route lookup), and the pod's neighbour
/// entry for `dst` carries a MAC address no interface has ([`misdirect_host`]): the host's veth
/// receives every frame as PACKET_OTHERHOST and drops it at IP input, so the generator's core
/// spends its time sending (and on the capture's copy), not on a UDP receive path.
/// Returns (datagrams sent, of which matching).
pub(crate) fn generate(pod: &NetnsPod, dst: IpAddr, payload: usize, selective: u64) -> (u64, u64) {
    let connect = |port: u16| {
        let sock = pod
            .udp_socket(SocketAddr::new(
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                0,
            ))
            .expect("generator socket");
        sock.connect(SocketAddr::new(dst, port))
            .expect("connect generator socket");
        sock
    };
    let (other, matching) = (connect(7000), connect(7001));
    let data = vec![0x5au8; payload];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: data.len(),
    };
    // SAFETY: plain data.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for h in msgs.iter_mut() {
        h.msg_hdr.msg_iov = &mut iov;
        h.msg_hdr.msg_iovlen = 1;
    }
    let (mut sent, mut matched) = (0u64, 0u64);
    let started = Instant::now();
    let flood = flood_len();
    let rate = paced_rate();
    while started.elapsed() < flood {
        if let Some(rate) = rate {
            // Ahead of the schedule: wait for it.
            let due = Duration::from_secs_f64(sent as f64 / rate);
            if let Some(early) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(early);
            }
        }
        // The next `run` datagrams do not match; the one after them does.
        let run = (selective - 1 - sent % selective) as usize;
        let (sock, count) = if run == 0 {
            (&matching, if selective == 1 { BATCH } else { 1 })
        } else {
            (&other, run.min(BATCH))
        };
        // SAFETY: msgs holds BATCH valid headers whose buffers outlive the call; count <= BATCH.
        let rc = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), count as u32, 0) };
        if rc > 0 {
            sent += rc as u64;
            if std::ptr::eq(sock, &matching) {
                matched += rc as u64;
            }
        }
    }
    (sent, matched)
}

/// Points the pod's neighbour entry for its gateway (the host end of the veth) at a MAC address
/// no interface has, so frames sent to the host leave the pod's eth0 (where both tools capture)
/// and are dropped on arrival. Only the benchmark's own pod is changed.
pub(crate) fn misdirect_host(pod: &NetnsPod) {
    pod.run(&[
        "ip",
        "neigh",
        "replace",
        &pod.host_ipv4().to_string(),
        "lladdr",
        "02:00:5e:00:53:01",
        "dev",
        pod.pod_ifname(),
        "nud",
        "permanent",
    ])
    .expect("static neighbour entry in the benchmark pod");
}

/// CPU time (user+sys) of all live threads of a process, in seconds, from schedstat (ns
/// resolution; /proc/PID/stat counts 10 ms ticks).
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
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

pub(crate) fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// User + system CPU seconds of the children reaped so far.
pub(crate) fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

pub(crate) fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}
