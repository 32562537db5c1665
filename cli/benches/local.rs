//! `nightcap local`: from an alert to the first packet on disk, and the memory of an idle
//! instance.
//!
//! 1. Alert → first packet: 50 network-namespace "pods", each with UDP port 53 traffic (one
//!    datagram per millisecond) from the moment before its alert; for each, one Alertmanager
//!    notification naming it (a new target every time) is POSTed to the webhook, and the time
//!    until the capture's spool file holds its first Enhanced Packet Block is measured. Stages
//!    from the JSON logs of `nightcap local` and of the capture process: rule engine and state
//!    write (POST → "Created capture"), planner (→ "Started a capture process"), process start
//!    and eBPF load and attach (→ "Capturing on target"), first packet written (→ EPB on disk).
//!    The state write alone is timed on a State of its own (SQLite, synchronous=FULL).
//! 2. Idle memory: `nightcap local` with 10 CaptureTriggers and 100 finished captures in its
//!    state, its VmRSS after it settled.
//!
//! Needs root. `cargo bench -p nightcap --bench local`. No assertion on time: numbers only.

use std::{
    collections::HashSet,
    net::UdpSocket,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use nightcap_testsupport::{NetnsPod, require_root, util::free_tcp_port};
use serde_json::Value;

const PODS: usize = 50;

fn config(dir: &Path, pods: &[NetnsPod], hook: u16, gateway: u16, triggers: usize) -> String {
    let mut t = String::new();
    for (i, p) in pods.iter().enumerate() {
        t += &format!(
            "  - {{name: pod-{i}, namespace: bench, netns: {}, labels: {{app: app-{i}}}}}\n",
            p.name()
        );
    }
    let mut tr = String::new();
    for i in 0..triggers {
        tr += &format!(
            r#"  - apiVersion: nightcap.dev/v1alpha1
    kind: CaptureTrigger
    metadata: {{name: t{i}, namespace: bench}}
    spec:
      match: {{labels: {{alertname: Bench{i}}}}}
      template:
        spec:
          selector: {{matchLabels: {{app: "{{{{labels.app}}}}"}}}}
          expression: udp port 53
          duration: 20s
"#
        );
    }
    if t.is_empty() {
        t = " []\n".into();
    } else {
        t.insert(0, '\n');
    }
    format!(
        "output: file://{out}\nnode: bench\ntargets:{t}webhook: {{listen: 127.0.0.1:{hook}, bearerTokenFile: {tok}}}\n\
         limits: {{maxConcurrentPerNamespace: null, maxConcurrentCluster: null}}\n\
         gateway: {{listen: 127.0.0.1:{gateway}, tokens: [{{user: bench, token: bench-token-0123456789, namespaces: [bench]}}]}}\n\
         triggers:\n{tr}",
        out = dir.join("files").display(),
        tok = dir.join("token").display(),
    )
}

fn spawn(dir: &Path, log: &str) -> Child {
    let log = std::fs::File::create(dir.join(log)).expect("log");
    Command::new(env!("CARGO_BIN_EXE_nightcap"))
        .args(["local", "--config"])
        .arg(dir.join("local.yaml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("NIGHTCAP_LOG_JSON", "true")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("nightcap local")
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nightcap local did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn post(port: u16, token: &str, app: &str, n: usize) {
    let body = serde_json::json!({
        "version": "4", "status": "firing", "receiver": "nightcap",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://am", "groupKey": format!("{{}}:{n}"), "truncatedAlerts": 0,
        "alerts": [{"status": "firing",
            "labels": {"alertname": "Bench0", "app": app, "namespace": "bench"},
            "annotations": {}, "startsAt": "2026-12-02T00:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://p",
            "fingerprint": format!("{n:016x}")}]
    })
    .to_string();
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .arg(format!("http://127.0.0.1:{port}/hooks/alertmanager"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
        ])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "202", "{out:?}");
}

/// Whether a pcapng file holds an Enhanced Packet Block.
fn has_epb(path: &Path) -> bool {
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    let mut at = 0;
    while at + 12 <= data.len() {
        let kind = u32::from_le_bytes(data[at..at + 4].try_into().expect("4"));
        let len = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4")) as usize;
        if kind == 6 {
            return true;
        }
        if len < 12 {
            return false;
        }
        at += len;
    }
    false
}

fn pcapng_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            pcapng_files(&p, out);
        } else if p
            .extension()
            .is_some_and(|x| x == "pcapng" || x == "partial")
        {
            out.push(p);
        }
    }
}

/// Wall time of the first JSON log line of `path` whose message starts with `msg` and whose
/// text contains `needle`.
fn logged(path: &Path, msg: &str, needle: &str) -> Option<SystemTime> {
    let text = std::fs::read_to_string(path).ok()?;
    for line in text.lines().filter(|l| l.contains(needle)) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(msg))
        {
            let t: jiff::Timestamp = v["timestamp"].as_str()?.parse().ok()?;
            return Some(SystemTime::from(t));
        }
    }
    None
}

fn ms(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a).unwrap_or_default().as_secs_f64() * 1e3
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn alert_to_packet() {
    let dir = tempfile::tempdir().expect("dir");
    let token = "bench-webhook-token";
    std::fs::write(dir.path().join("token"), token).expect("token");
    let pods: Vec<NetnsPod> = (0..PODS).map(|_| NetnsPod::new()).collect();
    let (hook, gw) = (free_tcp_port(), free_tcp_port());
    std::fs::write(
        dir.path().join("local.yaml"),
        config(dir.path(), &pods, hook, gw, 1),
    )
    .expect("config");
    let mut child = spawn(dir.path(), "local.log");
    wait_port(gw);
    let spool = dir.path().join("state/work/spool");
    let jobs = dir.path().join("state/work/jobs");
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut rows = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        let (ip, s) = (pod.ipv4(), stop.clone());
        let sender = std::thread::spawn(move || {
            let sock = UdpSocket::bind("0.0.0.0:0").expect("socket");
            while !s.load(Ordering::Relaxed) {
                let _ = sock.send_to(b"bench-dns-query", (ip, 53));
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        let sent = SystemTime::now();
        post(hook, token, &format!("app-{i}"), i);
        let deadline = Instant::now() + Duration::from_secs(30);
        let first = loop {
            let mut files = Vec::new();
            pcapng_files(&spool, &mut files);
            pcapng_files(&dir.path().join("files"), &mut files);
            if let Some(f) = files.iter().find(|f| !seen.contains(*f) && has_epb(f)) {
                seen.insert(f.clone());
                break SystemTime::now();
            }
            assert!(Instant::now() < deadline, "no packet for pod {i}");
            std::thread::sleep(Duration::from_micros(500));
        };
        stop.store(true, Ordering::Relaxed);
        sender.join().expect("sender");
        rows.push((i, sent, first));
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = dir.path().join("local.log");
    let (mut total, mut engine, mut planner, mut start, mut write) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (i, sent, first) in rows {
        let needle = format!("\"bench/pod-{i}\"");
        let created = logged(&log, "Created capture", &format!("{i:016x}"));
        let started = logged(&log, "Started a capture process", &needle);
        let job = std::fs::read_dir(&jobs)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                std::fs::read_to_string(p.join("targets.json")).is_ok_and(|t| t.contains(&needle))
            });
        let attached = job.and_then(|j| logged(&j.join("capture.log"), "Capturing on target", ""));
        total.push(ms(sent, first));
        if let (Some(c), Some(s), Some(a)) = (created, started, attached) {
            engine.push(ms(sent, c));
            planner.push(ms(c, s));
            start.push(ms(s, a));
            write.push(ms(a, first));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let n = total.len();
    let p50 = pct(&mut total.clone(), 0.5);
    let p99 = pct(&mut total, 0.99);
    println!(
        "alert -> first packet on disk, {n} alerts on new targets: p50 {p50:.1} ms, p99 {p99:.1} ms"
    );
    let mut to_attach: Vec<f64> = engine
        .iter()
        .zip(&planner)
        .zip(&start)
        .map(|((a, b), c)| a + b + c)
        .collect();
    println!(
        "alert -> capturing on the target (eBPF attached):               p50 {:7.1} ms  p99 {:7.1} ms",
        pct(&mut to_attach.clone(), 0.5),
        pct(&mut to_attach, 0.99)
    );
    let stages = [
        (
            "POST -> capture stored (rule engine + state write)",
            &mut engine,
        ),
        ("stored -> process started (planner)", &mut planner),
        (
            "process started -> attached (process start, eBPF load + attach)",
            &mut start,
        ),
        ("attached -> first packet on disk", &mut write),
    ];
    let sum: f64 = stages
        .iter()
        .map(|(_, v)| pct(&mut (*v).clone(), 0.5))
        .sum();
    for (name, v) in stages {
        let m = pct(&mut v.clone(), 0.5);
        println!(
            "  {name:<66} p50 {m:7.1} ms  p99 {:7.1} ms  ({:.0} % of the p50 sum)",
            pct(v, 0.99),
            100.0 * m / sum.max(1e-9)
        );
    }
    let sdir = tempfile::tempdir().expect("dir");
    let state = nightcap_local::state::State::open(sdir.path()).expect("state");
    let mut w = Vec::new();
    for i in 0..50 {
        let mut pc = nightcap_api::PacketCapture::new(&format!("c{i}"), Default::default());
        pc.metadata.namespace = Some("bench".into());
        let t = Instant::now();
        state
            .create_capture(
                pc,
                nightcap_local::state::CaptureOrigin::Trigger,
                jiff::Timestamp::now(),
            )
            .expect("create");
        w.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "  of which the state write (SQLite insert, synchronous=FULL)      p50 {:7.2} ms  p99 {:7.2} ms",
        pct(&mut w.clone(), 0.5),
        pct(&mut w, 0.99)
    );
}

fn idle_memory() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("token"), "bench-webhook-token").expect("token");
    {
        let state = nightcap_local::state::State::open(&dir.path().join("state")).expect("state");
        for i in 0..100 {
            let mut pc: nightcap_api::PacketCapture = serde_json::from_value(serde_json::json!({
                "apiVersion": "nightcap.dev/v1alpha1", "kind": "PacketCapture",
                "metadata": {"name": format!("done-{i}"), "namespace": "bench",
                    "labels": {"nightcap.dev/created-by": "trigger", "nightcap.dev/trigger": "t0"}},
                "spec": {"selector": {"matchLabels": {"app": "x"}}, "duration": "1m"},
                "status": {"phase": "Succeeded", "completionTime": "2026-12-01T00:00:00Z",
                    "nodes": {"bench": {"state": "Finished", "packets": 1000, "files": (0..10).map(|f| serde_json::json!({
                        "key": format!("bench/done-{i}/u/bench/2026120{f}T000000.000Z-000000.pcapng"),
                        "bytes": 1_000_000, "packets": 100,
                        "sha256": "0".repeat(64)})).collect::<Vec<_>>()}}}
            }))
            .expect("capture");
            pc.metadata.finalizers = None;
            state
                .create_capture(
                    pc,
                    nightcap_local::state::CaptureOrigin::Trigger,
                    jiff::Timestamp::now(),
                )
                .expect("create");
        }
    }
    let (hook, gw) = (free_tcp_port(), free_tcp_port());
    std::fs::write(
        dir.path().join("local.yaml"),
        config(dir.path(), &[], hook, gw, 10),
    )
    .expect("config");
    let mut child = spawn(dir.path(), "idle.log");
    wait_port(gw);
    std::thread::sleep(Duration::from_secs(5));
    let rss = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "idle nightcap local, 10 triggers and 100 finished captures: VmRSS {:.1} MiB",
        rss as f64 / 1024.0
    );
}

fn main() {
    require_root();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    alert_to_packet();
    idle_memory();
}
