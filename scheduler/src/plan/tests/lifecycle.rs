//! Start, spec immutability, end of the window, limits, stop requests, deletion, failures.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use nightcap_api::{NodeCaptureState, Phase, capture::STOP_ANNOTATION};

use super::*;
use crate::plan::StopReason;

fn with_start(mut c: PacketCapture, at: i64) -> PacketCapture {
    c.spec.start_time = Some(Time(t(at)));
    c
}

fn deleted(c: PacketCapture) -> PacketCapture {
    deleted_at(c, 0)
}

fn deleted_at(mut c: PacketCapture, at: i64) -> PacketCapture {
    c.metadata.deletion_timestamp = Some(Time(t(at)));
    c
}

fn phase(mut c: PacketCapture, p: Phase) -> PacketCapture {
    c.status.get_or_insert_with(Default::default).phase = Some(p);
    c
}

fn counted(mut c: PacketCapture, node: &str, packets: u64) -> PacketCapture {
    let s = c.status.get_or_insert_with(Default::default);
    s.nodes.entry(node.into()).or_default().packets = packets;
    c
}

fn annotated(mut c: PacketCapture, key: &str, value: &str) -> PacketCapture {
    c.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.into(), value.into());
    c
}

#[test]
fn lifecycle_transitions() {
    let invalid = {
        let mut c = capture();
        c.spec.selector = None;
        c
    };
    let past_end = {
        let mut c = capture();
        c.spec.duration = None;
        c.spec.end_time = Some(Time(t(-10)));
        c
    };
    let edited = {
        let mut c = reported(started(capture(), 0), "node-a", NodeCaptureState::Capturing);
        c.spec.duration = Some("1h".into());
        c.metadata.generation = Some(2);
        c
    };
    let limited = {
        let mut c = capture();
        c.spec.max_packets = Some(1000);
        counted(counted(started(c, 0), "node-a", 600), "node-b", 400)
    };
    let running = started(capture(), 0);
    let limited_since_100 = {
        let mut c = limited.clone();
        let s = c.status.get_or_insert_with(Default::default);
        s.phase = Some(Phase::Uploading);
        s.conditions
            .push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: "Capturing".into(),
                status: "False".into(),
                reason: "LimitReached".into(),
                message: "The maxBytes/maxPackets limit was reached.".into(),
                last_transition_time: Time(t(100)),
                observed_generation: Some(1),
            });
        c
    };
    let cases = vec![
        Case {
            name: "invalid spec fails at once with an Event",
            capture: invalid,
            pods: vec![pod("web-1", "node-a")],
            nodes: vec![node("node-a")],
            jobs: vec![],
            now: 0,
            expect: &["phase Failed", "complete", "event InvalidSpec"],
        },
        Case {
            name: "endTime in the past is invalid",
            capture: past_end,
            pods: vec![],
            nodes: vec![],
            jobs: vec![],
            now: 0,
            expect: &["phase Failed", "complete", "event InvalidSpec"],
        },
        Case {
            name: "startTime in the future waits",
            capture: with_start(capture(), 60),
            pods: vec![pod("web-1", "node-a")],
            nodes: vec![node("node-a")],
            jobs: vec![],
            now: 0,
            expect: &["phase Pending", "requeue 60s"],
        },
        Case {
            name: "window already over when first seen",
            capture: with_start(capture(), -3600),
            pods: vec![pod("web-1", "node-a")],
            nodes: vec![node("node-a")],
            jobs: vec![],
            now: 0,
            expect: &["phase Failed", "complete", "event WindowMissed"],
        },
        Case {
            name: "start: accept the spec, one Job per node with selected pods",
            capture: capture(),
            pods: vec![
                pod("web-1", "node-a"),
                pod("web-2", "node-b"),
                pod("web-3", "node-b"),
                pod_with("db-1", "node-c", &[("app", "db")], TargetPhase::Running),
            ],
            nodes: vec![node("node-a"), node("node-b"), node("node-c")],
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
        Case {
            name: "startTime reached: start with the rest of the window as deadline",
            capture: with_start(capture(), -100),
            pods: vec![pod("web-1", "node-a")],
            nodes: vec![node("node-a")],
            jobs: vec![],
            now: 0,
            expect: &[
                "phase Scheduled",
                "accept",
                "node node-a Scheduled",
                "create node-a 500s",
                "event Started",
                "requeue 500s",
            ],
        },
        Case {
            name: "restarted scheduler finds its Jobs and creates none",
            capture: reported(
                reported(started(capture(), 0), "node-a", NodeCaptureState::Capturing),
                "node-b",
                NodeCaptureState::WaitingForTraffic,
            ),
            pods: vec![pod("web-1", "node-a"), pod("web-2", "node-b")],
            nodes: vec![node("node-a"), node("node-b")],
            jobs: vec![
                job(&running, "node-a", J::Active),
                job(&running, "node-b", J::Active),
            ],
            now: 100,
            expect: &["phase Capturing", "requeue 500s"],
        },
        Case {
            name: "spec edited after start: SpecChanged, keep the accepted window",
            capture: edited,
            pods: vec![pod("web-1", "node-a")],
            nodes: vec![node("node-a")],
            jobs: vec![job(&running, "node-a", J::Active)],
            now: 60,
            expect: &["phase Capturing", "event SpecChanged", "requeue 540s"],
        },
        Case {
            name: "window ended: running Jobs get the stop grace to upload and exit",
            capture: started(capture(), 0),
            pods: vec![pod("web-1", "node-a"), pod("web-2", "node-b")],
            nodes: vec![node("node-a"), node("node-b")],
            jobs: vec![
                job(&running, "node-a", J::Active),
                job(&running, "node-b", J::Deleting),
            ],
            now: 600,
            expect: &["phase Uploading", "requeue 60s"],
        },
        Case {
            name: "window ended a stop grace ago: delete the Jobs still running",
            capture: started(capture(), 0),
            pods: vec![pod("web-1", "node-a"), pod("web-2", "node-b")],
            nodes: vec![node("node-a"), node("node-b")],
            jobs: vec![
                job(&running, "node-a", J::Active),
                job(&running, "node-b", J::Deleting),
            ],
            now: 660,
            expect: &["phase Uploading", "stop node-a WindowEnded"],
        },
        Case {
            name: "window ended, Jobs hit their deadline: Succeeded",
            capture: reported(started(capture(), 0), "node-a", NodeCaptureState::Capturing),
            pods: vec![pod("web-1", "node-a")],
            nodes: vec![node("node-a")],
            jobs: vec![job(&running, "node-a", J::DeadlineExceeded)],
            now: 601,
            expect: &[
                "phase Succeeded",
                "complete",
                "node node-a Finished",
                "ended node-a",
                "event JobFinished",
                "event Completed",
            ],
        },
        Case {
            name: "window ended, Jobs gone and nodes reported Finished: Succeeded",
            capture: reported(started(capture(), 0), "node-a", NodeCaptureState::Finished),
            pods: vec![],
            nodes: vec![node("node-a")],
            jobs: vec![],
            now: 605,
            expect: &["phase Succeeded", "complete", "event Completed"],
        },
        Case {
            name: "maxPackets reached over all nodes: phase Uploading, Jobs stop themselves",
            capture: limited.clone(),
            pods: vec![pod("web-1", "node-a"), pod("web-2", "node-b")],
            nodes: vec![node("node-a"), node("node-b")],
            jobs: vec![
                job(&running, "node-a", J::Active),
                job(&running, "node-b", J::Active),
            ],
            now: 100,
            expect: &["phase Uploading", "requeue 60s"],
        },
        Case {
            name: "maxPackets reached a stop grace ago: delete the Jobs still running",
            capture: limited_since_100,
            pods: vec![pod("web-1", "node-a"), pod("web-2", "node-b")],
            nodes: vec![node("node-a"), node("node-b")],
            jobs: vec![
                job(&running, "node-a", J::Active),
                job(&running, "node-b", J::Active),
            ],
            now: 160,
            expect: &["stop node-a LimitReached", "stop node-b LimitReached"],
        },
        Case {
            name: "stop annotation: phase Uploading, the Jobs stop themselves",
            capture: annotated(started(capture(), 0), STOP_ANNOTATION, "alert resolved"),
            pods: vec![pod("web-1", "node-a")],
            nodes: vec![node("node-a")],
            jobs: vec![job(&running, "node-a", J::Active)],
            now: 100,
            expect: &["phase Uploading", "requeue 60s"],
        },
        Case {
            name: "stop annotation, Jobs gone: Stopped",
            capture: annotated(
                reported(started(capture(), 0), "node-a", NodeCaptureState::Finished),
                STOP_ANNOTATION,
                "alert resolved",
            ),
            pods: vec![pod("web-1", "node-a")],
            nodes: vec![node("node-a")],
            jobs: vec![],
            now: 110,
            expect: &["phase Stopped", "complete", "event Completed"],
        },
        Case {
            name: "the only Job failed: the capture fails",
            capture: reported(started(capture(), 0), "node-a", NodeCaptureState::Capturing),
            pods: vec![pod("web-1", "node-a")],
            nodes: vec![node("node-a")],
            jobs: vec![job(&running, "node-a", J::BackoffLimitExceeded)],
            now: 100,
            expect: &[
                "phase Failed",
                "complete",
                "node node-a Failed",
                "ended node-a",
                "event JobFailed",
                "event JobsFailed",
            ],
        },
        Case {
            name: "one failed node does not fail a capture that captures elsewhere",
            capture: reported(
                reported(started(capture(), 0), "node-a", NodeCaptureState::Capturing),
                "node-b",
                NodeCaptureState::Capturing,
            ),
            pods: vec![pod("web-1", "node-a"), pod("web-2", "node-b")],
            nodes: vec![node("node-a"), node("node-b")],
            jobs: vec![
                job(&running, "node-a", J::BackoffLimitExceeded),
                job(&running, "node-b", J::Active),
            ],
            now: 100,
            expect: &[
                "phase Capturing",
                "node node-a Failed",
                "ended node-a",
                "event JobFailed",
                "requeue 500s",
            ],
        },
        Case {
            name: "capture deleted: the Jobs stop themselves; the finalizer stays",
            capture: deleted_at(started(capture(), 0), 90),
            pods: vec![pod("web-1", "node-a"), pod("web-2", "node-b")],
            nodes: vec![node("node-a"), node("node-b")],
            jobs: vec![
                job(&running, "node-a", J::Active),
                job(&running, "node-b", J::Deleting),
            ],
            now: 100,
            expect: &["phase Uploading", "requeue 50s"],
        },
        Case {
            name: "capture deleted a stop grace ago: delete the Jobs still running",
            capture: deleted(started(capture(), 0)),
            pods: vec![pod("web-1", "node-a"), pod("web-2", "node-b")],
            nodes: vec![node("node-a"), node("node-b")],
            jobs: vec![
                job(&running, "node-a", J::Active),
                job(&running, "node-b", J::Deleting),
            ],
            now: 100,
            expect: &["phase Uploading", "stop node-a CaptureDeleted"],
        },
        Case {
            name: "capture deleted, Jobs gone: Stopped, release the finalizer",
            capture: deleted(started(capture(), 0)),
            pods: vec![pod("web-1", "node-a")],
            nodes: vec![node("node-a")],
            jobs: vec![],
            now: 110,
            expect: &["phase Stopped", "complete", "release", "event Completed"],
        },
        Case {
            name: "finished capture deleted: release at once",
            capture: deleted(phase(started(capture(), 0), Phase::Succeeded)),
            pods: vec![],
            nodes: vec![],
            jobs: vec![job(&running, "node-a", J::Complete)],
            now: 900,
            expect: &[
                "node node-a Finished",
                "ended node-a",
                "release",
                "event JobFinished",
            ],
        },
        Case {
            name: "finished is final: a leftover Job is stopped, nothing else",
            capture: phase(started(capture(), 0), Phase::Succeeded),
            pods: vec![pod("web-1", "node-a"), pod("web-2", "node-b")],
            nodes: vec![node("node-a"), node("node-b")],
            jobs: vec![job(&running, "node-a", J::Active)],
            now: 700,
            expect: &["stop node-a WindowEnded"],
        },
    ];
    run_cases(cases);
}

#[test]
fn a_spec_edit_is_reported_once_and_the_accepted_spec_is_kept() {
    let running = started(capture(), 0);
    let mut c = reported(running.clone(), "node-a", NodeCaptureState::Capturing);
    c.spec.duration = Some("1h".into());
    c.metadata.generation = Some(2);
    let pods = [pod("web-1", "node-a")];
    let nodes = [node("node-a")];
    let jobs = [job(&running, "node-a", J::Active)];
    let first = planner().plan(&c, &pods, &nodes, &jobs, t(60));
    let after = apply(&c, &first);
    let status = after.status.as_ref().expect("status");
    let cond = status
        .conditions
        .iter()
        .find(|c| c.type_ == "SpecChanged")
        .expect("SpecChanged condition");
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("True", "SpecImmutable")
    );
    assert!(cond.message.contains("immutable"), "{}", cond.message);
    assert_eq!(cond.observed_generation, Some(2));
    assert_eq!(
        status.accepted_spec.as_ref(),
        Some(&running.spec),
        "accepted spec kept"
    );
    assert_eq!(status.spec_hash, Some(spec_hash(&running.spec)));
    let second = planner().plan(&after, &pods, &nodes, &jobs, t(90));
    assert_eq!(
        summary(&second),
        ["requeue 510s"],
        "same edit, no second Event"
    );
    // Reverting the edit clears the condition.
    let mut reverted = after.clone();
    reverted.spec = running.spec.clone();
    let third = apply(
        &reverted,
        &planner().plan(&reverted, &pods, &nodes, &jobs, t(100)),
    );
    let cond = third
        .status
        .as_ref()
        .expect("status")
        .conditions
        .iter()
        .find(|c| c.type_ == "SpecChanged")
        .cloned()
        .expect("condition kept");
    assert_eq!(cond.status, "False");
}

#[test]
fn a_spec_edited_before_the_start_is_the_one_accepted() {
    let mut c = capture();
    c.spec.start_time = Some(Time(t(60)));
    let waiting = apply(&c, &planner().plan(&c, &[], &[], &[], t(0)));
    assert_eq!(
        waiting.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Pending)
    );
    let mut edited = waiting.clone();
    edited.spec.duration = Some("2m".into());
    let actions = planner().plan(
        &edited,
        &[pod("web-1", "node-a")],
        &[node("node-a")],
        &[],
        t(60),
    );
    assert_eq!(
        summary(&actions),
        [
            "phase Scheduled",
            "accept",
            "node node-a Scheduled",
            "create node-a 120s",
            "event Started",
            "requeue 120s"
        ]
    );
    let after = apply(&edited, &actions);
    let status = after.status.expect("status");
    assert_eq!(status.accepted_spec, Some(edited.spec.clone()));
    assert!(status.conditions.iter().all(|c| c.type_ != "SpecChanged"));
}

#[test]
fn planning_converges_and_keeps_transition_times() {
    let c = capture();
    let pods = [pod("web-1", "node-a"), pod("web-2", "node-b")];
    let nodes = [node("node-a"), node("node-b")];
    let first = planner().plan(&c, &pods, &nodes, &[], t(0));
    let after = apply(&c, &first);
    // The executor created the Jobs the plan asked for.
    let jobs: Vec<JobFact> = first
        .iter()
        .filter_map(|a| match a {
            Action::CreateJob(r) => Some(job(&after, &r.node, J::Active)),
            _ => None,
        })
        .collect();
    assert_eq!(jobs.len(), 2);
    let second = planner().plan(&after, &pods, &nodes, &jobs, t(5));
    assert_eq!(summary(&second), ["requeue 595s"], "nothing left to do");
    let scheduled = |c: &PacketCapture| {
        c.status
            .as_ref()
            .expect("status")
            .conditions
            .iter()
            .find(|c| c.type_ == "Scheduled")
            .cloned()
            .expect("Scheduled")
    };
    // A node starts capturing: the phase moves, the Scheduled condition keeps its time.
    let capturing = reported(after.clone(), "node-a", NodeCaptureState::Capturing);
    let third = apply(
        &capturing,
        &planner().plan(&capturing, &pods, &nodes, &jobs, t(10)),
    );
    assert_eq!(
        third.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Capturing)
    );
    assert_eq!(scheduled(&third).last_transition_time, Time(t(0)));
    assert_eq!(scheduled(&third).status, "True");
    let cap = third
        .status
        .as_ref()
        .expect("status")
        .conditions
        .iter()
        .find(|c| c.type_ == "Capturing")
        .cloned()
        .expect("Capturing");
    assert_eq!(
        (cap.status.as_str(), cap.last_transition_time.clone()),
        ("True", Time(t(10)))
    );
    assert_eq!(third.status.as_ref().and_then(|s| s.node_count), Some(2));
}

#[test]
fn status_patch_touches_only_scheduler_fields() {
    let c = capture();
    let actions = planner().plan(&c, &[pod("web-1", "node-a")], &[node("node-a")], &[], t(0));
    let Some(Action::UpdateStatus(u)) = actions.first() else {
        panic!("the first action is the status update: {actions:?}");
    };
    let patch = u.to_merge_patch();
    let node = &patch["status"]["nodes"]["node-a"];
    assert_eq!(node["state"], "Scheduled");
    assert_eq!(node["job"], name_for("node-a"));
    for owned_by_capture_job in ["packets", "bytes", "drops", "files", "pods"] {
        assert!(
            node.get(owned_by_capture_job).is_none(),
            "{owned_by_capture_job} in {patch}"
        );
    }
    assert_eq!(patch["status"]["phase"], "Scheduled");
    assert_eq!(patch["status"]["acceptedSpec"]["duration"], "10m");
    assert_eq!(patch["status"]["startTime"], serde_json::json!(Time(t(0))));
}

#[test]
fn stop_reasons_are_camel_case() {
    for r in [
        StopReason::PodsGone,
        StopReason::NodeGone,
        StopReason::NodeNotReady,
        StopReason::WindowEnded,
        StopReason::LimitReached,
        StopReason::StopRequested,
        StopReason::CaptureDeleted,
        StopReason::CaptureFailed,
        StopReason::Replace,
        StopReason::Duplicate,
    ] {
        let s = r.as_str();
        assert!(
            s.chars().next().is_some_and(|c| c.is_ascii_uppercase()),
            "{s}"
        );
        assert!(s.chars().all(|c| c.is_ascii_alphanumeric()), "{s}");
    }
}

#[test]
fn a_failure_the_capture_process_reported_stays_in_the_node_message() {
    let running = started(capture(), 0);
    let mut c = reported(started(capture(), 0), "node-a", NodeCaptureState::Failed);
    let why = "Cannot capture: socket(AF_PACKET) was refused: the process lacks CAP_NET_RAW";
    if let Some(n) = c.status.as_mut().and_then(|s| s.nodes.get_mut("node-a")) {
        n.message = Some(why.into());
    }
    let jobs = vec![job(&running, "node-a", J::BackoffLimitExceeded)];
    let actions = planner().plan(
        &c,
        &[pod("web-1", "node-a")],
        &[node("node-a")],
        &jobs,
        t(100),
    );
    let message = actions
        .iter()
        .find_map(|a| match a {
            Action::UpdateStatus(u) => u.nodes.get("node-a").and_then(|n| n.message.clone()),
            _ => None,
        })
        .expect("the node's message is updated");
    assert!(message.starts_with("Capture Job "), "{message}");
    assert!(message.contains("BackoffLimitExceeded"), "{message}");
    assert!(message.ends_with(why), "{message}");
    // Planned again with that message in the status: it does not grow.
    if let Some(n) = c.status.as_mut().and_then(|s| s.nodes.get_mut("node-a")) {
        n.message = Some(message.clone());
    }
    let again = planner().plan(
        &c,
        &[pod("web-1", "node-a")],
        &[node("node-a")],
        &jobs,
        t(101),
    );
    let grown = again.iter().any(|a| {
        matches!(a, Action::UpdateStatus(u)
            if u.nodes.get("node-a").and_then(|n| n.message.as_ref()).is_some_and(|m| *m != message))
    });
    assert!(!grown, "{again:?}");
}
