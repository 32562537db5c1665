//! The plain facts the planner decides over: targets (pods, or network namespaces and
//! interfaces in local mode), nodes and capture Jobs (or capture processes).
//!
//! The Kubernetes controller reads them from Pods, Nodes and Jobs (`controller::facts`); the
//! local executor builds them from its configuration and its child processes. Nothing here
//! knows where a fact came from.

use std::collections::BTreeMap;

use jiff::Timestamp;

/// Something a capture can select: a pod, or what stands in for one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetFact {
    /// Namespace (a pod capture selects targets of its own namespace only).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID of this incarnation (a target created again is a new one).
    pub uid: String,
    /// Labels, for the capture's selector.
    pub labels: BTreeMap<String, String>,
    /// The node it runs on; `None` while it is not bound to one.
    pub node: Option<String>,
    /// Lifecycle phase.
    pub phase: TargetPhase,
    /// It shares the node's network namespace (a pod capture never captures it).
    pub host_network: bool,
    /// Its IP addresses.
    pub ips: Vec<String>,
}

/// Lifecycle phase of a target (the pod phases).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TargetPhase {
    /// Accepted, not every container running yet.
    Pending,
    /// Running.
    Running,
    /// Every container ended successfully.
    Succeeded,
    /// Every container ended, one failed.
    Failed,
    /// Not reported, or a phase this planner does not know.
    #[default]
    Unknown,
}

impl TargetPhase {
    /// Its containers have ended: nothing left to capture.
    pub const fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// A node a capture Job can run on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFact {
    /// Name.
    pub name: String,
    /// Labels, for a capture's `nodeSelector`.
    pub labels: BTreeMap<String, String>,
    /// Whether it can run a capture Job.
    pub readiness: Readiness,
}

/// Whether a node can run a capture Job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Readiness {
    /// Ready.
    #[default]
    Ready,
    /// NotReady or Unknown since this time (`None`: unknown since when).
    NotReady(Option<Timestamp>),
    /// Being deleted: treated as gone.
    Deleting,
}

/// A capture Job (a capture process in local mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFact {
    /// Name.
    pub name: String,
    /// The node it is pinned to.
    pub node: String,
    /// UID of the capture it serves (only the planned capture's Jobs are considered).
    pub capture_uid: String,
    /// Hash of the spec it captures with, when known.
    pub spec_hash: Option<String>,
    /// What it is doing.
    pub state: JobState,
    /// Since when no selected target runs on its node (the planner's idle mark).
    pub idle_since: Option<Timestamp>,
    /// Its end was reported already (Event sent).
    pub end_recorded: bool,
}

/// What a capture Job is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Running (or about to).
    Active,
    /// Being deleted, or terminal but its pod is still terminating.
    Terminating,
    /// Finished on its own (exit 0) or at its deadline (the window ended).
    Finished,
    /// Failed: the pod kept failing (`BackoffLimitExceeded`) or similar.
    Failed {
        /// Why, in CamelCase (`BackoffLimitExceeded`, `StartError`).
        reason: String,
        /// Details.
        message: String,
    },
}
