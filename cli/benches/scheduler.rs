//! Scheduler benchmark; prints numbers, asserts nothing about speed.
//!
//! `cargo bench -p nightcap --bench scheduler` — the release `nightcap scheduler` runs as its own
//! process against the in-process API test server holding 1k Ready nodes, 10k Running pods in
//! 100 namespaces and 100 captures (one per namespace, each selecting 10 pods on distinct
//! nodes). It reports: time until every capture Job exists, reconcile duration quantiles (from
//! the scheduler's own histogram), follow latency (new selected pod on a new node → its Job
//! seen through a watch), the scheduler's RSS, and the pure planner's time per plan.
//! Reconcile durations include the scheduler's API calls, answered by the test server on the
//! same cores, and at start-up the wait for the first full lists of pods, nodes and Jobs.
//! Sizes: NIGHTCAP_BENCH_NODES, NIGHTCAP_BENCH_PODS, NIGHTCAP_BENCH_CAPTURES; the scheduler's
//! `RUST_LOG`: NIGHTCAP_BENCH_SCHEDULER_LOG.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{Namespace, Node, Pod},
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{
    Api, Client,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::watcher,
};
use nightcap_api::{PacketCapture, PacketCaptureSpec};
use nightcap_scheduler::{
    controller::facts::{node_fact, target_fact},
    plan::{NodeFact, PlanConfig, Planner, TargetFact},
};
use nightcap_testcluster::{ApiServer, Policy, Rule};
use serde_json::json;

const SELECTED_PER_CAPTURE: usize = 10;
const FOLLOW_ROUNDS: usize = 20;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

fn node_of(capture: usize, pod: usize, nodes: usize) -> usize {
    (capture * 37 + pod * 101) % nodes
}

async fn run() {
    let nodes = env_or("NIGHTCAP_BENCH_NODES", 1000);
    let pods = env_or("NIGHTCAP_BENCH_PODS", 10_000);
    let captures = env_or("NIGHTCAP_BENCH_CAPTURES", 100);
    let per_ns = pods / captures;
    println!("scheduler benchmark: {nodes} nodes, {pods} pods, {captures} captures");
    planner_only(nodes, pods, captures);

    let all = vec![Rule::new(["*"], ["*"], ["*"])];
    let server = ApiServer::start(Policy::new().service_account(
        "nightcap-system",
        "nightcap-scheduler",
        all,
    ))
    .await
    .expect("API test server");
    for crd in nightcap_api::crds() {
        server.register_crd(&crd).expect("CRD");
    }
    let admin = server.admin_client().expect("admin");
    let t = Instant::now();
    let ns_api: Api<Namespace> = Api::all(admin.clone());
    for ns in std::iter::once("nightcap-system".to_string())
        .chain((0..captures).map(|i| format!("ns-{i}")))
    {
        let obj = Namespace {
            metadata: ObjectMeta {
                name: Some(ns),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        ns_api
            .create(&PostParams::default(), &obj)
            .await
            .expect("namespace");
    }
    load_nodes(&admin, nodes).await;
    load_pods(&admin, captures, per_ns, nodes).await;
    println!("loaded the API server in {:.1}s", t.elapsed().as_secs_f64());

    // Expected Jobs: distinct nodes of each capture's selected pods.
    let mut expected = 0;
    for c in 0..captures {
        let mut n: Vec<usize> = (0..SELECTED_PER_CAPTURE)
            .map(|p| node_of(c, p, nodes))
            .collect();
        n.sort_unstable();
        n.dedup();
        expected += n.len();
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        server
            .kubeconfig_yaml("system:serviceaccount:nightcap-system:nightcap-scheduler")
            .expect("kubeconfig"),
    )
    .expect("kubeconfig written");
    let log_path = dir.path().join("scheduler.log");
    let scheduler = ChildGuard(spawn_scheduler(&kubeconfig, &log_path));
    let metrics_port = metrics_port(&log_path).await;

    let t = Instant::now();
    for c in 0..captures {
        create_capture(&admin, c).await;
    }
    let jobs: Api<Job> = Api::all(admin.clone());
    loop {
        let n = jobs
            .list(&ListParams::default())
            .await
            .expect("jobs")
            .items
            .len();
        if n >= expected {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "only {n} of {expected} capture Jobs after 300 s; scheduler log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{captures} captures → {expected} capture Jobs created in {:.2}s (from the first capture's creation)",
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = histogram(metrics_port);
    report_histogram(
        "reconcile duration, start-up (all reconciles so far)",
        &before,
    );

    // Steady state: touch every selected pod (each change plans its capture again).
    let t = Instant::now();
    let touched = stream::iter(0..captures * SELECTED_PER_CAPTURE)
        .map(|i| {
            let admin = admin.clone();
            async move {
                let (c, p) = (i / SELECTED_PER_CAPTURE, i % SELECTED_PER_CAPTURE);
                let api: Api<Pod> = Api::namespaced(admin, &format!("ns-{c}"));
                let patch = json!({"metadata": {"annotations": {"bench/touch": "1"}}});
                api.patch(
                    &format!("pod-{p}"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map(drop)
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await;
    touched.expect("pods touched");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = histogram(metrics_port);
    let steady: Vec<(f64, u64)> = after
        .iter()
        .zip(&before)
        .map(|((le, a), (_, b))| (*le, a - b))
        .collect();
    println!(
        "touched {} selected pods in {:.2}s",
        captures * SELECTED_PER_CAPTURE,
        t.elapsed().as_secs_f64()
    );
    report_histogram("reconcile duration, steady state (pod changes)", &steady);
    report_rss(&scheduler.0, "after start-up and steady state");

    follow_latency(&admin, nodes, captures).await;
    report_histogram("reconcile duration, whole run", &histogram(metrics_port));
    report_rss(&scheduler.0, "at the end");
}

/// Kills the scheduler process when the benchmark ends, also when it panics.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pure planner on one capture with its 10 pods amid every pod and node.
fn planner_only(nodes: usize, pods: usize, captures: usize) {
    // The objects the API server holds, read into facts as the controller reads them.
    let node_facts: Vec<NodeFact> = (0..nodes)
        .filter_map(|n| node_fact(&node(&format!("node-{n}"))))
        .collect();
    let target_facts: Vec<TargetFact> = (0..pods)
        .map(|i| {
            let (c, p) = (i % captures, i / captures);
            target_fact(&pod(
                &format!("ns-{c}"),
                &format!("pod-{p}"),
                p < SELECTED_PER_CAPTURE,
                node_of(c, p, nodes),
            ))
        })
        .collect();
    let mut capture = capture_obj(0);
    capture.metadata.uid = Some("00000000-0000-4000-8000-000000000000".into());
    let planner = Planner::new(PlanConfig::default());
    let now = jiff::Timestamp::now();
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let actions = planner.plan(&capture, &target_facts, &node_facts, &[], now);
        times.push(t.elapsed());
        assert!(!actions.is_empty());
    }
    times.sort();
    println!(
        "pure planner, one capture over {pods} pods / {nodes} nodes: p50 {:.3} ms, p99 {:.3} ms",
        ms(times[times.len() / 2]),
        ms(times[times.len() * 99 / 100])
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn node(name: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "status": {"conditions": [{"type": "Ready", "status": "True",
            "lastTransitionTime": "2026-01-01T00:00:00Z", "lastHeartbeatTime": "2026-01-01T00:00:00Z",
            "reason": "KubeletReady", "message": "ready"}]},
    }))
    .expect("node JSON")
}

fn pod(ns: &str, name: &str, selected: bool, node: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": if selected { "sel" } else { "other" }}},
        "spec": {"nodeName": format!("node-{node}"), "containers": [{"name": "app", "image": "app"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.1"},
    }))
    .expect("pod JSON")
}

fn capture_obj(c: usize) -> PacketCapture {
    let mut pc = PacketCapture::new(
        &format!("cap-{c}"),
        PacketCaptureSpec {
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".into(), "sel".into())])),
                ..LabelSelector::default()
            }),
            duration: Some("1h".into()),
            ..PacketCaptureSpec::default()
        },
    );
    pc.metadata.namespace = Some(format!("ns-{c}"));
    pc
}

async fn create_capture(admin: &Client, c: usize) {
    let api: Api<PacketCapture> = Api::namespaced(admin.clone(), &format!("ns-{c}"));
    api.create(&PostParams::default(), &capture_obj(c))
        .await
        .expect("capture");
}

/// Creates `obj` and then sets its status (a create ignores the status subresource).
async fn create_with_status<K>(api: Api<K>, obj: K, status: serde_json::Value) -> kube::Result<K>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.create(&PostParams::default(), &obj).await?;
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": status })),
    )
    .await
}

async fn load_nodes(admin: &Client, nodes: usize) {
    let api: Api<Node> = Api::all(admin.clone());
    stream::iter(0..nodes)
        .map(|n| {
            let obj = node(&format!("node-{n}"));
            let status = json!(obj.status);
            create_with_status(api.clone(), obj, status)
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("nodes");
}

async fn load_pods(admin: &Client, captures: usize, per_ns: usize, nodes: usize) {
    stream::iter(0..captures * per_ns)
        .map(|i| {
            let (c, p) = (i / per_ns, i % per_ns);
            let ns = format!("ns-{c}");
            let obj = pod(
                &ns,
                &format!("pod-{p}"),
                p < SELECTED_PER_CAPTURE,
                node_of(c, p, nodes),
            );
            let status = json!(obj.status);
            create_with_status(Api::<Pod>::namespaced(admin.clone(), &ns), obj, status)
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("pods");
}

fn spawn_scheduler(kubeconfig: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).expect("log");
    Command::new(env!("CARGO_BIN_EXE_nightcap"))
        .args([
            "scheduler",
            "--metrics-addr",
            "127.0.0.1:0",
            "--lease-namespace",
            "nightcap-system",
        ])
        .env("KUBECONFIG", kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("NIGHTCAP_BENCH_SCHEDULER_LOG")
                .unwrap_or_else(|_| "warn,nightcap_scheduler::cli=info".into()),
        )
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("nightcap scheduler")
}

/// `text` without ANSI escape sequences (log lines may be coloured).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters… final byte in '@'..='~'.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn metrics_port(log: &std::path::Path) -> u16 {
    for _ in 0..600 {
        let text = strip_ansi(&std::fs::read_to_string(log).unwrap_or_default());
        if let Some(port) = text
            .split("addr=127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok())
        {
            return port;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the scheduler did not start: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Cumulative buckets of the reconcile histogram: (upper bound in seconds, count).
fn histogram(port: u16) -> Vec<(f64, u64)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("response");
    body.lines()
        .filter_map(|l| {
            l.strip_prefix("nightcap_scheduler_reconcile_duration_seconds_bucket{le=\"")
        })
        .filter_map(|l| {
            let (le, rest) = l.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, rest.trim().parse().ok()?))
        })
        .collect()
}

fn report_histogram(what: &str, buckets: &[(f64, u64)]) {
    let total = buckets.last().map_or(0, |b| b.1);
    let q = |q: f64| {
        let want = (q * total as f64).ceil() as u64;
        buckets
            .iter()
            .find(|(_, c)| *c >= want)
            .map_or(f64::INFINITY, |(le, _)| *le)
    };
    println!(
        "{what}: {total} reconciles, p50 ≤ {:.2} ms, p90 ≤ {:.2} ms, p99 ≤ {:.2} ms",
        q(0.5) * 1000.0,
        q(0.9) * 1000.0,
        q(0.99) * 1000.0
    );
}

fn report_rss(child: &Child, when: &str) {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0.0, |kb| kb as f64 / 1024.0)
    };
    println!(
        "scheduler RSS {when}: {:.1} MiB (peak {:.1} MiB)",
        field("VmRSS:"),
        field("VmHWM:")
    );
}

/// A new selected pod on a node its capture has no Job on → the Job, seen through a watch.
async fn follow_latency(admin: &Client, nodes: usize, captures: usize) {
    let jobs: Api<Job> = Api::all(admin.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let (listed_tx, listed_rx) = tokio::sync::oneshot::channel::<()>();
    let watch = tokio::spawn(async move {
        let mut listed_tx = Some(listed_tx);
        let mut s = watcher(jobs, watcher::Config::default()).boxed();
        while let Some(Ok(event)) = s.next().await {
            let job = match event {
                watcher::Event::Apply(job) | watcher::Event::InitApply(job) => job,
                watcher::Event::InitDone => {
                    if let Some(tx) = listed_tx.take() {
                        let _ = tx.send(());
                    }
                    continue;
                }
                watcher::Event::Init | watcher::Event::Delete(_) => continue,
            };
            let node = job
                .spec
                .and_then(|s| s.template.spec)
                .and_then(|p| p.node_name)
                .unwrap_or_default();
            let ns = job.metadata.namespace.unwrap_or_default();
            if tx.send((format!("{ns}/{node}"), Instant::now())).is_err() {
                break;
            }
        }
    });
    // The watch's first list (every Job so far) is not part of any round.
    listed_rx.await.expect("the Job watch lists");
    let mut latencies = Vec::new();
    let seen = Arc::new(std::sync::Mutex::new(BTreeMap::<String, Instant>::new()));
    for round in 0..FOLLOW_ROUNDS.min(captures) {
        let c = round;
        let ns = format!("ns-{c}");
        // A node this capture does not use yet.
        let node = (0..nodes)
            .map(|k| (node_of(c, 0, nodes) + nodes / 2 + k) % nodes)
            .find(|n| !(0..SELECTED_PER_CAPTURE).any(|p| node_of(c, p, nodes) == *n))
            .expect("a free node");
        let key = format!("{ns}/node-{node}");
        let api: Api<Pod> = Api::namespaced(admin.clone(), &ns);
        let obj = pod(&ns, &format!("moved-{round}"), true, node);
        let status = json!({"status": obj.status});
        let start = Instant::now();
        api.create(&PostParams::default(), &obj).await.expect("pod");
        api.patch_status(
            &format!("moved-{round}"),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .expect("pod status");
        let created_at = loop {
            if let Some(at) = seen.lock().expect("lock").get(&key) {
                break *at;
            }
            match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
                Ok(Some((k, at))) => {
                    seen.lock().expect("lock").entry(k).or_insert(at);
                }
                _ => panic!("no Job for {key}"),
            }
        };
        latencies.push(created_at.saturating_duration_since(start));
    }
    watch.abort();
    latencies.sort();
    println!(
        "follow latency (pod bound and Running on a new node → its Job created), {} rounds: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        ms(latencies[latencies.len() / 2]),
        ms(latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]),
        ms(*latencies.last().expect("rounds"))
    );
}
