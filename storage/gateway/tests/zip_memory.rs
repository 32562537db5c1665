//! files.zip of a 2 GiB capture streams with flat memory: the process's peak RSS while serving
//! and receiving the whole archive stays under 64 MiB.
//!
//! The capture files are sparse files in a local store (2 GiB of disk would otherwise be needed);
//! they are read, CRC'd, zipped, sent over HTTP and received like any other.

mod common;

use std::sync::Arc;

use common::{
    fixture::serve_counting,
    gateway::{token, token_access},
    objects::key,
};
use futures::StreamExt;
use nightcap_gateway::captures::StoredCaptures;
use nightcap_storage::StoreConfig;

const FILES: u64 = 8;
const FILE_BYTES: u64 = 256 << 20;
const LIMIT: u64 = 64 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gib_zip_streams_in_flat_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StoreConfig::from_url(&format!("file://{}", dir.path().display()))
        .expect("file URL")
        .open()
        .expect("open");
    for seq in 0..FILES {
        let k = key("big", "huge", common::objects::UID_A, "node-1", seq);
        let path = dir.path().join(k.relative());
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let f = std::fs::File::create(&path).expect("create");
        f.set_len(FILE_BYTES).expect("sparse file");
    }
    let (gw, _) = serve_counting(&store, token_access(), |s| {
        Arc::new(StoredCaptures::new(s.store, s.prefix))
    })
    .await;

    // Reset the peak-RSS counter (Linux: writing 5 to clear_refs resets VmHWM).
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let before = common::peak_rss_bytes();
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/v1/namespaces/big/packetcaptures/huge/files.zip",
            gw.base
        ))
        .bearer_auth(token("carol"))
        .send()
        .await
        .expect("GET files.zip");
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.bytes_stream();
    let mut total = 0u64;
    let mut tail = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("chunk");
        total += chunk.len() as u64;
        tail.extend_from_slice(&chunk);
        if tail.len() > 4096 {
            tail.drain(..tail.len() - 4096);
        }
    }
    let peak = common::peak_rss_bytes();
    println!(
        "files.zip of {} MiB: received {} bytes, peak RSS {:.1} MiB (RSS before: {:.1} MiB)",
        (FILES * FILE_BYTES) >> 20,
        total,
        peak as f64 / (1 << 20) as f64,
        before as f64 / (1 << 20) as f64
    );
    assert!(
        total > FILES * FILE_BYTES,
        "whole archive received ({total} bytes)"
    );
    let eocd = &tail[tail.len() - 22..];
    assert_eq!(
        &eocd[..4],
        &[0x50, 0x4b, 0x05, 0x06],
        "archive ends with the end record"
    );
    assert_eq!(
        u16::from_le_bytes([eocd[10], eocd[11]]),
        FILES as u16 + 1,
        "entries + manifest"
    );
    assert!(peak < LIMIT, "peak RSS {peak} bytes ≥ 64 MiB");
}
