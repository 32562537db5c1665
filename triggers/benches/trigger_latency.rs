//! Benchmark of the triggers component against the API test server and a real nats-server:
//!
//! - trigger → PacketCapture created latency (p50/p99/max) for the webhook (HTTP round trip; the
//!   202 is sent after the capture exists), NATS core (request/reply, same) and JetStream
//!   (publish → the capture seen by a watch);
//! - sustained deduplicated alerts/s (the same alert again and again) over the webhook and NATS;
//! - cron lateness: wall-clock time from a schedule's instant to its capture being seen.
//!
//! Run: `cargo bench -p nightcap-triggers --bench trigger_latency` (prints numbers; asserts
//! only correctness: one capture per distinct alert).

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::jetstream;
use common::*;
use futures::{StreamExt, stream};
use jiff::Timestamp;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use nightcap_api::{CaptureSchedule, PacketCapture};
use nightcap_testsupport::NatsServer;
use nightcap_triggers::{
    Config, Outcome,
    config::LimitsConfig,
    labels::trigger_capture_name,
    sources::nats::{Consumer, NatsAuth, NatsConfig, StreamSpec, Subscription},
};
use serde_json::Value;

const N: usize = 300;

fn percentiles(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let p = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    println!(
        "{name:<38} n={:<5} p50={:>8.2} ms  p99={:>8.2} ms  max={:>8.2} ms",
        v.len(),
        p(0.50).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3
    );
}

fn variant(i: usize) -> (String, String) {
    let body = alert_variant(i);
    let v: Value = serde_json::from_str(&body).expect("json");
    let fp = v["alerts"][0]["fingerprint"]
        .as_str()
        .expect("fp")
        .to_owned();
    let starts: Timestamp = v["alerts"][0]["startsAt"]
        .as_str()
        .expect("startsAt")
        .parse()
        .expect("time");
    let name = trigger_capture_name(
        "shop",
        "checkout-latency",
        &format!("fingerprint:{fp}"),
        &starts.to_string(),
    );
    (body, name)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let nats = NatsServer::start();
    let c = cluster().await;
    create_trigger(&c.client, LATENCY_TRIGGER).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let nats_cfg = NatsConfig {
        servers: vec![nats.url()],
        name: "nightcap-bench".into(),
        auth: NatsAuth::default(),
        tls: None,
        subscriptions: vec![Subscription {
            subject: "alerts.core.>".into(),
            queue_group: None,
        }],
        consumers: vec![Consumer {
            stream: "ALERTS".into(),
            durable: "nightcap".into(),
            filter_subjects: vec!["alerts.js.>".into()],
            max_deliver: 5,
            ack_wait_seconds: 30,
            retry_delay_seconds: 1,
            max_ack_pending: 10_000,
            create_stream: Some(StreamSpec {
                subjects: vec!["alerts.js.>".into()],
                memory: false,
                max_age_seconds: None,
            }),
        }],
        concurrency: 64,
    };
    let config = Config {
        webhook: Some(webhook_config(&dir)),
        nats: Some(nats_cfg),
        limits: LimitsConfig {
            max_concurrent_per_namespace: None,
            max_concurrent_cluster: None,
        },
        ..Config::default()
    };
    let running = start(&c.client, config, None, 1).await;
    let base = format!("http://{}", running.webhook_addr.expect("webhook"));
    let http = reqwest::Client::new();
    let nc = async_nats::connect(nats.url()).await.expect("nats client");

    // A watch that timestamps every capture's arrival.
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (s2, api) = (seen.clone(), Api::<PacketCapture>::all(c.client.clone()));
    tokio::spawn(async move {
        let mut w = watcher(api, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(pc)) = w.next().await {
            if let Some(n) = pc.metadata.name {
                s2.lock()
                    .expect("lock")
                    .entry(n)
                    .or_insert_with(Instant::now);
            }
        }
    });
    let seen_at = |name: String| {
        let seen = seen.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                if let Some(t) = seen.lock().expect("lock").get(&name) {
                    return *t;
                }
                assert!(
                    Instant::now() < deadline,
                    "capture {name} not seen within 120 s"
                );
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    };

    println!(
        "\ntrigger → PacketCapture created (API test server in process, debug-info release build)"
    );
    // Warm-up (connections, first list).
    for i in 0..20 {
        let (body, _) = variant(100_000 + i);
        http.post(format!("{base}/hooks/alertmanager"))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
            .await
            .expect("warm-up");
    }
    let mut lat = Vec::new();
    for i in 0..N {
        let (body, _) = variant(i);
        let t = Instant::now();
        let r = http
            .post(format!("{base}/hooks/alertmanager"))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
            .await
            .expect("post");
        let v: Value = r.json().await.expect("json");
        lat.push(t.elapsed());
        assert_eq!(v["decisions"][0]["decision"], "created", "{v}");
    }
    percentiles("webhook (HTTP 202 after create)", lat);

    let mut lat = Vec::new();
    for i in 0..N {
        let (body, _) = variant(10_000 + i);
        let t = Instant::now();
        let reply = nc
            .request("alerts.core.shop", body.into())
            .await
            .expect("request");
        lat.push(t.elapsed());
        let v: Value = serde_json::from_slice(&reply.payload).expect("json");
        assert_eq!(v["decisions"][0]["decision"], "created", "{v}");
    }
    percentiles("NATS core (request/reply)", lat);

    let js = jetstream::new(nc.clone());
    let mut lat = Vec::new();
    for i in 0..N {
        let (body, name) = variant(20_000 + i);
        let t = Instant::now();
        js.publish("alerts.js.shop", body.into())
            .await
            .expect("publish")
            .await
            .expect("ack");
        let arrived = seen_at(name).await;
        lat.push(arrived.saturating_duration_since(t));
    }
    percentiles("JetStream (publish → capture watched)", lat);

    println!("\nsustained deduplicated alerts (the same alert again and again)");
    let m = running.metrics.clone();
    let before = m.decisions_total(Outcome::Deduplicated);
    let total = 20_000;
    let t = Instant::now();
    stream::iter(0..total)
        .map(|_| {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let r = http
                    .post(format!("{base}/hooks/alertmanager"))
                    .bearer_auth(TOKEN)
                    .body(FIRING)
                    .send()
                    .await
                    .expect("post");
                assert_eq!(r.status().as_u16(), 202);
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{:<38} {:>10.0} alerts/s ({total} in {secs:.2} s)",
        "webhook, 64 connections",
        total as f64 / secs
    );
    let before_nats = m.decisions_total(Outcome::Deduplicated);
    assert!(before_nats >= before + total - 1);
    // Core NATS drops messages for a subscriber that falls too far behind (slow consumer), so
    // publish in batches and let each be processed before the next: sustained, bounded backlog.
    let (batches, batch) = (20u64, 5_000u64);
    let total = batches * batch;
    let t = Instant::now();
    for b in 1..=batches {
        for _ in 0..batch {
            nc.publish("alerts.core.shop", FIRING.into())
                .await
                .expect("publish");
        }
        nc.flush().await.expect("flush");
        let want = before_nats + b * batch;
        let deadline = Instant::now() + Duration::from_secs(60);
        while m.decisions_total(Outcome::Deduplicated) < want {
            assert!(
                Instant::now() < deadline,
                "NATS batch {b} not processed within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{:<38} {:>10.0} alerts/s ({total} in {secs:.2} s)",
        "NATS core, one subscription",
        total as f64 / secs
    );
    let all = captures(&c.client, "shop").await.len();
    assert_eq!(all, 20 + 3 * N + 1, "one capture per distinct alert");

    println!("\ncron: scheduled instant → capture seen (real clock)");
    let yaml = "metadata: {name: every-minute, namespace: shop}\nspec:\n  schedule: \"* * * * *\"\n  template: {spec: {selector: {matchLabels: {app: web}}, duration: 1m}}\n";
    let s: CaptureSchedule = serde_yaml::from_str(yaml).expect("schedule");
    let api: Api<CaptureSchedule> = Api::namespaced(c.client.clone(), "shop");
    api.create(&PostParams::default(), &s)
        .await
        .expect("create schedule");
    let now = Timestamp::now();
    api.patch_status(
        "every-minute",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {"lastScheduleTime": now}})),
    )
    .await
    .expect("anchor");
    let mut late = Vec::new();
    for k in 1..=2 {
        let due = Timestamp::from_second((now.as_second() / 60 + k) * 60).expect("time");
        let name =
            nightcap_triggers::labels::schedule_capture_name("every-minute", due.as_second());
        let _ = seen_at(name).await;
        let lateness = Timestamp::now().duration_since(due);
        late.push(Duration::try_from(lateness).unwrap_or_default());
    }
    percentiles("cron lateness", late);
}
