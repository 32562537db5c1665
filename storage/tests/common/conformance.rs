//! The storage conformance suite: plain async functions over `&dyn ObjectStore` (plus the key
//! prefix), run on InMemory, LocalFileSystem and the real S3 server. Each panics with a message.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use futures::TryStreamExt;
use nightcap_storage::{FileMeta, KeyPrefix, Lister, RetentionItem, sweep};
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, path::Path};
use sha2::{Digest, Sha256};

use super::objects::{UID_A, UID_B, UID_C, bytes, key, seed};

/// What a backend can do.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Object attributes (user metadata) survive a round trip.
    pub attributes: bool,
}

pub async fn put_get_head_range(store: &dyn ObjectStore, prefix: &KeyPrefix) {
    let path = key("conf", "rt", UID_A, "node", 1).to_path(prefix);
    let data = bytes(100_000, 1);
    store
        .put(&path, PutPayload::from(data.clone()))
        .await
        .expect("put");
    let got = store
        .get(&path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(got.as_ref(), &data[..], "get returns what put stored");
    assert_eq!(store.head(&path).await.expect("head").size, 100_000);
    let r = store
        .get_opts(
            &path,
            GetOptions::new().with_range(Some(GetRange::Bounded(10..20))),
        )
        .await
        .expect("range get")
        .bytes()
        .await
        .expect("range body");
    assert_eq!(r.as_ref(), &data[10..20]);
    store.delete(&path).await.expect("delete");
    assert!(
        matches!(
            store.get(&path).await,
            Err(object_store::Error::NotFound { .. })
        ),
        "deleted object is gone"
    );
}

pub async fn listing_respects_segment_boundaries(store: &dyn ObjectStore, prefix: &KeyPrefix) {
    for (ns, cap) in [("seg-a", "c"), ("seg-ab", "c"), ("seg-a", "cd")] {
        let p = key(ns, cap, UID_A, "n", 0).to_path(prefix);
        store
            .put(&p, PutPayload::from_static(b"x"))
            .await
            .expect("put");
    }
    let a: Vec<_> = store
        .list(Some(&prefix.namespace("seg-a").expect("ns")))
        .try_collect()
        .await
        .expect("list");
    assert_eq!(a.len(), 2, "seg-a lists its own two objects only: {a:?}");
    let c: Vec<_> = store
        .list(Some(&prefix.capture("seg-a", "c").expect("cap")))
        .try_collect()
        .await
        .expect("list");
    assert_eq!(c.len(), 1, "capture c does not include capture cd: {c:?}");
    let top = store
        .list_with_delimiter(Some(&prefix.path()))
        .await
        .expect("list with delimiter");
    for ns in ["seg-a", "seg-ab"] {
        assert!(
            top.common_prefixes.iter().any(|p| p.filename() == Some(ns)),
            "namespace {ns} is a common prefix: {:?}",
            top.common_prefixes
        );
    }
}

pub async fn uploads_and_lists_a_capture(
    store: Arc<dyn ObjectStore>,
    prefix: &KeyPrefix,
    caps: Caps,
) {
    let meta = FileMeta {
        pods: vec!["lst/web-0".into()],
        packets: Some(12),
        ..FileMeta::default()
    };
    let small = bytes(70_000, 3);
    let large = bytes(11 << 20, 4); // multipart: two 5 MiB parts and a tail
    let k1 = key("lst", "web", UID_A, "node-2", 1);
    let k2 = key("lst", "web", UID_A, "node-1", 2);
    let s1 = seed(store.clone(), prefix, &k1, &small, &meta).await;
    let s2 = seed(store.clone(), prefix, &k2, &large, &meta).await;
    assert_eq!(s2, hex::encode(Sha256::digest(&large)));
    // Something that is not a capture file under the capture's prefix is ignored.
    let junk = Path::from(format!(
        "{}/junk.txt",
        prefix.capture_uid("lst", "web", UID_A).expect("p")
    ));
    store
        .put(&junk, PutPayload::from_static(b"junk"))
        .await
        .expect("put junk");
    // Another incarnation of the same name.
    let k3 = key("lst", "web", UID_B, "node-1", 1);
    seed(store.clone(), prefix, &k3, b"other", &FileMeta::default()).await;

    let lister = Lister::new(store.clone(), prefix.clone());
    let files = lister
        .capture_files("lst", "web", Some(UID_A), None)
        .await
        .expect("list capture");
    let nodes: Vec<_> = files.iter().map(|f| f.node.as_str()).collect();
    assert_eq!(
        nodes,
        ["node-1", "node-2"],
        "sorted by node, junk and other uid skipped"
    );
    assert_eq!(files[0].bytes, large.len() as u64);
    assert_eq!(files[1].bytes, small.len() as u64);
    assert_eq!(files[1].key, k1.to_key(prefix));
    if caps.attributes {
        assert_eq!(files[0].sha256.as_deref(), Some(s2.as_str()));
        assert_eq!(files[1].sha256.as_deref(), Some(s1.as_str()));
        assert_eq!(files[1].pods, ["lst/web-0"]);
        assert_eq!(files[1].packets, Some(12));
    } else {
        assert_eq!(files[1].sha256, None, "no attributes on this backend");
    }
    let all = lister
        .capture_files("lst", "web", None, None)
        .await
        .expect("list all uids");
    assert_eq!(all.len(), 3);
    let stored = store
        .get(&k2.to_path(prefix))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(
        hex::encode(Sha256::digest(&stored)),
        s2,
        "multipart object is byte-identical"
    );
}

pub async fn retention_deletes_only_expired(store: Arc<dyn ObjectStore>, prefix: &KeyPrefix) {
    let t0 = Utc
        .with_ymd_and_hms(2026, 11, 22, 0, 0, 0)
        .single()
        .expect("valid");
    let mk = |name: &str, uid: &str, finished: Option<i64>, ttl: Option<i64>| RetentionItem {
        namespace: "ret".into(),
        name: name.into(),
        uid: uid.into(),
        finished_at: finished.map(|s| t0 + chrono::Duration::seconds(s)),
        ttl_seconds: ttl,
    };
    let items = [
        mk("expired", UID_A, Some(0), Some(60)),
        mk("fresh", UID_A, Some(0), Some(3600)),
        mk("keep-forever", UID_A, Some(0), None),
        mk("running", UID_A, None, Some(1)),
        // Same name as the expired one, but a newer incarnation: must survive.
        mk("reborn", UID_B, Some(0), Some(3600)),
        mk("reborn", UID_C, Some(0), Some(1)),
    ];
    for it in &items {
        for seq in 0..2 {
            let k = key("ret", &it.name, &it.uid, "node", seq);
            seed(store.clone(), prefix, &k, b"pcap", &FileMeta::default()).await;
        }
    }
    let other_ns = key("ret2", "expired", UID_A, "node", 0);
    seed(
        store.clone(),
        prefix,
        &other_ns,
        b"pcap",
        &FileMeta::default(),
    )
    .await;

    let report = sweep(
        store.clone(),
        prefix,
        &items,
        t0 + chrono::Duration::seconds(120),
    )
    .await
    .expect("sweep");
    assert_eq!(report.expired_captures, 2);
    let mut expect: Vec<String> = [("expired", UID_A), ("reborn", UID_C)]
        .iter()
        .flat_map(|(n, u)| (0..2).map(move |s| key("ret", n, u, "node", s).to_key(prefix)))
        .collect();
    expect.sort();
    assert_eq!(report.deleted, expect);
    let left: Vec<_> = store
        .list(Some(&prefix.path()))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list");
    for k in &expect {
        assert!(!left.contains(k), "{k} was deleted");
    }
    for (n, u) in [
        ("fresh", UID_A),
        ("keep-forever", UID_A),
        ("running", UID_A),
        ("reborn", UID_B),
    ] {
        assert!(
            left.contains(&key("ret", n, u, "node", 0).to_key(prefix)),
            "{n}/{u} kept"
        );
    }
    assert!(
        left.contains(&other_ns.to_key(prefix)),
        "other namespace untouched"
    );
}

/// Every function of the suite, in order.
pub async fn run_all(store: Arc<dyn ObjectStore>, prefix: KeyPrefix, caps: Caps) {
    put_get_head_range(store.as_ref(), &prefix).await;
    listing_respects_segment_boundaries(store.as_ref(), &prefix).await;
    uploads_and_lists_a_capture(store.clone(), &prefix, caps).await;
    retention_deletes_only_expired(store, &prefix).await;
}
