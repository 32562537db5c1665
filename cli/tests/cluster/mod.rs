//! The install as separate processes, for the night-time story and its benchmark: the API test
//! server with fake nodes whose kubelets run pods through `runc` from the nightcap image
//! (`testcluster --runc`), the RBAC of `manifests/` and nothing else, `nightcap scheduler`,
//! `nightcap triggers` and `nightcap gateway` each as its own process with its own service
//! account, a JetStream nats-server and the S3 test server. Needs root (runc, network
//! namespaces, eBPF) and the built `testcluster` binary next to `nightcap`.

#![allow(dead_code)] // the test and the benchmark use different parts

use std::{
    collections::BTreeMap,
    future::Future,
    net::{IpAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::{
    ByteString,
    api::{
        batch::v1::Job,
        core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount},
    },
};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use nightcap_api::PacketCapture;
use nightcap_testsupport::{NatsServer, S3Server, util::free_tcp_port};
use serde_json::{Value, json};

/// The image every component and the capture Job run (kustomize `images:` in manifests/).
pub const IMAGE: &str = "ghcr.io/nightcap-dev/nightcap:0.1.0";
/// The image of the workload pods (busybox, built here).
pub const WORKLOAD_IMAGE: &str = "busybox:test";
pub const SYSTEM_NS: &str = "nightcap-system";
pub const CAPTURE_NS: &str = "nightcap-captures";
pub const APP_NS: &str = "storefront";
/// A storefront engineer: `edit` in storefront (so nightcap-capture-editor), not the files.
pub const EDITOR: &str = "alice";
/// The storefront on-call: `edit` plus nightcap-files-reader in storefront.
pub const ONCALL: &str = "bob";
pub const WEBHOOK_TOKEN: &str = "alertmanager-webhook-token-for-the-night-story";
/// Where the S3 objects go under the bucket.
pub const PREFIX: &str = "night";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A binary built next to `nightcap` (the workspace's other binaries).
pub fn sibling_binary(name: &str) -> PathBuf {
    let nightcap = PathBuf::from(env!("CARGO_BIN_EXE_nightcap"));
    let path = nightcap.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p nightcap-testcluster` (cargo nextest \
         --workspace builds it)",
        path.display()
    );
    path
}

/// Polls `check` until it returns `Some` (gives up after `limit`; nothing asserts how fast).
pub async fn within<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`within`] two minutes.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(Duration::from_secs(120), what, check).await
}

/// Sends `count` UDP datagrams carrying `marker` from the host to `ip:53`.
pub fn send_dns(ip: IpAddr, marker: &str, count: usize) {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("UDP socket");
    for i in 0..count {
        socket
            .send_to(format!("{marker}#{i}").as_bytes(), (ip, 53))
            .expect("datagram sent");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A child process killed (and reaped) on drop, with its log file.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = nightcap_testsupport::terminate(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The RBAC documents of the install (`manifests/`), exactly as the kustomization lists them.
pub fn install_rbac() -> Vec<Value> {
    nightcap_testcluster::manifests::install_documents(&repo().join("manifests"))
        .expect("manifests/ readable")
        .into_iter()
        .filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some("ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding")
            )
        })
        .collect()
}

/// What the storefront team's admin grants its people (not part of the install).
fn team_bindings() -> Vec<Value> {
    let binding = |name: &str, role: &str, user: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": APP_NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})
    };
    vec![
        binding("alice-edit", "edit", EDITOR),
        binding("bob-edit", "edit", ONCALL),
        binding("bob-files", "nightcap-files-reader", ONCALL),
    ]
}

/// Everything, started and wired.
pub struct Night {
    pub dir: tempfile::TempDir,
    pub s3: S3Server,
    pub nats: NatsServer,
    pub admin: Client,
    pub kubeconfig: PathBuf,
    pub state_dir: PathBuf,
    pub webhook: String,
    pub gateway: String,
    pub triggers_metrics: String,
    pub http: reqwest::Client,
    // Dropped in reverse order of start: the components first, the cluster last.
    procs: Vec<Proc>,
}

impl Drop for Night {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            // What the API server holds, while it still runs (kubectl, when installed).
            for what in ["packetcaptures", "jobs", "pods", "events"] {
                if let Ok(out) = Command::new("kubectl")
                    .arg("--kubeconfig")
                    .arg(&self.kubeconfig)
                    .args(["get", what, "-A", "-o", "yaml"])
                    .output()
                {
                    eprintln!(
                        "--- kubectl get {what} -A\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        while let Some(p) = self.procs.pop() {
            let log = p.log.clone();
            let name = p.name;
            drop(p);
            if panicking {
                eprintln!(
                    "--- {name} ({})\n{}",
                    log.display(),
                    tail(&std::fs::read_to_string(&log).unwrap_or_default(), 200)
                );
            }
        }
        if panicking {
            walk(&self.state_dir, &mut |p| {
                if p.extension().is_some_and(|e| e == "log") {
                    eprintln!(
                        "--- {}\n{}",
                        p.display(),
                        tail(&std::fs::read_to_string(p).unwrap_or_default(), 80)
                    );
                }
            });
        }
    }
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_symlink() {
            continue;
        }
        if p.is_dir() {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

fn spawn(dir: &Path, name: &'static str, mut cmd: Command) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts: {e}"));
    Proc { name, child, log }
}

/// Builds the nightcap image from the test's binary (`cli/image/build.sh --binary`) and the
/// busybox image of the workload pods; returns (nightcap bundle, busybox bundle).
pub fn images(dir: &Path) -> (PathBuf, PathBuf) {
    let bundle = dir.join("nightcap-bundle");
    let out = Command::new("bash")
        .arg(repo().join("cli/image/build.sh"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_nightcap"))
        .args(["--tag", "0.1.0", "--no-size-check"])
        .arg("--out")
        .arg(dir.join("nightcap-image"))
        .arg("--bundle")
        .arg(&bundle)
        .output()
        .expect("build.sh runs");
    assert!(
        out.status.success(),
        "cli/image/build.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let busybox =
        nightcap_testcluster::oci::busybox_bundle(&dir.join("busybox")).expect("busybox bundle");
    (bundle, busybox)
}

impl Night {
    /// The cluster alone (two nodes, the install's namespaces, service accounts and RBAC, the
    /// storage Secret), S3 and NATS; no nightcap component runs.
    pub async fn cluster() -> Self {
        nightcap_testsupport::require_root();
        let dir = tempfile::Builder::new()
            .prefix("nightcap-night-")
            .tempdir()
            .expect("temp dir");
        let (bundle, busybox) = images(dir.path());
        let mut procs = Vec::new();

        // The API test server and two nodes, RBAC from manifests/ plus the team's bindings.
        let rbac = dir.path().join("rbac.yaml");
        let docs: Vec<String> = install_rbac()
            .into_iter()
            .chain(team_bindings())
            .map(|d| serde_yaml::to_string(&d).expect("YAML"))
            .collect();
        std::fs::write(&rbac, docs.join("---\n")).expect("rbac written");
        let kubeconfig = dir.path().join("kubeconfig");
        let state_dir = dir.path().join("nodes");
        let mut tc = Command::new(sibling_binary("testcluster"));
        tc.args(["--nodes", "2", "--runc", "--netns-sandboxes"])
            .arg("--image")
            .arg(format!("{IMAGE}={}", bundle.display()))
            .arg("--image")
            .arg(format!("{WORKLOAD_IMAGE}={}", busybox.display()))
            .arg("--crd")
            .arg(repo().join("manifests/crds/nightcap.dev.yaml"))
            .arg("--rbac")
            .arg(&rbac)
            .args([
                "--user",
                &format!("{EDITOR}=rbac"),
                "--user",
                &format!("{ONCALL}=rbac"),
            ]);
        for sa in [
            "nightcap-scheduler",
            "nightcap-triggers",
            "nightcap-gateway",
        ] {
            tc.arg("--sa-kubeconfig").arg(format!(
                "{SYSTEM_NS}/{sa}={}",
                dir.path().join(format!("{sa}.kubeconfig")).display()
            ));
        }
        tc.arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--state-dir")
            .arg(&state_dir)
            .env("RUST_LOG", "info");
        let mut cluster = spawn(dir.path(), "testcluster", tc);
        let deadline = Instant::now() + Duration::from_secs(60);
        let admin = loop {
            if let Some(client) = client_for(&kubeconfig, "admin").await
                && Api::<Namespace>::all(client.clone())
                    .list(&ListParams::default())
                    .await
                    .is_ok()
            {
                break client;
            }
            let exited = cluster.child.try_wait().expect("testcluster status");
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "testcluster did not come up ({exited:?}):\n{}",
                std::fs::read_to_string(&cluster.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        procs.push(cluster);

        // What the install creates that processes outside pods still need: namespaces and
        // service accounts (the Deployments' pods are the processes below).
        let install = nightcap_testcluster::manifests::install_documents(&repo().join("manifests"))
            .expect("manifests");
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        for d in install.iter().filter(|d| d["kind"] == "Namespace") {
            let ns: Namespace = serde_json::from_value(d.clone()).expect("Namespace");
            namespaces
                .create(&PostParams::default(), &ns)
                .await
                .expect("install namespace");
        }
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": APP_NS}})).expect("ns"),
            )
            .await
            .expect("storefront namespace");
        for d in install.iter().filter(|d| d["kind"] == "ServiceAccount") {
            let sa: ServiceAccount = serde_json::from_value(d.clone()).expect("ServiceAccount");
            let ns = sa.metadata.namespace.clone().expect("namespaced");
            Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
                .create(&PostParams::default(), &sa)
                .await
                .expect("install service account");
        }

        // Storage: the S3 test server; capture Jobs read their Secret in nightcap-captures.
        let s3 = S3Server::start();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("nightcap-storage".into()),
                ..ObjectMeta::default()
            },
            data: Some(
                std::iter::once(("NIGHTCAP_OUTPUT", format!("s3://{}/{PREFIX}", s3.bucket())))
                    .chain(s3.client_env())
                    .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(admin.clone(), CAPTURE_NS)
            .create(&PostParams::default(), &secret)
            .await
            .expect("storage Secret");

        let nats = NatsServer::start();
        let http = reqwest::Client::new();

        Self {
            dir,
            s3,
            nats,
            admin,
            kubeconfig,
            state_dir,
            webhook: String::new(),
            gateway: String::new(),
            triggers_metrics: String::new(),
            http,
            procs,
        }
    }

    /// The cluster (two nodes), the servers and the three control-plane processes.
    pub async fn start() -> Self {
        let mut night = Self::cluster().await;
        night.components().await;
        night
    }

    /// Starts `nightcap scheduler`, `nightcap triggers` and `nightcap gateway`, each as its
    /// service account, and waits until they answer.
    async fn components(&mut self) {
        let (dir, s3, nats) = (&self.dir, &self.s3, &self.nats);
        let procs = &mut self.procs;
        // nightcap scheduler, as its service account, Jobs in nightcap-captures.
        let nightcap = PathBuf::from(env!("CARGO_BIN_EXE_nightcap"));
        // Each component's kubeconfig holds its service account's token (testcluster wrote it).
        let sa_config = |name: &str| dir.path().join(format!("{name}.kubeconfig"));
        let mut sched = Command::new(&nightcap);
        sched
            .args(["scheduler", "--metrics-addr", "127.0.0.1:0"])
            .args(["--job-namespace", CAPTURE_NS, "--capture-image", IMAGE])
            .args(["--debounce", "20ms", "--pods-gone-grace", "2s"])
            .args(["--lease-namespace", SYSTEM_NS, "--identity", "scheduler-0"])
            .args(["--job-termination-grace", "20s", "--capture-log", "info"])
            .env("KUBECONFIG", sa_config("nightcap-scheduler"))
            .env("RUST_LOG", "info");
        procs.push(spawn(dir.path(), "scheduler", sched));

        // nightcap triggers: the Alertmanager webhook, JetStream, cron.
        let hook_port = free_tcp_port();
        let metrics_port = free_tcp_port();
        std::fs::write(dir.path().join("webhook-token"), WEBHOOK_TOKEN).expect("token file");
        let config = json!({
            "webhook": {"listen": format!("127.0.0.1:{hook_port}"),
                "bearerTokenFile": dir.path().join("webhook-token")},
            "nats": {"servers": [nats.url()],
                "consumers": [{"stream": "ALERTS", "durable": "nightcap",
                    "filterSubjects": ["alerts.>"], "ackWaitSeconds": 5,
                    "createStream": {"subjects": ["alerts.>"]}}]},
            "cron": {"enabled": true},
        });
        std::fs::write(
            dir.path().join("triggers.yaml"),
            serde_yaml::to_string(&config).expect("YAML"),
        )
        .expect("triggers config");
        let mut trig = Command::new(&nightcap);
        trig.arg("triggers")
            .arg("--config")
            .arg(dir.path().join("triggers.yaml"))
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .env("KUBECONFIG", sa_config("nightcap-triggers"))
            .env("RUST_LOG", "info");
        procs.push(spawn(dir.path(), "triggers", trig));

        // nightcap gateway, as its service account, over the same bucket.
        let gw_port = free_tcp_port();
        let mut gw = Command::new(&nightcap);
        gw.args(["gateway", "--listen", &format!("127.0.0.1:{gw_port}")])
            .args(["--store", &format!("s3://{}/{PREFIX}", s3.bucket())])
            .args(["--retention-interval", "0"])
            .env("KUBECONFIG", sa_config("nightcap-gateway"))
            .envs(s3.client_env())
            .env("RUST_LOG", "info");
        procs.push(spawn(dir.path(), "gateway", gw));

        self.webhook = format!("http://127.0.0.1:{hook_port}");
        self.gateway = format!("http://127.0.0.1:{gw_port}");
        self.triggers_metrics = format!("http://127.0.0.1:{metrics_port}");
        // The install publishes the gateway's address for the plugin.
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "nightcap-gateway"},
            "data": {"url": self.gateway},
        }))
        .expect("ConfigMap");
        Api::<ConfigMap>::namespaced(self.admin.clone(), SYSTEM_NS)
            .create(&PostParams::default(), &cm)
            .await
            .expect("gateway ConfigMap");
        eventually("triggers and gateway answer /healthz", || async {
            for url in [&self.triggers_metrics, &self.gateway] {
                let r = self.http.get(format!("{url}/healthz")).send().await.ok()?;
                r.status().is_success().then_some(())?;
            }
            Some(())
        })
        .await;
    }

    /// A kubeconfig for `user` whose context's namespace is storefront.
    pub fn kubeconfig_of(&self, user: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{user}.kubeconfig"));
        write_kubeconfig_for(&self.kubeconfig, user, &path);
        path
    }

    /// Runs the kubectl plugin's verbs (`nightcap ARGS`) as `user`, as a person would.
    pub async fn plugin(&self, user: &str, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_nightcap"))
            .args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("KUBECONFIG", self.kubeconfig_of(user))
            .stdin(Stdio::null())
            .output()
            .await
            .expect("the plugin runs")
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), APP_NS)
    }

    pub fn captures(&self) -> Api<PacketCapture> {
        Api::namespaced(self.admin.clone(), APP_NS)
    }

    pub fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.admin.clone(), CAPTURE_NS)
    }

    /// A storefront pod with `labels` on `node` (busybox sleeping, in its own network
    /// namespace); returns its IPv4 once it runs.
    pub async fn workload(&self, name: &str, node: &str, labels: Value) -> IpAddr {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{
                "name": "app", "image": WORKLOAD_IMAGE, "command": ["sleep", "3600"],
                "securityContext": {"runAsUser": 1000, "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": true}}]},
        }))
        .expect("pod JSON");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("pod created");
        eventually(&format!("pod {name} running with an IP"), || async {
            let st = self.pods().get_opt(name).await.ok()??.status?;
            (st.phase.as_deref() == Some("Running"))
                .then_some(())
                .and(st.pod_ip?.parse().ok())
        })
        .await
    }

    /// Deletes a pod and waits until it is gone.
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

    /// Waits until `node` reports Capturing with `pod` (storefront/NAME) attached.
    pub async fn attached(&self, capture: &str, node: &str, pod: &str) {
        let want = format!("{APP_NS}/{pod}");
        eventually(&format!("{pod} attached on {node}"), || async {
            let c = self.captures().get_opt(capture).await.ok()??;
            let n = c.status?.nodes.get(node)?.clone();
            (n.state == Some(nightcap_api::NodeCaptureState::Capturing) && n.pods.contains(&want))
                .then_some(())
        })
        .await;
    }

    /// POSTs an Alertmanager notification to the triggers' webhook; returns the status.
    pub async fn post_alert(&self, body: &str) -> u16 {
        self.http
            .post(format!("{}/hooks/alertmanager", self.webhook))
            .bearer_auth(WEBHOOK_TOKEN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("webhook answers")
            .status()
            .as_u16()
    }

    /// Publishes an alert on JetStream (subject alerts.storefront.dns) and waits for the ack.
    pub async fn publish_alert(&self, body: &str) {
        let nc = async_nats::connect(self.nats.url())
            .await
            .expect("NATS client");
        let js = async_nats::jetstream::new(nc);
        eventually("JetStream takes the alert", || {
            let (js, body) = (js.clone(), body.to_string());
            async move {
                let ack = js
                    .publish("alerts.storefront.dns", body.into())
                    .await
                    .ok()?;
                ack.await.ok()
            }
        })
        .await;
    }

    /// Waits until the triggers' metrics count a `decision` for an event from `source`.
    pub async fn decision(&self, source: &str, decision: &str) {
        let (want_source, want_decision) = (
            format!("source=\"{source}\""),
            format!("decision=\"{decision}\""),
        );
        eventually(
            &format!("a {decision} decision for a {source} event"),
            || async {
                let text = self
                    .http
                    .get(format!("{}/metrics", self.triggers_metrics))
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                text.lines()
                    .any(|l| {
                        l.starts_with("nightcap_trigger_decisions_total{")
                            && l.contains(&want_source)
                            && l.contains(&want_decision)
                            && !l.ends_with(" 0")
                    })
                    .then_some(())
            },
        )
        .await;
    }

    /// Uploaded pcapng objects: (key relative to the bucket, size).
    pub fn objects(&self) -> Vec<(String, u64)> {
        let root = self.s3.bucket_dir();
        let mut out = Vec::new();
        walk(&root, &mut |p| {
            if p.extension().is_some_and(|e| e == "pcapng") {
                let rel = p.strip_prefix(&root).expect("under the bucket");
                let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                out.push((rel.to_string_lossy().into_owned(), size));
            }
        });
        out.sort();
        out
    }

    /// pcapng files in capture pods' spool directories on the nodes, with their sizes.
    pub fn spool_files(&self) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        walk(&self.state_dir, &mut |p| {
            if p.extension().is_some_and(|e| e == "pcapng") {
                out.push((
                    p.to_path_buf(),
                    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
                ));
            }
        });
        out
    }

    /// The log of one component process.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

/// A client for one context of the testcluster kubeconfig.
pub async fn client_for(kubeconfig: &Path, context: &str) -> Option<Client> {
    let kc = Kubeconfig::read_from(kubeconfig).ok()?;
    let opts = KubeConfigOptions {
        context: Some(context.to_string()),
        ..KubeConfigOptions::default()
    };
    let config = Config::from_custom_kubeconfig(kc, &opts).await.ok()?;
    Client::try_from(config).ok()
}

/// Writes a copy of the testcluster kubeconfig whose current context is `user`'s, namespace
/// storefront (as a team's kubeconfig would be).
pub fn write_kubeconfig_for(kubeconfig: &Path, user: &str, path: &Path) {
    let text = std::fs::read_to_string(kubeconfig).expect("testcluster kubeconfig");
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    let known = doc["contexts"]
        .as_sequence()
        .is_some_and(|cs| cs.iter().any(|c| c["name"].as_str() == Some(user)));
    assert!(known, "the testcluster kubeconfig has no context {user:?}");
    for c in doc["contexts"].as_sequence_mut().into_iter().flatten() {
        c["context"]["namespace"] = APP_NS.into();
    }
    doc["current-context"] = user.into();
    std::fs::write(path, serde_yaml::to_string(&doc).expect("YAML")).expect("kubeconfig written");
}

/// Labels of a map literal.
pub fn labels(pairs: &[(&str, &str)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect(),
    )
}

/// Frames per pcapng interface name whose payload contains `marker` (tshark's reading).
pub fn tshark_by_interface(file: &Path, marker: &str) -> BTreeMap<String, usize> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-Y", &format!("frame contains \"{marker}\"")])
        .args(["-T", "fields", "-e", "frame.interface_name"])
        .output()
        .expect("tshark runs (install it with .ci/setup)");
    assert!(
        out.status.success(),
        "tshark {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        *counts.entry(line.to_string()).or_insert(0) += 1;
    }
    counts
}
