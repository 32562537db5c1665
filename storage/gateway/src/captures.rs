//! Whether a capture exists, and what the cluster knows about it.
//!
//! - [`KubernetesCaptures`]: the PacketCapture object (its uid selects the files of this
//!   incarnation; its status lists files with pods, packets and checksums).
//! - [`StoredCaptures`] (local mode): a capture exists when at least one capture file is stored
//!   under `{prefix}/{namespace}/{name}/`; it has no uid, so every incarnation's files are listed.

use std::{fmt, sync::Arc};

use futures::StreamExt;
use nightcap_api::{PacketCapture, PacketCaptureStatus};
use object_store::ObjectStore;

use nightcap_storage::{CaptureKey, Error as StorageError, KeyPrefix};

use crate::error::{Error, Result};

/// What is known about an existing capture.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaptureRecord {
    /// `metadata.uid`, when the capture is a Kubernetes object.
    pub uid: Option<String>,
    /// Its status, when the capture is a Kubernetes object.
    pub status: Option<PacketCaptureStatus>,
}

/// Looks captures up.
#[async_trait::async_trait]
pub trait Captures: Send + Sync + fmt::Debug {
    /// The capture `namespace/name`, or `None` when it does not exist.
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<CaptureRecord>>;
}

/// PacketCaptures in the Kubernetes API (the gateway needs `get` on `packetcaptures`).
#[derive(Clone)]
pub struct KubernetesCaptures {
    client: kube::Client,
}

impl fmt::Debug for KubernetesCaptures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KubernetesCaptures")
    }
}

impl KubernetesCaptures {
    /// Uses the gateway's own client.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

#[async_trait::async_trait]
impl Captures for KubernetesCaptures {
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<CaptureRecord>> {
        let api: kube::Api<PacketCapture> = kube::Api::namespaced(self.client.clone(), namespace);
        let pc = api.get_opt(name).await.map_err(|source| Error::Kube {
            what: format!("get packetcapture {namespace}/{name}"),
            source,
        })?;
        Ok(pc.map(|pc| CaptureRecord {
            uid: pc.metadata.uid,
            status: pc.status,
        }))
    }
}

/// Captures known by their stored files (local mode).
#[derive(Debug, Clone)]
pub struct StoredCaptures {
    store: Arc<dyn ObjectStore>,
    prefix: KeyPrefix,
}

impl StoredCaptures {
    /// Looks in `store` under `prefix`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: KeyPrefix) -> Self {
        Self { store, prefix }
    }
}

#[async_trait::async_trait]
impl Captures for StoredCaptures {
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<CaptureRecord>> {
        let dir = self.prefix.capture(namespace, name)?;
        let mut list = self.store.list(Some(&dir));
        while let Some(item) = list.next().await {
            let meta = item.map_err(|source| StorageError::ListFailed {
                prefix: dir.to_string(),
                source,
            })?;
            if CaptureKey::parse_path(&self.prefix, &meta.location).is_ok() {
                return Ok(Some(CaptureRecord::default()));
            }
        }
        Ok(None)
    }
}
