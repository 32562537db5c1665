//! Listing the files of a capture with what is known about each: node and start from the key,
//! size from the listing, SHA-256/pods/packets/end from the object's attributes, and — when the
//! caller has it — the PacketCapture's `status.nodes[*].files`, which wins over attributes.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use nightcap_api::{CaptureFile, PacketCaptureStatus};
use object_store::{GetOptions, ObjectMeta, ObjectStore, path::Path};
use serde::Serialize;
use tracing::debug;

use crate::{
    error::{Error, Result},
    layout::{CaptureKey, KeyPrefix},
    meta::{FileMeta, is_sha256_hex},
};

/// HEAD requests in flight when reading attributes.
const HEAD_CONCURRENCY: usize = 16;

/// One file of a capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureFileInfo {
    /// Full object key.
    pub key: String,
    /// The parsed key.
    #[serde(skip)]
    pub parsed: CaptureKey,
    /// Node that captured it.
    pub node: String,
    /// Pods in the file (`namespace/name`).
    pub pods: Vec<String>,
    /// First packet time (from metadata), else when the file was opened (from the key).
    pub start: DateTime<Utc>,
    /// When the file was closed, if recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<DateTime<Utc>>,
    /// Object size.
    pub bytes: u64,
    /// Packets in the file, if recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// Hex SHA-256, if recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// When the object was written.
    pub last_modified: DateTime<Utc>,
}

/// Lists capture files under a store's prefix.
#[derive(Debug, Clone)]
pub struct Lister {
    store: Arc<dyn ObjectStore>,
    prefix: KeyPrefix,
    read_attributes: bool,
}

impl Lister {
    /// A lister that also reads object attributes (one HEAD per file not described by the
    /// status).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: KeyPrefix) -> Self {
        Self {
            store,
            prefix,
            read_attributes: true,
        }
    }

    /// Whether to read object attributes (disable for stores that have none).
    pub fn with_attributes(mut self, read: bool) -> Self {
        self.read_attributes = read;
        self
    }

    /// The files of capture `namespace/capture`, of incarnation `uid` when given (else of every
    /// uid under that name), sorted by node, start and sequence. Objects under the prefix that are
    /// not capture keys are skipped.
    pub async fn capture_files(
        &self,
        namespace: &str,
        capture: &str,
        uid: Option<&str>,
        status: Option<&PacketCaptureStatus>,
    ) -> Result<Vec<CaptureFileInfo>> {
        let dir = match uid {
            Some(uid) => self.prefix.capture_uid(namespace, capture, uid)?,
            None => self.prefix.capture(namespace, capture)?,
        };
        let objects = self.list_objects(&dir).await?;
        let from_status = status_files(status);
        let mut out: Vec<CaptureFileInfo> = futures::stream::iter(objects)
            .map(|(meta, parsed)| {
                let known = from_status
                    .get(meta.location.as_ref())
                    .or_else(|| from_status.get(parsed.relative().as_str()))
                    .cloned();
                self.describe(meta, parsed, known)
            })
            .buffer_unordered(HEAD_CONCURRENCY)
            .try_collect()
            .await?;
        out.sort_by(|a, b| {
            (&a.node, a.parsed.start, a.parsed.seq).cmp(&(&b.node, b.parsed.start, b.parsed.seq))
        });
        Ok(out)
    }

    /// Every capture key under `dir` (a prefix path), with its listing entry.
    pub async fn list_objects(&self, dir: &Path) -> Result<Vec<(ObjectMeta, CaptureKey)>> {
        let metas: Vec<ObjectMeta> =
            self.store
                .list(Some(dir))
                .try_collect()
                .await
                .map_err(|source| Error::ListFailed {
                    prefix: dir.to_string(),
                    source,
                })?;
        Ok(metas
            .into_iter()
            .filter_map(
                |m| match CaptureKey::parse_path(&self.prefix, &m.location) {
                    Ok(k) => Some((m, k)),
                    Err(e) => {
                        debug!(key = %m.location, error = %e, "Skipping an object that is not a capture file.");
                        None
                    }
                },
            )
            .collect())
    }

    async fn describe(
        &self,
        meta: ObjectMeta,
        parsed: CaptureKey,
        known: Option<CaptureFile>,
    ) -> Result<CaptureFileInfo> {
        let complete = known
            .as_ref()
            .is_some_and(|k| k.sha256.is_some() && k.end.is_some());
        let (attrs, sha) = if self.read_attributes && !complete {
            let opts = GetOptions::new().with_head(true);
            match self.store.get_opts(&meta.location, opts).await {
                Ok(r) => FileMeta::from_attributes(&r.attributes),
                // Deleted between list and head: report what the listing said.
                Err(object_store::Error::NotFound { .. }) => (FileMeta::default(), None),
                Err(source) => {
                    return Err(Error::ReadFailed {
                        key: meta.location.to_string(),
                        source,
                    });
                }
            }
        } else {
            (FileMeta::default(), None)
        };
        let known = known.unwrap_or_default();
        let pods = if known.pods.is_empty() {
            attrs.pods
        } else {
            known.pods
        };
        Ok(CaptureFileInfo {
            key: meta.location.to_string(),
            node: parsed.node.clone(),
            pods,
            start: known
                .start
                .map(|t| from_timestamp(t.0))
                .or(attrs.start)
                .unwrap_or(parsed.start),
            end: known.end.map(|t| from_timestamp(t.0)).or(attrs.end),
            bytes: meta.size,
            packets: (known.packets > 0)
                .then_some(known.packets)
                .or(attrs.packets),
            sha256: known.sha256.filter(|s| is_sha256_hex(s)).or(sha),
            last_modified: meta.last_modified,
            parsed,
        })
    }
}

fn status_files(status: Option<&PacketCaptureStatus>) -> HashMap<String, CaptureFile> {
    status
        .into_iter()
        .flat_map(|s| s.nodes.values())
        .flat_map(|n| n.files.iter())
        .map(|f| (f.key.clone(), f.clone()))
        .collect()
}

/// A timestamp of a Kubernetes `Time` (its `.0`) as chrono.
pub fn from_timestamp(t: jiff::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32).unwrap_or_default()
}
