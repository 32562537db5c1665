//! SHA-256 of capture files in stores that keep no object attributes (a local folder). There
//! the capture processes' reports list files without a checksum; the executor reads each new
//! file once from the store, hashes it, and puts the sum into every report before it reaches
//! the status — so the manifest of files.zip and `kubectl nightcap download` can check the
//! files as they do with S3.

use std::collections::HashMap;

use futures::StreamExt;
use nightcap_api::PacketCapture;
use nightcap_storage::{Store, config::key_path};
use object_store::ObjectStoreExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::warn;

/// Sums of files already read, by object key.
pub(crate) struct Sums {
    store: Store,
    known: HashMap<String, String>,
}

impl Sums {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            known: HashMap::new(),
        }
    }

    /// Remembers the sums a capture's status already lists.
    pub fn learn(&mut self, pc: &PacketCapture) {
        for node in pc.status.iter().flat_map(|s| s.nodes.values()) {
            for f in &node.files {
                if let Some(sum) = &f.sha256 {
                    self.known.insert(f.key.clone(), sum.clone());
                }
            }
        }
    }

    /// The status patch of a report for `node`, every file with its sum.
    pub async fn patch(&mut self, node: &str, mut entry: Value) -> Value {
        if let Some(files) = entry.get_mut("files").and_then(Value::as_array_mut) {
            for f in files {
                if f.get("sha256").is_some_and(Value::is_string) {
                    continue;
                }
                let Some(key) = f.get("key").and_then(Value::as_str).map(str::to_owned) else {
                    continue;
                };
                if !self.known.contains_key(&key) {
                    match self.hash(&key).await {
                        Ok(sum) => {
                            self.known.insert(key.clone(), sum);
                        }
                        Err(error) => warn!(%key, %error, "Cannot read a capture file to hash it."),
                    }
                }
                if let Some(sum) = self.known.get(&key) {
                    f["sha256"] = json!(sum);
                }
            }
        }
        json!({"status": {"nodes": {node: entry}}})
    }

    async fn hash(&self, key: &str) -> Result<String, object_store::Error> {
        let mut stream = self.store.store.get(&key_path(key)).await?.into_stream();
        let mut sha = Sha256::new();
        while let Some(chunk) = stream.next().await {
            sha.update(chunk?);
        }
        Ok(hex::encode(sha.finalize()))
    }
}
