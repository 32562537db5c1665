//! Capture objects for tests: fixed uids, deterministic bytes, keys, and seeding through the
//! real Uploader. Shared by the storage conformance suite and the gateway's tests.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use nightcap_storage::{
    CaptureKey, FileMeta, KeyPrefix, StoreConfig, UploadOptions, Uploader,
    config::{S3Config, S3Credentials},
};
use nightcap_testsupport::S3Server;
use object_store::ObjectStore;

pub const UID_A: &str = "0a1b2c3d-0000-4000-8000-00000000000a";
pub const UID_B: &str = "0a1b2c3d-0000-4000-8000-00000000000b";
pub const UID_C: &str = "0a1b2c3d-0000-4000-8000-00000000000c";

pub fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub fn key(ns: &str, cap: &str, uid: &str, node: &str, seq: u64) -> CaptureKey {
    let start = Utc
        .with_ymd_and_hms(2026, 11, 22, 1, 0, 0)
        .single()
        .expect("valid")
        + chrono::Duration::seconds(seq as i64);
    CaptureKey::new(ns, cap, uid, node, start, seq).expect("valid key")
}

/// Uploads `data` as `key` through the real Uploader; returns the hex SHA-256.
pub async fn seed(
    store: Arc<dyn ObjectStore>,
    prefix: &KeyPrefix,
    key: &CaptureKey,
    data: &[u8],
    meta: &FileMeta,
) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("f.pcapng");
    std::fs::write(&local, data).expect("write local file");
    let up = Uploader::new(store, prefix.clone(), s3_sized_parts());
    let res = up
        .upload_file_with_meta(&local, key, meta)
        .await
        .unwrap_or_else(|e| panic!("upload {key}: {e}"));
    res.sha256
}

/// Parts S3 accepts (≥ 5 MiB except the last).
pub fn s3_sized_parts() -> UploadOptions {
    UploadOptions {
        multipart_threshold: 6 << 20,
        part_size: 5 << 20,
        ..UploadOptions::default()
    }
}

/// The configuration of a test S3 server's bucket under `prefix`, with its static keys.
pub fn s3_config(s3: &S3Server, prefix: &str) -> StoreConfig {
    StoreConfig::S3(S3Config {
        bucket: s3.bucket().into(),
        prefix: prefix.into(),
        region: Some(s3.region().into()),
        endpoint: Some(s3.endpoint()),
        path_style: None,
        allow_http: true,
        unsigned_payload: None,
        credentials: S3Credentials::Static {
            access_key_id: s3.access_key().into(),
            secret_access_key: s3.secret_key().into(),
            session_token: None,
        },
    })
}
