//! Download benchmark: files.zip throughput from the in-process S3 server to an HTTP client (1
//! file and 100 files), the process's peak RSS while doing it, and the cost of pre-signing 10k
//! URLs. Prints numbers; asserts nothing about time.
//!
//! Run: `cargo bench -p nightcap-gateway --bench downloads` (optimised build).

#[path = "../tests/common/mod.rs"]
mod common;

use std::{sync::Arc, time::Instant};

use common::{
    fixture::serve_counting,
    gateway::{s3_store, token, token_access},
    objects::{UID_A, key},
};
use futures::StreamExt;
use nightcap_gateway::{captures::StoredCaptures, sign::SigningKey};
use nightcap_storage::{Store, UploadOptions, Uploader};
use nightcap_testsupport::S3Server;
use object_store::signer::Method;

/// Bytes per capture (kept modest: the data sits on the shared disk while the bench runs).
const TOTAL: u64 = 256 << 20;

fn vm_hwm_mib() -> f64 {
    common::peak_rss_bytes() as f64 / (1024.0 * 1024.0)
}

async fn upload_capture(store: &Store, name: &str, files: u64) {
    let to = if store.backend == "s3" {
        "S3Server"
    } else {
        "local dir"
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let size = TOTAL / files;
    let local = dir.path().join("f.pcapng");
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    std::fs::write(&local, &data).expect("write");
    let up = Uploader::new(
        store.store.clone(),
        store.prefix.clone(),
        UploadOptions::default(),
    );
    let t = Instant::now();
    for seq in 0..files {
        up.upload_file(&local, &key("bench", name, UID_A, "node-1", seq))
            .await
            .expect("upload");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "upload  {files:>3} file(s) x {:>5} MiB: {:>7.1} MB/s (Uploader -> {to})",
        size >> 20,
        TOTAL as f64 / 1e6 / secs
    );
}

async fn download(base: &str, name: &str, files: u64) {
    download_labelled(base, name, files, "S3Server").await;
}

async fn download_labelled(base: &str, name: &str, files: u64, from: &str) {
    let http = reqwest::Client::new();
    // Reset peak RSS (Linux: 5 > clear_refs), then download the archive once.
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let before = vm_hwm_mib();
    let t = Instant::now();
    let resp = http
        .get(format!(
            "{base}/v1/namespaces/bench/packetcaptures/{name}/files.zip"
        ))
        .bearer_auth(token("carol"))
        .send()
        .await
        .expect("GET files.zip");
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.bytes_stream();
    let mut total = 0u64;
    while let Some(c) = body.next().await {
        total += c.expect("chunk").len() as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "zip     {files:>3} file(s), {:>5} MiB from {from:<8}: {:>7.1} MB/s, {:.2} s, peak RSS {:.1} MiB (was {:.1} MiB before)",
        total >> 20,
        total as f64 / 1e6 / secs,
        secs,
        vm_hwm_mib(),
        before
    );
}

/// Baseline: the same objects read with object_store alone (no gateway, no zip, no HTTP client).
async fn raw_get(store: &Store, name: &str, files: u64) {
    use object_store::ObjectStoreExt;
    let t = Instant::now();
    let mut total = 0u64;
    for seq in 0..files {
        let path = key("bench", name, UID_A, "node-1", seq).to_path(&store.prefix);
        let mut s = store.store.get(&path).await.expect("get").into_stream();
        while let Some(c) = s.next().await {
            total += c.expect("chunk").len() as u64;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "raw GET {files:>3} file(s), {:>5} MiB: {:>7.1} MB/s (object_store from S3Server, baseline)",
        total >> 20,
        total as f64 / 1e6 / secs
    );
}

/// Baseline: ranged GETs of `range` bytes, `parallel` at a time.
async fn raw_ranged(store: &Store, name: &str, files: u64, range: u64, parallel: usize) {
    use object_store::ObjectStoreExt;
    let size = TOTAL / files;
    let jobs: Vec<_> = (0..files)
        .flat_map(|seq| {
            let path = key("bench", name, UID_A, "node-1", seq).to_path(&store.prefix);
            (0..size.div_ceil(range))
                .map(move |i| (path.clone(), i * range..((i + 1) * range).min(size)))
        })
        .collect();
    let t = Instant::now();
    let total: u64 = futures::stream::iter(jobs)
        .map(|(p, r)| {
            let s = store.store.clone();
            async move { s.get_range(&p, r).await.expect("range").len() as u64 }
        })
        .buffered(parallel)
        .fold(0, |a, n| async move { a + n })
        .await;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "raw GET {files:>3} file(s), {:>5} MiB: {:>7.1} MB/s ({} KiB ranges x {parallel} in flight, baseline)",
        total >> 20,
        total as f64 / 1e6 / secs,
        range >> 10
    );
}

async fn presign(store: &Store) {
    let signer = store.signer.clone().expect("S3 signs");
    let keys: Vec<_> = (0..10_000)
        .map(|i| key("bench", "sign", UID_A, "node-1", i).to_path(&store.prefix))
        .collect();
    let t = Instant::now();
    for k in &keys {
        signer
            .signed_url(Method::GET, k, std::time::Duration::from_secs(900))
            .await
            .expect("sign");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "presign 10000 S3 URLs (SigV4): {:.3} s total, {:.1} µs per URL",
        secs,
        secs * 1e6 / 10_000.0
    );
    let hmac = SigningKey::random();
    let t = Instant::now();
    for (i, k) in keys.iter().enumerate() {
        std::hint::black_box(hmac.sign_object(k.as_ref(), i as i64));
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "sign    10000 gateway URLs (HMAC): {:.3} s total, {:.1} µs per URL",
        secs,
        secs * 1e6 / 10_000.0
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / nextest discovery: nothing to list.
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let s3 = S3Server::start();
        let store = s3_store(&s3, "bench");
        {
            upload_capture(&store, "one", 1).await;
            upload_capture(&store, "hundred", 100).await;
            let (gw, _) = serve_counting(&store, token_access(), |s| {
                Arc::new(StoredCaptures::new(s.store, s.prefix))
            })
            .await;
            for (range, parallel) in [(1 << 20, 4), (16 << 20, 4)] {
                raw_ranged(&store, "one", 1, range, parallel).await;
            }
            for _ in 0..2 {
                raw_get(&store, "one", 1).await;
                raw_get(&store, "hundred", 100).await;
                download(&gw.base, "one", 1).await;
                download(&gw.base, "hundred", 100).await;
            }
        }
        presign(&store).await;
        drop(s3); // frees its disk before the local-store part
        // The gateway pipeline without the S3 server in the path: a local directory store.
        let dir = tempfile::tempdir().expect("tempdir");
        let local =
            nightcap_storage::StoreConfig::from_url(&format!("file://{}", dir.path().display()))
                .expect("file URL")
                .open()
                .expect("open");
        upload_capture(&local, "one", 1).await;
        upload_capture(&local, "hundred", 100).await;
        let (lgw, _) = serve_counting(&local, token_access(), |s| {
            Arc::new(StoredCaptures::new(s.store, s.prefix))
        })
        .await;
        download_labelled(&lgw.base, "one", 1, "local").await;
        download_labelled(&lgw.base, "hundred", 100, "local").await;
    });
}
