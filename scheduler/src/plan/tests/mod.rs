//! Table-driven tests of the planner. Fixtures build plain Kubernetes objects; every case
//! compares the complete list of actions (in a compact text form) with what it expects.

mod follow;
mod lifecycle;

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::{
    api::{
        batch::v1::{Job, JobCondition, JobStatus},
        core::v1::{Node, NodeCondition, NodeStatus, Pod, PodSpec, PodStatus},
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time},
};
use nightcap_api::{
    NodeCaptureState, PacketCapture, PacketCaptureSpec, PacketCaptureStatus, Phase,
};

use super::{Action, JobRequest, PlanConfig, Planner, StatusUpdate, spec_hash};
use crate::job::{JobConfig, build_job, job_name};

pub const NS: &str = "team-a";
pub const UID: &str = "0b7f3c1e-9d7a-4c55-8d0e-2f1f5b4a6c01";

/// Base time of every case; `t(n)` is `n` seconds later.
pub fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("valid time")
}

pub fn planner() -> Planner {
    Planner::new(PlanConfig::default())
}

/// A capture of the pods labelled `app=web`, 10 minutes long, not started.
pub fn capture() -> PacketCapture {
    let mut c = PacketCapture::new(
        "web-debug",
        PacketCaptureSpec {
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..LabelSelector::default()
            }),
            duration: Some("10m".into()),
            ..PacketCaptureSpec::default()
        },
    );
    c.metadata.namespace = Some(NS.into());
    c.metadata.uid = Some(UID.into());
    c.metadata.generation = Some(1);
    c
}

/// `c` as the scheduler leaves it after starting it at `at` (before any Job).
pub fn started(mut c: PacketCapture, at: i64) -> PacketCapture {
    let status = c.status.get_or_insert_with(PacketCaptureStatus::default);
    status.phase = Some(Phase::Scheduled);
    status.start_time = Some(Time(t(at)));
    status.spec_hash = Some(spec_hash(&c.spec));
    status.accepted_spec = Some(c.spec.clone());
    c
}

/// Sets `status.nodes[node]` as a capture process would report it.
pub fn reported(mut c: PacketCapture, node: &str, state: NodeCaptureState) -> PacketCapture {
    let status = c.status.get_or_insert_with(PacketCaptureStatus::default);
    let n = status.nodes.entry(node.into()).or_default();
    n.job = Some(name_for(node));
    n.state = Some(state);
    c
}

pub fn name_for(node: &str) -> String {
    job_name(NS, "web-debug", UID, node)
}

pub fn pod(name: &str, node: &str) -> Pod {
    pod_with(name, node, &[("app", "web")], "Running")
}

pub fn pod_with(name: &str, node: &str, labels: &[(&str, &str)], phase: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: (!node.is_empty()).then(|| node.to_string()),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            ..PodStatus::default()
        }),
    }
}

pub fn node(name: &str) -> Node {
    node_ready(name, true, 0)
}

/// A node whose Ready condition is `ready` since `t(since)`.
pub fn node_ready(name: &str, ready: bool, since: i64) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("pool".into(), "capture".into())])),
            ..ObjectMeta::default()
        },
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(Time(t(since))),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        }),
        spec: None,
    }
}

/// Job states as the Job controller reports them.
#[derive(Clone, Copy)]
pub enum J {
    Active,
    /// Active, marked idle at `t(n)`.
    IdleSince(i64),
    Deleting,
    Complete,
    /// Complete, and its end already reported.
    CompleteRecorded,
    DeadlineExceeded,
    BackoffLimitExceeded,
}

/// The capture's Job on `node` (built by the real Job builder) in state `state`.
pub fn job(c: &PacketCapture, node: &str, state: J) -> Job {
    job_named(c, node, &name_for(node), state)
}

pub fn job_named(c: &PacketCapture, node: &str, name: &str, state: J) -> Job {
    let req = JobRequest {
        node: node.into(),
        name: name.into(),
        active_deadline_seconds: 600,
        pods: vec![],
    };
    let mut j = build_job(c, &req, &JobConfig::default()).expect("job builds");
    let cond = |type_: &str, reason: &str| {
        Some(JobStatus {
            conditions: Some(vec![JobCondition {
                type_: type_.into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(format!("{reason} happened")),
                ..JobCondition::default()
            }]),
            ..JobStatus::default()
        })
    };
    match state {
        J::Active => {}
        J::IdleSince(at) => {
            j.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(crate::labels::IDLE_SINCE.into(), t(at).to_string());
        }
        J::Deleting => j.metadata.deletion_timestamp = Some(Time(t(0))),
        J::Complete => j.status = cond("Complete", "CompletionsReached"),
        J::CompleteRecorded => {
            j.status = cond("Complete", "CompletionsReached");
            j.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(crate::labels::END_RECORDED.into(), "true".into());
        }
        J::DeadlineExceeded => j.status = cond("Failed", "DeadlineExceeded"),
        J::BackoffLimitExceeded => j.status = cond("Failed", "BackoffLimitExceeded"),
    }
    j
}

/// The actions in a compact, comparable form.
pub fn summary(actions: &[Action]) -> Vec<String> {
    let mut out = Vec::new();
    for a in actions {
        match a {
            Action::CreateJob(r) => {
                assert_eq!(r.name, name_for(&r.node), "deterministic job name");
                out.push(format!("create {} {}s", r.node, r.active_deadline_seconds));
            }
            Action::StopJob(s) => out.push(format!("stop {} {}", s.node, s.reason)),
            Action::MarkJobIdle { node, since, .. } => {
                out.push(format!(
                    "idle {node} {}",
                    since.as_second() - t(0).as_second()
                ));
            }
            Action::ClearJobIdle { node, .. } => out.push(format!("busy {node}")),
            Action::MarkJobEnded { node, .. } => out.push(format!("ended {node}")),
            Action::UpdateStatus(u) => out.extend(status_summary(u)),
            Action::Event(e) => out.push(format!("event {}", e.reason)),
            Action::ReleaseFinalizer => out.push("release".into()),
            Action::RequeueAfter(d) => out.push(format!("requeue {}s", d.as_secs())),
        }
    }
    out
}

fn status_summary(u: &StatusUpdate) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(p) = u.phase {
        out.push(format!("phase {p:?}"));
    }
    if u.accepted_spec.is_some() {
        out.push("accept".into());
    }
    if u.completion_time.is_some() {
        out.push("complete".into());
    }
    for (node, n) in &u.nodes {
        if let Some(s) = n.state {
            out.push(format!("node {node} {s:?}"));
        }
    }
    out
}

/// A planner case: inputs and the complete expected action summary.
pub struct Case {
    pub name: &'static str,
    pub capture: PacketCapture,
    pub pods: Vec<Pod>,
    pub nodes: Vec<Node>,
    pub jobs: Vec<Job>,
    pub now: i64,
    pub expect: &'static [&'static str],
}

pub fn run_cases(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in &cases {
        let actions = planner().plan(&c.capture, &c.pods, &c.nodes, &c.jobs, t(c.now));
        let got = summary(&actions);
        if got != c.expect {
            failures.push(format!(
                "case {:?}:\n  expected {:?}\n  got      {:?}",
                c.name, c.expect, got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The status after the capture jobs' owner (the scheduler) applied `update` (a JSON merge
/// patch, like the API server does).
pub fn apply(c: &PacketCapture, actions: &[Action]) -> PacketCapture {
    let mut value = serde_json::to_value(c).expect("capture serialises");
    for a in actions {
        if let Action::UpdateStatus(u) = a {
            json_patch::merge(&mut value, &u.to_merge_patch());
        }
    }
    serde_json::from_value(value).expect("patched capture deserialises")
}
