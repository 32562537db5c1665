//! The gateway in local mode (token file) over the real S3 server: pre-signed URLs, files.zip,
//! share links, the authorisation matrix and crafted names.

mod common;

use std::{
    io::{Cursor, Read},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use common::{
    fixture::{Stored, populate, serve_counting},
    gateway::{
        Counting, TestGateway, USERS, raw_get, readable, s3_store, start, test_key, token,
        token_access,
    },
    matrix,
};
use nightcap_gateway::{auth::Access, captures::StoredCaptures};
use nightcap_storage::Store;
use nightcap_testsupport::S3Server;
use serde_json::Value;
use sha2::{Digest, Sha256};

struct Fx {
    _s3: S3Server,
    store: Store,
    stored: Stored,
    gw: TestGateway,
    counting: Arc<Counting>,
    http: reqwest::Client,
}

async fn fixture() -> Fx {
    let s3 = S3Server::start();
    let store = s3_store(&s3, "nightcap");
    let stored = populate(&store).await;
    let access: Arc<dyn Access> = token_access();
    let (gw, counting) = serve_counting(&store, access, |s| {
        Arc::new(StoredCaptures::new(s.store, s.prefix))
    })
    .await;
    Fx {
        _s3: s3,
        store,
        stored,
        gw,
        counting,
        http: reqwest::Client::new(),
    }
}

impl Fx {
    async fn files(&self, user: &str, ns: &str, name: &str, query: &str) -> (u16, Value) {
        let url = format!(
            "{}/v1/namespaces/{ns}/packetcaptures/{name}/files{query}",
            self.gw.base
        );
        let r = self
            .http
            .get(url)
            .bearer_auth(token(user))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.expect("JSON body"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_downloads_byte_identical_files_through_presigned_urls() {
    let fx = fixture().await;
    let (status, v) = fx.files("alice", "team-a", "web", "").await;
    assert_eq!(status, 200, "{v}");
    let files = v["files"].as_array().expect("files");
    assert_eq!(files.len(), 3);
    for f in files {
        let key = f["key"].as_str().expect("key");
        let url = f["url"].as_str().expect("url");
        assert!(
            url.contains("X-Amz-Signature="),
            "an S3 pre-signed URL: {url}"
        );
        assert!(
            url.contains("X-Amz-Expires=900"),
            "default expiry 15 min: {url}"
        );
        // No credentials of ours: the URL alone must be enough.
        let got = reqwest::get(url).await.expect("GET presigned");
        assert_eq!(got.status().as_u16(), 200);
        let body = got.bytes().await.expect("body");
        assert_eq!(
            Some(&body.to_vec()),
            fx.stored.get(key),
            "{key} byte-identical"
        );
        assert_eq!(
            f["sha256"].as_str(),
            Some(hex::encode(Sha256::digest(&body)).as_str())
        );
        assert_eq!(f["bytes"].as_u64(), Some(body.len() as u64));
        assert_eq!(f["pods"][0].as_str(), Some("team-a/web-0"));
        assert_eq!(f["packets"].as_u64(), Some(3));
    }
    let nodes: Vec<_> = files
        .iter()
        .map(|f| f["node"].as_str().expect("node"))
        .collect();
    assert_eq!(nodes, ["node-1", "node-1", "node-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_has_no_cross_namespace_reads() {
    let fx = fixture().await;
    let may_read = |u: &str| {
        let r = readable(u);
        move |ns: &str| r.iter().any(|x| *x == "*" || *x == ns)
    };
    let checks: Vec<_> = USERS.iter().map(|(u, _)| may_read(u)).collect();
    let callers: Vec<matrix::Caller> = USERS
        .iter()
        .zip(&checks)
        .map(|((u, _), f)| matrix::Caller {
            name: u,
            token: token(u),
            may_read: f,
        })
        .collect();
    let cells = matrix::run(
        &fx.gw.base,
        &callers,
        &["team-a", "team-b", "team-c"],
        &fx.stored,
        fx.store.prefix.as_str(),
    )
    .await;
    matrix::print(&cells);
    assert_eq!(cells.len(), 3 * 3 * USERS.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_url_moved_to_another_namespace_is_refused_by_s3() {
    let fx = fixture().await;
    let (_, v) = fx.files("alice", "team-a", "web", "").await;
    let url = v["files"][0]["url"].as_str().expect("url").to_string();
    let a_key = v["files"][0]["key"].as_str().expect("key");
    let b_key = fx
        .stored
        .keys()
        .find(|k| k.contains("/team-b/"))
        .expect("a team-b object");
    let moved = url.replacen(a_key, b_key, 1);
    assert_ne!(moved, url);
    let r = reqwest::get(&moved).await.expect("GET");
    assert_eq!(
        r.status().as_u16(),
        403,
        "S3 must refuse a signature made for another key"
    );
    assert_eq!(
        reqwest::get(&url).await.expect("GET").status().as_u16(),
        200,
        "the real URL works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_presigned_url_is_refused_by_s3() {
    let fx = fixture().await;
    let (status, v) = fx.files("alice", "team-a", "web", "?expires=1").await;
    assert_eq!(status, 200);
    let url = v["files"][0]["url"].as_str().expect("url").to_string();
    assert!(
        url.contains("X-Amz-Expires=1&") || url.ends_with("X-Amz-Expires=1"),
        "{url}"
    );
    // Let the one-second validity pass (this waits; it does not assert on timing).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        reqwest::get(&url).await.expect("GET").status().as_u16(),
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_bounded() {
    let fx = fixture().await;
    for q in [
        "?expires=0",
        "?expires=8d",
        "?expires=604801",
        "?expires=soon",
        "?expires=-5",
    ] {
        let (status, v) = fx.files("alice", "team-a", "web", q).await;
        assert_eq!(status, 400, "{q}: {v}");
    }
    let (status, v) = fx.files("alice", "team-a", "web", "?expires=7d").await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["files"][0]["url"]
            .as_str()
            .expect("url")
            .contains("X-Amz-Expires=604800")
    );
}

async fn zip_entries(body: &[u8]) -> (Value, Vec<(String, Vec<u8>)>) {
    let mut z = zip::ZipArchive::new(Cursor::new(body)).expect("files.zip opens with a zip reader");
    let mut entries = Vec::new();
    let mut manifest = Value::Null;
    for i in 0..z.len() {
        let mut e = z.by_index(i).expect("entry");
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("read entry (CRC checked)");
        let name = e.name().expect("name").to_string();
        if name == "manifest.json" {
            manifest = serde_json::from_slice(&data).expect("manifest JSON");
        } else {
            entries.push((name, data));
        }
    }
    (manifest, entries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_zip_entries_equal_the_stored_objects() {
    let fx = fixture().await;
    let r = fx
        .http
        .get(format!(
            "{}/v1/namespaces/team-a/packetcaptures/web/files.zip",
            fx.gw.base
        ))
        .bearer_auth(token("alice"))
        .send()
        .await
        .expect("GET zip");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/zip");
    let (manifest, entries) = zip_entries(&r.bytes().await.expect("body")).await;
    assert_eq!(manifest["namespace"], "team-a");
    let listed = manifest["files"].as_array().expect("files");
    assert_eq!(listed.len(), 3);
    assert_eq!(entries.len(), 3);
    for f in listed {
        let key = f["key"].as_str().expect("key");
        let path = f["path"].as_str().expect("path");
        let (_, data) = entries
            .iter()
            .find(|(n, _)| n == path)
            .expect("entry for manifest path");
        assert_eq!(Some(data), fx.stored.get(key), "{path}");
        assert_eq!(
            f["sha256"].as_str(),
            Some(hex::encode(Sha256::digest(data)).as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_links_work_without_a_token_and_refuse_tampering_expiry_and_rotation() {
    let fx = fixture().await;
    let create = |user: &'static str, ns: &'static str, name: &'static str| {
        fx.http
            .post(format!(
                "{}/v1/namespaces/{ns}/packetcaptures/{name}/links?expires=1h",
                fx.gw.base
            ))
            .bearer_auth(token(user))
            .send()
    };
    assert_eq!(
        create("alice", "team-b", "db")
            .await
            .expect("POST")
            .status()
            .as_u16(),
        403
    );
    let r = create("alice", "team-a", "web").await.expect("POST");
    assert_eq!(r.status().as_u16(), 201);
    let link: Value = r.json().await.expect("JSON");
    let url = link["url"].as_str().expect("url").to_string();
    assert!(url.starts_with(&fx.gw.base));

    let ok = reqwest::get(&url).await.expect("GET share link");
    assert_eq!(ok.status().as_u16(), 200);
    let (manifest, entries) = zip_entries(&ok.bytes().await.expect("zip")).await;
    assert_eq!(manifest["name"], "web");
    assert_eq!(entries.len(), 3);

    // Tamper: change one character of the claims, then of the signature.
    let token_part = url
        .split("/v1/share/")
        .nth(1)
        .expect("token")
        .trim_end_matches("/files.zip");
    let (claims, sig) = token_part.split_once('.').expect("claims.sig");
    let flip = |s: &str, i: usize| {
        let mut b = s.as_bytes().to_vec();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).expect("ascii")
    };
    for forged in [
        format!("{}.{sig}", flip(claims, 3)),
        format!("{claims}.{}", flip(sig, 5)),
    ] {
        let u = format!("{}/v1/share/{forged}/files.zip", fx.gw.base);
        assert_eq!(
            reqwest::get(&u).await.expect("GET").status().as_u16(),
            403,
            "{forged}"
        );
    }

    // Expired: move the gateway's clock past the hour.
    fx.gw.skew.store(3601, Ordering::SeqCst);
    assert_eq!(
        reqwest::get(&url).await.expect("GET").status().as_u16(),
        403
    );
    fx.gw.skew.store(0, Ordering::SeqCst);
    assert_eq!(
        reqwest::get(&url).await.expect("GET").status().as_u16(),
        200
    );

    // Rotation: a gateway with another key refuses the old link.
    let rotated = start(
        fx.store.clone(),
        token_access(),
        Arc::new(StoredCaptures::new(
            fx.store.store.clone(),
            fx.store.prefix.clone(),
        )),
        test_key(2),
    )
    .await;
    let moved = url.replace(&fx.gw.base, &rotated.base);
    assert_eq!(
        reqwest::get(&moved).await.expect("GET").status().as_u16(),
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_names_are_refused_before_any_storage_call() {
    let fx = fixture().await;
    let before = fx.counting.count();
    let carol = Some(token("carol")); // may read every namespace
    for path in [
        "/v1/namespaces/../packetcaptures/web/files",
        "/v1/namespaces/team-a/packetcaptures/../files",
        "/v1/namespaces/team-a%2F..%2Fteam-b/packetcaptures/web/files",
        "/v1/namespaces/team-a/packetcaptures/web%2F..%2F..%2Fteam-b%2Fdb/files",
        "/v1/namespaces/team-a/packetcaptures/%2E%2E/files.zip",
        "/v1/namespaces/team-%D0%B0/packetcaptures/web/files", // Cyrillic 'а'
        "/v1/namespaces/team-a/packetcaptures/w%C3%A9b/files",
        "/v1/namespaces/team-a/packetcaptures/%EF%BD%97eb/files", // full-width 'ｗ'
        "/v1/namespaces/TEAM-A/packetcaptures/web/files",
        "/v1/namespaces/team-a/packetcaptures/web%00/files",
        "/v1/namespaces/team-a/packetcaptures/%20web/files.zip",
    ] {
        let status = raw_get(&fx.gw.base, path, carol).await;
        assert_eq!(status, 400, "{path}");
    }
    let post = fx
        .http
        .post(format!(
            "{}/v1/namespaces/team-a/packetcaptures/web%2F..%2Fx/links",
            fx.gw.base
        ))
        .bearer_auth(token("carol"))
        .send()
        .await
        .expect("POST");
    assert_eq!(post.status().as_u16(), 400);
    // A gateway-signed object URL for a key outside the layout: the signature is valid (we
    // hold the key), the key is not.
    for key in ["elsewhere/secret.txt", "nightcap/team-a/../team-b/x.pcapng"] {
        let exp = chrono::Utc::now().timestamp() + 600;
        let sig = test_key(1).sign_object(key, exp);
        let status = raw_get(
            &fx.gw.base,
            &format!("/v1/objects/{key}?expires={exp}&signature={sig}"),
            None,
        )
        .await;
        assert!(status == 400 || status == 403, "{key}: {status}");
    }
    assert_eq!(
        fx.counting.count(),
        before,
        "no storage call for crafted names"
    );
}
