//! Whether a node can run a capture Job, from the node facts.

use jiff::Timestamp;

use super::facts::{NodeFact, Readiness};

/// Whether a node can run a capture Job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeHealth {
    /// Ready.
    Ready,
    /// NotReady or Unknown since this time (`None`: unknown since when).
    NotReady(Option<Timestamp>),
    /// No such node (or it is being deleted).
    Missing,
}

pub(crate) fn node_health(nodes: &[NodeFact], name: &str) -> NodeHealth {
    match nodes.iter().find(|n| n.name == name).map(|n| n.readiness) {
        Some(Readiness::Ready) => NodeHealth::Ready,
        Some(Readiness::NotReady(since)) => NodeHealth::NotReady(since),
        Some(Readiness::Deleting) | None => NodeHealth::Missing,
    }
}
