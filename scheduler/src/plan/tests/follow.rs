//! Following pods: moves, scale-out, pods gone, nodes gone or NotReady, node-level captures.

use std::collections::BTreeMap;

use nightcap_api::NodeCaptureState::{Capturing, Finished};

use super::*;

fn host_network(mut p: TargetFact) -> TargetFact {
    p.host_network = true;
    p
}

/// Started at 0 with nodes a and b capturing.
fn capturing_ab() -> PacketCapture {
    reported(
        reported(started(capture(), 0), "node-a", Capturing),
        "node-b",
        Capturing,
    )
}

#[test]
fn following_pods() {
    let c0 = started(capture(), 0);
    let a_capturing = reported(started(capture(), 0), "node-a", Capturing);
    let other_capture_job = {
        let mut other = capture();
        other.metadata.uid = Some("another-uid".into());
        job(&other, "node-a", J::Active)
    };
    let capture_pod = pod_with(
        "nc-web-debug-node-b-x",
        "node-b",
        &[("app", "web"), (crate::labels::CAPTURE_UID, UID)],
        TargetPhase::Running,
    );
    let by_names = {
        let mut c = capture();
        c.spec.selector = None;
        c.spec.node_names = vec!["node-a".into(), "node-x".into()];
        c
    };
    let by_labels = {
        let mut c = capture();
        c.spec.selector = None;
        c.spec.node_selector = Some(BTreeMap::from([("pool".into(), "capture".into())]));
        c
    };
    let cases = vec![
        Case {
            name: "pod rescheduled to another node: new Job there, old node idles",
            capture: a_capturing.clone(),
            pods: vec![pod("web-1", "node-b")],
            nodes: vec![node("node-a"), node("node-b")],
            jobs: vec![job(&c0, "node-a", J::Active)],
            now: 100,
            expect: &[
                "phase Capturing",
                "node node-b Scheduled",
                "idle node-a 100",
                "create node-b 500s",
                "requeue 90s",
            ],
        },
        Case {
            name: "old node inside the grace period keeps its Job",
            capture: capturing_ab(),
            pods: vec![pod("web-1", "node-b")],
            nodes: vec![node("node-a"), node("node-b")],
            jobs: vec![
                job(&c0, "node-a", J::IdleSince(100)),
                job(&c0, "node-b", J::Active),
            ],
            now: 120,
            expect: &["phase Capturing", "requeue 70s"],
        },
        Case {
            name: "old node past the pods-gone grace: its process stops itself, the Job is kept",
            capture: capturing_ab(),
            pods: vec![pod("web-1", "node-b")],
            nodes: vec![node("node-a"), node("node-b")],
            jobs: vec![
                job(&c0, "node-a", J::IdleSince(100)),
                job(&c0, "node-b", J::Active),
            ],
            now: 130,
            expect: &["phase Capturing", "requeue 60s"],
        },
        Case {
            name: "old node past both grace periods: its Job is deleted",
            capture: capturing_ab(),
            pods: vec![pod("web-1", "node-b")],
            nodes: vec![node("node-a"), node("node-b")],
            jobs: vec![
                job(&c0, "node-a", J::IdleSince(100)),
                job(&c0, "node-b", J::Active),
            ],
            now: 190,
            expect: &["phase Capturing", "stop node-a PodsGone", "requeue 410s"],
        },
        Case {
            name: "pod restarted on the same node within the grace period: Job kept",
            capture: a_capturing.clone(),
            pods: vec![pod("web-1b", "node-a")],
            nodes: vec![node("node-a")],
            jobs: vec![job(&c0, "node-a", J::IdleSince(100))],
            now: 110,
            expect: &["phase Capturing", "busy node-a", "requeue 490s"],
        },
        Case {
            name: "scale-out to a third node: a third Job",
            capture: capturing_ab(),
            pods: vec![
                pod("web-1", "node-a"),
                pod("web-2", "node-b"),
                pod("web-3", "node-c"),
            ],
            nodes: vec![node("node-a"), node("node-b"), node("node-c")],
            jobs: vec![job(&c0, "node-a", J::Active), job(&c0, "node-b", J::Active)],
            now: 200,
            expect: &[
                "phase Capturing",
                "node node-c Scheduled",
                "create node-c 400s",
                "requeue 400s",
            ],
        },
        Case {
            name: "pending pod already bound to a node gets its Job",
            capture: c0.clone(),
            pods: vec![pod_with(
                "web-1",
                "node-a",
                &[("app", "web")],
                TargetPhase::Pending,
            )],
            nodes: vec![node("node-a")],
            jobs: vec![],
            now: 10,
            expect: &[
                "node node-a Scheduled",
                "create node-a 590s",
                "requeue 590s",
            ],
        },
        Case {
            name: "all pods gone: every Job idles",
            capture: capturing_ab(),
            pods: vec![],
            nodes: vec![node("node-a"), node("node-b")],
            jobs: vec![job(&c0, "node-a", J::Active), job(&c0, "node-b", J::Active)],
            now: 200,
            expect: &[
                "phase Capturing",
                "idle node-a 200",
                "idle node-b 200",
                "requeue 90s",
            ],
        },
        Case {
            name: "all pods gone past both grace periods: every Job is deleted",
            capture: capturing_ab(),
            pods: vec![],
            nodes: vec![node("node-a"), node("node-b")],
            jobs: vec![
                job(&c0, "node-a", J::IdleSince(200)),
                job(&c0, "node-b", J::IdleSince(200)),
            ],
            now: 290,
            expect: &[
                "phase Capturing",
                "stop node-a PodsGone",
                "stop node-b PodsGone",
                "requeue 310s",
            ],
        },
        Case {
            name: "all pods gone, Jobs ended: wait for pods until the window ends",
            capture: reported(
                reported(started(capture(), 0), "node-a", Finished),
                "node-b",
                Capturing,
            ),
            pods: vec![],
            nodes: vec![node("node-a"), node("node-b")],
            jobs: vec![],
            now: 240,
            expect: &["phase Pending", "node node-b Finished", "requeue 360s"],
        },
        Case {
            name: "node deleted: its Job stops, the node is marked Failed",
            capture: a_capturing.clone(),
            pods: vec![pod("web-1", "node-a")],
            nodes: vec![node("node-b")],
            jobs: vec![job(&c0, "node-a", J::Active)],
            now: 100,
            expect: &["node node-a Failed", "stop node-a NodeGone", "requeue 500s"],
        },
        Case {
            name: "pod rescheduled off the deleted node",
            capture: reported(started(capture(), 0), "node-a", NodeCaptureState::Failed),
            pods: vec![pod("web-1b", "node-b")],
            nodes: vec![node("node-b")],
            jobs: vec![job(&c0, "node-a", J::Deleting)],
            now: 110,
            expect: &[
                "node node-b Scheduled",
                "create node-b 490s",
                "requeue 490s",
            ],
        },
        Case {
            name: "node NotReady inside the grace period: wait",
            capture: a_capturing.clone(),
            pods: vec![pod("web-1", "node-a")],
            nodes: vec![node_ready("node-a", false, 80)],
            jobs: vec![job(&c0, "node-a", J::Active)],
            now: 100,
            expect: &["requeue 40s"],
        },
        Case {
            name: "node NotReady past the grace period: stop its Job",
            capture: a_capturing.clone(),
            pods: vec![pod("web-1", "node-a")],
            nodes: vec![node_ready("node-a", false, 30)],
            jobs: vec![job(&c0, "node-a", J::Active)],
            now: 100,
            expect: &[
                "node node-a Failed",
                "stop node-a NodeNotReady",
                "requeue 500s",
            ],
        },
        Case {
            name: "no new Job on a NotReady node",
            capture: c0.clone(),
            pods: vec![pod("web-1", "node-a")],
            nodes: vec![node_ready("node-a", false, 30)],
            jobs: vec![],
            now: 100,
            expect: &["phase Pending", "requeue 500s"],
        },
        Case {
            name: "host-network pods, capture pods, unbound and finished pods are no targets",
            capture: c0.clone(),
            pods: vec![
                host_network(pod("web-h", "node-a")),
                capture_pod,
                pod("web-unbound", ""),
                pod_with(
                    "web-done",
                    "node-c",
                    &[("app", "web")],
                    TargetPhase::Succeeded,
                ),
                pod_with("web-x", "node-c", &[("app", "web")], TargetPhase::Failed),
            ],
            nodes: vec![node("node-a"), node("node-b"), node("node-c")],
            jobs: vec![],
            now: 100,
            expect: &["phase Pending", "requeue 500s"],
        },
        Case {
            name: "a second Job for the same node is stopped",
            capture: a_capturing.clone(),
            pods: vec![pod("web-1", "node-a")],
            nodes: vec![node("node-a")],
            jobs: vec![
                job(&c0, "node-a", J::Active),
                job_named(&c0, "node-a", "nc-old-name", J::Active),
            ],
            now: 100,
            expect: &["phase Capturing", "stop node-a Duplicate", "requeue 500s"],
        },
        Case {
            name: "a Job that ended while pods still need it is replaced",
            capture: a_capturing.clone(),
            pods: vec![pod("web-1", "node-a")],
            nodes: vec![node("node-a")],
            jobs: vec![job(&c0, "node-a", J::Complete)],
            now: 100,
            expect: &[
                "node node-a Finished",
                "ended node-a",
                "stop node-a Replace",
                "event JobFinished",
                "requeue 500s",
            ],
        },
        Case {
            name: "a Job that stopped by itself (pods gone) is reported once",
            capture: reported(started(capture(), 0), "node-a", Finished),
            pods: vec![],
            nodes: vec![node("node-a")],
            jobs: vec![job(&c0, "node-a", J::Complete)],
            now: 100,
            expect: &[
                "phase Pending",
                "ended node-a",
                "event JobFinished",
                "requeue 500s",
            ],
        },
        Case {
            name: "a Job whose end was reported is quiet",
            capture: reported(started(capture(), 0), "node-a", Finished),
            pods: vec![],
            nodes: vec![node("node-a")],
            jobs: vec![job(&c0, "node-a", J::CompleteRecorded)],
            now: 100,
            expect: &["phase Pending", "requeue 500s"],
        },
        Case {
            name: "Jobs of other captures are not ours",
            capture: c0.clone(),
            pods: vec![pod("web-1", "node-a")],
            nodes: vec![node("node-a")],
            jobs: vec![other_capture_job],
            now: 100,
            expect: &[
                "node node-a Scheduled",
                "create node-a 500s",
                "requeue 500s",
            ],
        },
        Case {
            name: "node-level capture by name: a Job per existing node",
            capture: by_names,
            pods: vec![],
            nodes: vec![node("node-a"), node("node-b")],
            jobs: vec![],
            now: 0,
            expect: &[
                "phase Scheduled",
                "accept",
                "node node-a Scheduled",
                "create node-a 600s",
                "event Started",
                "requeue 600s",
            ],
        },
        Case {
            name: "node-level capture by labels",
            capture: by_labels,
            pods: vec![],
            nodes: vec![node("node-a"), node("node-b")],
            jobs: vec![],
            now: 0,
            expect: &[
                "phase Scheduled",
                "accept",
                "node node-a Scheduled",
                "node node-b Scheduled",
                "create node-a 600s",
                "create node-b 600s",
                "event Started",
                "requeue 600s",
            ],
        },
    ];
    run_cases(cases);
}

#[test]
fn messages_say_why_nothing_is_captured() {
    let c = started(capture(), 0);
    let message = |pods: &[TargetFact], nodes: &[NodeFact]| {
        let after = apply(&c, &planner().plan(&c, pods, nodes, &[], t(100)));
        after.status.and_then(|s| s.message).expect("message")
    };
    let m = message(&[host_network(pod("web-h", "node-a"))], &[node("node-a")]);
    assert!(m.contains("host network"), "{m}");
    let m = message(&[pod("web-1", "node-a")], &[node_ready("node-a", false, 0)]);
    assert!(m.contains("node-a is NotReady"), "{m}");
    let m = message(&[pod("web-1", "node-z")], &[node("node-a")]);
    assert!(m.contains("node-z does not exist"), "{m}");
    let m = message(&[], &[node("node-a")]);
    assert!(m.contains("no selected pod"), "{m}");
}

#[test]
fn selector_expressions() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    use nightcap_api::selector::LabelMatcher;
    let req = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
    };
    let labels: BTreeMap<String, String> = BTreeMap::from([
        ("app".into(), "web".into()),
        ("tier".into(), "front".into()),
    ]);
    type Row = (
        Option<Vec<(&'static str, &'static str)>>,
        Vec<LabelSelectorRequirement>,
        bool,
    );
    let cases: Vec<Row> = vec![
        (None, vec![], true),
        (Some(vec![("app", "web")]), vec![], true),
        (Some(vec![("app", "db")]), vec![], false),
        (None, vec![req("tier", "In", &["front", "back"])], true),
        (None, vec![req("tier", "In", &["back"])], false),
        (None, vec![req("tier", "NotIn", &["back"])], true),
        (None, vec![req("missing", "NotIn", &["x"])], true),
        (None, vec![req("tier", "NotIn", &["front"])], false),
        (None, vec![req("app", "Exists", &[])], true),
        (None, vec![req("missing", "Exists", &[])], false),
        (None, vec![req("missing", "DoesNotExist", &[])], true),
        (None, vec![req("app", "DoesNotExist", &[])], false),
        (None, vec![req("app", "Bogus", &["web"])], false),
        (
            Some(vec![("app", "web")]),
            vec![req("tier", "In", &["back"])],
            false,
        ),
    ];
    for (match_labels, exprs, want) in cases {
        let sel = LabelSelector {
            match_labels: match_labels.map(|m| {
                m.into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        };
        assert_eq!(LabelMatcher::new(&sel).matches(&labels), want, "{sel:?}");
    }
}
