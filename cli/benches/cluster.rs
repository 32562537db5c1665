//! In the runc-backed test cluster (the install as separate processes, see
//! `cli/tests/cluster`): from an alert published on JetStream to the first matching packet on
//! disk in the capture pod's spool, with the nightcap image already on the nodes.
//!
//! 20 workload pods (`app=bench-N`, alternating between two nodes) receive one UDP datagram to
//! port 53 every millisecond from before their alert on. For each pod in turn one Alertmanager
//! notification naming it is published on JetStream; watches on the API server time each stage:
//!
//! | stage | from → to |
//! |---|---|
//! | trigger | published → PacketCapture created (`nightcap triggers`) |
//! | scheduler | PacketCapture → capture Job created (`nightcap scheduler`) |
//! | Job create | Job → its Pod created (the node's Job controller) |
//! | kubelet start | Pod created → Running (bundle, mounts, `runc run` started) |
//! | container start + attach | Running → the pod listed as attached in the capture's status |
//! | first packet | attached → an Enhanced Packet Block in the spool file |
//!
//! Needs root, runc and umoci. `cargo bench -p nightcap --bench cluster`. Numbers only.

#[path = "../tests/cluster/mod.rs"]
mod cluster;

use std::{
    collections::BTreeMap,
    net::{IpAddr, UdpSocket},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use cluster::*;
use futures::StreamExt;
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, ResourceExt,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use nightcap_api::{CaptureTrigger, PacketCapture};
use serde_json::{Value, json};

const PODS: usize = 20;

/// When each stage of one alert's path was first seen, by the bench's own clock.
#[derive(Debug, Default, Clone)]
struct Seen {
    published: Option<Instant>,
    capture: Option<Instant>,
    job: Option<Instant>,
    pod: Option<Instant>,
    running: Option<Instant>,
    attached: Option<Instant>,
    packet: Option<Instant>,
}

type Board = Arc<Mutex<BTreeMap<String, Seen>>>;
/// A stage's name and its duration in one alert's path (ms).
type Stage = (&'static str, fn(&Seen) -> Option<f64>);

fn app_of(labels: &BTreeMap<String, String>) -> Option<String> {
    labels.get("app").cloned()
}

/// The bench app a capture selects (`app` of its pod selector).
fn capture_app(c: &PacketCapture) -> Option<String> {
    c.spec
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .and_then(app_of)
}

/// True once a pcapng file holds an Enhanced Packet Block (type 6) after its header blocks.
fn has_packet(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let mut at = 0usize;
    while at + 12 <= bytes.len() {
        let kind = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or_default()) as usize;
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(a: Option<Instant>, b: Option<Instant>) -> Option<f64> {
    Some(b?.checked_duration_since(a?)?.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let night = Night::start().await;
    let board: Board = Arc::default();

    // One trigger for every bench app: the alert's `app` label selects the pods.
    let trigger: CaptureTrigger = serde_json::from_value(json!({
        "apiVersion": "nightcap.dev/v1alpha1", "kind": "CaptureTrigger",
        "metadata": {"name": "bench", "namespace": APP_NS},
        "spec": {"match": {"labels": {"alertname": "BenchDNS"}},
            "template": {"spec": {"selector": {"matchLabels": {"app": "{{labels.app}}"}},
                "expression": "udp port 53", "duration": "60s"}},
            "maxConcurrent": PODS}
    }))
    .expect("trigger");
    Api::<CaptureTrigger>::namespaced(night.admin.clone(), APP_NS)
        .create(&PostParams::default(), &trigger)
        .await
        .expect("trigger created");

    let mut ips: Vec<(String, IpAddr)> = Vec::new();
    for i in 0..PODS {
        let app = format!("bench-{i}");
        let node = if i % 2 == 0 { "node-a" } else { "node-b" };
        let ip = night
            .workload(&format!("bench-{i}"), node, labels(&[("app", &app)]))
            .await;
        ips.push((app, ip));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, ips) = (stop.clone(), ips.clone());
        std::thread::spawn(move || {
            let socket = UdpSocket::bind("0.0.0.0:0").expect("UDP socket");
            while !stop.load(Ordering::Relaxed) {
                for (_, ip) in &ips {
                    let _ = socket.send_to(b"bench-dns", (*ip, 53));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };

    // Watches that stamp each stage the first time it is seen.
    let mark = |board: &Board, app: &str, f: fn(&mut Seen) -> &mut Option<Instant>| {
        let mut b = board.lock().unwrap_or_else(|e| e.into_inner());
        let slot = f(b.entry(app.to_string()).or_default());
        slot.get_or_insert_with(Instant::now);
    };
    let captures: Api<PacketCapture> = Api::namespaced(night.admin.clone(), APP_NS);
    let jobs: Api<Job> = Api::namespaced(night.admin.clone(), CAPTURE_NS);
    let pods: Api<Pod> = Api::namespaced(night.admin.clone(), CAPTURE_NS);
    // capture name → app, filled by the capture watch, read by the Job and pod watches.
    let names: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    {
        let (board, names) = (board.clone(), names.clone());
        tokio::spawn(async move {
            let mut s = watcher(captures, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(c)) = s.next().await {
                let Some(app) = capture_app(&c) else {
                    continue;
                };
                names
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(c.uid().unwrap_or_default(), app.clone());
                mark(&board, &app, |s| &mut s.capture);
                // The bench's pods are named like their app label.
                let pod = format!("{APP_NS}/{app}");
                let attached = c
                    .status
                    .as_ref()
                    .is_some_and(|st| st.nodes.values().any(|n| n.pods.contains(&pod)));
                if attached {
                    mark(&board, &app, |s| &mut s.attached);
                }
            }
        });
    }
    let app_for = |names: &Arc<Mutex<BTreeMap<String, String>>>,
                   labels: &BTreeMap<String, String>| {
        let uid = labels.get("nightcap.dev/capture-uid")?;
        names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .cloned()
    };
    {
        let (board, names) = (board.clone(), names.clone());
        tokio::spawn(async move {
            let mut s = watcher(jobs, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(j)) = s.next().await {
                let labels = j
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.labels.clone())
                    .unwrap_or_default();
                if let Some(app) = app_for(&names, &labels) {
                    mark(&board, &app, |s| &mut s.job);
                }
            }
        });
    }
    {
        let (board, names) = (board.clone(), names.clone());
        tokio::spawn(async move {
            let mut s = watcher(pods, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(p)) = s.next().await {
                let Some(app) = app_for(&names, p.labels()) else {
                    continue;
                };
                mark(&board, &app, |s| &mut s.pod);
                if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                    mark(&board, &app, |s| &mut s.running);
                }
            }
        });
    }

    let firing: Value = serde_json::from_str(include_str!(
        "../../examples/alertmanager/dns-latency-firing.json"
    ))
    .expect("fixture");
    for (i, (app, _)) in ips.iter().enumerate() {
        let mut alert = firing.clone();
        alert["alerts"][0]["labels"]["alertname"] = "BenchDNS".into();
        alert["alerts"][0]["labels"]["app"] = app.clone().into();
        alert["alerts"][0]["fingerprint"] = format!("{i:016x}").into();
        mark(&board, app, |s| &mut s.published);
        night.publish_alert(&alert.to_string()).await;
        // The first packet: a spool file of this app's capture with an EPB.
        within(
            Duration::from_secs(60),
            &format!("first packet of {app}"),
            || async {
                let uid = names
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .find(|(_, a)| *a == app)
                    .map(|(u, _)| u.clone())?;
                night
                    .spool_files()
                    .iter()
                    .any(|(p, _)| p.to_string_lossy().contains(&uid) && has_packet(p))
                    .then_some(())
            },
        )
        .await;
        mark(&board, app, |s| &mut s.packet);
        // Done with this alert: delete its capture, so that the triggers' namespace limit (10
        // running captures) never throttles a later one and each alert meets a quiet cluster.
        let list = Api::<PacketCapture>::namespaced(night.admin.clone(), APP_NS)
            .list(&Default::default())
            .await
            .expect("captures");
        for c in list
            .items
            .iter()
            .filter(|c| capture_app(c).as_deref() == Some(app.as_str()))
        {
            let _ = Api::<PacketCapture>::namespaced(night.admin.clone(), APP_NS)
                .delete(&c.name_any(), &Default::default())
                .await;
        }
        // A deleted capture counts against the limit until its finalizer is released (its Job
        // uploaded and stopped): wait for that before the next alert.
        let gone: Vec<String> = list.items.iter().map(|c| c.name_any()).collect();
        within(
            Duration::from_secs(120),
            &format!("captures of {app} gone"),
            || async {
                let api = Api::<PacketCapture>::namespaced(night.admin.clone(), APP_NS);
                for name in &gone {
                    if api
                        .get_opt(name)
                        .await
                        .ok()?
                        .is_some_and(|c| capture_app(&c).as_deref() == Some(app.as_str()))
                    {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.join();

    let board = board.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let stages: [Stage; 7] = [
        ("trigger", |s| ms(s.published, s.capture)),
        ("scheduler", |s| ms(s.capture, s.job)),
        ("Job create", |s| ms(s.job, s.pod)),
        ("kubelet start", |s| ms(s.pod, s.running)),
        ("container start + attach", |s| ms(s.running, s.attached)),
        ("first packet", |s| ms(s.attached, s.packet)),
        ("alert → first packet on disk", |s| {
            ms(s.published, s.packet)
        }),
    ];
    println!(
        "cluster (runc, 2 nodes): alert on JetStream → first matching packet on disk, {} alerts",
        board.len()
    );
    println!("| stage | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|");
    for (name, f) in stages {
        let mut v: Vec<f64> = board.values().filter_map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} |",
            percentile(&v, 50.0),
            percentile(&v, 99.0),
            v.last().copied().unwrap_or(f64::NAN)
        );
    }
}
