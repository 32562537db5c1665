//! The adapter over hand-built Pods, Nodes and Jobs (and the Jobs the Job builder makes).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        batch::v1::{JobCondition, JobStatus},
        core::v1::{NodeCondition, NodeStatus, PodIP, PodSpec, PodStatus},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::runtime::{reflector, watcher};
use nightcap_api::NodeCaptureState;

use super::*;
use crate::{
    job::{JobConfig, build_job},
    plan::{
        JobRequest, spec_hash,
        tests::{UID, capture, reported, started, t},
    },
};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pod(ns: &str, name: &str, node: Option<&str>, phase: Option<&str>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(labels(&[("app", "web")])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: node.map(Into::into),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: phase.map(Into::into),
            ..PodStatus::default()
        }),
    }
}

fn node(name: &str, ready: Option<(&str, i64)>) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(&[("pool", "capture")])),
            ..ObjectMeta::default()
        },
        status: Some(NodeStatus {
            conditions: ready.map(|(status, since)| {
                vec![
                    NodeCondition {
                        type_: "MemoryPressure".into(),
                        status: "False".into(),
                        ..NodeCondition::default()
                    },
                    NodeCondition {
                        type_: "Ready".into(),
                        status: status.into(),
                        last_transition_time: Some(Time(t(since))),
                        ..NodeCondition::default()
                    },
                ]
            }),
            ..NodeStatus::default()
        }),
        spec: None,
    }
}

/// The Job the builder makes for the started capture on `node`.
fn built_job(node: &str) -> Job {
    let c = started(capture(), 0);
    let req = JobRequest {
        node: node.into(),
        name: format!("nc-web-debug-{node}"),
        active_deadline_seconds: 600,
        pods: vec![],
    };
    build_job(&c, &req, &JobConfig::default()).expect("job builds")
}

fn with_condition(mut job: Job, type_: &str, reason: &str) -> Job {
    job.status = Some(JobStatus {
        conditions: Some(vec![JobCondition {
            type_: type_.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(format!("{reason} happened")),
            ..JobCondition::default()
        }]),
        ..JobStatus::default()
    });
    job
}

#[test]
fn pods_become_targets() {
    let mut p = pod("team-a", "web-1", Some("node-a"), Some("Running"));
    let status = p.status.as_mut().expect("status");
    status.pod_ip = Some("10.0.0.7".into());
    status.pod_ips = Some(vec![
        PodIP {
            ip: "10.0.0.7".into(),
        },
        PodIP {
            ip: "fd00::7".into(),
        },
    ]);
    assert_eq!(
        target_fact(&p),
        TargetFact {
            namespace: "team-a".into(),
            name: "web-1".into(),
            uid: "uid-web-1".into(),
            labels: labels(&[("app", "web")]),
            node: Some("node-a".into()),
            phase: TargetPhase::Running,
            host_network: false,
            ips: vec!["10.0.0.7".into(), "fd00::7".into()],
        }
    );
    // A trimmed pod keeps only podIP.
    p.status.as_mut().expect("status").pod_ips = None;
    assert_eq!(target_fact(&p).ips, ["10.0.0.7"]);
    p.spec.as_mut().expect("spec").host_network = Some(true);
    assert!(target_fact(&p).host_network);

    for (phase, want) in [
        (Some("Pending"), TargetPhase::Pending),
        (Some("Running"), TargetPhase::Running),
        (Some("Succeeded"), TargetPhase::Succeeded),
        (Some("Failed"), TargetPhase::Failed),
        (Some("Bogus"), TargetPhase::Unknown),
        (None, TargetPhase::Unknown),
    ] {
        assert_eq!(
            target_fact(&pod("team-a", "p", None, phase)).phase,
            want,
            "{phase:?}"
        );
    }
    let bare = Pod {
        metadata: ObjectMeta {
            name: Some("bare".into()),
            ..ObjectMeta::default()
        },
        ..Pod::default()
    };
    let f = target_fact(&bare);
    assert_eq!(
        (f.node, f.phase, f.host_network, f.labels.len()),
        (None, TargetPhase::Unknown, false, 0)
    );
}

#[test]
fn nodes_become_node_facts() {
    let ready = node_fact(&node("node-a", Some(("True", 5)))).expect("named");
    assert_eq!(
        ready,
        NodeFact {
            name: "node-a".into(),
            labels: labels(&[("pool", "capture")]),
            readiness: Readiness::Ready,
        }
    );
    let cases = [
        (Some(("False", 30)), Readiness::NotReady(Some(t(30)))),
        (Some(("Unknown", 40)), Readiness::NotReady(Some(t(40)))),
        (None, Readiness::NotReady(None)),
    ];
    for (cond, want) in cases {
        let f = node_fact(&node("node-a", cond)).expect("named");
        assert_eq!(f.readiness, want, "{cond:?}");
    }
    let mut deleting = node("node-a", Some(("True", 0)));
    deleting.metadata.deletion_timestamp = Some(Time(t(1)));
    assert_eq!(
        node_fact(&deleting).map(|n| n.readiness),
        Some(Readiness::Deleting)
    );
    assert_eq!(node_fact(&Node::default()), None, "a node without a name");
}

#[test]
fn built_jobs_carry_what_the_planner_reads() {
    let c = started(capture(), 0);
    let fact = job_fact(&built_job("node-a")).expect("a capture Job");
    assert_eq!(
        fact,
        JobFact {
            name: "nc-web-debug-node-a".into(),
            node: "node-a".into(),
            capture_uid: UID.into(),
            spec_hash: Some(spec_hash(&c.spec)),
            state: JobState::Active,
            idle_since: None,
            end_recorded: false,
        }
    );
}

#[test]
fn job_conditions_become_states() {
    let failed = |reason: &str| JobState::Failed {
        reason: reason.into(),
        message: format!("{reason} happened"),
    };
    let cases = [
        ("Complete", "CompletionsReached", JobState::Finished),
        ("Failed", "DeadlineExceeded", JobState::Finished),
        (
            "Failed",
            "BackoffLimitExceeded",
            failed("BackoffLimitExceeded"),
        ),
        (
            "FailureTarget",
            "BackoffLimitExceeded",
            JobState::Terminating,
        ),
        (
            "SuccessCriteriaMet",
            "CompletionsReached",
            JobState::Terminating,
        ),
        ("Suspended", "JobSuspended", JobState::Active),
    ];
    for (type_, reason, want) in cases {
        let job = with_condition(built_job("node-a"), type_, reason);
        assert_eq!(
            job_fact(&job).map(|j| j.state),
            Some(want),
            "{type_}/{reason}"
        );
    }
    let mut deleting = with_condition(built_job("node-a"), "Complete", "CompletionsReached");
    deleting.metadata.deletion_timestamp = Some(Time(t(1)));
    assert_eq!(
        job_fact(&deleting).map(|j| j.state),
        Some(JobState::Terminating)
    );
}

#[test]
fn job_marks_and_identity() {
    let mut job = built_job("node-a");
    let a = job.metadata.annotations.get_or_insert_default();
    a.insert(labels::IDLE_SINCE.into(), t(42).to_string());
    a.insert(labels::END_RECORDED.into(), "true".into());
    let fact = job_fact(&job).expect("a capture Job");
    assert_eq!(fact.idle_since, Some(t(42)));
    assert!(fact.end_recorded);

    // The node from the annotation when the pod template names none.
    let mut from_annotation = built_job("node-b");
    if let Some(p) = from_annotation
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
    {
        p.node_name = None;
    }
    assert_eq!(
        job_fact(&from_annotation).map(|j| j.node),
        Some("node-b".into())
    );
    let mut nowhere = from_annotation.clone();
    nowhere.metadata.annotations = None;
    assert_eq!(job_fact(&nowhere), None, "a Job without a node");
    let mut foreign = built_job("node-a");
    foreign.metadata.labels = None;
    assert_eq!(job_fact(&foreign), None, "a Job serving no capture");
}

fn store<K>(objects: Vec<K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (reader, mut writer) = reflector::store();
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::Apply(o));
    }
    reader
}

#[test]
fn gather_reads_what_the_plan_of_one_capture_needs() {
    let pods = store(vec![
        pod("team-a", "web-1", Some("node-a"), Some("Running")),
        pod("team-a", "web-2", None, Some("Pending")),
        pod("team-b", "web-x", Some("node-x"), Some("Running")),
    ]);
    let nodes = store(
        ["node-a", "node-b", "node-c", "node-x"]
            .into_iter()
            .map(|n| node(n, Some(("True", 0))))
            .collect(),
    );
    let mut other = built_job("node-c");
    other
        .metadata
        .labels
        .get_or_insert_default()
        .insert(labels::CAPTURE_UID.into(), "another-uid".into());
    let jobs = store(vec![built_job("node-b"), other]);
    let c = reported(started(capture(), 0), "node-z", NodeCaptureState::Finished);

    let facts = Facts::gather(&c, &pods, &nodes, &jobs);
    let names = |v: &[TargetFact]| v.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    let mut targets = names(&facts.targets);
    targets.sort();
    assert_eq!(targets, ["web-1", "web-2"], "the capture's namespace only");
    let mut node_names: Vec<&str> = facts.nodes.iter().map(|n| n.name.as_str()).collect();
    node_names.sort_unstable();
    // node-a (a target), node-b (a Job); node-z (status) does not exist.
    assert_eq!(node_names, ["node-a", "node-b"]);
    let job_nodes: Vec<&str> = facts.jobs.iter().map(|j| j.node.as_str()).collect();
    assert_eq!(job_nodes, ["node-b"], "only the capture's own Jobs");

    let mut node_level = c.clone();
    node_level.spec.selector = None;
    node_level.spec.node_names = vec!["node-a".into()];
    let facts = Facts::gather(&node_level, &pods, &nodes, &jobs);
    assert!(
        facts.targets.is_empty(),
        "a node-level capture reads no pods"
    );
    assert_eq!(
        facts.nodes.len(),
        4,
        "a node-level capture reads every node"
    );
}
