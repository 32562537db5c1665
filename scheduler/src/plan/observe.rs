//! Reading Jobs and Nodes into the few facts the planner decides on.

use jiff::Timestamp;
use k8s_openapi::api::{batch::v1::Job, core::v1::Node};

use crate::labels;

/// What a capture Job is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobState {
    /// Running (or about to).
    Active,
    /// Being deleted, or terminal but its pod is still terminating.
    Terminating,
    /// Finished on its own (exit 0) or at its deadline (the window ended).
    Finished,
    /// Failed: the pod kept failing (`BackoffLimitExceeded`) or similar.
    Failed {
        /// Kubernetes reason.
        reason: String,
        /// Kubernetes message.
        message: String,
    },
}

/// A capture Job of the planned capture.
#[derive(Debug, Clone)]
pub(crate) struct ObservedJob {
    pub name: String,
    pub node: String,
    pub state: JobState,
    pub idle_since: Option<Timestamp>,
    /// The Job's end was reported already (Event sent).
    pub end_recorded: bool,
}

/// The Jobs labelled with this capture's UID, as [`ObservedJob`]s (Jobs without a node are
/// ignored: the scheduler never creates those).
pub(crate) fn observe_jobs(uid: Option<&str>, jobs: &[&Job]) -> Vec<ObservedJob> {
    let Some(uid) = uid else {
        return Vec::new();
    };
    jobs.iter()
        .filter(|j| {
            j.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::CAPTURE_UID))
                .is_some_and(|v| v == uid)
        })
        .filter_map(|j| {
            let node = job_node(j)?;
            Some(ObservedJob {
                name: j.metadata.name.clone().unwrap_or_default(),
                node,
                state: job_state(j),
                idle_since: j
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(labels::IDLE_SINCE))
                    .and_then(|t| t.parse().ok()),
                end_recorded: j
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(labels::END_RECORDED)),
            })
        })
        .collect()
}

fn job_node(job: &Job) -> Option<String> {
    job.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.node_name.clone())
        .or_else(|| {
            job.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::NODE).cloned())
        })
}

fn job_state(job: &Job) -> JobState {
    if job.metadata.deletion_timestamp.is_some() {
        return JobState::Terminating;
    }
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let active = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    };
    if active("Complete").is_some() {
        return JobState::Finished;
    }
    if let Some(c) = active("Failed") {
        let reason = c.reason.clone().unwrap_or_default();
        if reason == "DeadlineExceeded" {
            return JobState::Finished;
        }
        return JobState::Failed {
            reason,
            message: c.message.clone().unwrap_or_default(),
        };
    }
    // Since Kubernetes 1.31 the terminal condition waits for the pods to terminate; these
    // interim conditions mean "finishing".
    if active("FailureTarget").is_some() || active("SuccessCriteriaMet").is_some() {
        return JobState::Terminating;
    }
    JobState::Active
}

/// Whether a node can run a capture Job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeHealth {
    /// Ready.
    Ready,
    /// NotReady or Unknown since this time (`None`: unknown since when).
    NotReady(Option<Timestamp>),
    /// No such node.
    Missing,
}

pub(crate) fn node_health(nodes: &[&Node], name: &str) -> NodeHealth {
    let Some(node) = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(name))
    else {
        return NodeHealth::Missing;
    };
    if node.metadata.deletion_timestamp.is_some() {
        return NodeHealth::Missing;
    }
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "Ready");
    match ready {
        Some(c) if c.status == "True" => NodeHealth::Ready,
        Some(c) => NodeHealth::NotReady(c.last_transition_time.as_ref().map(|t| t.0)),
        None => NodeHealth::NotReady(None),
    }
}
