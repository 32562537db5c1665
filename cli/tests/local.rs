//! `nightcap local` with real parts: network namespaces with veths standing in for pods, real
//! UDP traffic, `nightcap capture` child processes with the eBPF filter, the S3 test server,
//! and tshark reading the uploaded pcapng files. The captures, targets and moves come from the
//! configuration file, edited while it runs. Needs root (network namespaces, eBPF): CI runs as
//! root.

mod e2e;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
};

use e2e::{contains, eventually, send};
use nightcap_testsupport::{NetnsPod, S3Server, require_root, terminate};
use serde_json::Value;

struct Local {
    dir: tempfile::TempDir,
    s3: S3Server,
}

impl Local {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            s3: S3Server::start(),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("local.yaml")
    }

    fn status_path(&self) -> PathBuf {
        self.dir.path().join("status.json")
    }

    /// Writes the configuration atomically (the running executor never sees half a file).
    fn write_config(&self, targets: &str, captures: &str) {
        let text = format!(
            "output: s3://{}/\ntargets:\n{targets}captures:\n{captures}",
            self.s3.bucket()
        );
        let tmp = self.dir.path().join("local.yaml.tmp");
        std::fs::write(&tmp, text).expect("config written");
        std::fs::rename(&tmp, self.config_path()).expect("config renamed");
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nightcap"));
        cmd.arg("local")
            .arg("--config")
            .arg(self.config_path())
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .arg("--work-dir")
            .arg(self.dir.path().join("work"))
            .arg("--status-file")
            .arg(self.status_path())
            .args(["--pods-gone-grace", "2s"])
            .envs(self.s3.client_env())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        cmd
    }

    fn spawn(&self) -> Child {
        let log = std::fs::File::create(self.dir.path().join("local.log")).expect("log");
        self.command()
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("nightcap local started")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("local.log")).unwrap_or_default()
    }

    /// `status.nodes[node]` of the only capture, from the status file.
    fn node_status(&self, node: &str) -> Option<Value> {
        let text = std::fs::read(self.status_path()).ok()?;
        let all: Vec<Value> = serde_json::from_slice(&text).ok()?;
        all.first()?["status"]["nodes"].get(node).cloned()
    }

    async fn capturing(&self, node: &str, pod: &str) {
        eventually(&format!("{node} capturing {pod}"), || async {
            let n = self.node_status(node)?;
            let pods = n["pods"].as_array()?;
            (n["state"] == "Capturing" && pods.iter().any(|p| p == pod)).then_some(())
        })
        .await;
    }

    /// Uploaded pcapng files: (node, local path in the bucket directory, contents).
    fn files(&self) -> Vec<(String, PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        walk(&self.s3.bucket_dir(), &mut |p| {
            if p.extension().is_some_and(|e| e == "pcapng") {
                let node = p
                    .parent()
                    .and_then(Path::file_name)
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.push((node, p.to_path_buf(), std::fs::read(p).expect("object")));
            }
        });
        out
    }

    fn nodes_with(&self, marker: &str) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .files()
            .into_iter()
            .filter(|(_, _, bytes)| contains(bytes, marker.as_bytes()))
            .map(|(node, _, _)| node)
            .collect();
        nodes.sort();
        nodes.dedup();
        nodes
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

fn target(name: &str, pod: &NetnsPod, app: &str, node: &str) -> String {
    format!(
        "  - {{name: {name}, namespace: shop, netns: {}, labels: {{app: {app}}}, node: {node}}}\n",
        pod.name()
    )
}

fn capture(name: &str, spec: &str) -> String {
    format!(
        "  - apiVersion: nightcap.dev/v1alpha1\n    kind: PacketCapture\n    metadata: {{name: {name}, namespace: shop}}\n    spec: {spec}\n"
    )
}

/// The pcapng interface names (pod identity) of the packets in a file, as tshark reads them.
fn tshark_interfaces(path: &Path) -> Vec<String> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-T", "fields", "-e", "frame.interface_name"])
        .output()
        .expect("tshark runs");
    assert!(
        out.status.success(),
        "tshark cannot read {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn finish(child: Child) -> (Output, Vec<Value>) {
    let out = child.wait_with_output().expect("nightcap local exits");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON status line"))
        .collect();
    (out, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_targets_across_nodes_and_uploads_on_stop() {
    require_root();
    let local = Local::new();
    let web1 = NetnsPod::new();
    let web2 = NetnsPod::new();
    let db = NetnsPod::new();
    let spec = "{selector: {matchLabels: {app: web}}, duration: 10m}";
    let mut targets = target("web-1", &web1, "web", "node-a")
        + &target("web-2", &web2, "web", "node-b")
        + &target("db", &db, "db", "node-a");
    local.write_config(&targets, &capture("web-debug", spec));
    let mut child = local.spawn();

    // Two selected targets on two nodes: two capture processes.
    local.capturing("node-a", "shop/web-1").await;
    local.capturing("node-b", "shop/web-2").await;
    send(web1.ipv4().into(), "before-move-a", 20);
    send(web2.ipv4().into(), "before-move-b", 20);
    send(db.ipv4().into(), "not-selected", 20);

    // web-1 moves to node-b: its namespace is deleted, a new one takes its place there.
    drop(web1);
    let web1b = NetnsPod::new();
    targets = target("web-1", &web1b, "web", "node-b")
        + &target("web-2", &web2, "web", "node-b")
        + &target("db", &db, "db", "node-a");
    local.write_config(&targets, &capture("web-debug", spec));
    local.capturing("node-b", "shop/web-1").await;
    send(web1b.ipv4().into(), "after-move", 20);

    // Scale-out to a third node: a third process.
    let web3 = NetnsPod::new();
    targets += &target("web-3", &web3, "web", "node-c");
    local.write_config(&targets, &capture("web-debug", spec));
    local.capturing("node-c", "shop/web-3").await;
    send(web3.ipv4().into(), "scaled-out", 20);

    // A broken edit is refused and the running captures go on with the previous file.
    std::fs::write(local.config_path(), "output: [not, a, url]\n").expect("broken config");
    eventually("the broken edit reported", || async {
        local
            .log()
            .contains("The edited configuration is invalid; keeping the previous one.")
            .then_some(())
    })
    .await;
    local.write_config(&targets, &capture("web-debug", spec));
    send(web3.ipv4().into(), "after-broken-edit", 20);

    // node-a has no selected target left: after the grace its process uploads and ends.
    eventually("node-a finished with its file", || async {
        let n = local.node_status("node-a")?;
        (n["state"] == "Finished" && !n["files"].as_array()?.is_empty()).then_some(())
    })
    .await;

    // SIGTERM: every capture process stops and uploads its last file first; the capture stays
    // in the state as it is, to resume at the next start.
    terminate(child.id()).expect("SIGTERM sent");
    let waited = tokio::task::spawn_blocking(move || {
        let status = child.wait().expect("wait");
        (status, child)
    })
    .await
    .expect("join");
    let (status, child) = waited;
    let (_, lines) = finish(child);
    assert!(status.success(), "exit {status}; log:\n{}", local.log());
    assert_eq!(lines.len(), 1, "{lines:?}");
    let st = &lines[0]["status"];
    assert_eq!(st["phase"], "Capturing", "{st}");
    for node in ["node-a", "node-b", "node-c"] {
        assert_eq!(st["nodes"][node]["state"], "Finished", "{node}: {st}");
    }

    assert_eq!(local.nodes_with("before-move-a"), ["node-a"]);
    assert_eq!(local.nodes_with("before-move-b"), ["node-b"]);
    assert_eq!(local.nodes_with("after-move"), ["node-b"]);
    assert_eq!(local.nodes_with("scaled-out"), ["node-c"]);
    assert_eq!(local.nodes_with("after-broken-edit"), ["node-c"]);
    assert!(local.nodes_with("not-selected").is_empty());
    // Pod identity in the files: node-b's packets carry both pods' names.
    let mut on_b: Vec<String> = local
        .files()
        .iter()
        .filter(|(node, _, _)| node == "node-b")
        .flat_map(|(_, path, _)| tshark_interfaces(path))
        .collect();
    on_b.sort();
    on_b.dedup();
    assert_eq!(on_b, ["shop/web-1", "shop/web-2"]);
    // Every process that ran printed its summary: nothing was killed.
    let work = local.dir.path().join("work").join("jobs");
    let summaries = std::fs::read_dir(&work).expect("jobs dir").count();
    assert_eq!(summaries, 3, "one process per node");
    for entry in std::fs::read_dir(&work).expect("jobs dir").flatten() {
        let summary =
            std::fs::read_to_string(entry.path().join("summary.json")).unwrap_or_default();
        assert!(
            summary.contains("\"stop\""),
            "{}: {summary:?}",
            entry.path().display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_end_completes_the_capture_and_exits() {
    require_root();
    let local = Local::new();
    let web = NetnsPod::new();
    local.write_config(
        &target("web", &web, "web", "node-a"),
        &capture(
            "short",
            "{selector: {matchLabels: {app: web}}, duration: 4s, snapLen: 128}",
        ),
    );
    let child = local.spawn();
    local.capturing("node-a", "shop/web").await;
    send(web.ipv4().into(), "inside-window", 10);
    let (out, lines) = tokio::task::spawn_blocking(move || finish(child))
        .await
        .expect("join");
    assert!(
        out.status.success(),
        "exit {}; log:\n{}",
        out.status,
        local.log()
    );
    assert_eq!(lines[0]["status"]["phase"], "Succeeded", "{}", lines[0]);
    let files = &lines[0]["status"]["nodes"]["node-a"]["files"];
    assert_eq!(files.as_array().map(Vec::len), Some(1), "{files}");
    assert_eq!(local.nodes_with("inside-window"), ["node-a"]);
}

#[test]
fn bad_specs_and_bad_files_are_refused_with_a_precise_message() {
    // No root needed: nothing is captured.
    let local = Local::new();
    // A filter that cannot compile: the file is refused with the field named, nothing starts.
    local.write_config(
        "  - {name: web, namespace: shop, netns: nowhere, labels: {app: web}}\n",
        &capture(
            "bad",
            "{selector: {matchLabels: {app: web}}, expression: 'tcp port 99999'}",
        ),
    );
    let out = local.command().output().expect("runs");
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "no capture ran: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("captures[0].spec.expression") && stderr.contains("99999"),
        "{stderr}"
    );
    assert!(!local.dir.path().join("work/jobs").exists());

    // A typo in the file: refused before anything runs, with the field named.
    std::fs::write(
        local.config_path(),
        "output: file:///tmp\ntargets:\n  - {name: web, netnz: web}\n",
    )
    .expect("config");
    let out = local.command().output().expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field `netnz`"), "{stderr}");

    // Nothing to do without --watch.
    std::fs::write(local.config_path(), "output: file:///tmp\n").expect("config");
    let out = local.command().output().expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no captures"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_processes_outliving_a_killed_executor_upload_and_exit() {
    require_root();
    let local = Local::new();
    let web = NetnsPod::new();
    local.write_config(
        &target("web", &web, "web", "node-a"),
        &capture(
            "orphan",
            "{selector: {matchLabels: {app: web}}, duration: 10m}",
        ),
    );
    let mut child = local.spawn();
    local.capturing("node-a", "shop/web").await;
    send(web.ipv4().into(), "before-the-kill", 10);
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    // The orphaned capture process notices, closes and uploads its file, and exits.
    let jobs = local.dir.path().join("work").join("jobs");
    eventually("the orphaned process printed its summary", || async {
        let dir = std::fs::read_dir(&jobs).ok()?.flatten().next()?.path();
        let summary = std::fs::read_to_string(dir.join("summary.json")).ok()?;
        summary.contains("\"stop\"").then_some(())
    })
    .await;
    assert_eq!(local.nodes_with("before-the-kill"), ["node-a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_mode_starts_captures_added_later_and_keeps_running() {
    require_root();
    let local = Local::new();
    let web = NetnsPod::new();
    let targets = target("web", &web, "web", "node-a");
    local.write_config(&targets, "  []\n");
    let child = local
        .command()
        .arg("--watch")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(local.dir.path().join("local.log")).expect("log"))
        .spawn()
        .expect("nightcap local --watch");
    // An empty file is fine with --watch; a capture added later starts.
    eventually("waiting for captures", || async {
        local
            .log()
            .contains("Running captures locally.")
            .then_some(())
    })
    .await;
    local.write_config(
        &targets,
        &capture(
            "later",
            "{selector: {matchLabels: {app: web}}, duration: 3s}",
        ),
    );
    local.capturing("node-a", "shop/web").await;
    send(web.ipv4().into(), "added-later", 10);
    eventually("the capture succeeded", || async {
        let text = std::fs::read(local.status_path()).ok()?;
        let all: Vec<Value> = serde_json::from_slice(&text).ok()?;
        (all.first()?["status"]["phase"] == "Succeeded").then_some(())
    })
    .await;
    // Still running after every capture finished: only a signal ends it.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut child = child;
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "exited on its own"
    );
    terminate(child.id()).expect("SIGTERM");
    let (out, lines) = tokio::task::spawn_blocking(move || finish(child))
        .await
        .expect("join");
    assert!(out.status.success(), "{}", local.log());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["status"]["phase"], "Succeeded");
    assert_eq!(local.nodes_with("added-later"), ["node-a"]);
}
