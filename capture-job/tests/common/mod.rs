//! Shared helpers for the capture-job integration tests (root, real kernel, tshark).

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use nightcap_api::filter::{self, RuleTable};
use nightcap_capture_job::{
    Capture, CaptureOptions, FileIdentity, engine::EngineConfig, spool::UploaderConfig,
};
use nightcap_ebpf::RingConfig;
use nightcap_storage::{KeyPrefix, UploadOptions, Uploader};
use object_store::{ObjectStore, local::LocalFileSystem};

/// Options for a test capture into `out` (a local store) with spool `spool`.
pub fn options(expr: Option<&str>, spool: &Path, name: &str) -> CaptureOptions {
    let table: RuleTable = filter::compile(expr, &[]).expect("test filter compiles");
    CaptureOptions {
        table,
        engine: EngineConfig {
            shb_comment: format!("filter: {}", expr.unwrap_or("")),
            snaplen: 262_144,
            rotate_bytes: 100 << 20,
            rotate_every: None,
            duration: None,
            max_bytes: None,
            max_packets: None,
            spool_dir: spool.to_path_buf(),
            spool_max_bytes: 1 << 30,
            identity: FileIdentity {
                namespace: "test".into(),
                capture: name.into(),
                uid: "00000000-0000-4000-8000-000000000001".into(),
                node: "node-1".into(),
            },
            first_seq: 0,
            direct_io: true,
        },
        ring: RingConfig {
            block_size: 1 << 16,
            block_count: 16,
            block_timeout_ms: 10,
        },
        upload: UploaderConfig {
            max_files: None,
            grace: Duration::from_secs(60),
            max_backoff: Duration::from_secs(2),
            live: true,
        },
        comments: vec!["node: node-1".into()],
    }
}

/// A local store in `dir`.
pub fn local_store(dir: &Path) -> Arc<dyn ObjectStore> {
    std::fs::create_dir_all(dir).expect("store dir");
    Arc::new(LocalFileSystem::new_with_prefix(dir).expect("local store"))
}

/// Starts a capture writing to `store`.
pub fn start(opts: CaptureOptions, store: Arc<dyn ObjectStore>) -> Capture {
    start_with(opts, store, UploadOptions::default())
}

/// Starts a capture writing to `store` with these upload settings (fewer attempts, quicker
/// retries).
pub fn start_with(
    opts: CaptureOptions,
    store: Arc<dyn ObjectStore>,
    upload: UploadOptions,
) -> Capture {
    let prefix = KeyPrefix::new("").expect("prefix");
    let uploader = Arc::new(Uploader::new(
        store.clone(),
        prefix.clone(),
        UploadOptions {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(100),
            ..upload
        },
    ));
    Capture::start(opts, uploader, store, prefix).expect("capture starts")
}

/// Every `.pcapng` file under `dir`, sorted.
pub fn pcapng_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "pcapng") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs tshark on a file and returns one line of tab-separated fields per packet. Panics if
/// tshark cannot read the file (an invalid pcapng).
pub fn tshark(file: &Path, fields: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-n").arg("-r").arg(file).args(["-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark runs (apt-get install tshark)");
    assert!(
        out.status.success(),
        "tshark cannot read {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// What identifies a generated packet: addresses, protocol, ports, ICMP type, length.
pub const TUPLE: &[&str] = &[
    "ip.src",
    "ipv6.src",
    "ip.dst",
    "ipv6.dst",
    "ip.proto",
    "ipv6.nxt",
    "udp.srcport",
    "udp.dstport",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    "icmp.type",
    "icmpv6.type",
    "frame.len",
];

/// The multiset of packet tuples in a file, without IPv6 neighbour discovery and MLD (the
/// kernel sends those on its own schedule, so two captures can disagree on them).
pub fn tuples(file: &Path) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for line in tshark(file, TUPLE) {
        let cols: Vec<&str> = line.split('\t').collect();
        let icmp6 = cols.get(12).copied().unwrap_or("");
        if matches!(
            icmp6,
            "133" | "134" | "135" | "136" | "143" | "130" | "131" | "132"
        ) {
            continue;
        }
        *m.entry(line).or_insert(0) += 1;
    }
    m
}

/// A temporary directory under /tmp with a recognisable name.
pub fn tempdir(label: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("nightcap-{label}-"))
        .tempdir()
        .expect("temp dir")
}

/// A tokio runtime for tests.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
