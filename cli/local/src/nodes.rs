//! A node's status across capture processes. When a node gets a new capture process for a
//! capture it already captured for (`nightcap local` restarted, a failed process replaced),
//! what the earlier processes reported is kept in the state as the node's base, and every
//! report of the new process is added to it: the file list only grows and the counters never
//! go back.

use std::sync::Arc;

use kube::ResourceExt;
use nightcap_api::{NodeCaptureStatus, PacketCapture};
use serde_json::{Value, json};
use tracing::warn;

use crate::state::State;

/// The bases of every (capture, node), kept in the state.
pub(crate) struct Incarnations {
    state: Arc<State>,
}

impl Incarnations {
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    /// A process starts for (capture, node): what the node's status holds now becomes its base.
    pub fn starting(&mut self, pc: &PacketCapture, node: &str) {
        let Some(entry) = pc.status.as_ref().and_then(|s| s.nodes.get(node)) else {
            return;
        };
        if entry.files.is_empty() && entry.packets == 0 && entry.drops == 0 {
            return;
        }
        let ns = pc.namespace().unwrap_or_default();
        let text = serde_json::to_string(entry).unwrap_or_default();
        if let Err(error) = self.state.set_node_base(&ns, &pc.name_any(), node, &text) {
            warn!(%error, "Cannot record a node's earlier files.");
        }
    }

    /// The status patch for a report of a process of (capture, node): the report added to the
    /// node's base. `adopted`: the report of a process of an earlier run, which carries no base
    /// and ends an incarnation that the status already partly holds.
    pub fn merge(&mut self, pc: &PacketCapture, node: &str, entry: Value, adopted: bool) -> Value {
        let ns = pc.namespace().unwrap_or_default();
        let base: Option<NodeCaptureStatus> = self
            .state
            .node_base(&ns, &pc.name_any(), node)
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_str(&t).ok());
        let mut entry = match serde_json::from_value::<NodeCaptureStatus>(entry.clone()) {
            Ok(e) => e,
            // Not a node status: pass it on as it is (the merge will refuse it).
            Err(_) => return json!({"status": {"nodes": {node: entry}}}),
        };
        if let Some(base) = base {
            combine(&mut entry, &base);
        }
        if adopted && let Some(current) = pc.status.as_ref().and_then(|s| s.nodes.get(node)) {
            // Files the status lists that the report lacks are never dropped.
            for f in &current.files {
                if !entry.files.iter().any(|e| e.key == f.key) {
                    entry.files.push(f.clone());
                }
            }
        }
        json!({"status": {"nodes": {node: entry}}})
    }
}

/// Adds `base` to `entry`: counters summed, the base's files first, pods united.
fn combine(entry: &mut NodeCaptureStatus, base: &NodeCaptureStatus) {
    entry.packets += base.packets;
    entry.bytes += base.bytes;
    entry.drops += base.drops;
    let mut files: Vec<_> = base
        .files
        .iter()
        .filter(|f| !entry.files.iter().any(|e| e.key == f.key))
        .cloned()
        .collect();
    files.append(&mut entry.files);
    entry.files = files;
}

#[cfg(test)]
mod tests {
    use nightcap_api::CaptureFile;

    use super::*;

    fn file(key: &str, packets: u64) -> CaptureFile {
        CaptureFile {
            key: key.into(),
            packets,
            ..CaptureFile::default()
        }
    }

    #[test]
    fn a_new_process_adds_to_what_the_node_had() {
        let base = NodeCaptureStatus {
            packets: 10,
            bytes: 1000,
            drops: 1,
            files: vec![file("a", 6), file("b", 4)],
            ..NodeCaptureStatus::default()
        };
        let mut entry = NodeCaptureStatus {
            packets: 3,
            bytes: 300,
            files: vec![file("c", 3)],
            ..NodeCaptureStatus::default()
        };
        combine(&mut entry, &base);
        assert_eq!((entry.packets, entry.bytes, entry.drops), (13, 1300, 1));
        let keys: Vec<_> = entry.files.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
    }
}
