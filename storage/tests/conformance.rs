//! The conformance suite on every backend nightcap supports in tests.

mod common;

use std::sync::Arc;

use common::{
    conformance::{Caps, run_all},
    objects::s3_config,
};
use nightcap_storage::{KeyPrefix, StoreConfig};
use nightcap_testsupport::S3Server;
use object_store::{local::LocalFileSystem, memory::InMemory};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory() {
    let prefix = KeyPrefix::new("captures").expect("prefix");
    run_all(Arc::new(InMemory::new()), prefix, Caps { attributes: true }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_file_system() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = LocalFileSystem::new_with_prefix(dir.path()).expect("local fs");
    run_all(
        Arc::new(fs),
        KeyPrefix::default(),
        Caps { attributes: false },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server() {
    let s3 = S3Server::start();
    let config = s3_config(&s3, "prod/captures");
    let store = config.open().expect("open S3 store");
    assert!(store.signer.is_some());
    run_all(store.store, store.prefix, Caps { attributes: true }).await;
    // Unsigned request bodies (the default over HTTPS): the server still checks the signature
    // of everything else and takes them.
    let StoreConfig::S3(mut unsigned) = config else {
        unreachable!()
    };
    unsigned.prefix = "prod/unsigned".into();
    unsigned.unsigned_payload = Some(true);
    assert!(unsigned.unsigned_payload());
    let store = StoreConfig::S3(unsigned).open().expect("open S3 store");
    run_all(store.store, store.prefix, Caps { attributes: true }).await;
}
