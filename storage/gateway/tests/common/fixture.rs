//! Two namespaces of captures in a real store, served by a real gateway.

use std::{collections::BTreeMap, sync::Arc};

use nightcap_gateway::{auth::Access, captures::Captures};
use nightcap_storage::{FileMeta, Store};

use super::{
    gateway::{Counting, TestGateway, start, test_key},
    objects::{UID_A, UID_B, bytes, key, seed},
};

/// What was stored: full key → bytes.
pub type Stored = BTreeMap<String, Vec<u8>>;

/// team-a/web: three files on two nodes; team-b/db: one file.
pub async fn populate(store: &Store) -> Stored {
    populate_with(store, UID_A, UID_B).await
}

/// [`populate`] with the uids of team-a/web and team-b/db.
pub async fn populate_with(store: &Store, uid_web: &str, uid_db: &str) -> Stored {
    let mut stored = Stored::new();
    let meta = FileMeta {
        pods: vec!["team-a/web-0".into()],
        packets: Some(3),
        ..FileMeta::default()
    };
    for (ns, cap, uid, node, seq, len) in [
        ("team-a", "web", uid_web, "node-1", 1, 100_000),
        ("team-a", "web", uid_web, "node-1", 2, 1),
        ("team-a", "web", uid_web, "node-2", 1, 250_000),
        ("team-b", "db", uid_db, "node-1", 1, 70_000),
    ] {
        let k = key(ns, cap, uid, node, seq);
        let data = bytes(len, seq as u8 + ns.len() as u8);
        seed(store.store.clone(), &store.prefix, &k, &data, &meta).await;
        stored.insert(k.to_key(&store.prefix), data);
    }
    stored
}

/// A gateway over `store`, whose object store is wrapped to count calls.
pub async fn serve_counting(
    store: &Store,
    access: Arc<dyn Access>,
    captures: impl FnOnce(Store) -> Arc<dyn Captures>,
) -> (TestGateway, Arc<Counting>) {
    let counting = Counting::new(store.store.clone());
    let wrapped = Store {
        store: counting.clone(),
        ..store.clone()
    };
    let caps = captures(wrapped.clone());
    (start(wrapped, access, caps, test_key(1)).await, counting)
}

/// The existing capture of each namespace.
pub fn capture_of(ns: &str) -> &'static str {
    match ns {
        "team-a" => "web",
        "team-b" => "db",
        _ => "none",
    }
}
