//! kubectl plugin benchmark; prints numbers, asserts nothing about speed.
//!
//! `cargo bench -p nightcap --bench plugin` (root: the e2e cluster's kubelets make network
//! namespaces). The API test server, the S3 test server (both in this process) and `nightcap
//! gateway` (its own process) hold a finished capture of NIGHTCAP_BENCH_FILES files (default
//! 100) of NIGHTCAP_BENCH_FILE_MIB MiB each (default 10.24: 1 GiB in all), and
//! NIGHTCAP_BENCH_CAPTURES captures (default 1,000). It reports, for the release `nightcap`
//! binary's plugin verbs as a user runs them: `download` wall time, rate and peak RSS
//! (`/usr/bin/time -v`), and `get -A` wall time (median of 5, after one warm-up run); anchors
//! in the same run: `sha256sum` of the downloaded files, `curl` of the same list.

#[path = "../tests/e2e/mod.rs"]
mod e2e;
#[path = "../tests/plugin_support/mod.rs"]
mod plugin_support;

use std::time::{Duration, Instant};

use kube::api::PostParams;
use nightcap_api::PacketCapture;
use plugin_support::{ALICE, PluginCluster};
use serde_json::json;

fn env_or(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Deterministic bytes that do not compress.
fn contents(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

async fn bench() {
    let files = env_or("NIGHTCAP_BENCH_FILES", 100.0) as usize;
    let file_bytes = (env_or("NIGHTCAP_BENCH_FILE_MIB", 10.24) * 1048576.0) as usize;
    let captures = env_or("NIGHTCAP_BENCH_CAPTURES", 1000.0) as usize;
    let mut pc = PluginCluster::start(&["node-a"]).await;
    pc.start_gateway_process().await;

    // The capture's files are held here while they are stored (1 GiB by default).
    let blobs: Vec<(&str, Vec<u8>)> = (0..files)
        .map(|i| ("node-a", contents(i as u64, file_bytes)))
        .collect();
    pc.stored_capture("big", &blobs).await;
    drop(blobs);
    let total = (files * file_bytes) as f64;
    let dir = pc.c.dir.path().join("download");
    let gateway = pc.gateway_url();
    let kubeconfig = pc.kubeconfig(ALICE);
    let started = Instant::now();
    let out = tokio::process::Command::new("/usr/bin/time")
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_nightcap"))
        .args(["download", "big", "--gateway", &gateway, "-o"])
        .arg(&dir)
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .await
        .expect("download runs");
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "download failed: {stderr}");
    let rss_kib: f64 = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN);
    println!(
        "download: {files} files, {:.0} MiB in {:.2} s = {:.0} MB/s, peak RSS {:.1} MiB",
        total / 1048576.0,
        wall.as_secs_f64(),
        total / wall.as_secs_f64() / 1e6,
        rss_kib / 1024.0
    );
    // Anchor: hashing the same files alone (what the SHA-256 check costs on this machine).
    let files_on_disk: Vec<_> = std::fs::read_dir(dir.join("node-a"))
        .expect("downloaded")
        .flatten()
        .map(|e| e.path())
        .collect();
    let started = Instant::now();
    let hashed = std::process::Command::new("sha256sum")
        .args(&files_on_disk)
        .output()
        .expect("sha256sum runs");
    assert!(hashed.status.success());
    let took = started.elapsed().as_secs_f64();
    println!(
        "anchor: sha256sum of the downloaded files {took:.2} s = {:.0} MB/s",
        total / took / 1e6
    );

    for i in 0..captures {
        let obj: PacketCapture = serde_json::from_value(json!({
            "apiVersion": "nightcap.dev/v1alpha1", "kind": "PacketCapture",
            "metadata": {"name": format!("c-{i:04}")},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "duration": "10m"},
        }))
        .expect("capture JSON");
        pc.c.captures()
            .create(&PostParams::default(), &obj)
            .await
            .expect("capture created");
    }
    let mut times: Vec<Duration> = Vec::new();
    for run in 0..6 {
        let started = Instant::now();
        let out = pc.plugin(ALICE, &["get", "-A"]).await;
        let took = started.elapsed();
        assert!(out.status.success(), "get -A failed");
        let rows = String::from_utf8_lossy(&out.stdout).lines().count() - 1;
        assert_eq!(rows, captures + 1, "one row per capture");
        if run > 0 {
            times.push(took);
        }
    }
    times.sort();
    // Anchor: the same list as one raw API request (curl), without decoding or a table.
    let token = pc.c.server.token_for(ALICE).expect("token");
    let url = format!(
        "{}/apis/nightcap.dev/v1alpha1/packetcaptures",
        pc.c.server.url()
    );
    let mut raw: Vec<Duration> = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let out = tokio::process::Command::new("curl")
            .args([
                "-sf",
                "-o",
                "/dev/null",
                "-H",
                &format!("Authorization: Bearer {token}"),
                &url,
            ])
            .output()
            .await
            .expect("curl runs");
        assert!(out.status.success(), "curl failed");
        raw.push(started.elapsed());
    }
    raw.sort();
    println!(
        "anchor: curl of the same list: median {:.0} ms",
        raw[raw.len() / 2].as_secs_f64() * 1e3
    );
    println!(
        "get -A over {} captures: median {:.0} ms (min {:.0}, max {:.0})",
        captures + 1,
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
}
