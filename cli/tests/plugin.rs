//! The kubectl plugin run as a user runs it (the `nightcap` binary's plugin verbs with the
//! user's own kubeconfig) against the API test server, `nightcap scheduler`, fake kubelets
//! running capture Jobs, `nightcap gateway` and the S3 test server, each a separate process.

mod e2e;
mod plugin_support;

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use plugin_support::{ALICE, BOB, PluginCluster, ok, stderr, stdout};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::e2e::{NS, SYSTEM_NS, eventually, send};

fn pcapng_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for node in std::fs::read_dir(dir).expect("download dir").flatten() {
        if node.path().is_dir() {
            for f in std::fs::read_dir(node.path()).expect("node dir").flatten() {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

/// Frames in `file` whose payload contains `marker`, as tshark reads them.
fn tshark_count(file: &Path, marker: &str) -> usize {
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-Y", &format!("frame contains \"{marker}\"")])
        .output()
        .expect("tshark runs (install it with .ci/setup)");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_watch_describe_download_and_tshark_reads_the_packets() {
    let mut pc = PluginCluster::start(&["node-a"]).await;
    pc.c.start_scheduler();
    // No published URL: the plugin port-forwards to this pod through the API server.
    pc.start_gateway_pod().await;
    let ip = pc.c.workload("web-1", "node-a").await;

    let created = ok(
        &pc.plugin(
            ALICE,
            &[
                "create",
                "dns",
                "-l",
                "app=web",
                "--filter",
                "udp",
                "--duration",
                "20s",
            ],
        )
        .await,
        "create",
    );
    assert_eq!(created.trim(), "packetcapture.nightcap.dev/dns created");
    pc.c.attached("dns", "node-a", "web-1").await;
    tokio::task::spawn_blocking(move || send(ip, "plugin-marker", 40))
        .await
        .expect("sent");

    let watched = pc.plugin(ALICE, &["watch", "dns"]).await;
    let lines = ok(&watched, "watch");
    assert!(lines.contains("node-a: Capturing"), "{lines}");
    let last = lines.lines().last().unwrap_or_default();
    assert!(last.starts_with("packetcapture/dns Succeeded"), "{lines}");

    let dir = pc.c.dir.path().join("download");
    let dl = ok(
        &pc.plugin(
            ALICE,
            &["download", "dns", "-o", dir.to_str().expect("utf-8")],
        )
        .await,
        "download",
    );
    let files = pcapng_files(&dir);
    assert!(!files.is_empty(), "{dl}");
    assert!(dl.contains(&format!("tshark -r {}", dir.display())), "{dl}");
    let seen: usize = files.iter().map(|f| tshark_count(f, "plugin-marker")).sum();
    assert_eq!(seen, 40, "{dl}");

    let again = ok(
        &pc.plugin(
            ALICE,
            &["download", "dns", "-o", dir.to_str().expect("utf-8")],
        )
        .await,
        "second download",
    );
    assert!(
        again.contains(&format!(
            "Downloaded 0 files (0B, 0 resumed) to {}; {} already present",
            dir.display(),
            files.len()
        )),
        "{again}"
    );

    let described = ok(&pc.plugin(ALICE, &["describe", "dns"]).await, "describe");
    let status =
        pc.c.get_capture("dns")
            .await
            .expect("capture")
            .status
            .expect("status");
    let sha = status.nodes["node-a"].files[0]
        .sha256
        .clone()
        .expect("sha256");
    for want in [
        "Phase:        Succeeded",
        "node-a:",
        "team-a/web-1",
        &sha[..12],
        "Events:",
    ] {
        assert!(described.contains(want), "{want:?} missing:\n{described}");
    }

    let table = ok(&pc.plugin(ALICE, &["get"]).await, "get");
    let mut rows = table.lines();
    let header: Vec<&str> = rows.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "NODES", "PACKETS", "BYTES", "FILES", "AGE"]
    );
    let row: Vec<&str> = rows.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(&row[..3], ["dns", "Succeeded", "1"], "{table}");

    let json: Value = serde_json::from_str(&ok(
        &pc.plugin(ALICE, &["get", "dns", "-o", "json"]).await,
        "get -o json",
    ))
    .expect("get -o json parses");
    assert_eq!(json["kind"], "PacketCapture");
    assert_eq!(json["status"]["phase"], "Succeeded");
    let list: Value = serde_json::from_str(&ok(
        &pc.plugin(ALICE, &["get", "-A", "-o", "json"]).await,
        "get -A",
    ))
    .expect("get -A -o json parses");
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["metadata"]["namespace"], NS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_files_right_download_is_forbidden_with_the_can_i_hint() {
    let mut pc = PluginCluster::start(&["node-a"]).await;
    // A gateway outside the cluster, published by the install's ConfigMap.
    pc.start_gateway_process().await;
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "nightcap-gateway"}, "data": {"url": pc.gateway_url()},
    }))
    .expect("ConfigMap JSON");
    Api::<ConfigMap>::namespaced(pc.c.admin.clone(), SYSTEM_NS)
        .create(&PostParams::default(), &cm)
        .await
        .expect("ConfigMap created");
    pc.stored_capture("fixed", &[("node-a", b"not really a pcapng".to_vec())])
        .await;

    let denied = pc.plugin(BOB, &["download", "fixed"]).await;
    assert_eq!(denied.status.code(), Some(1), "{}", stdout(&denied));
    let err = stderr(&denied);
    assert!(err.starts_with("Error from server (Forbidden): "), "{err}");
    assert!(
        err.contains("kubectl auth can-i get packetcaptures/files -n team-a"),
        "{err}"
    );
    assert!(
        !pc.c.dir.path().join("fixed").exists(),
        "nothing downloaded"
    );

    let link = ok(
        &pc.plugin(ALICE, &["link", "fixed", "--expires", "1h"])
            .await,
        "link",
    );
    assert!(
        link.trim().contains("/v1/share/") && link.trim().ends_with("/files.zip"),
        "{link}"
    );
    let zipped = ok(
        &pc.plugin(ALICE, &["download", "fixed", "--zip"]).await,
        "download --zip",
    );
    assert!(
        zipped.contains("1 files, every SHA-256 checked"),
        "{zipped}"
    );

    ok(
        &pc.plugin(ALICE, &["stop", "fixed", "--reason", "enough"])
            .await,
        "stop",
    );
    let stopped = pc.c.get_capture("fixed").await.expect("capture");
    assert_eq!(
        stopped.metadata.annotations.expect("annotations")["nightcap.dev/stop"],
        "enough"
    );
    ok(&pc.plugin(ALICE, &["delete", "fixed"]).await, "delete");
    eventually("capture deleted", || async {
        pc.c.get_capture("fixed").await.is_none().then_some(())
    })
    .await;
    let gone = pc.plugin(ALICE, &["get", "fixed"]).await;
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        stderr(&gone).starts_with("Error from server (NotFound): "),
        "{}",
        stderr(&gone)
    );
}

/// Deterministic, incompressible-looking bytes.
fn contents(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_resumes_after_a_killed_first_attempt() {
    let mut pc = PluginCluster::start(&["node-a"]).await;
    pc.start_gateway_process().await;
    let files: Vec<(&str, Vec<u8>)> = (0..6)
        .map(|i| {
            (
                if i % 2 == 0 { "node-a" } else { "node-b" },
                contents(i, 16 << 20),
            )
        })
        .collect();
    pc.stored_capture("big", &files).await;
    let gateway = pc.gateway_url();
    let dir = pc.c.dir.path().join("big");
    let args = [
        "download",
        "big",
        "--gateway",
        &gateway,
        "-o",
        dir.to_str().expect("utf-8"),
        "--parallel",
        "1",
    ];

    let mut first = pc
        .command(ALICE, pc.c.dir.path(), &args)
        .spawn()
        .expect("download starts");
    let partial = eventually("a partly downloaded file", || async {
        walk_files(&dir).into_iter().find(|p| {
            p.extension().is_some_and(|e| e == "partial")
                && std::fs::metadata(p).is_ok_and(|m| m.len() > 0)
        })
    })
    .await;
    first.start_kill().expect("SIGKILL");
    let _ = first.wait().await;
    assert!(partial.exists() || partial.with_extension("").exists());

    let second = ok(&pc.plugin(ALICE, &args).await, "download after the kill");
    let resumed: usize = field(&second, ", ", " resumed");
    let skipped: usize = field(&second, "; ", " already present");
    assert!(
        resumed + skipped >= 1,
        "nothing was kept from the first attempt:\n{second}"
    );
    let mut on_disk = walk_files(&dir);
    on_disk.sort();
    assert_eq!(on_disk.len(), files.len(), "{on_disk:?}");
    assert!(
        on_disk
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "pcapng")),
        "{on_disk:?}"
    );
    let mut want: Vec<String> = files
        .iter()
        .map(|(_, b)| hex::encode(Sha256::digest(b)))
        .collect();
    let mut got: Vec<String> = on_disk
        .iter()
        .map(|p| hex::encode(Sha256::digest(std::fs::read(p).expect("read"))))
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);

    let third = ok(&pc.plugin(ALICE, &args).await, "third download");
    assert!(
        third.contains(&format!("; {} already present", files.len())),
        "{third}"
    );
}

fn field(text: &str, before: &str, after: &str) -> usize {
    let end = text
        .find(after)
        .unwrap_or_else(|| panic!("{after:?} not in {text}"));
    let start = text[..end].rfind(before).map_or(0, |i| i + before.len());
    text[start..end]
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no number before {after:?} in {text}"))
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_manifest_passes_the_crd_schema_and_invalid_flags_send_nothing() {
    let pc = PluginCluster::start(&["node-a"]).await;
    let yaml = ok(
        &pc.plugin(
            ALICE,
            &[
                "create",
                "web",
                "-l",
                "app=web,tier in (front,edge)",
                "--filter",
                "udp port 53",
                "--protocol",
                "tcp",
                "--port",
                "443,8000-8080",
                "--snaplen",
                "256",
                "--duration",
                "1h30m",
                "--max-bytes",
                "1GiB",
                "--rotate-size",
                "100MB",
                "--rotate-every",
                "5m",
                "--max-files",
                "4",
                "--dry-run=client",
                "-o",
                "yaml",
            ],
        )
        .await,
        "create --dry-run=client",
    );
    let manifest: Value = serde_yaml::from_str(&yaml).expect("YAML");
    assert_eq!(
        manifest["metadata"]["namespace"], NS,
        "the context's namespace"
    );
    assert_eq!(manifest["spec"]["maxBytes"], 1u64 << 30);
    pc.c.server
        .check_objects(&[manifest])
        .expect("the manifest passes the PacketCapture CRD schema");

    let bad = pc
        .plugin(
            ALICE,
            &[
                "create",
                "bad",
                "-l",
                "app in web",
                "--snaplen",
                "10",
                "--port",
                "http",
            ],
        )
        .await;
    assert_eq!(bad.status.code(), Some(1));
    let err = stderr(&bad);
    assert!(
        err.starts_with("error: The PacketCapture \"bad\" is invalid:"),
        "{err}"
    );
    for path in [
        "* spec.selector: ",
        "* spec.snapLen: ",
        "* spec.filters[0].ports[0]: ",
    ] {
        assert!(err.contains(path), "{path} missing:\n{err}");
    }
    let stored =
        pc.c.captures()
            .list(&ListParams::default())
            .await
            .expect("list");
    assert!(stored.items.is_empty(), "nothing was sent");
    let empty: Value =
        serde_json::from_str(&ok(&pc.plugin(ALICE, &["get", "-o", "json"]).await, "get"))
            .expect("JSON");
    assert_eq!(empty["items"], json!([]));
}
