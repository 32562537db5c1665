//! Table-driven tests of the planner. Fixtures build plain facts (targets, nodes, Jobs); every
//! case compares the complete list of actions (in a compact text form) with what it expects.

mod follow;
mod lifecycle;

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use nightcap_api::{
    NodeCaptureState, PacketCapture, PacketCaptureSpec, PacketCaptureStatus, Phase,
};

use super::{
    Action, JobFact, JobState, NodeFact, PlanConfig, Planner, Readiness, StatusUpdate, TargetFact,
    TargetPhase, job_name, spec_hash,
};

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

/// A running pod labelled `app=web` (`node` empty: not bound to a node).
pub fn pod(name: &str, node: &str) -> TargetFact {
    pod_with(name, node, &[("app", "web")], TargetPhase::Running)
}

pub fn pod_with(name: &str, node: &str, labels: &[(&str, &str)], phase: TargetPhase) -> TargetFact {
    TargetFact {
        namespace: NS.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        node: (!node.is_empty()).then(|| node.to_string()),
        phase,
        host_network: false,
        ips: Vec::new(),
    }
}

pub fn node(name: &str) -> NodeFact {
    node_ready(name, true, 0)
}

/// A node (labelled `pool=capture`) whose Ready condition is `ready` since `t(since)`.
pub fn node_ready(name: &str, ready: bool, since: i64) -> NodeFact {
    NodeFact {
        name: name.into(),
        labels: BTreeMap::from([("pool".into(), "capture".into())]),
        readiness: if ready {
            Readiness::Ready
        } else {
            Readiness::NotReady(Some(t(since)))
        },
    }
}

/// Job states as the Job controller reports them (each read as the controller's adapter reads
/// it: a deadline reached is a finished Job, a deleted one is terminating).
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

/// The capture's Job on `node` in state `state`.
pub fn job(c: &PacketCapture, node: &str, state: J) -> JobFact {
    job_named(c, node, &name_for(node), state)
}

pub fn job_named(c: &PacketCapture, node: &str, name: &str, state: J) -> JobFact {
    let accepted = c
        .status
        .as_ref()
        .and_then(|s| s.accepted_spec.as_ref())
        .unwrap_or(&c.spec);
    let mut j = JobFact {
        name: name.into(),
        node: node.into(),
        capture_uid: c.metadata.uid.clone().expect("capture UID"),
        spec_hash: Some(spec_hash(accepted)),
        state: JobState::Active,
        idle_since: None,
        end_recorded: false,
    };
    match state {
        J::Active => {}
        J::IdleSince(at) => j.idle_since = Some(t(at)),
        J::Deleting => j.state = JobState::Terminating,
        J::Complete | J::DeadlineExceeded => j.state = JobState::Finished,
        J::CompleteRecorded => {
            j.state = JobState::Finished;
            j.end_recorded = true;
        }
        J::BackoffLimitExceeded => {
            j.state = JobState::Failed {
                reason: "BackoffLimitExceeded".into(),
                message: "BackoffLimitExceeded happened".into(),
            }
        }
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
    pub pods: Vec<TargetFact>,
    pub nodes: Vec<NodeFact>,
    pub jobs: Vec<JobFact>,
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
