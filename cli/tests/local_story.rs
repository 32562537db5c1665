//! The single-host story with real parts: `nightcap local` run with the example configuration
//! (`examples/local/nightcap.yaml`, only addresses, names and paths replaced), network
//! namespaces with veths as the two storefront pods, the Alertmanager payload of
//! `examples/alertmanager/` posted over HTTP as Alertmanager sends it, capture processes with
//! the eBPF filter, the S3 test server, files.zip through the gateway checked against its
//! manifest, tshark reading the files. Needs root (network namespaces, eBPF): CI runs as root.

mod e2e;

use std::{
    io::Read,
    net::{IpAddr, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use e2e::{contains, eventually};
use nightcap_testsupport::{
    NatsServer, NetnsPod, S3Server, require_root, terminate,
    util::{ReservedPort, reserve_tcp_port},
};
use serde_json::Value;
use sha2::{Digest, Sha256};

const ONCALL: &str = "storefront-oncall-token-0123";
const PAYMENTS: &str = "payments-oncall-token-45678";
const FIRING: &str = include_str!("../../examples/alertmanager/dns-latency-firing.json");

/// Sends `count` UDP datagrams with `marker` from the host to `ip:port`.
fn send_to(ip: IpAddr, port: u16, marker: &str, count: usize) {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("UDP socket");
    for i in 0..count {
        socket
            .send_to(format!("{marker}#{i}").as_bytes(), (ip, port))
            .expect("datagram sent");
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct Host {
    dir: tempfile::TempDir,
    s3: S3Server,
    logging: NetnsPod,
    web: NetnsPod,
    hook: String,
    gateway: String,
    token: String,
    http: reqwest::Client,
    /// The webhook's and the gateway's ports, kept across restarts of `nightcap local`.
    _ports: [ReservedPort; 2],
}

impl Host {
    /// The example configuration with this test's pods, ports, store and token file.
    fn new(edit: impl FnOnce(&mut serde_yaml::Value)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let s3 = S3Server::start();
        let (logging, web) = (NetnsPod::new(), NetnsPod::new());
        let ports = [
            reserve_tcp_port().expect("a port"),
            reserve_tcp_port().expect("a port"),
        ];
        let (hook_port, gw_port) = (ports[0].port(), ports[1].port());
        let token = "webhook-token-for-the-story-test".to_string();
        std::fs::write(dir.path().join("webhook-token"), &token).expect("token file");
        let text = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/local/nightcap.yaml"),
        )
        .expect("example config");
        let mut cfg: serde_yaml::Value = serde_yaml::from_str(&text).expect("example YAML");
        cfg["output"] = format!("s3://{}/", s3.bucket()).into();
        cfg["targets"][0]["netns"] = logging.name().into();
        cfg["targets"][1]["netns"] = web.name().into();
        cfg["webhook"]["listen"] = format!("127.0.0.1:{hook_port}").into();
        cfg["webhook"]["bearerTokenFile"] = dir
            .path()
            .join("webhook-token")
            .display()
            .to_string()
            .into();
        cfg["gateway"]["listen"] = format!("127.0.0.1:{gw_port}").into();
        edit(&mut cfg);
        std::fs::write(
            dir.path().join("nightcap.yaml"),
            serde_yaml::to_string(&cfg).expect("YAML"),
        )
        .expect("config written");
        Self {
            dir,
            s3,
            logging,
            web,
            hook: format!("http://127.0.0.1:{hook_port}"),
            gateway: format!("http://127.0.0.1:{gw_port}"),
            token,
            http: reqwest::Client::new(),
            _ports: ports,
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nightcap"));
        cmd.arg("local")
            .arg("--config")
            .arg(self.dir.path().join("nightcap.yaml"))
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .envs(self.s3.client_env())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        cmd
    }

    fn spawn(&self, log: &str) -> Child {
        let log = std::fs::File::create(self.dir.path().join(log)).expect("log");
        self.command()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nightcap local starts")
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    async fn ready(&self) {
        eventually("the gateway answers", || async {
            let r = self
                .http
                .get(format!("{}/healthz", self.gateway))
                .send()
                .await;
            r.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await;
    }

    /// Posts an Alertmanager notification as Alertmanager does.
    async fn alert(&self, body: &str) -> Value {
        let r = self
            .http
            .post(format!("{}/hooks/alertmanager", self.hook))
            .bearer_auth(&self.token)
            .header("Content-Type", "application/json")
            .header("User-Agent", "Alertmanager/0.28.1")
            .body(body.to_string())
            .send()
            .await
            .expect("webhook answers");
        assert!(r.status().is_success(), "{}", r.status());
        r.json().await.expect("JSON answer")
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.gateway))
            .bearer_auth(token)
            .send()
            .await
            .expect("gateway answers");
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(Value::Null))
    }

    async fn captures(&self) -> Vec<Value> {
        let (code, list) = self
            .get("/v1/namespaces/storefront/packetcaptures", ONCALL)
            .await;
        assert_eq!(code, 200, "{list}");
        list["items"].as_array().cloned().unwrap_or_default()
    }

    async fn capture(&self, name: &str) -> Value {
        let (code, pc) = self
            .get(
                &format!("/v1/namespaces/storefront/packetcaptures/{name}"),
                ONCALL,
            )
            .await;
        assert_eq!(code, 200, "{pc}");
        pc
    }

    async fn phase(&self, name: &str) -> String {
        self.capture(name).await["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The pid of the capture process that attached to its target (its log says so).
    fn attached_pid(&self) -> Option<String> {
        let jobs = self.dir.path().join("state/work/jobs");
        std::fs::read_dir(jobs).ok()?.flatten().find_map(|e| {
            let log = std::fs::read_to_string(e.path().join("capture.log")).ok()?;
            log.contains("Capturing on target")
                .then(|| std::fs::read_to_string(e.path().join("pid")).ok())
                .flatten()
        })
    }

    async fn capturing(&self, name: &str) {
        eventually(
            "the capture process attached to the logging pod",
            || async {
                let pc = self.capture(name).await;
                let pods = &pc["status"]["nodes"]["demo"]["pods"];
                (pods.as_array()?.iter().any(|p| p == "storefront/logging-0")).then_some(())
            },
        )
        .await;
    }

    /// files.zip with the on-call token: every file checked against the manifest's sha256.
    async fn download(&self, name: &str) -> Vec<(String, Vec<u8>)> {
        let r = self
            .http
            .get(format!(
                "{}/v1/namespaces/storefront/packetcaptures/{name}/files.zip",
                self.gateway
            ))
            .bearer_auth(ONCALL)
            .send()
            .await
            .expect("files.zip");
        assert_eq!(r.status(), 200);
        let bytes = r.bytes().await.expect("zip body");
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).expect("a zip");
        let mut manifest = String::new();
        zip.by_name("manifest.json")
            .expect("manifest.json")
            .read_to_string(&mut manifest)
            .expect("manifest");
        let manifest: Value = serde_json::from_str(&manifest).expect("manifest JSON");
        let mut files = Vec::new();
        for f in manifest["files"].as_array().expect("files") {
            let path = f["path"].as_str().expect("path").to_string();
            let mut data = Vec::new();
            zip.by_name(&path)
                .expect("listed file in the zip")
                .read_to_end(&mut data)
                .expect("read");
            assert_eq!(
                Some(hex::encode(Sha256::digest(&data)).as_str()),
                f["sha256"].as_str(),
                "{path}"
            );
            files.push((path, data));
        }
        files
    }
}

fn resolved() -> String {
    let mut v: Value = serde_json::from_str(FIRING).expect("fixture");
    v["status"] = "resolved".into();
    v["alerts"][0]["status"] = "resolved".into();
    v["alerts"][0]["endsAt"] = "2026-12-02T02:20:07.041Z".into();
    v.to_string()
}

/// tshark's view of a pcapng file: (interface name, UDP destination port) per packet.
fn tshark(data: &[u8], dir: &std::path::Path) -> Vec<(String, String)> {
    let path = dir.join(format!(
        "read-{}.pcapng",
        hex::encode(&Sha256::digest(data)[..6])
    ));
    std::fs::write(&path, data).expect("write");
    let out = Command::new("tshark")
        .args(["-r"])
        .arg(&path)
        .args([
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "udp.dstport",
        ])
        .output()
        .expect("tshark runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once('\t')?;
            Some((a.to_string(), b.to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_starts_a_capture_that_the_oncall_token_downloads() {
    require_root();
    let host = Host::new(|_| {});
    let mut child = host.spawn("local.log");
    host.ready().await;

    let answer = host.alert(FIRING).await;
    let name = answer["decisions"][0]["capture"]
        .as_str()
        .unwrap_or_else(|| panic!("a capture was created: {answer}"))
        .to_string();
    host.capturing(&name).await;
    send_to(host.logging.ipv4().into(), 53, "dns-query", 20);
    send_to(host.logging.ipv4().into(), 80, "not-dns", 20);
    send_to(host.web.ipv4().into(), 53, "other-pod", 20);
    eventually("the DNS packets are counted", || async {
        let pc = host.capture(&name).await;
        (pc["status"]["nodes"]["demo"]["packets"].as_u64()? >= 20).then_some(())
    })
    .await;

    // Alertmanager says resolved: the trigger stops the capture; every file is uploaded.
    host.alert(&resolved()).await;
    eventually("the capture ended", || async {
        let phase = host.phase(&name).await;
        (phase == "Stopped" || phase == "Succeeded").then_some(())
    })
    .await;
    let pc = host.capture(&name).await;
    assert_eq!(pc["status"]["trigger"]["name"], "dns-latency", "{pc}");
    assert_eq!(pc["spec"]["selector"]["matchLabels"]["app"], "logging");

    let files = host.download(&name).await;
    assert!(!files.is_empty());
    let packets: Vec<(String, String)> = files
        .iter()
        .flat_map(|(_, data)| tshark(data, host.dir.path()))
        .collect();
    assert_eq!(
        packets.len(),
        20,
        "only the logging pod's DNS packets: {packets:?}"
    );
    assert!(
        packets
            .iter()
            .all(|(iface, port)| iface == "storefront/logging-0" && port == "53"),
        "{packets:?}"
    );
    assert!(files.iter().any(|(_, d)| contains(d, b"dns-query#19")));
    assert!(!files.iter().any(|(_, d)| contains(d, b"other-pod")));

    // Events say what happened, for `describe`.
    let (_, events) = host
        .get(
            &format!("/v1/namespaces/storefront/packetcaptures/{name}/events"),
            ONCALL,
        )
        .await;
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(reasons.contains(&"CaptureCreated"), "{reasons:?}");

    // The payments token may not read storefront: 403 on every endpoint, whether the capture
    // exists or not; no token or a wrong one: 401.
    let base = "/v1/namespaces/storefront/packetcaptures";
    let paths = [
        base.to_string(),
        format!("{base}/{name}"),
        format!("{base}/{name}/events"),
        format!("{base}/{name}/files"),
        format!("{base}/{name}/files.zip"),
        format!("{base}/does-not-exist"),
        format!("{base}/does-not-exist/files.zip"),
        "/v1/namespaces/storefront/capturetriggers".into(),
        "/v1/namespaces/storefront/captureschedules".into(),
    ];
    for p in &paths {
        assert_eq!(host.get(p, PAYMENTS).await.0, 403, "{p}");
        assert_eq!(
            host.get(p, "not-a-token-of-anyone-at-all").await.0,
            401,
            "{p}"
        );
    }
    let (code, all) = host.get("/v1/packetcaptures", PAYMENTS).await;
    assert_eq!(
        (code, all["items"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let writes = [
        (reqwest::Method::POST, format!("{base}/{name}/stop")),
        (reqwest::Method::POST, format!("{base}/{name}/links")),
        (reqwest::Method::DELETE, format!("{base}/{name}")),
        (reqwest::Method::POST, base.to_string()),
    ];
    for (method, p) in &writes {
        for (token, want) in [(PAYMENTS, 403), ("not-a-token-of-anyone-at-all", 401)] {
            let r = host
                .http
                .request(method.clone(), format!("{}{p}", host.gateway))
                .bearer_auth(token)
                .body("{}")
                .send()
                .await
                .expect("answer");
            assert_eq!(r.status().as_u16(), want, "{method} {p}");
        }
    }
    // Still there for its owner.
    assert_eq!(host.captures().await.len(), 1);
    let metrics = host
        .http
        .get(format!("{}/metrics", host.gateway))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("nightcap_trigger_decisions_total"),
        "{metrics}"
    );

    terminate(child.id()).expect("SIGTERM");
    let status = child.wait().expect("exits");
    assert!(
        status.success(),
        "{status}; log:\n{}",
        host.log("local.log")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_copies_of_the_alert_make_one_capture() {
    require_root();
    let host = Host::new(|_| {});
    let mut child = host.spawn("local.log");
    host.ready().await;
    let posts = (0..1000).map(|_| host.alert(FIRING));
    let answers = futures::future::join_all(posts).await;
    let created = answers
        .iter()
        .filter(|a| a["decisions"][0]["decision"] == "created")
        .count();
    assert_eq!(created, 1, "{:?}", &answers[..3]);
    assert!(answers.iter().all(|a| {
        matches!(
            a["decisions"][0]["decision"].as_str(),
            Some("created" | "deduplicated")
        )
    }));
    assert_eq!(host.captures().await.len(), 1);
    terminate(child.id()).expect("SIGTERM");
    child.wait().expect("exits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_mid_capture_loses_nothing() {
    require_root();
    let host = Host::new(|_| {});
    let mut child = host.spawn("first.log");
    host.ready().await;
    let answer = host.alert(FIRING).await;
    let name = answer["decisions"][0]["capture"]
        .as_str()
        .expect("created")
        .to_string();
    host.capturing(&name).await;
    let first = eventually("the first process attached", || async {
        host.attached_pid()
    })
    .await;
    send_to(host.logging.ipv4().into(), 53, "before-the-kill", 10);
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");

    let mut child = host.spawn("second.log");
    host.ready().await;
    let listed = host.captures().await;
    assert_eq!(listed.len(), 1, "not lost, not doubled: {listed:?}");
    assert_eq!(listed[0]["metadata"]["name"], name);
    let again = host.alert(FIRING).await;
    assert_eq!(again["decisions"][0]["decision"], "deduplicated", "{again}");

    // The window is still open: the capture resumes with a new process.
    eventually("a new process attached", || async {
        host.attached_pid().filter(|pid| *pid != first)
    })
    .await;
    eventually("the status says capturing again", || async {
        (host.phase(&name).await == "Capturing").then_some(())
    })
    .await;
    send_to(host.logging.ipv4().into(), 53, "after-the-restart", 10);
    host.alert(&resolved()).await;
    eventually("the capture ended", || async {
        let phase = host.phase(&name).await;
        (phase == "Stopped" || phase == "Succeeded").then_some(())
    })
    .await;
    let files = host.download(&name).await;
    assert!(
        files.iter().any(|(_, d)| contains(d, b"before-the-kill#9")),
        "the killed run's file was uploaded and is listed"
    );
    assert!(
        files
            .iter()
            .any(|(_, d)| contains(d, b"after-the-restart#9"))
    );
    let pc = host.capture(&name).await;
    let listed = pc["status"]["nodes"]["demo"]["files"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(listed, files.len(), "the status lists every file: {pc}");
    terminate(child.id()).expect("SIGTERM");
    child.wait().expect("exits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_within_a_second_of_its_time() {
    require_root();
    let host = Host::new(|cfg| {
        let s = &mut cfg["schedules"][0]["spec"];
        s["schedule"] = "* * * * *".into();
        s["suspend"] = false.into();
        s["template"]["spec"]["duration"] = "3s".into();
    });
    let mut child = host.spawn("local.log");
    host.ready().await;
    let pc = eventually("the schedule's first run", || async {
        host.captures()
            .await
            .into_iter()
            .find(|pc| pc["metadata"]["labels"]["nightcap.dev/schedule"] == "web-sample")
    })
    .await;
    let scheduled: jiff::Timestamp = pc["metadata"]["annotations"]["nightcap.dev/scheduled-time"]
        .as_str()
        .expect("scheduled time")
        .parse()
        .expect("a time");
    let created: jiff::Timestamp = pc["metadata"]["creationTimestamp"]
        .as_str()
        .expect("created")
        .parse()
        .expect("a time");
    let late = created.duration_since(scheduled);
    // creationTimestamp has whole seconds: within 1 s means the same or the next second.
    assert!(
        late >= jiff::SignedDuration::ZERO && late <= jiff::SignedDuration::from_secs(1),
        "scheduled {scheduled}, created {created}"
    );
    let (_, schedules) = host
        .get("/v1/namespaces/storefront/captureschedules", ONCALL)
        .await;
    assert!(
        schedules["items"][0]["status"]["lastScheduleTime"].is_string(),
        "{schedules}"
    );
    terminate(child.id()).expect("SIGTERM");
    child.wait().expect("exits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_locked_state_is_refused_and_left_alone() {
    require_root();
    let host = Host::new(|_| {});
    let state = host.dir.path().join("state");
    std::fs::create_dir_all(&state).expect("dir");
    let garbage = b"not a database\n".repeat(500);
    std::fs::write(state.join("state.db"), &garbage).expect("garbage");
    let out = host.command().output().expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a usable nightcap state database"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(state.join("state.db")).expect("read"),
        garbage
    );
    assert!(std::net::TcpStream::connect(host.gateway.trim_start_matches("http://")).is_err());

    std::fs::remove_file(state.join("state.db")).expect("rm");
    let mut first = host.spawn("local.log");
    host.ready().await;
    let out = host.command().output().expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another nightcap local"),
        "{stderr}"
    );
    assert!(stderr.contains(&first.id().to_string()), "{stderr}");
    terminate(first.id()).expect("SIGTERM");
    first.wait().expect("exits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_over_nats_starts_a_capture_too() {
    require_root();
    let nats = NatsServer::start();
    let url = nats.url();
    let host = Host::new(|cfg| {
        cfg["nats"] = serde_yaml::from_str(&format!(
            "{{servers: [\"{url}\"], subscriptions: [{{subject: alerts.>}}]}}"
        ))
        .expect("nats section");
    });
    let mut child = host.spawn("local.log");
    host.ready().await;
    let nc = async_nats::connect(nats.url()).await.expect("NATS client");
    let reply = eventually("the subscription answers", || async {
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            nc.request("alerts.storefront", FIRING.into()),
        )
        .await
        .ok()?
        .ok()?;
        serde_json::from_slice::<Value>(&r.payload).ok()
    })
    .await;
    assert_eq!(reply["decisions"][0]["decision"], "created", "{reply}");
    let listed = host.captures().await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    // The same alert over the webhook is the same capture.
    let again = host.alert(FIRING).await;
    assert_eq!(again["decisions"][0]["decision"], "deduplicated", "{again}");
    terminate(child.id()).expect("SIGTERM");
    child.wait().expect("exits");
}

/// A manifest of the local example works in a cluster unchanged: every PacketCapture,
/// CaptureTrigger and CaptureSchedule of `examples/local/nightcap.yaml` passes the CRD schemas
/// (unknown fields are errors), as the API server checks them.
#[tokio::test]
async fn the_example_manifests_pass_the_cluster_schemas() {
    let server = nightcap_testcluster::ApiServer::start(nightcap_testcluster::Policy::default())
        .await
        .expect("API test server");
    for crd in nightcap_api::crds() {
        server.register_crd(&crd).expect("CRD");
    }
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/local/nightcap.yaml"),
    )
    .expect("example");
    let cfg: Value = serde_yaml::from_str(&text).expect("YAML");
    let mut objects = Vec::new();
    for section in ["captures", "triggers", "schedules"] {
        objects.extend(cfg[section].as_array().cloned().unwrap_or_default());
    }
    assert!(objects.len() >= 2, "{objects:?}");
    server
        .check_objects(&objects)
        .expect("the example's manifests pass the CRD schemas");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_end_with_a_reason_after_downtime_and_expire_with_their_files() {
    require_root();
    let host = Host::new(|cfg| {
        cfg["output"] = "file:///dev/null".into();
        cfg["captures"] = serde_yaml::from_str(
            "[{apiVersion: nightcap.dev/v1alpha1, kind: PacketCapture,
               metadata: {name: short, namespace: storefront},
               spec: {selector: {matchLabels: {app: logging}}, duration: 4s,
                      ttlSecondsAfterFinished: 3}}]",
        )
        .expect("captures");
    });
    // A local folder, so the test can see the files go.
    let files = host.dir.path().join("files");
    let path = host.dir.path().join("nightcap.yaml");
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(
        &path,
        text.replace("file:///dev/null", &format!("file://{}", files.display())),
    )
    .expect("config");
    let mut child = host.command();
    child.args(["--retention-interval", "1s"]);
    let log = std::fs::File::create(host.dir.path().join("first.log")).expect("log");
    let mut first = child
        .stderr(log)
        .stdout(Stdio::null())
        .spawn()
        .expect("starts");
    host.ready().await;
    host.capturing("short").await;
    send_to(host.logging.ipv4().into(), 53, "before-the-downtime", 5);
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    // Down past the end of the window: at the next start the capture ends, with a reason.
    std::thread::sleep(Duration::from_secs(5));
    let mut cmd = host.command();
    cmd.args(["--retention-interval", "1s"]);
    let log = std::fs::File::create(host.dir.path().join("second.log")).expect("log");
    let mut second = cmd
        .stderr(log)
        .stdout(Stdio::null())
        .spawn()
        .expect("starts");
    host.ready().await;
    let pc = eventually("the capture ended", || async {
        let pc = host.capture("short").await;
        pc["status"]["completionTime"].is_string().then_some(pc)
    })
    .await;
    assert!(
        pc["status"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{pc}"
    );
    let stored = || {
        let mut n = 0;
        let mut stack = vec![files.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else if e.path().extension().is_some_and(|x| x == "pcapng") {
                    n += 1;
                }
            }
        }
        n
    };
    assert!(stored() >= 1, "the killed run's file was uploaded");
    // ttlSecondsAfterFinished later, the capture and its files are gone.
    eventually("the capture expired", || async {
        host.captures().await.is_empty().then_some(())
    })
    .await;
    eventually("its files are deleted", || async {
        (stored() == 0).then_some(())
    })
    .await;
    terminate(second.id()).expect("SIGTERM");
    second.wait().expect("exits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_alerts_sent_while_it_is_down_are_not_lost() {
    require_root();
    let nats = NatsServer::start();
    let url = nats.url();
    let host = Host::new(|cfg| {
        cfg["nats"] = serde_yaml::from_str(&format!(
            "{{servers: [\"{url}\"], consumers: [{{stream: ALERTS, durable: nightcap,
               filterSubjects: [alerts.>], ackWaitSeconds: 2,
               createStream: {{subjects: [alerts.>]}}}}]}}"
        ))
        .expect("nats section");
    });
    let mut child = host.spawn("first.log");
    host.ready().await;
    let nc = async_nats::connect(nats.url()).await.expect("NATS client");
    let js = async_nats::jetstream::new(nc);
    let publish = |body: String| {
        let js = js.clone();
        async move {
            eventually("JetStream takes the alert", || {
                let (js, body) = (js.clone(), body.clone());
                async move {
                    let ack = js.publish("alerts.storefront", body.into()).await.ok()?;
                    ack.await.ok()
                }
            })
            .await;
        }
    };
    publish(FIRING.to_string()).await;
    eventually("the first capture", || async {
        (host.captures().await.len() == 1).then_some(())
    })
    .await;

    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    // While nightcap local is down: the same alert again, and another one.
    publish(FIRING.to_string()).await;
    let mut other: Value = serde_json::from_str(FIRING).expect("fixture");
    other["alerts"][0]["fingerprint"] = "0000000000000002".into();
    other["alerts"][0]["labels"]["app"] = "web".into();
    publish(other.to_string()).await;

    // Messages handed to the killed process's pull are delivered again after the ack wait (2 s).
    let mut child = host.spawn("second.log");
    host.ready().await;
    let listed = eventually("the alert sent while down", || async {
        let l = host.captures().await;
        (l.len() == 2).then_some(l)
    })
    .await;
    let apps: Vec<&str> = listed
        .iter()
        .filter_map(|pc| pc["spec"]["selector"]["matchLabels"]["app"].as_str())
        .collect();
    assert!(
        apps.contains(&"logging") && apps.contains(&"web"),
        "{apps:?}"
    );
    // The repeat was deduplicated: still two after the consumer caught up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(host.captures().await.len(), 2);
    terminate(child.id()).expect("SIGTERM");
    child.wait().expect("exits");
}
