//! The install's Deployments run `nightcap` as it really is: every argument parses with the
//! subcommand's own flags, every environment variable is one it reads, listen addresses, ports,
//! probes, Services, NetworkPolicies and mounted files agree, the triggers configuration (base
//! and `components/nats`) loads with the real configuration type, the example JetStream stream
//! is accepted by nats-server, and `nightcap triggers` with the install's configuration and
//! exactly its RBAC turns the example alert into the example trigger's capture.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use clap::{CommandFactory, Parser};
use nightcap_testcluster::manifests::install_documents;
use serde::Deserialize as _;
use serde_json::Value;

#[derive(Debug, Parser)]
struct Scheduler {
    #[command(flatten)]
    args: nightcap_scheduler::SchedulerArgs,
    #[command(flatten)]
    log: nightcap_process::LogArgs,
}

#[derive(Debug, Parser)]
struct Triggers {
    #[command(flatten)]
    args: nightcap_triggers::TriggersArgs,
    #[command(flatten)]
    log: nightcap_process::LogArgs,
}

#[derive(Debug, Parser)]
struct Gateway {
    #[command(flatten)]
    args: nightcap_gateway::GatewayArgs,
    #[command(flatten)]
    log: nightcap_process::LogArgs,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn docs() -> Vec<Value> {
    install_documents(&repo().join("manifests")).expect("manifests/ reads")
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} is in the install"))
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

fn args(c: &Value) -> Vec<String> {
    c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

fn port(c: &Value, name: &str) -> u16 {
    c["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("container {} has no port {name:?}", c["name"]))
}

/// Environment variables a command reads (its flags' `env`), plus RUST_LOG (the log default).
fn known_env(cmd: &clap::Command) -> BTreeSet<String> {
    cmd.get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .chain(["RUST_LOG".to_string()])
        .collect()
}

fn assert_env_known(c: &Value, cmd: &clap::Command) {
    let known = known_env(cmd);
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name");
        assert!(
            known.contains(name),
            "{} sets {name}, which `nightcap {}` does not read",
            c["name"],
            cmd.get_name()
        );
    }
}

/// Probes use declared ports and the paths the component serves.
fn assert_probes(c: &Value, paths: &[&str]) {
    for probe in ["livenessProbe", "readinessProbe"] {
        let get = &c[probe]["httpGet"];
        let path = get["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{probe} path"));
        assert!(
            paths.contains(&path),
            "{} {probe}: {path} is not served",
            c["name"]
        );
        port(c, get["port"].as_str().expect("named probe port"));
    }
}

/// The directory a secret (or configMap) volume named by `source` is mounted at.
fn mount_of(deployment: &Value, field: &str, source: &str) -> PathBuf {
    let spec = &deployment["spec"]["template"]["spec"];
    let volume = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v[field]["secretName"] == source || v[field]["name"] == source)
        .unwrap_or_else(|| panic!("no {field} volume of {source}"));
    let mount = spec["containers"][0]["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == volume["name"])
        .unwrap_or_else(|| panic!("volume of {source} is not mounted"));
    assert_eq!(mount["readOnly"], true, "{source} is mounted read-only");
    PathBuf::from(mount["mountPath"].as_str().expect("mountPath"))
}

#[test]
fn scheduler_arguments_parse() {
    let d = docs();
    let dep = find(&d, "Deployment", "nightcap-scheduler");
    let c = container(dep);
    let argv = args(c);
    assert_eq!(argv[0], "scheduler");
    let parsed = Scheduler::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert_eq!(parsed.args.metrics_addr.port(), port(c, "metrics"));
    assert_eq!(
        parsed.args.jobs.job_namespace.as_deref(),
        Some("nightcap-captures"),
        "capture Jobs run in their own namespace"
    );
    assert!(
        !argv.iter().any(|a| a.starts_with("--capture-image")),
        "the capture image is the scheduler's own (no second place names it)"
    );
    assert_probes(c, &["/healthz"]);
    // Its env (leader election, its own Pod) is checked by scheduler/tests/manifests.rs.
}

#[test]
fn triggers_arguments_and_configuration_load() {
    let d = docs();
    let dep = find(&d, "Deployment", "nightcap-triggers");
    let c = container(dep);
    let argv = args(c);
    assert_eq!(argv[0], "triggers");
    let parsed = Triggers::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert_env_known(c, &Triggers::command());
    assert_eq!(parsed.args.metrics_addr.port(), port(c, "metrics"));
    assert_probes(c, &["/healthz", "/readyz"]);
    // The configuration file is the ConfigMap's key, mounted where --config points.
    let config_dir = mount_of(dep, "configMap", "nightcap-triggers");
    assert_eq!(parsed.args.config.parent(), Some(config_dir.as_path()));
    let key = parsed
        .args
        .config
        .file_name()
        .expect("file name")
        .to_string_lossy();
    let text = find(&d, "ConfigMap", "nightcap-triggers")["data"][key.as_ref()]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap nightcap-triggers has no key {key}"))
        .to_string();
    let cfg = load_config(&text);
    let webhook = cfg.webhook.as_ref().expect("the base runs the webhook");
    assert_eq!(webhook.listen.port(), port(c, "webhook"));
    let token = webhook.bearer_token_file.as_ref().expect("bearer token");
    assert_eq!(
        token.parent(),
        Some(mount_of(dep, "secret", "nightcap-triggers-webhook").as_path())
    );
    assert!(cfg.cron.enabled, "CaptureSchedules run");
    assert!(cfg.nats.is_none(), "NATS comes with components/nats");
}

fn load_config(text: &str) -> nightcap_triggers::Config {
    let cfg: nightcap_triggers::Config =
        serde_yaml::from_str(text).unwrap_or_else(|e| panic!("triggers.yaml: {e}\n{text}"));
    cfg.validate()
        .unwrap_or_else(|e| panic!("triggers.yaml: {e}"));
    cfg
}

fn yaml_file(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("YAML"))
        .collect()
}

#[test]
fn the_nats_component_configures_what_it_mounts_and_allows() {
    let dir = repo().join("manifests/components/nats");
    let config = yaml_file(&dir.join("triggers-config.yaml"));
    let cfg = load_config(
        config[0]["data"]["triggers.yaml"]
            .as_str()
            .expect("triggers.yaml"),
    );
    // The base's webhook and cron stay as they are.
    let base = docs();
    let base_text = find(&base, "ConfigMap", "nightcap-triggers")["data"]["triggers.yaml"]
        .as_str()
        .expect("base triggers.yaml")
        .to_string();
    let base_cfg = load_config(&base_text);
    assert_eq!(cfg.webhook, base_cfg.webhook);
    assert_eq!(cfg.cron, base_cfg.cron);
    assert_eq!(cfg.limits, base_cfg.limits);
    let nats = cfg.nats.expect("nats section");
    let consumer = &nats.consumers[0];
    assert_eq!(
        (consumer.stream.as_str(), consumer.durable.as_str()),
        ("ALERTS", "nightcap-triggers")
    );
    // The credentials file lies in the mounted Secret.
    let patch = &yaml_file(&dir.join("triggers-deployment.yaml"))[0];
    let creds = nats.auth.credentials_file.expect("credentials file");
    assert_eq!(
        creds.parent(),
        Some(mount_of(patch, "secret", "nightcap-nats").as_path())
    );
    // The NetworkPolicy allows the servers' port.
    let policy = &yaml_file(&dir.join("network-policy.yaml"))[0];
    let allowed = policy["spec"]["egress"][0]["ports"][0]["port"]
        .as_u64()
        .expect("port");
    for server in &nats.servers {
        let port = server
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u64>().ok());
        assert_eq!(
            port,
            Some(allowed),
            "{server} is allowed by the NetworkPolicy"
        );
    }
    // The example stream stores every subject the consumer filters.
    let stream: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("examples/cluster/nats-stream.json")).expect("stream"),
    )
    .expect("stream JSON");
    assert_eq!(stream["name"], consumer.stream.as_str());
    for subject in &consumer.filter_subjects {
        assert!(
            stream["subjects"]
                .as_array()
                .expect("subjects")
                .iter()
                .any(|s| s == subject),
            "stream stores {subject}"
        );
    }
}

#[test]
fn gateway_arguments_parse_and_its_url_is_published() {
    let d = docs();
    let dep = find(&d, "Deployment", "nightcap-gateway");
    let c = container(dep);
    let argv = args(c);
    assert_eq!(argv[0], "gateway");
    let parsed = Gateway::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert_env_known(c, &Gateway::command());
    assert_eq!(parsed.args.listen.port(), port(c, "http"));
    assert_probes(c, &["/healthz"]);
    let key = parsed.args.signing_key_file.expect("a shared signing key");
    assert_eq!(
        key.parent(),
        Some(mount_of(dep, "secret", "nightcap-gateway-signing-key").as_path())
    );
    let store = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "NIGHTCAP_STORE")
        .expect("NIGHTCAP_STORE");
    assert_eq!(
        store["valueFrom"]["secretKeyRef"]["name"],
        "nightcap-storage"
    );
    assert_eq!(store["valueFrom"]["secretKeyRef"]["key"], "NIGHTCAP_OUTPUT");
    // The plugin's ConfigMap and the share links point at the Service.
    let svc = find(&d, "Service", "nightcap-gateway");
    let url = format!(
        "http://nightcap-gateway.nightcap-system.svc:{}",
        svc["spec"]["ports"][0]["port"]
    );
    assert_eq!(
        find(&d, "ConfigMap", "nightcap-gateway")["data"]["url"],
        url.as_str()
    );
    assert_eq!(parsed.args.public_url, url);
    assert_eq!(
        nightcap_kubectl::gateway::URL_CONFIGMAP,
        "nightcap-gateway",
        "the ConfigMap the plugin reads"
    );
}

fn labels(v: &Value) -> std::collections::BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn selects(selector: &Value, pod_labels: &std::collections::BTreeMap<String, String>) -> bool {
    let sel: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
        serde_json::from_value(selector.clone()).expect("label selector");
    nightcap_api::selector::selects(&sel, pod_labels)
}

#[test]
fn services_and_network_policies_match_the_ports_served() {
    let d = docs();
    let deployments: Vec<&Value> = d.iter().filter(|x| x["kind"] == "Deployment").collect();
    assert_eq!(deployments.len(), 3);
    let pods_of = |selector: &Value| -> Vec<&Value> {
        deployments
            .iter()
            .copied()
            .filter(|dep| {
                selects(
                    selector,
                    &labels(&dep["spec"]["template"]["metadata"]["labels"]),
                )
            })
            .collect()
    };
    for svc in d.iter().filter(|x| x["kind"] == "Service") {
        let selector = serde_json::json!({"matchLabels": svc["spec"]["selector"]});
        let targets = pods_of(&selector);
        assert_eq!(
            targets.len(),
            1,
            "Service {} selects one Deployment",
            svc["metadata"]["name"]
        );
        for p in svc["spec"]["ports"].as_array().expect("ports") {
            port(
                container(targets[0]),
                p["targetPort"].as_str().expect("named targetPort"),
            );
        }
    }
    // Ingress: each component's policy allows exactly the ports its container declares.
    for dep in &deployments {
        let pod = labels(&dep["spec"]["template"]["metadata"]["labels"]);
        let declared: BTreeSet<u64> = container(dep)["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| p["containerPort"].as_u64().expect("port"))
            .collect();
        let allowed: BTreeSet<u64> = d
            .iter()
            .filter(|x| x["kind"] == "NetworkPolicy" && selects(&x["spec"]["podSelector"], &pod))
            .flat_map(|x| x["spec"]["ingress"].as_array().cloned().unwrap_or_default())
            .flat_map(|rule| rule["ports"].as_array().cloned().unwrap_or_default())
            .map(|p| p["port"].as_u64().expect("numeric port"))
            .collect();
        assert_eq!(allowed, declared, "ingress of {}", dep["metadata"]["name"]);
    }
    // Default deny covers every pod of the namespace, both directions.
    let deny = find(&d, "NetworkPolicy", "nightcap-default-deny");
    assert_eq!(deny["spec"]["podSelector"], serde_json::json!({}));
    assert_eq!(
        deny["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
}

/// `nats stream add --config examples/cluster/nats-stream.json` as the nats CLI sends it (the
/// JetStream API request `$JS.API.STREAM.CREATE.<name>` with the file as its body), against a
/// real nats-server: the server accepts the configuration and the stream stores an alert
/// published on a storefront subject.
#[tokio::test]
async fn the_example_stream_is_accepted_by_nats_server_and_stores_alerts() {
    let server = nightcap_testsupport::NatsServer::start();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let body = std::fs::read(repo().join("examples/cluster/nats-stream.json")).expect("stream");
    let reply = client
        .request("$JS.API.STREAM.CREATE.ALERTS", body.into())
        .await
        .expect("JetStream API answers");
    let created: Value = serde_json::from_slice(&reply.payload).expect("JSON reply");
    assert!(created.get("error").is_none(), "stream refused: {created}");
    let alert = std::fs::read(repo().join("examples/alertmanager/dns-latency-firing.json"))
        .expect("example alert");
    let ack = client
        .request("alerts.storefront.dns", alert.into())
        .await
        .expect("publish acknowledged by the stream");
    let ack: Value = serde_json::from_slice(&ack.payload).expect("JSON ack");
    assert_eq!(ack["stream"], "ALERTS", "{ack}");
    let info = client
        .request("$JS.API.STREAM.INFO.ALERTS", "".into())
        .await
        .expect("stream info");
    let info: Value = serde_json::from_slice(&info.payload).expect("JSON info");
    assert_eq!(info["state"]["messages"], 1, "{info}");
}

/// Kills the process when the test ends, passed or not.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `nightcap triggers` with the install's configuration (paths and addresses moved to the test's
/// directory) and exactly the rights the install gives its ServiceAccount: it becomes ready, and
/// the storefront example alert, posted as Alertmanager posts it with the bearer token, creates
/// the example trigger's capture.
#[tokio::test]
async fn triggers_runs_with_the_install_rights_and_starts_the_example_capture() {
    use kube::api::{Api, DynamicObject, PostParams};
    use nightcap_testsupport::util::reserve_tcp_port;

    let d = docs();
    let (server, admin) = install_cluster(&d).await;
    let trigger = example_object("CaptureTrigger");
    let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "nightcap.dev",
        "v1alpha1",
        "CaptureTrigger",
    ));
    Api::<DynamicObject>::namespaced_with(admin.clone(), "storefront", &ar)
        .create(
            &PostParams::default(),
            &serde_json::from_value(trigger).expect("trigger object"),
        )
        .await
        .expect("CaptureTrigger dns-latency");

    let dir = tempfile::tempdir().expect("tempdir");
    let webhook = reserve_tcp_port().expect("port");
    let admin_port = reserve_tcp_port().expect("port");
    let token = "test-webhook-token-0123456789";
    std::fs::write(dir.path().join("token"), format!("{token}\n")).expect("token file");
    let base = find(&d, "ConfigMap", "nightcap-triggers")["data"]["triggers.yaml"]
        .as_str()
        .expect("triggers.yaml")
        .to_string();
    let mut cfg: serde_yaml::Value = serde_yaml::from_str(&base).expect("config YAML");
    cfg["webhook"]["listen"] = format!("127.0.0.1:{}", webhook.port()).into();
    cfg["webhook"]["bearerTokenFile"] = dir.path().join("token").to_string_lossy().as_ref().into();
    let config = dir.path().join("triggers.yaml");
    std::fs::write(&config, serde_yaml::to_string(&cfg).expect("YAML")).expect("config file");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        server
            .kubeconfig_yaml("system:serviceaccount:nightcap-system:nightcap-triggers")
            .expect("kubeconfig"),
    )
    .expect("kubeconfig written");
    let log = dir.path().join("triggers.log");
    let log_file = std::fs::File::create(&log).expect("log");
    let _triggers = Running(
        std::process::Command::new(env!("CARGO_BIN_EXE_nightcap"))
            .arg("triggers")
            .arg("--config")
            .arg(&config)
            .arg(format!("--metrics-addr=127.0.0.1:{}", admin_port.port()))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", &kubeconfig)
            .stdin(std::process::Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("nightcap triggers starts"),
    );
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{}/readyz", admin_port.port());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(&ready).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "triggers never became ready; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let alert = std::fs::read(repo().join("examples/alertmanager/dns-latency-firing.json"))
        .expect("example alert");
    let url = format!("http://127.0.0.1:{}/hooks/alertmanager", webhook.port());
    let unauthenticated = http
        .post(&url)
        .body(alert.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(unauthenticated.status(), 401);
    let resp = http
        .post(&url)
        .bearer_auth(token)
        .body(alert)
        .send()
        .await
        .expect("POST");
    let status = resp.status();
    let body: Value = resp.json().await.expect("JSON answer");
    assert_eq!(
        status,
        202,
        "{body}\nlog:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let name = body["captures"][0]
        .as_str()
        .and_then(|c| c.strip_prefix("storefront/"))
        .unwrap_or_else(|| panic!("a storefront capture: {body}"))
        .to_string();
    let pc: nightcap_api::PacketCapture = Api::namespaced(admin, "storefront")
        .get(&name)
        .await
        .expect("the capture exists");
    assert_eq!(
        pc.spec.selector.and_then(|s| s.match_labels),
        Some([("app".to_string(), "logging".to_string())].into()),
        "the template selected the alert's app"
    );
}

fn example_object(kind: &str) -> Value {
    yaml_file(&repo().join("examples/cluster/storefront.yaml"))
        .into_iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("a {kind} in storefront.yaml"))
}

/// An API test server with the install's RBAC, the CRDs and the namespaces the tests use.
async fn install_cluster(d: &[Value]) -> (nightcap_testcluster::ApiServer, kube::Client) {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, PostParams};

    let policy = nightcap_testcluster::Policy::new()
        .with_rbac_documents(d)
        .expect("the install's RBAC loads");
    let server = nightcap_testcluster::ApiServer::start(policy)
        .await
        .expect("API test server");
    for crd in nightcap_api::crds() {
        server.register_crd(&crd).expect("CRD registers");
    }
    let admin = server.admin_client().expect("admin client");
    for name in ["storefront", "nightcap-system", "nightcap-captures"] {
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("ns");
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
    }
    (server, admin)
}

/// `nightcap scheduler` with the Deployment's arguments and environment (the pod fields filled
/// in) and exactly the install's RBAC: it takes the Lease in nightcap-system and runs the
/// example PacketCapture's Job in nightcap-captures, under the capture ServiceAccount, with the
/// storage Secret.
#[tokio::test]
async fn scheduler_runs_with_the_install_rights_and_puts_jobs_in_nightcap_captures() {
    use k8s_openapi::api::{
        batch::v1::Job,
        coordination::v1::Lease,
        core::v1::{Node, Pod},
    };
    use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
    use nightcap_testsupport::util::reserve_tcp_port;

    let d = docs();
    let (server, admin) = install_cluster(&d).await;
    let pp = PostParams::default();
    let node: Node =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "node-a"}})).expect("node");
    Api::<Node>::all(admin.clone())
        .create(&pp, &node)
        .await
        .expect("node");
    let now = jiff::Timestamp::now().to_string();
    Api::<Node>::all(admin.clone())
        .patch_status(
            "node-a",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"conditions": [{
                "type": "Ready", "status": "True", "lastHeartbeatTime": now,
                "lastTransitionTime": now, "reason": "Test", "message": "test"}]}})),
        )
        .await
        .expect("node Ready");
    // The scheduler's own pod (the Deployment's NIGHTCAP_POD_* name it) and a logging pod.
    for (ns, name, labels, image) in [
        (
            "nightcap-system",
            "nightcap-scheduler-0",
            serde_json::json!({"app.kubernetes.io/name": "nightcap", "app.kubernetes.io/component": "scheduler"}),
            "ghcr.io/nightcap-dev/nightcap:0.1.0",
        ),
        (
            "storefront",
            "logging-0",
            serde_json::json!({"app": "logging"}),
            "logging",
        ),
    ] {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": image}]},
        }))
        .expect("pod");
        let api: Api<Pod> = Api::namespaced(admin.clone(), ns);
        api.create(&pp, &pod).await.expect("pod");
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"phase": "Running", "podIP": "10.0.0.7"}})),
        )
        .await
        .expect("pod Running");
    }
    let pc: nightcap_api::PacketCapture =
        serde_json::from_value(example_object("PacketCapture")).expect("example capture");
    let pc = Api::<nightcap_api::PacketCapture>::namespaced(admin.clone(), "storefront")
        .create(&pp, &pc)
        .await
        .expect("PacketCapture logging-dns");

    let dep = find(&d, "Deployment", "nightcap-scheduler");
    let c = container(dep);
    let metrics = reserve_tcp_port().expect("port");
    let mut argv: Vec<String> = args(c)
        .into_iter()
        .filter(|a| !a.starts_with("--metrics-addr"))
        .collect();
    argv.push(format!("--metrics-addr=127.0.0.1:{}", metrics.port()));
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        server
            .kubeconfig_yaml("system:serviceaccount:nightcap-system:nightcap-scheduler")
            .expect("kubeconfig"),
    )
    .expect("kubeconfig written");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nightcap"));
    cmd.args(&argv)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KUBECONFIG", &kubeconfig);
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name");
        let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => "nightcap-scheduler-0".to_string(),
            Some("metadata.namespace") => "nightcap-system".to_string(),
            Some(other) => panic!("{name}: fieldRef {other} is not filled in by this test"),
            None => e["value"].as_str().expect("env value").to_string(),
        };
        cmd.env(name, value);
    }
    let log = dir.path().join("scheduler.log");
    let log_file = std::fs::File::create(&log).expect("log");
    let _scheduler = Running(
        cmd.stdin(std::process::Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("nightcap scheduler starts"),
    );
    let uid = pc.metadata.uid.expect("uid");
    let jobs: Api<Job> = Api::namespaced(admin.clone(), "nightcap-captures");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let job = loop {
        let list = jobs
            .list(&ListParams::default().labels(&format!("nightcap.dev/capture-uid={uid}")))
            .await
            .expect("list Jobs");
        if let Some(job) = list.items.into_iter().next() {
            break job;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no capture Job in nightcap-captures; the scheduler's log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let pod = job.spec.expect("Job spec").template.spec.expect("pod spec");
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("nightcap-capture")
    );
    assert_eq!(pod.node_name.as_deref(), Some("node-a"));
    let env_from = pod.containers[0].env_from.clone().unwrap_or_default();
    assert!(
        env_from.iter().any(|e| e
            .secret_ref
            .as_ref()
            .is_some_and(|s| s.name == "nightcap-storage")),
        "the capture pod reads nightcap-storage: {env_from:?}"
    );
    let lease = Api::<Lease>::namespaced(admin, "nightcap-system")
        .get("nightcap-scheduler")
        .await
        .expect("the Lease exists");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("nightcap-scheduler-0")
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("Forbidden"),
        "a request was forbidden:\n{text}"
    );
}
