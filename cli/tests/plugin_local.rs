//! The plugin's verbs with `--server URL --token T` against `nightcap local` (its capture API
//! and gateway) on one host: a network namespace stands in for the pod, real UDP traffic, the S3
//! test server, tshark reading the downloaded files. Needs root (network namespaces, eBPF).

mod e2e;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
};

use e2e::{eventually, send};
use nightcap_testsupport::{NetnsPod, S3Server, require_root, terminate};
use serde_json::Value;

const ONCALL: &str = "oncall-token-0123456789";
const OTHER: &str = "other-team-token-0123456789";

struct Host {
    dir: tempfile::TempDir,
    s3: S3Server,
    port: u16,
    child: Option<Child>,
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = terminate(c.id());
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- nightcap local\n{}",
                std::fs::read_to_string(self.dir.path().join("local.log")).unwrap_or_default()
            );
        }
    }
}

impl Host {
    fn start(web: &NetnsPod) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let s3 = S3Server::start();
        let port = nightcap_testsupport::util::free_tcp_port();
        let config = format!(
            "output: s3://{bucket}/\nnode: node-a\ntargets:\n  - {{name: web, namespace: shop, netns: {netns}, labels: {{app: web}}}}\n\
             gateway:\n  listen: 127.0.0.1:{port}\n  tokens:\n\
             \x20   - {{user: oncall, token: {ONCALL}, namespaces: [shop], edit: true}}\n\
             \x20   - {{user: other, token: {OTHER}, namespaces: [other]}}\n",
            bucket = s3.bucket(),
            netns = web.name(),
        );
        let path = dir.path().join("local.yaml");
        std::fs::write(&path, config).expect("config written");
        let log = std::fs::File::create(dir.path().join("local.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_nightcap"))
            .arg("local")
            .arg("--config")
            .arg(&path)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--work-dir")
            .arg(dir.path().join("work"))
            .args(["--pods-gone-grace", "2s"])
            .envs(s3.client_env())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("nightcap local starts");
        Self {
            dir,
            s3,
            port,
            child: Some(child),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `nightcap VERB ARGS --server URL --token TOKEN -n shop`.
    async fn plugin(&self, token: &str, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_nightcap"))
            .args(args)
            .args(["--server", &self.url(), "--token", token, "-n", "shop"])
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .output()
            .await
            .expect("the plugin runs")
    }
}

fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn pcapng_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for node in std::fs::read_dir(dir).expect("download dir").flatten() {
        for f in std::fs::read_dir(node.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(f.path());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_verbs_work_against_nightcap_local() {
    require_root();
    let web = NetnsPod::new();
    let host = Host::start(&web);
    eventually("nightcap local answers", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", host.port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;

    let created = host
        .plugin(
            ONCALL,
            &[
                "create",
                "web",
                "-l",
                "app=web",
                "--filter",
                "udp",
                "--duration",
                "8s",
            ],
        )
        .await;
    assert_eq!(
        ok(&created, "create").trim(),
        "packetcapture.nightcap.dev/web created"
    );
    eventually("web is captured", || async {
        let out = host.plugin(ONCALL, &["get", "web", "-o", "json"]).await;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["status"]["nodes"]["node-a"]["state"] == "Capturing").then_some(())
    })
    .await;
    let ip = web.ipv4();
    tokio::task::spawn_blocking(move || send(ip.into(), "local-marker", 25))
        .await
        .expect("sent");

    let watched = ok(&host.plugin(ONCALL, &["watch", "web"]).await, "watch");
    assert!(
        watched
            .lines()
            .last()
            .unwrap_or_default()
            .starts_with("packetcapture/web Succeeded"),
        "{watched}"
    );
    let dir = host.dir.path().join("files");
    let dl = ok(
        &host
            .plugin(
                ONCALL,
                &["download", "web", "-o", dir.to_str().expect("utf-8")],
            )
            .await,
        "download",
    );
    assert!(dl.contains("tshark -r"), "{dl}");
    let mut seen = 0;
    for f in pcapng_files(&dir) {
        let out = Command::new("tshark")
            .arg("-r")
            .arg(&f)
            .args(["-Y", "frame contains \"local-marker\""])
            .output()
            .expect("tshark runs");
        seen += String::from_utf8_lossy(&out.stdout).lines().count();
    }
    assert_eq!(seen, 25, "{dl}");

    let table = ok(&host.plugin(ONCALL, &["get", "-A"]).await, "get -A");
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(&row[..3], ["shop", "web", "Succeeded"], "{table}");
    let described = ok(&host.plugin(ONCALL, &["describe", "web"]).await, "describe");
    assert!(
        described.contains("node-a:") && described.contains("Events:"),
        "{described}"
    );

    let denied = host.plugin(OTHER, &["download", "web"]).await;
    assert_eq!(denied.status.code(), Some(1));
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(err.starts_with("Error from server (Forbidden): "), "{err}");
    assert!(
        err.contains("kubectl auth can-i get packetcaptures/files -n shop"),
        "{err}"
    );

    ok(
        &host
            .plugin(ONCALL, &["delete", "web", "--keep-files"])
            .await,
        "delete",
    );
    eventually("the capture is gone", || async {
        let out = host.plugin(ONCALL, &["get", "web"]).await;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code() == Some(1) && err.starts_with("Error from server (NotFound): "))
            .then_some(())
    })
    .await;
    let kept = walk(&host.s3.bucket_dir())
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pcapng"))
        .count();
    assert!(kept > 0, "--keep-files kept the files in storage");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
