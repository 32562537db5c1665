//! NetnsPod against the real kernel: namespaces, veth pairs, routing and cleanup. Needs root.

use nightcap_testsupport::{Error, NetnsPod, PodAddresses, require_root};
use std::{
    collections::HashSet,
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, SocketAddr},
    path::Path,
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

/// Starts `tcpdump -i iface -c count filter` and returns once it is capturing.
fn start_tcpdump(iface: &str, filter: &str, count: usize) -> Child {
    let mut child = Command::new("tcpdump")
        .args(["-n", "-l", "-i", iface, "-c", &count.to_string(), filter])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump must be installed (apt install tcpdump, or run .ci/run)");
    let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = stderr.read_line(&mut line).expect("reading tcpdump stderr");
        seen.push_str(&line);
        if line.contains("listening on") {
            break;
        }
        assert!(n > 0, "tcpdump exited before capturing: {seen}");
    }
    child
}

/// Waits for tcpdump to capture its packets (at most 20 s) and returns its stdout lines.
fn tcpdump_lines(mut child: Child) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut out)
        .expect("reading tcpdump stdout");
    out.lines().map(str::to_owned).collect()
}

fn udp_is_seen_on_host_veth(ipv6: bool) {
    require_root();
    let pod = NetnsPod::new();
    let (src, dst): (IpAddr, IpAddr) = if ipv6 {
        (pod.ipv6().into(), pod.host_ipv6().into())
    } else {
        (pod.ipv4().into(), pod.host_ipv4().into())
    };
    let filter = format!("udp and src host {src} and dst port 9999");
    let tcpdump = start_tcpdump(pod.host_veth(), &filter, 5);
    pod.send_udp(SocketAddr::new(dst, 9999), 5, 100)
        .expect("sending UDP from the pod");
    let lines = tcpdump_lines(tcpdump);
    let udp: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("UDP, length 100"))
        .collect();
    assert_eq!(
        udp.len(),
        5,
        "expected 5 datagrams from {src} on {}, tcpdump printed: {lines:#?}",
        pod.host_veth()
    );
}

#[test]
fn udp_from_pod_is_seen_on_host_veth_ipv4() {
    udp_is_seen_on_host_veth(false);
}

#[test]
fn udp_from_pod_is_seen_on_host_veth_ipv6() {
    udp_is_seen_on_host_veth(true);
}

/// Echo server in `server`, client in `client`, over `server`'s address of one family; returns
/// the peer address the server saw.
fn tcp_echo(client: &NetnsPod, server: &NetnsPod, server_ip: IpAddr) -> SocketAddr {
    let listener = server
        .tcp_listener(SocketAddr::new(server_ip, 7000))
        .expect("listener in pod");
    let echo = std::thread::spawn(move || {
        let (mut stream, peer) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).expect("read");
        stream.write_all(&buf).expect("write");
        peer
    });
    let mut stream = client
        .tcp_connect(SocketAddr::new(server_ip, 7000))
        .expect("connect from the other pod");
    stream.write_all(b"hello").expect("write");
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).expect("read echo");
    assert_eq!(&buf, b"hello");
    echo.join().expect("echo thread")
}

#[test]
fn tcp_between_two_pods_ipv4_and_ipv6() {
    require_root();
    let a = NetnsPod::new();
    let b = NetnsPod::new();
    let peer = tcp_echo(&a, &b, b.ipv4().into());
    assert_eq!(peer.ip(), IpAddr::from(a.ipv4()), "no NAT between pods");
    let peer = tcp_echo(&a, &b, b.ipv6().into());
    assert_eq!(peer.ip(), IpAddr::from(a.ipv6()), "no NAT between pods");
}

#[test]
fn pod_has_addresses_loopback_and_default_routes() {
    require_root();
    let pod = NetnsPod::new();
    let addrs = pod
        .run(&["ip", "-o", "addr", "show"])
        .expect("ip addr in pod");
    assert!(
        addrs.contains(&format!("eth0    inet {}/30", pod.ipv4())),
        "{addrs}"
    );
    assert!(
        addrs.contains(&format!("eth0    inet6 {}/64", pod.ipv6())),
        "{addrs}"
    );
    assert!(addrs.contains("lo    inet 127.0.0.1/8"), "{addrs}");
    let routes = pod.run(&["ip", "route"]).expect("ip route in pod");
    assert!(
        routes.contains(&format!("default via {} dev eth0", pod.host_ipv4())),
        "{routes}"
    );
    let routes6 = pod.run(&["ip", "-6", "route"]).expect("ip -6 route in pod");
    assert!(
        routes6.contains(&format!("default via {} dev eth0", pod.host_ipv6())),
        "{routes6}"
    );
    // Loopback works inside the pod.
    let listener = pod
        .tcp_listener("127.0.0.1:7001".parse().expect("addr"))
        .expect("listen on pod loopback");
    pod.tcp_connect("127.0.0.1:7001".parse().expect("addr"))
        .expect("connect over pod loopback");
    drop(listener);
    // The host side exists in the root namespace with the gateway address.
    let host = Command::new("ip")
        .args(["-o", "addr", "show", "dev", pod.host_veth()])
        .output()
        .expect("ip addr on host");
    let host = String::from_utf8_lossy(&host.stdout);
    assert!(host.contains(&pod.host_ipv4().to_string()), "{host}");
    // A failing command is an error that carries stderr.
    match pod.run(&["ip", "link", "show", "no-such-if"]) {
        Err(Error::Command { stderr, .. }) => {
            assert!(stderr.contains("does not exist"), "{stderr}")
        }
        other => panic!("expected Error::Command, got {other:?}"),
    }
}

fn netns_inode_of(link: &Path) -> u64 {
    let target = std::fs::read_link(link).expect("readlink ns/net");
    let target = target.to_string_lossy();
    target
        .trim_start_matches("net:[")
        .trim_end_matches(']')
        .parse()
        .unwrap_or_else(|_| panic!("unexpected ns link {target}"))
}

#[test]
fn pause_process_and_enter_live_in_the_pod_namespace() {
    require_root();
    let pod = NetnsPod::builder()
        .prefix("pause")
        .with_pause()
        .build()
        .expect("pod with pause");
    assert!(pod.name().starts_with("pause-"), "{}", pod.name());
    let inode = pod.netns_inode().expect("netns inode");
    let pid = pod.pause_pid().expect("pause pid");
    // `ip netns exec` replaces itself with `sleep`, so the pid is the sleeper's once it has run.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.starts_with("sleep\0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pause never became sleep: {cmdline:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        netns_inode_of(Path::new(&format!("/proc/{pid}/ns/net"))),
        inode
    );
    let entered = pod
        .enter(|| netns_inode_of(Path::new("/proc/thread-self/ns/net")))
        .expect("enter");
    assert_eq!(entered, inode);
    assert_ne!(
        netns_inode_of(Path::new("/proc/thread-self/ns/net")),
        inode,
        "the calling thread stays in its own namespace"
    );
    pod.delete().expect("delete");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pause process {pid} still exists after delete"
    );
}

#[test]
fn drop_removes_netns_veth_and_pause_even_after_panic() {
    require_root();
    let seen: Mutex<Option<(String, String, u32)>> = Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let pod = NetnsPod::builder().with_pause().build().expect("pod");
        let spawned = pod.spawn(&["sleep", "600"]).expect("spawn in pod");
        *seen.lock().expect("lock") = Some((
            pod.name().to_owned(),
            pod.host_veth().to_owned(),
            pod.pause_pid().expect("pause pid"),
        ));
        assert!(pod.netns_path().exists());
        assert!(Path::new("/sys/class/net").join(pod.host_veth()).exists());
        std::mem::forget(spawned); // a test that forgot its child: the pod still kills it
        panic!("test failure inside the pod's scope");
    });
    assert!(result.is_err(), "the closure panicked");
    let (name, veth, pause) = seen.lock().expect("lock").clone().expect("pod was created");
    assert!(
        !Path::new("/var/run/netns").join(&name).exists(),
        "netns {name} left behind"
    );
    assert!(
        !Path::new("/sys/class/net").join(&veth).exists(),
        "veth {veth} left behind"
    );
    assert!(
        !Path::new(&format!("/proc/{pause}")).exists(),
        "pause {pause} left behind"
    );
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&name));
}

#[test]
fn rescheduled_pod_gets_the_same_addresses() {
    require_root();
    let client = NetnsPod::new();
    let first = NetnsPod::new();
    let addresses = first.addresses();
    let first_name = first.name().to_owned();
    let lease = first
        .delete_keeping_addresses()
        .expect("delete, keep lease");
    assert_eq!(lease.addresses(), addresses);
    let second = NetnsPod::builder()
        .reuse_addresses(lease)
        .build()
        .expect("pod with the same addresses");
    assert_eq!(second.addresses(), addresses);
    assert_ne!(second.name(), first_name);
    let peer = tcp_echo(&client, &second, second.ipv4().into());
    assert_eq!(peer.ip(), IpAddr::from(client.ipv4()));
}

#[test]
fn explicit_addresses_are_used_and_conflicts_rejected() {
    require_root();
    let live = NetnsPod::new();
    match NetnsPod::builder().addresses(live.addresses()).build() {
        Err(Error::AddressInUse { .. }) => {}
        other => panic!("addresses of a live pod must be refused, got {other:?}"),
    }
    // Take a fresh pool slot's addresses, release them, and ask for them explicitly.
    let donor = NetnsPod::new();
    let wanted: PodAddresses = donor.addresses();
    donor.delete().expect("delete donor");
    let pod = NetnsPod::builder()
        .addresses(wanted)
        .build()
        .expect("pod with explicit addresses");
    assert_eq!(pod.ipv4(), wanted.pod_ipv4);
    assert_eq!(pod.ipv6(), wanted.pod_ipv6);
    let peer = tcp_echo(&live, &pod, pod.ipv6().into());
    assert_eq!(peer.ip(), IpAddr::from(live.ipv6()));
    let mut bad = wanted;
    bad.host_ipv4 = bad.pod_ipv4;
    assert!(matches!(
        NetnsPod::builder().addresses(bad).build(),
        Err(Error::InvalidArgument(_))
    ));
}

const REPORT_DIR_ENV: &str = "NIGHTCAP_TS_POD_REPORT_DIR";

/// Creates `n` pods from `n` threads at once and checks they are distinct. When started by
/// `pods_from_parallel_processes_are_unique`, also reports them and waits for the release file
/// so that all processes' pods exist at the same time.
#[test]
fn pods_created_concurrently_are_unique() {
    require_root();
    let pods: Vec<NetnsPod> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(NetnsPod::new)).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("pod thread"))
            .collect()
    });
    let lines: Vec<String> = pods.iter().map(describe).collect();
    assert_unique(&lines);
    if let Some(dir) = std::env::var_os(REPORT_DIR_ENV) {
        let dir = Path::new(&dir);
        let me = std::process::id();
        std::fs::write(dir.join(format!("{me}.tmp")), lines.join("\n")).expect("report");
        std::fs::rename(
            dir.join(format!("{me}.tmp")),
            dir.join(format!("{me}.pods")),
        )
        .expect("publish report");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !dir.join("release").exists() {
            assert!(
                Instant::now() < deadline,
                "never released by the parent test"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn describe(pod: &NetnsPod) -> String {
    format!(
        "{} {} {} {} {} {}",
        pod.name(),
        pod.host_veth(),
        pod.ipv4(),
        pod.ipv6(),
        pod.host_ipv4(),
        pod.host_ipv6()
    )
}

fn assert_unique(lines: &[String]) {
    for column in 0..6 {
        let values: Vec<&str> = lines
            .iter()
            .map(|l| l.split(' ').nth(column).expect("column"))
            .collect();
        let set: HashSet<&str> = values.iter().copied().collect();
        assert_eq!(
            set.len(),
            values.len(),
            "duplicates in column {column}: {values:?}"
        );
    }
}

/// Starts `n` copies of this test binary running `pods_created_concurrently_are_unique` in
/// reporting mode.
fn spawn_reporting_children(n: usize, dir: &Path) -> Vec<Child> {
    let exe = std::env::current_exe().expect("test binary path");
    (0..n)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "pods_created_concurrently_are_unique",
                    "--nocapture",
                ])
                .env(REPORT_DIR_ENV, dir)
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn child test process")
        })
        .collect()
}

/// Waits for `n` reports in `dir` and returns their lines (one per pod).
fn wait_for_reports(n: usize, dir: &Path) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let reports = loop {
        let reports: Vec<_> = std::fs::read_dir(dir)
            .expect("read report dir")
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pods"))
            .map(|e| e.path())
            .collect();
        if reports.len() == n {
            break reports;
        }
        assert!(
            Instant::now() < deadline,
            "only {} reports arrived",
            reports.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    reports
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .expect("read report")
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn netns_exists(line: &str) -> bool {
    let name = line.split(' ').next().expect("name");
    Path::new("/var/run/netns").join(name).exists()
}

fn veth_exists(line: &str) -> bool {
    let veth = line.split(' ').nth(1).expect("veth");
    Path::new("/sys/class/net").join(veth).exists()
}

#[test]
fn pods_from_parallel_processes_are_unique() {
    require_root();
    const PROCESSES: usize = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let children = spawn_reporting_children(PROCESSES, dir.path());
    let lines = wait_for_reports(PROCESSES, dir.path());
    assert_eq!(lines.len(), PROCESSES * 4);
    assert_unique(&lines);
    for line in &lines {
        assert!(
            netns_exists(line),
            "{line}: should exist while its process waits"
        );
    }
    std::fs::write(dir.path().join("release"), b"").expect("release children");
    for mut child in children {
        let status = child.wait().expect("wait child");
        assert!(status.success(), "child test process failed: {status}");
    }
    for line in &lines {
        assert!(
            !netns_exists(line) && !veth_exists(line),
            "{line}: left behind"
        );
    }
}

#[test]
fn pods_of_a_killed_process_are_collected() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut children = spawn_reporting_children(1, dir.path());
    let lines = wait_for_reports(1, dir.path());
    let mut child = children.pop().expect("one child");
    child.kill().expect("SIGKILL the child test process");
    child.wait().expect("reap child");
    // No destructor ran: the pods are still there.
    for line in &lines {
        assert!(
            netns_exists(line) && veth_exists(line),
            "{line}: gone without cleanup?"
        );
    }
    nightcap_testsupport::netns::collect_stale_pods();
    for line in &lines {
        assert!(!netns_exists(line), "{line}: netns not collected");
        assert!(!veth_exists(line), "{line}: veth not collected");
    }
}
