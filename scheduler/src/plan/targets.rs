//! Which nodes need a capture Job: the nodes of the selected targets, or the selected nodes.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use nightcap_api::{PacketCaptureSpec, selector::LabelMatcher};

use super::facts::{NodeFact, TargetFact};
use crate::labels;

/// Nodes that need a Job, each with the selected targets on it (`namespace/name`; empty for a
/// node-level capture).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Targets {
    pub nodes: BTreeMap<String, Vec<String>>,
    /// Selected targets skipped because they use the host network (a pod capture must never
    /// see the node's traffic; use a node-level capture for that).
    pub host_network_skipped: usize,
}

pub(crate) fn targets(
    spec: &PacketCaptureSpec,
    namespace: &str,
    targets: &[TargetFact],
    nodes: &[NodeFact],
) -> Targets {
    match &spec.selector {
        Some(selector) => pod_targets(selector, namespace, targets),
        None => node_targets(spec, nodes),
    }
}

fn pod_targets(selector: &LabelSelector, namespace: &str, targets: &[TargetFact]) -> Targets {
    let mut t = Targets::default();
    let matcher = LabelMatcher::new(selector);
    for target in targets {
        if target.namespace != namespace {
            continue;
        }
        // Capture pods are never targets (an empty selector would otherwise select them and
        // keep their own node busy forever).
        if target.labels.contains_key(labels::CAPTURE_UID) || !matcher.matches(&target.labels) {
            continue;
        }
        let Some(node) = target.node.as_deref().filter(|n| !n.is_empty()) else {
            continue; // not bound to a node yet
        };
        if target.phase.is_finished() {
            continue;
        }
        if target.host_network {
            t.host_network_skipped += 1;
            continue;
        }
        t.nodes
            .entry(node.to_string())
            .or_default()
            .push(format!("{namespace}/{}", target.name));
    }
    t
}

fn node_targets(spec: &PacketCaptureSpec, nodes: &[NodeFact]) -> Targets {
    let wanted: BTreeSet<&str> = spec.node_names.iter().map(String::as_str).collect();
    let mut t = Targets::default();
    for node in nodes {
        let name = node.name.as_str();
        let by_name = wanted.contains(name);
        let by_labels = spec.node_selector.as_ref().is_some_and(|sel| {
            sel.iter()
                .all(|(k, v)| node.labels.get(k).is_some_and(|have| have == v))
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
