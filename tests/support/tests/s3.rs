//! S3Server against object_store and plain HTTP: SigV4 is really verified.

use futures::TryStreamExt;
use nightcap_testsupport::S3Server;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path, signer::Signer};
use reqwest::{Method, StatusCode};
use std::time::Duration;

async fn put(store: &dyn ObjectStore, key: &str, body: &'static [u8]) {
    store
        .put(&Path::from(key), PutPayload::from_static(body))
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
}

#[tokio::test]
async fn put_get_list_through_object_store() {
    let server = S3Server::start();
    let store = server.object_store().expect("object_store client");
    put(&store, "ns1/cap/a.pcapng", b"first").await;
    put(&store, "ns1/cap/b.pcapng", b"second").await;
    put(&store, "ns2/other.pcapng", b"third").await;

    let got = store
        .get(&Path::from("ns1/cap/b.pcapng"))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(got.as_ref(), b"second");

    let mut listed: Vec<String> = store
        .list(Some(&Path::from("ns1")))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .expect("list");
    listed.sort();
    assert_eq!(listed, ["ns1/cap/a.pcapng", "ns1/cap/b.pcapng"]);

    // The backend is the directory tree under root_dir.
    let on_disk = std::fs::read(server.bucket_dir().join("ns2/other.pcapng")).expect("file");
    assert_eq!(on_disk, b"third");
    assert!(server.root_dir().join(server.bucket()).is_dir());
}

#[tokio::test]
async fn presigned_get_downloads_and_a_changed_key_gets_403() {
    let server = S3Server::start();
    let store = server.object_store().expect("object_store client");
    put(&store, "ns1/cap/a.pcapng", b"packets of a").await;
    put(&store, "ns1/cap/b.pcapng", b"packets of b").await;
    let url = store
        .signed_url(
            Method::GET,
            &Path::from("ns1/cap/a.pcapng"),
            Duration::from_secs(600),
        )
        .await
        .expect("sign");
    assert!(url.as_str().contains("X-Amz-Signature="), "{url}");

    let http = reqwest::Client::new();
    let ok = http.get(url.clone()).send().await.expect("GET signed URL");
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.bytes().await.expect("body").as_ref(), b"packets of a");

    // Same signature, other (existing) object: the server must refuse.
    let mut tampered = url.clone();
    tampered.set_path(&url.path().replace("a.pcapng", "b.pcapng"));
    let denied = http.get(tampered).send().await.expect("GET tampered URL");
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let body = denied.text().await.expect("error body");
    assert!(body.contains("SignatureDoesNotMatch"), "{body}");

    // No signature at all.
    let mut unsigned = url.clone();
    unsigned.set_query(None);
    let denied = http.get(unsigned).send().await.expect("GET unsigned URL");
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn expired_presigned_url_gets_403() {
    let server = S3Server::start();
    let store = server.object_store().expect("object_store client");
    put(&store, "k.pcapng", b"x").await;
    let url = store
        .signed_url(Method::GET, &Path::from("k.pcapng"), Duration::from_secs(1))
        .await
        .expect("sign");
    // Wait until the URL is certainly past its one-second lifetime (whole-second resolution).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let denied = reqwest::get(url).await.expect("GET expired URL");
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let body = denied.text().await.expect("error body");
    assert!(
        body.contains("AccessDenied") && body.contains("expired"),
        "{body}"
    );
}

#[tokio::test]
async fn wrong_secret_gets_403() {
    let server = S3Server::start();
    let good = server.object_store().expect("object_store client");
    put(&good, "k.pcapng", b"x").await;
    let bad = server
        .object_store_builder()
        .with_secret_access_key("not-the-secret")
        .build()
        .expect("client with a wrong secret");
    let err = bad
        .get(&Path::from("k.pcapng"))
        .await
        .expect_err("a wrong secret must not read");
    let text = err.to_string();
    assert!(
        text.contains("403") || text.contains("SignatureDoesNotMatch"),
        "{text}"
    );
    let url = bad
        .signed_url(
            Method::GET,
            &Path::from("k.pcapng"),
            Duration::from_secs(600),
        )
        .await
        .expect("sign with wrong secret");
    let denied = reqwest::get(url).await.expect("GET");
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    assert!(
        !server.bucket_dir().join("k2.pcapng").exists()
            && bad
                .put(&Path::from("k2.pcapng"), PutPayload::from_static(b"y"))
                .await
                .is_err(),
        "a wrong secret must not write"
    );
    assert!(!server.bucket_dir().join("k2.pcapng").exists());
}

#[test]
fn works_without_a_runtime_and_stops_on_drop() {
    let server = S3Server::start();
    let addr = server.addr();
    assert_eq!(server.endpoint(), format!("http://{addr}"));
    assert_eq!(server.region(), "us-east-1");
    assert!(!server.access_key().is_empty() && !server.secret_key().is_empty());
    server
        .create_bucket("second-bucket")
        .expect("second bucket");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = server
            .object_store_builder()
            .with_bucket_name("second-bucket")
            .build()
            .expect("client");
        put(&store, "x", b"in the second bucket").await;
    });
    assert!(server.root_dir().join("second-bucket/x").is_file());
    let root = server.root_dir().to_owned();
    drop(server);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "server still accepts after drop"
    );
    assert!(!root.exists(), "root dir left behind");
}

#[tokio::test]
async fn large_objects_and_ranges_come_back_byte_for_byte() {
    use object_store::{GetOptions, GetRange};
    let server = S3Server::start();
    let store = server.object_store().expect("object_store client");
    // Three and a half body chunks, every byte position distinguishable.
    let data: Vec<u8> = (0..(3 << 20) + (1 << 19))
        .map(|i: u32| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect();
    let path = Path::from("ns1/cap/big.pcapng");
    store
        .put(&path, PutPayload::from(data.clone()))
        .await
        .expect("put");
    let whole = store
        .get(&path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert!(whole.as_ref() == data.as_slice(), "whole object differs");
    for range in [
        GetRange::Bounded(1000..2_500_000),
        GetRange::Bounded((1 << 20) - 1..(2 << 20) + 1),
        GetRange::Offset(3 << 20),
        GetRange::Suffix(12_345),
    ] {
        let want = match &range {
            GetRange::Bounded(r) => &data[r.start as usize..r.end as usize],
            GetRange::Offset(o) => &data[*o as usize..],
            GetRange::Suffix(n) => &data[data.len() - *n as usize..],
        };
        let got = store
            .get_opts(
                &path,
                GetOptions {
                    range: Some(range.clone()),
                    ..GetOptions::default()
                },
            )
            .await
            .expect("ranged get")
            .bytes()
            .await
            .expect("body");
        assert!(got.as_ref() == want, "range {range:?} differs");
    }
}
