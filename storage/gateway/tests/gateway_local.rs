//! The gateway over a local directory: file URLs are gateway URLs signed with HMAC.

mod common;

use std::sync::{Arc, atomic::Ordering};

use common::{
    fixture::{Stored, populate, serve_counting},
    gateway::{TestGateway, raw_get, token, token_access},
};
use nightcap_gateway::captures::StoredCaptures;
use nightcap_storage::{Store, StoreConfig};
use serde_json::Value;

async fn fixture() -> (tempfile::TempDir, Store, Stored, TestGateway) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().display());
    let store = StoreConfig::from_url(&url)
        .expect("file URL")
        .open()
        .expect("open");
    let stored = populate(&store).await;
    let (gw, _) = serve_counting(&store, token_access(), |s| {
        Arc::new(StoredCaptures::new(s.store, s.prefix))
    })
    .await;
    (dir, store, stored, gw)
}

async fn urls(gw: &TestGateway, user: &str, ns: &str, name: &str) -> Vec<(String, String)> {
    let v: Value = reqwest::Client::new()
        .get(format!(
            "{}/v1/namespaces/{ns}/packetcaptures/{name}/files",
            gw.base
        ))
        .bearer_auth(token(user))
        .send()
        .await
        .expect("GET files")
        .json()
        .await
        .expect("JSON");
    v["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            (
                f["key"].as_str().expect("key").to_string(),
                f["url"].as_str().expect("url").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_signed_urls_download_identical_bytes() {
    let (_dir, _store, stored, gw) = fixture().await;
    let files = urls(&gw, "alice", "team-a", "web").await;
    assert_eq!(files.len(), 3);
    for (key, url) in &files {
        assert!(
            url.starts_with(&format!("{}/v1/objects/{key}?expires=", gw.base)),
            "{url}"
        );
        let r = reqwest::get(url).await.expect("GET");
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            Some(&r.bytes().await.expect("body").to_vec()),
            stored.get(key)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_signed_urls_refuse_other_keys_tampering_and_expiry() {
    let (_dir, _store, stored, gw) = fixture().await;
    let (key, url) = urls(&gw, "alice", "team-a", "web").await.remove(0);
    let b_key = stored
        .keys()
        .find(|k| k.starts_with("team-b/"))
        .expect("team-b object");
    let moved = url.replacen(&key, b_key, 1);
    assert_eq!(
        reqwest::get(&moved).await.expect("GET").status().as_u16(),
        403
    );
    let (base, sig) = url.rsplit_once("signature=").expect("signature");
    let flipped = format!(
        "{base}signature={}{}",
        if sig.starts_with('0') { '1' } else { '0' },
        &sig[1..]
    );
    assert_eq!(
        reqwest::get(&flipped).await.expect("GET").status().as_u16(),
        403
    );
    let later_exp = url.replace("expires=", "expires=9");
    assert_eq!(
        reqwest::get(&later_exp)
            .await
            .expect("GET")
            .status()
            .as_u16(),
        403
    );
    // Raw traversal in the object path never reaches the store.
    let raw = url
        .trim_start_matches(&gw.base)
        .replacen("team-a/", "team-a/../team-b/", 1);
    assert_eq!(raw_get(&gw.base, &raw, None).await, 403);
    gw.skew.store(16 * 60, Ordering::SeqCst);
    assert_eq!(
        reqwest::get(&url).await.expect("GET").status().as_u16(),
        403,
        "past 15 min"
    );
    gw.skew.store(0, Ordering::SeqCst);
    assert_eq!(
        reqwest::get(&url).await.expect("GET").status().as_u16(),
        200
    );
}
