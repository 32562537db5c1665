use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

use super::*;
use crate::{
    CaptureFilter, CaptureScheduleSpec, CaptureTriggerSpec, ConcurrencyPolicy, Dedup, EventMatch,
    PortRange, Protocol, Rotation, TemplateMetadata,
};

fn ts(s: &str) -> Time {
    Time(s.parse().expect("timestamp"))
}

fn app_selector(app: &str) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: Some(BTreeMap::from([("app".to_owned(), app.to_owned())])),
        match_expressions: None,
    })
}

fn capture(name: &str, spec: PacketCaptureSpec) -> PacketCapture {
    let mut pc = PacketCapture::new(name, spec);
    pc.metadata.namespace = Some("team-a".into());
    pc
}

fn valid_spec() -> PacketCaptureSpec {
    PacketCaptureSpec {
        selector: app_selector("web"),
        duration: Some("10m".into()),
        ..Default::default()
    }
}

fn paths(r: Result<(), ValidationErrors>) -> Vec<String> {
    match r {
        Ok(()) => vec![],
        Err(e) => e.0.into_iter().map(|e| e.path).collect(),
    }
}

#[test]
fn packet_capture_table() {
    let opts = ValidationOptions::default();
    type Edit = fn(&mut PacketCaptureSpec);
    let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
        ("valid", |_| {}, vec![]),
        (
            "empty selector selects all pods",
            |s| s.selector = Some(LabelSelector::default()),
            vec![],
        ),
        ("no targeting", |s| s.selector = None, vec!["spec.selector"]),
        (
            "pods and nodes",
            |s| s.node_names = vec!["node-a".into()],
            vec!["spec.selector"],
        ),
        (
            "node-level",
            |s| {
                s.selector = None;
                s.node_names = vec!["node-a".into(), "Node_B".into()];
            },
            vec!["spec.nodeNames[1]"],
        ),
        (
            "bad selector value",
            |s| s.selector = app_selector("a b"),
            vec!["spec.selector.matchLabels[app]"],
        ),
        (
            "snapLen too small",
            |s| s.snap_len = Some(63),
            vec!["spec.snapLen"],
        ),
        ("snapLen min", |s| s.snap_len = Some(64), vec![]),
        ("snapLen max", |s| s.snap_len = Some(262_144), vec![]),
        (
            "snapLen too large",
            |s| s.snap_len = Some(262_145),
            vec!["spec.snapLen"],
        ),
        (
            "bad duration",
            |s| s.duration = Some("10 minutes".into()),
            vec!["spec.duration"],
        ),
        (
            "zero duration",
            |s| s.duration = Some("0s".into()),
            vec!["spec.duration"],
        ),
        (
            "duration too long",
            |s| s.duration = Some("25h".into()),
            vec!["spec.duration"],
        ),
        (
            "duration at max",
            |s| s.duration = Some("24h".into()),
            vec![],
        ),
        (
            "duration and endTime",
            |s| s.end_time = Some(ts("2030-01-01T00:00:00Z")),
            vec!["spec.duration"],
        ),
        (
            "end before start",
            |s| {
                s.duration = None;
                s.start_time = Some(ts("2030-01-01T01:00:00Z"));
                s.end_time = Some(ts("2030-01-01T00:00:00Z"));
            },
            vec!["spec.endTime"],
        ),
        (
            "window over 24h",
            |s| {
                s.duration = None;
                s.start_time = Some(ts("2030-01-01T00:00:00Z"));
                s.end_time = Some(ts("2030-01-02T00:00:01Z"));
            },
            vec!["spec.endTime"],
        ),
        (
            "window ok",
            |s| {
                s.duration = None;
                s.start_time = Some(ts("2030-01-01T00:00:00Z"));
                s.end_time = Some(ts("2030-01-01T06:00:00Z"));
            },
            vec![],
        ),
        (
            "rotation too small and zero files",
            |s| {
                s.rotation = Some(Rotation {
                    max_file_bytes: Some(65_535),
                    max_file_seconds: Some(0),
                    max_files: Some(0),
                })
            },
            vec![
                "spec.rotation.maxFileBytes",
                "spec.rotation.maxFileSeconds",
                "spec.rotation.maxFiles",
            ],
        ),
        (
            "rotation at minimum",
            |s| {
                s.rotation = Some(Rotation {
                    max_file_bytes: Some(65_536),
                    max_file_seconds: Some(1),
                    max_files: Some(1),
                })
            },
            vec![],
        ),
        (
            "filters",
            |s| {
                s.filters = vec![CaptureFilter {
                    protocol: Protocol::Tcp,
                    ports: vec![0],
                    port_ranges: vec![PortRange { from: 10, to: 1 }],
                    cidrs: vec!["10.0.0.0/33".into()],
                    ..Default::default()
                }]
            },
            vec![
                "spec.filters[0].ports[0]",
                "spec.filters[0].portRanges[0]",
                "spec.filters[0].cidrs[0]",
            ],
        ),
        (
            "empty expression",
            |s| s.expression = Some(" ".into()),
            vec!["spec.expression"],
        ),
        (
            "zero limits",
            |s| {
                s.max_bytes = Some(0);
                s.max_packets = Some(0);
            },
            vec!["spec.maxBytes", "spec.maxPackets"],
        ),
        (
            "bad storage name",
            |s| s.storage = Some("../etc".into()),
            vec!["spec.storage"],
        ),
        (
            "negative ttl",
            |s| s.ttl_seconds_after_finished = Some(-1),
            vec!["spec.ttlSecondsAfterFinished"],
        ),
    ];
    for (name, edit, want) in cases {
        let mut spec = valid_spec();
        edit(&mut spec);
        let got = paths(validate_packet_capture(&capture("cap-1", spec), &opts));
        assert_eq!(got, want, "case {name:?}");
    }
}

#[test]
fn names_that_reach_object_keys() {
    let opts = ValidationOptions::default();
    for (name, ns, want) in [
        ("cap-1", "team-a", vec![]),
        ("../escape", "team-a", vec!["metadata.name"]),
        ("a%2Fb", "team-a", vec!["metadata.name"]),
        ("cap", "Team_A", vec!["metadata.namespace"]),
        ("caf\u{e9}", "team-a", vec!["metadata.name"]),
    ] {
        let mut pc = capture(name, valid_spec());
        pc.metadata.namespace = Some(ns.into());
        assert_eq!(
            paths(validate_packet_capture(&pc, &opts)),
            want,
            "{name} in {ns}"
        );
    }
}

#[test]
fn end_time_in_the_past_when_now_is_known() {
    let mut spec = valid_spec();
    spec.duration = None;
    spec.end_time = Some(ts("2020-01-01T00:00:00Z"));
    let opts = ValidationOptions {
        now: Some("2026-01-01T00:00:00Z".parse().expect("ts")),
        ..Default::default()
    };
    assert_eq!(
        paths(validate_packet_capture(&capture("c", spec.clone()), &opts)),
        vec!["spec.endTime"]
    );
    // Without `now` (a running capture) the same spec is fine.
    assert!(validate_packet_capture(&capture("c", spec), &ValidationOptions::default()).is_ok());
}

#[test]
fn max_window_is_a_cluster_setting() {
    let mut spec = valid_spec();
    spec.duration = Some("48h".into());
    let opts = ValidationOptions {
        max_window: std::time::Duration::from_secs(72 * 3600),
        ..Default::default()
    };
    assert!(validate_packet_capture(&capture("c", spec), &opts).is_ok());
}

fn schedule(schedule: &str, tz: Option<&str>) -> CaptureSchedule {
    let mut s = CaptureSchedule::new(
        "nightly",
        CaptureScheduleSpec {
            schedule: schedule.into(),
            time_zone: tz.map(String::from),
            concurrency_policy: ConcurrencyPolicy::Forbid,
            starting_deadline_seconds: Some(60),
            suspend: false,
            successful_history_limit: None,
            failed_history_limit: None,
            template: PacketCaptureTemplate {
                metadata: None,
                spec: valid_spec(),
            },
        },
    );
    s.metadata.namespace = Some("team-a".into());
    s
}

#[test]
fn schedule_table() {
    let opts = ValidationOptions::default();
    let cases = [
        ("0 2 * * *", Some("Europe/Berlin"), vec![]),
        ("@hourly", None, vec![]),
        ("0 2 * * *", Some("America/New_York"), vec![]),
        ("0 25 * * *", None, vec!["spec.schedule"]),
        ("0 2 * *", None, vec!["spec.schedule"]),
        ("0 2 * * *", Some("Mars/Olympus"), vec!["spec.timeZone"]),
        (
            "CRON_TZ=UTC 0 2 * * *",
            None,
            vec!["spec.schedule", "spec.schedule"],
        ),
    ];
    for (expr, tz, want) in cases {
        assert_eq!(
            paths(validate_schedule(&schedule(expr, tz), &opts)),
            want,
            "{expr} {tz:?}"
        );
    }
    let mut s = schedule("@daily", None);
    s.spec.template.spec.start_time = Some(ts("2030-01-01T00:00:00Z"));
    s.spec.template.metadata = Some(TemplateMetadata {
        labels: BTreeMap::from([("bad key!".into(), "v".into())]),
        annotations: BTreeMap::new(),
    });
    assert_eq!(
        paths(validate_schedule(&s, &opts)),
        vec![
            "spec.template.metadata.labels[bad key!]",
            "spec.template.spec.startTime"
        ]
    );
}

fn trigger(edit: impl FnOnce(&mut CaptureTriggerSpec)) -> CaptureTrigger {
    let mut spec = CaptureTriggerSpec {
        sources: Default::default(),
        match_: EventMatch {
            labels: BTreeMap::from([("alertname".into(), "HighLatency".into())]),
            label_regex: BTreeMap::from([("severity".into(), "critical|page".into())]),
        },
        template: PacketCaptureTemplate {
            metadata: None,
            spec: PacketCaptureSpec {
                selector: app_selector("{{labels.app}}"),
                duration: Some("5m".into()),
                ..Default::default()
            },
        },
        dedup: Some(Dedup {
            key: Some("{{labels.alertname}}-{{labels.pod}}".into()),
            cooldown_seconds: Some(600),
        }),
        max_concurrent: Some(3),
        stop_on_resolved: true,
    };
    edit(&mut spec);
    let mut t = CaptureTrigger::new("latency", spec);
    t.metadata.namespace = Some("team-a".into());
    t
}

#[test]
fn trigger_table() {
    let opts = ValidationOptions::default();
    type Edit = fn(&mut CaptureTriggerSpec);
    let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
        ("valid", |_| {}, vec![]),
        (
            "bad regex",
            |t| {
                t.match_.label_regex.insert("x".into(), "(".into());
            },
            vec!["spec.match.labelRegex[x]"],
        ),
        (
            "unknown placeholder",
            |t| t.template.spec.selector = app_selector("{{env.HOME}}"),
            vec!["spec.template"],
        ),
        (
            "placeholder plus invalid characters",
            |t| t.template.spec.selector = app_selector("{{labels.app}} x"),
            vec!["spec.template.spec.selector.matchLabels[app]"],
        ),
        (
            "bad dedup key",
            |t| {
                t.dedup = Some(Dedup {
                    key: Some("{{labels.a".into()),
                    cooldown_seconds: None,
                })
            },
            vec!["spec.dedup.key"],
        ),
        (
            "bad subject",
            |t| t.sources.nats_subjects = vec!["a b".into()],
            vec!["spec.sources.natsSubjects[0]"],
        ),
        (
            "bad path",
            |t| t.sources.webhook_paths = vec!["/other".into()],
            vec!["spec.sources.webhookPaths[0]"],
        ),
        (
            "no target",
            |t| t.template.spec.selector = None,
            vec!["spec.template.spec.selector"],
        ),
    ];
    for (name, edit, want) in cases {
        assert_eq!(
            paths(validate_trigger(&trigger(edit), &opts)),
            want,
            "case {name:?}"
        );
    }
}
