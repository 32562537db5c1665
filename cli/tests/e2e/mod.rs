//! A small cluster of real parts for the scheduler's end-to-end tests: the API test server,
//! one fake kubelet per node running pods as processes in real network namespaces, the S3
//! test server, and `nightcap scheduler` as a child process. Capture Jobs run the `nightcap`
//! binary (`nightcap capture --capture …`) on their fake node.

#![allow(dead_code)] // each test binary uses a different part

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    net::{IpAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{
    ByteString,
    api::{
        batch::v1::Job,
        core::v1::{Namespace, Pod, Secret},
        events::v1::Event,
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
};
use nightcap_api::{PacketCapture, PacketCaptureSpec, Rotation};
use nightcap_testcluster::{
    ApiServer, FakeKubelet, KubeletOptions, NetnsSandboxes, PodRef, Policy, Rule, Sandbox,
    SandboxProvider,
};
use nightcap_testsupport::S3Server;
use serde::Deserialize as _;
use serde_json::json;

pub const NS: &str = "team-a";
pub const SYSTEM_NS: &str = "nightcap-system";
const SCHEDULER_USER: &str = "system:serviceaccount:nightcap-system:nightcap-scheduler";

fn manifest(file: &str) -> Vec<serde_yaml::Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests")
        .join(file);
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

/// The rules of a (Cluster)Role in `file`, as test-server rules; with `namespace`, only there
/// (what a RoleBinding to a ClusterRole grants).
pub fn role_rules(file: &str, kind: &str, name: &str, namespace: Option<&str>) -> Vec<Rule> {
    let docs = manifest(file);
    let role = docs
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{file} has no {kind} {name}"));
    role["rules"]
        .as_sequence()
        .expect("rules")
        .iter()
        .map(|r| {
            let rule = Rule::new(
                strings(&r["verbs"]),
                strings(&r["apiGroups"]),
                strings(&r["resources"]),
            )
            .names(strings(&r["resourceNames"]));
            match namespace.or_else(|| role["metadata"]["namespace"].as_str()) {
                Some(ns) => rule.in_namespaces([ns]),
                None => rule,
            }
        })
        .collect()
}

/// Workload pods get real network namespaces; capture pods (Jobs named `nc-…`) run in the
/// host's. In a cluster a pod reaches the API server through the service network; here the API
/// test server listens on the host's 127.0.0.1 only, so a capture pod must share the host
/// network namespace to reach it. Its capture work is unaffected: it enters each target pod's
/// namespace itself.
#[derive(Debug)]
struct Sandboxes(NetnsSandboxes);

#[derive(Debug)]
struct HostNetwork;

impl Sandbox for HostNetwork {
    fn ips(&self) -> Vec<IpAddr> {
        vec![IpAddr::from([127, 0, 0, 1])]
    }
    fn netns_path(&self) -> Option<PathBuf> {
        None
    }
}

impl SandboxProvider for Sandboxes {
    fn create(&self, pod: &PodRef) -> nightcap_testcluster::Result<Box<dyn Sandbox>> {
        // nightcap-system's pods (the gateway) reach the API server the same way.
        if pod.name.starts_with("nc-") || pod.namespace == SYSTEM_NS {
            Ok(Box::new(HostNetwork))
        } else {
            self.0.create(pod)
        }
    }
}

/// The whole cluster. Dropping it kills the scheduler, the kubelets' pods and the servers.
pub struct Cluster {
    pub server: ApiServer,
    pub admin: Client,
    pub s3: S3Server,
    pub kubelets: BTreeMap<String, FakeKubelet>,
    pub dir: tempfile::TempDir,
    scheduler: Option<Child>,
    runs: usize,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_scheduler();
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
            // Capture pods' logs (the kubelets keep one directory per pod).
            for k in self.kubelets.values() {
                let root = k.pod_dir(NS, "x", "x");
                let Some(pods_root) = root.parent().and_then(Path::parent) else {
                    continue;
                };
                walk(pods_root, &mut |p| {
                    if p.extension().is_some_and(|e| e == "log") {
                        eprintln!(
                            "--- {}\n{}",
                            p.display(),
                            std::fs::read_to_string(p).unwrap_or_default()
                        );
                    }
                });
            }
        }
    }
}

impl Cluster {
    /// Starts everything but the scheduler, with one fake kubelet per node.
    pub async fn start(nodes: &[&str]) -> Self {
        nightcap_testsupport::require_root();
        let mut scheduler_rules =
            role_rules("scheduler.yaml", "ClusterRole", "nightcap-scheduler", None);
        scheduler_rules.extend(role_rules(
            "scheduler.yaml",
            "Role",
            "nightcap-scheduler-leader-election",
            None,
        ));
        let policy = Policy::new()
            .service_account(SYSTEM_NS, "nightcap-scheduler", scheduler_rules)
            .service_account(
                NS,
                "nightcap-capture",
                role_rules(
                    "capture-rbac.yaml",
                    "ClusterRole",
                    "nightcap-capture",
                    Some(NS),
                ),
            );
        let server = ApiServer::start(policy).await.expect("API test server");
        for crd in nightcap_api::crds() {
            server.register_crd(&crd).expect("CRD");
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
                .expect("namespace");
        }
        let s3 = S3Server::start();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("nightcap-storage".into()),
                ..ObjectMeta::default()
            },
            data: Some(
                std::iter::once(("NIGHTCAP_OUTPUT", format!("s3://{}/e2e", s3.bucket())))
                    .chain(s3.client_env())
                    .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(admin.clone(), NS)
            .create(&PostParams::default(), &secret)
            .await
            .expect("storage Secret");
        let dir = tempfile::Builder::new()
            .prefix("nightcap-e2e-")
            .tempdir()
            .expect("temp dir");
        let opts = KubeletOptions {
            sandboxes: Some(Arc::new(Sandboxes(NetnsSandboxes {
                prefix: Some("nce2e".into()),
            }))),
            binaries: [(
                "nightcap".to_string(),
                PathBuf::from(env!("CARGO_BIN_EXE_nightcap")),
            )]
            .into(),
            ..KubeletOptions::default()
        };
        let mut kubelets = BTreeMap::new();
        for node in nodes {
            let k = FakeKubelet::start(&server, node, opts.clone())
                .await
                .expect("fake kubelet");
            kubelets.insert(node.to_string(), k);
        }
        Self {
            server,
            admin,
            s3,
            kubelets,
            dir,
            scheduler: None,
            runs: 0,
        }
    }

    /// Starts `nightcap scheduler` as the scheduler's service account (short grace periods).
    pub fn start_scheduler(&mut self) {
        self.runs += 1;
        let kubeconfig = self.dir.path().join("scheduler.kubeconfig");
        std::fs::write(
            &kubeconfig,
            self.server
                .kubeconfig_yaml(SCHEDULER_USER)
                .expect("kubeconfig"),
        )
        .expect("kubeconfig written");
        let log = std::fs::File::create(self.scheduler_log(self.runs)).expect("log file");
        let spool = self.dir.path().join("spool");
        let child = Command::new(env!("CARGO_BIN_EXE_nightcap"))
            .args([
                "scheduler",
                "--metrics-addr",
                "127.0.0.1:0",
                "--debounce",
                "20ms",
                // The fake kubelet's process mode runs `nightcap` from the test build whatever
                // the image says; a scheduler outside a pod must be told an image.
                "--capture-image",
                "nightcap",
            ])
            .args([
                "--pods-gone-grace",
                "2s",
                "--node-not-ready-grace",
                "5s",
                "--stop-grace",
                "30s",
            ])
            .args(["--lease-namespace", SYSTEM_NS, "--lease-duration", "3s"])
            .args(["--identity", &format!("scheduler-{}", self.runs)])
            .args(["--job-termination-grace", "20s", "--capture-log", "info"])
            .arg("--capture-spool-dir")
            .arg(&spool)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("nightcap scheduler starts");
        self.scheduler = Some(child);
    }

    pub fn scheduler_log(&self, run: usize) -> PathBuf {
        self.dir.path().join(format!("scheduler-{run}.log"))
    }

    /// SIGKILL, like a crashed pod: no Lease release, nothing flushed.
    pub fn kill_scheduler(&mut self) {
        if let Some(mut c) = self.scheduler.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Everything the schedulers and the capture pods logged (for failure messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for run in 1..=self.runs {
            out.push_str(&format!("--- scheduler run {run}\n"));
            out.push_str(&std::fs::read_to_string(self.scheduler_log(run)).unwrap_or_default());
        }
        out
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), NS)
    }

    pub fn captures(&self) -> Api<PacketCapture> {
        Api::namespaced(self.admin.clone(), NS)
    }

    /// A workload pod labelled `app=web` on `node`; returns its IPv4 once it runs.
    pub async fn workload(&self, name: &str, node: &str) -> IpAddr {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{
                "name": "web", "image": "web", "command": ["/bin/sh", "-c", "exec sleep 600"]}]},
        }))
        .expect("pod JSON");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("pod created");
        eventually(&format!("pod {name} running with an IP"), || async {
            let p = self.pods().get_opt(name).await.ok()??;
            let st = p.status?;
            if st.phase.as_deref() != Some("Running") {
                return None;
            }
            st.pod_ip?.parse().ok()
        })
        .await
    }

    /// Deletes a pod and waits until it (and its network namespace) is gone.
    pub async fn delete_pod(&self, name: &str) {
        self.pods()
            .delete(name, &DeleteParams::default())
            .await
            .expect("pod deleted");
        eventually(&format!("pod {name} gone"), || async {
            self.pods()
                .get_opt(name)
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await;
    }

    /// A capture of the `app=web` pods for 10 minutes.
    pub async fn capture(&self, name: &str) -> PacketCapture {
        let spec = PacketCaptureSpec {
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..LabelSelector::default()
            }),
            duration: Some("10m".into()),
            expression: Some("udp".into()),
            rotation: Some(Rotation {
                max_file_seconds: Some(600),
                ..Rotation::default()
            }),
            ..PacketCaptureSpec::default()
        };
        self.captures()
            .create(&PostParams::default(), &PacketCapture::new(name, spec))
            .await
            .expect("capture created")
    }

    pub async fn get_capture(&self, name: &str) -> Option<PacketCapture> {
        self.captures().get_opt(name).await.ok().flatten()
    }

    /// Waits until `node` reports Capturing with `pod` attached.
    pub async fn attached(&self, capture: &str, node: &str, pod: &str) {
        let want = format!("{NS}/{pod}");
        eventually(&format!("{pod} attached on {node}"), || async {
            let c = self.get_capture(capture).await?;
            let n = c.status?.nodes.get(node)?.clone();
            let ok = n.state == Some(nightcap_api::NodeCaptureState::Capturing)
                && n.pods.contains(&want);
            ok.then_some(())
        })
        .await;
    }

    /// Nodes with a running capture Job (not finished, not being deleted).
    pub async fn job_nodes(&self) -> Vec<String> {
        let api: Api<Job> = Api::namespaced(self.admin.clone(), NS);
        let jobs = api.list(&ListParams::default()).await.expect("jobs").items;
        let finished = |j: &Job| {
            j.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"
                    })
                })
        };
        let nodes: BTreeSet<String> = jobs
            .into_iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none() && !finished(j))
            .filter_map(|j| j.spec?.template.spec?.node_name)
            .collect();
        nodes.into_iter().collect()
    }

    pub async fn all_jobs(&self) -> Vec<Job> {
        let api: Api<Job> = Api::namespaced(self.admin.clone(), NS);
        api.list(&ListParams::default()).await.expect("jobs").items
    }

    pub async fn events(&self) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.admin.clone(), NS);
        api.list(&ListParams::default())
            .await
            .expect("events")
            .items
    }

    /// Uploaded pcapng files: (node, object path relative to the bucket, contents).
    pub fn files(&self) -> Vec<(String, String, Vec<u8>)> {
        let root = self.s3.bucket_dir();
        let mut out = Vec::new();
        walk(&root, &mut |p| {
            if p.extension().is_some_and(|e| e == "pcapng") {
                let rel = p
                    .strip_prefix(&root)
                    .expect("under the bucket")
                    .to_string_lossy()
                    .into_owned();
                let node = p
                    .parent()
                    .and_then(Path::file_name)
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.push((node, rel, std::fs::read(p).expect("object readable")));
            }
        });
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    }

    /// Logs of every capture process that ran (`nightcap capture --capture …`).
    pub fn capture_logs(&self) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        for k in self.kubelets.values() {
            let root = k.pod_dir(NS, "x", "x");
            let Some(pods_root) = root.parent().and_then(Path::parent) else {
                continue;
            };
            walk(pods_root, &mut |p| {
                if p.file_name().is_some_and(|f| f == "capture.log") {
                    out.push((
                        p.to_path_buf(),
                        std::fs::read_to_string(p).unwrap_or_default(),
                    ));
                }
            });
        }
        out
    }

    /// Waits until every capture process that started capturing has ended gracefully: it
    /// printed its summary after closing and uploading its last file.
    pub async fn capture_processes_stopped(&self) {
        eventually("every capture process stopped gracefully", || async {
            let logs = self.capture_logs();
            let running: Vec<&PathBuf> = logs
                .iter()
                .filter(|(_, log)| log.contains("Following the capture's pods"))
                .filter(|(_, log)| !log.contains("\"stop\":"))
                .map(|(p, _)| p)
                .collect();
            running.is_empty().then_some(())
        })
        .await;
    }

    /// Nodes whose files contain `marker`.
    pub fn nodes_with(&self, marker: &str) -> BTreeSet<String> {
        self.files()
            .into_iter()
            .filter(|(_, _, bytes)| contains(bytes, marker.as_bytes()))
            .map(|(node, _, _)| node)
            .collect()
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Sends `count` UDP datagrams carrying `marker` from the host to `ip` (the pod's eth0).
pub fn send(ip: IpAddr, marker: &str, count: usize) {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("UDP socket");
    for i in 0..count {
        socket
            .send_to(format!("{marker}#{i}").as_bytes(), (ip, 9))
            .expect("datagram sent");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `check` until it returns `Some` (gives up after 120 s; nothing asserts how fast).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
