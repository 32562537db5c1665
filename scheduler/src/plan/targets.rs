//! Which nodes need a capture Job: the nodes of the selected pods, or the selected nodes.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    api::core::v1::{Node, Pod},
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use nightcap_api::PacketCaptureSpec;

use crate::labels;

/// Nodes that need a Job, each with the selected pods on it (`namespace/name`; empty for a
/// node-level capture).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Targets {
    pub nodes: BTreeMap<String, Vec<String>>,
    /// Selected pods skipped because they use the host network (a pod capture must never see
    /// the node's traffic; use a node-level capture for that).
    pub host_network_skipped: usize,
}

pub(crate) fn targets(
    spec: &PacketCaptureSpec,
    namespace: &str,
    pods: &[&Pod],
    nodes: &[&Node],
) -> Targets {
    match &spec.selector {
        Some(selector) => pod_targets(selector, namespace, pods),
        None => node_targets(spec, nodes),
    }
}

fn pod_targets(selector: &LabelSelector, namespace: &str, pods: &[&Pod]) -> Targets {
    let mut t = Targets::default();
    let empty = BTreeMap::new();
    for pod in pods {
        if pod.metadata.namespace.as_deref() != Some(namespace) {
            continue;
        }
        let pod_labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        // Capture pods are never targets (an empty selector would otherwise select them and
        // keep their own node busy forever).
        if pod_labels.contains_key(labels::CAPTURE_UID) || !selector_matches(selector, pod_labels) {
            continue;
        }
        let Some(spec) = &pod.spec else { continue };
        let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) else {
            continue; // not bound to a node yet
        };
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        if spec.host_network == Some(true) {
            t.host_network_skipped += 1;
            continue;
        }
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        t.nodes
            .entry(node.to_string())
            .or_default()
            .push(format!("{namespace}/{name}"));
    }
    t
}

fn node_targets(spec: &PacketCaptureSpec, nodes: &[&Node]) -> Targets {
    let wanted: BTreeSet<&str> = spec.node_names.iter().map(String::as_str).collect();
    let mut t = Targets::default();
    for node in nodes {
        let Some(name) = node.metadata.name.as_deref() else {
            continue;
        };
        let by_name = wanted.contains(name);
        let by_labels = spec.node_selector.as_ref().is_some_and(|sel| {
            let labels = node.metadata.labels.as_ref();
            sel.iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)).is_some_and(|have| have == v))
        });
        if by_name || by_labels {
            t.nodes.insert(name.to_string(), Vec::new());
        }
    }
    // Named nodes that do not exist are still targets: the planner reports them as missing.
    for name in wanted {
        t.nodes.entry(name.to_string()).or_default();
    }
    t
}

/// Whether `labels` match a Kubernetes label selector (`matchLabels` AND every
/// `matchExpressions` requirement). An empty selector matches everything; an unknown operator
/// matches nothing.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_ok
        && selector.match_expressions.iter().flatten().all(|req| {
            let values = req.values.as_deref().unwrap_or_default();
            let have = labels.get(&req.key);
            match req.operator.as_str() {
                "In" => have.is_some_and(|h| values.contains(h)),
                "NotIn" => have.is_none_or(|h| !values.contains(h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
}
