//! Shared parts of the integration tests: a test API server, the triggers runtime on it, and
//! polling helpers (bounded waits that fail with a message; no timing assertions).

#![allow(dead_code)]

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use nightcap_api::{CaptureTrigger, PacketCapture};
use nightcap_testcluster::{ApiServer, Policy};
use nightcap_triggers::{
    Config, SharedClock, SystemClock,
    report::WriterOptions,
    runtime::{self, Running},
    sources::webhook::WebhookConfig,
};

/// How long a wait may take before the test fails (generous: CI machines are slow).
pub const WAIT: Duration = Duration::from_secs(60);

/// A test API server and its admin client.
pub struct Cluster {
    pub server: ApiServer,
    pub client: Client,
}

pub async fn cluster() -> Cluster {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            std::env::var("NIGHTCAP_TEST_LOG").unwrap_or_else(|_| "nightcap_triggers=info".into()),
        )
        .try_init();
    let server = ApiServer::start(Policy::new())
        .await
        .expect("API test server starts");
    let client = server.admin_client().expect("admin client");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in ["shop", "payments"] {
        let n = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &n)
            .await
            .expect("create namespace");
    }
    Cluster { server, client }
}

/// Polls `f` until it returns `Some`, failing after [`WAIT`] with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting {}s for: {what}",
            WAIT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn captures(client: &Client, ns: &str) -> Vec<PacketCapture> {
    let api: Api<PacketCapture> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .expect("list captures")
        .items
}

pub async fn create_trigger(client: &Client, yaml: &str) -> CaptureTrigger {
    let t: CaptureTrigger = serde_yaml::from_str(yaml).expect("test trigger YAML");
    let ns = t.metadata.namespace.clone().expect("namespace");
    Api::<CaptureTrigger>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &t)
        .await
        .expect("create trigger")
}

/// A temp file with `content` (kept alive by the returned guard).
pub fn secret_file(content: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("secret");
    std::fs::write(&path, content).expect("write secret");
    (dir, path)
}

pub const TOKEN: &str = "alertmanager-token";

/// A webhook on 127.0.0.1:0 with [`TOKEN`] and HMAC secret `hmac-secret`.
pub fn webhook_config(dir: &tempfile::TempDir) -> WebhookConfig {
    let token = dir.path().join("token");
    let hmac = dir.path().join("hmac");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token file");
    std::fs::write(&hmac, "hmac-secret").expect("hmac file");
    WebhookConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        bearer_token_file: Some(token),
        hmac_secret_file: Some(hmac),
        ..WebhookConfig::default()
    }
}

/// Fast event writer for tests.
pub fn writer() -> WriterOptions {
    WriterOptions {
        window: Duration::from_secs(2),
        status_every: Duration::from_millis(200),
    }
}

/// Starts the triggers runtime and waits until `triggers` CaptureTriggers are loaded.
pub async fn start(
    client: &Client,
    config: Config,
    clock: Option<SharedClock>,
    triggers: usize,
) -> Running {
    let clock = clock.unwrap_or_else(|| Arc::new(SystemClock));
    let running = runtime::start(client.clone(), config, clock, writer())
        .await
        .expect("triggers start");
    let set = running.triggers.clone();
    let ledger = running.ledger.clone();
    wait_for("triggers and captures loaded", || {
        let (set, ledger) = (set.clone(), ledger.clone());
        async move {
            (set.is_ready() && ledger.is_ready() && set.snapshot().len() == triggers).then_some(())
        }
    })
    .await;
    running
}

/// The documented Alertmanager payload (tests/fixtures/alertmanager-firing.json).
pub const FIRING: &str = include_str!("../fixtures/alertmanager-firing.json");

/// The fixture with another fingerprint, pod and start time (a different alert).
pub fn alert_variant(i: usize) -> String {
    let mut v: serde_json::Value = serde_json::from_str(FIRING).expect("fixture");
    v["alerts"][0]["fingerprint"] = format!("{i:016x}").into();
    v["alerts"][0]["labels"]["pod"] = format!("checkout-{i}").into();
    v["alerts"][0]["startsAt"] =
        format!("2026-11-21T02:{:02}:{:02}Z", (i / 60) % 60, i % 60).into();
    serde_json::to_string(&v).expect("json")
}

pub const LATENCY_TRIGGER: &str = r#"
apiVersion: nightcap.dev/v1alpha1
kind: CaptureTrigger
metadata: {name: checkout-latency, namespace: shop}
spec:
  match:
    labels: {alertname: CheckoutLatencyHigh}
    labelRegex: {severity: "critical|page"}
  stopOnResolved: true
  template:
    metadata: {labels: {team: payments}}
    spec:
      selector: {matchLabels: {app: "{{labels.app}}"}}
      filters: [{protocol: TCP, ports: [8080]}]
      duration: 5m
"#;
