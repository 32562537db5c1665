//! Shared fixtures of the controller tests: an API test server whose scheduler service account
//! has exactly the rights of manifests/scheduler.yaml, nodes and pods, a scheduler runner.

#![allow(dead_code)] // each test binary uses a different part

use std::{
    collections::BTreeMap,
    future::Future,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{Namespace, Node, Pod},
        events::v1::Event,
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use nightcap_api::{PacketCapture, PacketCaptureSpec};
use nightcap_scheduler::{
    controller::{self, ControllerSettings},
    job::JobConfig,
    leader::{LeaderElector, LeaseSettings, run_while_leader},
    metrics::Metrics,
    plan::{PlanConfig, Planner},
};
use nightcap_testcluster::{ApiServer, Policy, Rule};
use serde::Deserialize as _;
use serde_json::json;

pub const NS: &str = "team-a";
pub const SYSTEM_NS: &str = "nightcap-system";

fn manifest(name: &str) -> Vec<serde_yaml::Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("manifest readable");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("YAML document"))
        .collect()
}

fn strings(v: &serde_yaml::Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The rules `manifests/<file>` grants to ServiceAccount `namespace/name` (ClusterRoles bound
/// by ClusterRoleBindings, Roles bound by RoleBindings), as test-server rules.
pub fn rbac_rules(file: &str, namespace: &str, name: &str) -> Vec<Rule> {
    let docs = manifest(file);
    let binds_sa = |b: &serde_yaml::Value| {
        b["subjects"].as_sequence().is_some_and(|subs| {
            subs.iter().any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == name && s["namespace"] == namespace
            })
        })
    };
    let mut rules = Vec::new();
    for binding in docs.iter().filter(|d| binds_sa(d)) {
        let kind = binding["kind"].as_str().expect("binding kind");
        let role_kind = binding["roleRef"]["kind"].as_str().expect("roleRef kind");
        let role_name = binding["roleRef"]["name"].as_str().expect("roleRef name");
        let role = docs
            .iter()
            .find(|d| d["kind"] == role_kind && d["metadata"]["name"] == role_name)
            .unwrap_or_else(|| panic!("{file}: {role_kind} {role_name} is bound but not defined"));
        for r in role["rules"].as_sequence().expect("rules") {
            let mut rule = Rule::new(
                strings(&r["verbs"]),
                strings(&r["apiGroups"]),
                strings(&r["resources"]),
            )
            .names(strings(&r["resourceNames"]));
            if kind == "RoleBinding" {
                let ns = binding["metadata"]["namespace"]
                    .as_str()
                    .expect("RoleBinding namespace");
                rule = rule.in_namespaces([ns]);
            }
            rules.push(rule);
        }
    }
    assert!(
        !rules.is_empty(),
        "{file} grants nothing to {namespace}/{name}"
    );
    rules
}

/// An API test server with the CRDs, namespaces and the scheduler's service account.
pub struct Cluster {
    pub server: ApiServer,
    pub admin: Client,
}

impl Cluster {
    pub async fn start() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("warn,nightcap_scheduler=info")
                }),
            )
            .with_test_writer()
            .try_init();
        let policy = Policy::new().service_account(
            SYSTEM_NS,
            "nightcap-scheduler",
            rbac_rules("scheduler.yaml", SYSTEM_NS, "nightcap-scheduler"),
        );
        let server = ApiServer::start(policy)
            .await
            .expect("API test server starts");
        for crd in nightcap_api::crds() {
            server.register_crd(&crd).expect("CRD registers");
        }
        let admin = server.admin_client().expect("admin client");
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        for ns in [NS, SYSTEM_NS] {
            let obj = Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            };
            namespaces
                .create(&PostParams::default(), &obj)
                .await
                .expect("namespace created");
        }
        Self { server, admin }
    }

    /// Client settings authenticating as the scheduler's service account (a client must be
    /// built inside the runtime that uses it: its connection worker runs there).
    pub fn scheduler_client(&self) -> kube::Config {
        let token = self
            .server
            .service_account_token(SYSTEM_NS, "nightcap-scheduler");
        let mut cfg = self.server.client_config().expect("client config");
        cfg.auth_info.token = Some(token.into());
        cfg
    }

    pub async fn node(&self, name: &str, ready: bool) {
        let api: Api<Node> = Api::all(self.admin.clone());
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };
        api.create(&PostParams::default(), &node)
            .await
            .expect("node created");
        self.set_ready(name, ready).await;
    }

    pub async fn set_ready(&self, name: &str, ready: bool) {
        let api: Api<Node> = Api::all(self.admin.clone());
        let now = jiff::Timestamp::now().to_string();
        let status = json!({"status": {"conditions": [{
            "type": "Ready", "status": if ready { "True" } else { "False" },
            "lastHeartbeatTime": now, "lastTransitionTime": now, "reason": "Test", "message": "test",
        }]}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("node status patched");
    }

    pub async fn delete_node(&self, name: &str) {
        let api: Api<Node> = Api::all(self.admin.clone());
        api.delete(name, &DeleteParams::default())
            .await
            .expect("node deleted");
    }

    /// A Running pod labelled `app=web` on `node`.
    pub async fn pod(&self, name: &str, node: &str) {
        let api: Api<Pod> = Api::namespaced(self.admin.clone(), NS);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "web"}]},
        }))
        .expect("pod JSON");
        api.create(&PostParams::default(), &pod)
            .await
            .expect("pod created");
        let status = json!({"status": {"phase": "Running", "podIP": "10.0.0.1"}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("pod status patched");
    }

    pub async fn delete_pod(&self, name: &str) {
        let api: Api<Pod> = Api::namespaced(self.admin.clone(), NS);
        api.delete(
            name,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await
        .expect("pod deleted");
    }

    pub fn captures(&self) -> Api<PacketCapture> {
        Api::namespaced(self.admin.clone(), NS)
    }

    /// Creates a capture of the `app=web` pods, 10 minutes long.
    pub async fn capture(&self, name: &str) -> PacketCapture {
        let spec = PacketCaptureSpec {
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..LabelSelector::default()
            }),
            duration: Some("10m".into()),
            ..PacketCaptureSpec::default()
        };
        self.create_capture(name, spec).await
    }

    pub async fn create_capture(&self, name: &str, spec: PacketCaptureSpec) -> PacketCapture {
        self.captures()
            .create(&PostParams::default(), &PacketCapture::new(name, spec))
            .await
            .expect("capture created")
    }

    pub async fn get_capture(&self, name: &str) -> Option<PacketCapture> {
        self.captures()
            .get_opt(name)
            .await
            .expect("capture readable")
    }

    /// Jobs of the capture, by node (Jobs being deleted included).
    pub async fn jobs(&self) -> BTreeMap<String, Job> {
        let api: Api<Job> = Api::namespaced(self.admin.clone(), NS);
        api.list(&ListParams::default())
            .await
            .expect("jobs listed")
            .items
            .into_iter()
            .map(|j| {
                let node = j
                    .annotations()
                    .get("nightcap.dev/node")
                    .cloned()
                    .unwrap_or_default();
                (node, j)
            })
            .collect()
    }

    /// Nodes with a Job that is not being deleted.
    pub async fn job_nodes(&self) -> Vec<String> {
        self.jobs()
            .await
            .into_iter()
            .filter(|(_, j)| j.metadata.deletion_timestamp.is_none())
            .map(|(n, _)| n)
            .collect()
    }

    pub async fn events(&self) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.admin.clone(), NS);
        api.list(&ListParams::default())
            .await
            .expect("events listed")
            .items
    }

    pub async fn event_reasons(&self) -> Vec<String> {
        self.events()
            .await
            .into_iter()
            .filter_map(|e| e.reason)
            .collect()
    }
}

/// Polls `check` until it returns `Some` (at most 60 s, so a broken build fails instead of
/// hanging; nothing here asserts how fast it happens).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Short grace periods so tests do not wait long.
pub fn test_plan() -> PlanConfig {
    PlanConfig {
        pods_gone_grace: Duration::from_secs(1),
        node_not_ready_grace: Duration::from_secs(1),
        // No capture process runs here to stop by itself: stop Jobs soon.
        stop_grace: Duration::from_secs(1),
        ..PlanConfig::default()
    }
}

pub fn settings(identity: &str) -> ControllerSettings {
    ControllerSettings {
        planner: Planner::new(test_plan()),
        jobs: JobConfig::default(),
        instance: Some(identity.into()),
        debounce: Duration::from_millis(20),
    }
}

/// A scheduler running in its own thread and runtime: `stop` shuts it down gracefully
/// (releasing its Lease), `kill` drops the runtime like a killed process.
pub struct Scheduler {
    pub identity: String,
    pub metrics: Arc<Metrics>,
    stop: Option<std::sync::mpsc::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scheduler {
    /// Starts a scheduler; with `lease`, behind leader election on that Lease duration.
    pub fn start(config: kube::Config, identity: &str, lease: Option<Duration>) -> Self {
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = std::sync::mpsc::channel::<bool>();
        let (m, id) = (metrics.clone(), identity.to_string());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let (graceful_tx, graceful_rx) = tokio::sync::oneshot::channel::<()>();
            let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
            std::thread::spawn(move || {
                if let Ok(graceful) = rx.recv() {
                    let _ = if graceful {
                        graceful_tx.send(())
                    } else {
                        kill_tx.send(())
                    };
                }
            });
            rt.block_on(async move {
                let graceful = async move {
                    let _ = graceful_rx.await;
                };
                let client = Client::try_from(config).expect("scheduler client");
                let work = async move {
                    let clock: controller::Clock = Arc::new(jiff::Timestamp::now);
                    match lease {
                        None => {
                            m.set_leader(true);
                            controller::run(client, settings(&id), m, clock, None, graceful).await;
                        }
                        Some(duration) => {
                            let elector = LeaderElector::new(
                                client.clone(),
                                LeaseSettings {
                                    name: "nightcap-scheduler".into(),
                                    namespace: SYSTEM_NS.into(),
                                    identity: id.clone(),
                                    lease_duration: duration,
                                },
                            );
                            run_while_leader(elector, m.clone(), graceful, move |stop| {
                                let (client, m, clock, id) =
                                    (client.clone(), m.clone(), clock.clone(), id.clone());
                                async move {
                                    let stop = async move {
                                        let _ = stop.await;
                                    };
                                    controller::run(client, settings(&id), m, clock, None, stop)
                                        .await;
                                }
                            })
                            .await
                            .expect("leader election ends cleanly");
                        }
                    }
                };
                tokio::select! {
                    () = work => {}
                    Ok(()) = kill_rx => {}
                }
            });
            // Dropping the runtime here cancels every task, like a killed process.
            rt.shutdown_background();
        });
        Self {
            identity: identity.into(),
            metrics,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.metrics
            .encode(&[])
            .lines()
            .any(|l| l == "nightcap_scheduler_leader 1")
    }

    /// A counter or gauge from the metrics text.
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics
            .encode(&[])
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.strip_prefix(' '))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0.0)
    }

    fn end(&mut self, graceful: bool) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(graceful);
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("scheduler thread ends");
        }
    }

    /// Graceful shutdown (waits without blocking the runtime that serves the API server).
    pub async fn stop(mut self) {
        tokio::task::spawn_blocking(move || self.end(true))
            .await
            .expect("stopped");
    }

    /// Like SIGKILL: nothing is cleaned up.
    pub async fn kill(mut self) {
        tokio::task::spawn_blocking(move || self.end(false))
            .await
            .expect("killed");
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.end(false);
    }
}
