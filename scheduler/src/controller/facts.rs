//! Pods, Nodes and Jobs read into the planner's facts, and the facts one capture's plan reads
//! gathered from the watch caches.

use std::collections::BTreeSet;

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Node, Pod},
};
use kube::{
    ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};
use nightcap_api::PacketCapture;

use crate::{
    labels,
    plan::{JobFact, JobState, NodeFact, Readiness, TargetFact, TargetPhase},
};

/// What the planner knows of a pod.
pub fn target_fact(pod: &Pod) -> TargetFact {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let mut ips: Vec<String> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .map(|ip| ip.ip.clone())
        .collect();
    if let Some(ip) = status.and_then(|s| s.pod_ip.as_ref())
        && !ips.contains(ip)
    {
        ips.insert(0, ip.clone());
    }
    TargetFact {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        node: spec.and_then(|s| s.node_name.clone()),
        phase: match status.and_then(|s| s.phase.as_deref()) {
            Some("Pending") => TargetPhase::Pending,
            Some("Running") => TargetPhase::Running,
            Some("Succeeded") => TargetPhase::Succeeded,
            Some("Failed") => TargetPhase::Failed,
            _ => TargetPhase::Unknown,
        },
        host_network: spec.and_then(|s| s.host_network) == Some(true),
        ips,
    }
}

/// What the planner knows of a node (`None` for a node without a name).
pub fn node_fact(node: &Node) -> Option<NodeFact> {
    let name = node.metadata.name.clone()?;
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "Ready");
    let readiness = match ready {
        _ if node.metadata.deletion_timestamp.is_some() => Readiness::Deleting,
        Some(c) if c.status == "True" => Readiness::Ready,
        Some(c) => Readiness::NotReady(c.last_transition_time.as_ref().map(|t| t.0)),
        None => Readiness::NotReady(None),
    };
    Some(NodeFact {
        name,
        labels: node.metadata.labels.clone().unwrap_or_default(),
        readiness,
    })
}

/// What the planner knows of a capture Job (`None` for a Job that serves no capture or has no
/// node: the scheduler never creates those).
pub fn job_fact(job: &Job) -> Option<JobFact> {
    let capture_uid = job.labels().get(labels::CAPTURE_UID)?.clone();
    let annotations = job.annotations();
    let node = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.node_name.clone())
        .or_else(|| annotations.get(labels::NODE).cloned())?;
    Some(JobFact {
        name: job.metadata.name.clone().unwrap_or_default(),
        node,
        capture_uid,
        spec_hash: annotations.get(labels::SPEC_HASH).cloned(),
        state: job_state(job),
        idle_since: annotations
            .get(labels::IDLE_SINCE)
            .and_then(|t| t.parse().ok()),
        end_recorded: annotations.contains_key(labels::END_RECORDED),
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

/// The facts one plan of `capture` reads.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    pub targets: Vec<TargetFact>,
    pub nodes: Vec<NodeFact>,
    pub jobs: Vec<JobFact>,
}

impl Facts {
    /// From the caches: a pod capture's pods (of its namespace) and the nodes they, its Jobs and
    /// its status name; a node-level capture's every node. Only the capture's own Jobs.
    pub(crate) fn gather(
        capture: &PacketCapture,
        pods: &Store<Pod>,
        nodes: &Store<Node>,
        jobs: &Store<Job>,
    ) -> Self {
        let uid = capture.uid().unwrap_or_default();
        let jobs: Vec<JobFact> = jobs
            .state()
            .iter()
            .filter(|j| j.labels().get(labels::CAPTURE_UID) == Some(&uid))
            .filter_map(|j| job_fact(j))
            .collect();
        if capture.spec.selector.is_none() {
            return Self {
                targets: Vec::new(),
                nodes: nodes.state().iter().filter_map(|n| node_fact(n)).collect(),
                jobs,
            };
        }
        let ns = capture.namespace().unwrap_or_default();
        // Only the pods the selector selects become facts: the planner selects with the same
        // matcher, so the others would be copied only to be skipped.
        let matcher = capture
            .spec
            .selector
            .as_ref()
            .map(nightcap_api::selector::LabelMatcher::new);
        let targets: Vec<TargetFact> = pods
            .state()
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
            .filter(|p| {
                matcher
                    .as_ref()
                    .is_none_or(|m| m.matches(p.metadata.labels.as_ref().unwrap_or(&EMPTY)))
            })
            .map(|p| target_fact(p))
            .collect();
        let mut names: BTreeSet<&str> = targets.iter().filter_map(|t| t.node.as_deref()).collect();
        names.extend(jobs.iter().map(|j| j.node.as_str()));
        if let Some(status) = &capture.status {
            names.extend(status.nodes.keys().map(String::as_str));
        }
        let nodes = names
            .into_iter()
            .filter_map(|name| nodes.get(&ObjectRef::new(name)))
            .filter_map(|n| node_fact(&n))
            .collect();
        Self {
            targets,
            nodes,
            jobs,
        }
    }
}

/// The labels of an object without any.
static EMPTY: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();

#[cfg(test)]
mod tests;
