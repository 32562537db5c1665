//! Reporting into `status.nodes[N]` of the capture (merge patch on the status subresource).
//! Only this node's entry is written, and of it only what the capture process knows: state,
//! attached pods, packets, bytes, drops, files and a message. The Job name is the scheduler's.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use nightcap_api::{
    CaptureFile, NodeCaptureState, NodeCaptureStatus, PacketCapture, PacketCaptureStatus,
};
use nightcap_storage::{CaptureFileInfo, Lister};
use serde_json::{Value, json};
use tracing::warn;

use super::pods::Targets;
use crate::{Capture, Summary};

/// List the node's files in storage at most this often while capturing.
const LIST_EVERY: Duration = Duration::from_secs(5);

/// Where the node's status entry goes.
pub(super) enum Sink {
    /// Merge patch on the capture's status subresource (Kubernetes mode).
    Api(Box<Api<PacketCapture>>),
    /// A JSON file, replaced atomically (local mode: `nightcap local` reads it).
    File(PathBuf),
}

impl Sink {
    async fn send(&self, name: &str, node: &str, entry: &Value) -> Result<(), String> {
        match self {
            Self::Api(api) => {
                let patch = json!({ "status": { "nodes": { node: entry } } });
                api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Self::File(path) => {
                let text = serde_json::to_vec(entry).map_err(|e| e.to_string())?;
                let path = path.clone();
                tokio::task::spawn_blocking(move || replace(&path, &text))
                    .await
                    .map_err(|e| e.to_string())?
            }
        }
    }
}

/// Replaces `path` with `bytes` atomically (a temporary file beside it, renamed over it).
fn replace(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| format!("creating a file in {}: {e}", dir.display()))?;
    tmp.write_all(bytes)
        .map_err(|e| format!("writing {}: {e}", tmp.path().display()))?;
    tmp.persist(path)
        .map(drop)
        .map_err(|e| format!("renaming to {}: {e}", path.display()))
}

pub(super) struct Reporter {
    sink: Sink,
    namespace: String,
    name: String,
    uid: String,
    node: String,
    lister: Lister,
    /// Counts an earlier Job on this node reported (a new process counts from zero).
    base_packets: u64,
    base_drops: u64,
    files: Vec<CaptureFile>,
    listed: Option<Instant>,
    sent: Option<Value>,
    warned: bool,
}

fn time(t: chrono::DateTime<chrono::Utc>) -> Option<Time> {
    jiff::Timestamp::from_millisecond(t.timestamp_millis())
        .ok()
        .map(Time)
}

fn file(f: CaptureFileInfo) -> CaptureFile {
    CaptureFile {
        key: f.key,
        pods: f.pods,
        start: time(f.start),
        end: f.end.and_then(time),
        packets: f.packets.unwrap_or(0),
        bytes: f.bytes,
        sha256: f.sha256,
    }
}

impl Reporter {
    pub fn new(sink: Sink, pc: &PacketCapture, node: &str, lister: Lister) -> Self {
        let before = pc
            .status
            .as_ref()
            .and_then(|s| s.nodes.get(node))
            .cloned()
            .unwrap_or_default();
        Self {
            sink,
            namespace: pc.namespace().unwrap_or_default(),
            name: pc.name_any(),
            uid: pc.uid().unwrap_or_default(),
            node: node.into(),
            lister,
            base_packets: before.packets,
            base_drops: before.drops,
            files: before.files,
            listed: None,
            sent: None,
            warned: false,
        }
    }

    /// Refreshes the file list from storage (object attributes give packets, times, SHA-256).
    async fn list(&mut self, force: bool) {
        if !force && self.listed.is_some_and(|t| t.elapsed() < LIST_EVERY) {
            return;
        }
        self.listed = Some(Instant::now());
        let mut known = PacketCaptureStatus::default();
        known.nodes.insert(
            self.node.clone(),
            NodeCaptureStatus {
                files: self.files.clone(),
                ..NodeCaptureStatus::default()
            },
        );
        match self
            .lister
            .capture_files(&self.namespace, &self.name, Some(&self.uid), Some(&known))
            .await
        {
            Ok(all) => {
                self.files = all
                    .into_iter()
                    .filter(|f| f.node == self.node)
                    .map(file)
                    .collect();
            }
            Err(error) => warn!(%error, "Cannot list this node's files in storage; retrying."),
        }
    }

    async fn send(&mut self, entry: Value) {
        if self.sent.as_ref() == Some(&entry) {
            return;
        }
        match self.sink.send(&self.name, &self.node, &entry).await {
            Ok(_) => {
                self.sent = Some(entry);
                self.warned = false;
            }
            Err(error) => {
                if !self.warned {
                    warn!(%error, "Cannot update the capture's status; retrying.");
                    self.warned = true;
                }
            }
        }
    }

    fn entry(
        &self,
        state: NodeCaptureState,
        pods: Vec<String>,
        packets: u64,
        drops: u64,
        message: Option<String>,
    ) -> Value {
        json!({
            "state": state,
            "pods": pods,
            "packets": packets,
            "bytes": self.files.iter().map(|f| f.bytes).sum::<u64>(),
            "drops": drops,
            "files": self.files,
            "message": message,
        })
    }

    /// The state while capturing.
    pub async fn report(&mut self, capture: &Capture, targets: &Targets, force: bool) {
        self.list(force).await;
        let matched = capture.counters().map(|c| c.matched).unwrap_or(0);
        let state = if targets.capturing() {
            NodeCaptureState::Capturing
        } else {
            NodeCaptureState::WaitingForTraffic
        };
        let entry = self.entry(
            state,
            targets.pods(),
            self.base_packets + matched,
            self.base_drops,
            targets.problems(),
        );
        self.send(entry).await;
    }

    /// Capturing has stopped; the last file is being uploaded.
    pub async fn uploading(&mut self, pods: Vec<String>) {
        let packets = self
            .sent
            .as_ref()
            .and_then(|s| s["packets"].as_u64())
            .unwrap_or(self.base_packets);
        let entry = self.entry(
            NodeCaptureState::Uploading,
            pods,
            packets,
            self.base_drops,
            None,
        );
        self.send(entry).await;
    }

    /// The capture cannot run on this node (`message` says why and what to grant).
    pub async fn failed(&mut self, message: String) {
        self.list(true).await;
        let entry = self.entry(
            NodeCaptureState::Failed,
            Vec::new(),
            self.base_packets,
            self.base_drops,
            Some(message),
        );
        for _ in 0..5 {
            self.send(entry.clone()).await;
            if self.sent.as_ref() == Some(&entry) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Every file is uploaded (or left in the spool, which the message says).
    pub async fn finished(&mut self, summary: &Summary) {
        self.list(true).await;
        let message = if summary.spool_left.is_empty() {
            format!("Finished ({:?}); every file is uploaded.", summary.stop)
        } else {
            format!(
                "{} file(s) could not be uploaded yet and remain in the spool.",
                summary.spool_left.len()
            )
        };
        let entry = self.entry(
            NodeCaptureState::Finished,
            Vec::new(),
            self.base_packets + summary.packets_written,
            self.base_drops + summary.packets_dropped,
            Some(message),
        );
        // The final report matters: retry a few times.
        for _ in 0..5 {
            self.send(entry.clone()).await;
            if self.sent.as_ref() == Some(&entry) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_report_file_is_replaced_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("report.json");
        let sink = Sink::File(path.clone());
        for packets in [1, 2] {
            let entry = json!({ "state": "Capturing", "packets": packets });
            sink.send("c", "n1", &entry).await.expect("written");
            let read: Value =
                serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("JSON");
            assert_eq!(read, entry);
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["report.json"], "no temporary file left");
        let missing = Sink::File(dir.path().join("gone/report.json"));
        let err = missing
            .send("c", "n1", &json!({}))
            .await
            .expect_err("no dir");
        assert!(err.contains("gone"), "{err}");
    }
}
