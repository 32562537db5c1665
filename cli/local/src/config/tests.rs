use kube::ResourceExt;

use super::*;

const GOOD: &str = r#"
output: file:///tmp/x
targets:
  - {name: web-1, namespace: shop, netns: web-1, labels: {app: web}, node: node-a}
  - {name: uplink, interface: eth1}
captures:
  - apiVersion: nightcap.dev/v1alpha1
    kind: PacketCapture
    metadata: {name: web-debug, namespace: shop}
    spec: {selector: {matchLabels: {app: web}}, duration: 10m}
  - apiVersion: nightcap.dev/v1alpha1
    kind: PacketCapture
    metadata: {name: uplink}
    spec: {selector: {matchLabels: {role: uplink}}}
"#;

#[test]
fn parses_with_defaults() {
    let cfg = LocalConfig::parse(GOOD).expect("valid");
    assert_eq!(cfg.targets[1].namespace, "default");
    assert_eq!(cfg.targets[0].node.as_deref(), Some("node-a"));
    assert_eq!(cfg.captures[1].namespace().as_deref(), Some("default"));
    assert_eq!(cfg.captures[0].spec.duration.as_deref(), Some("10m"));
}

#[test]
fn reports_every_problem_with_its_path() {
    let bad = r#"
output: ""
targets:
  - {name: Web_1, netns: a/b}
  - {name: db}
  - {name: db, interface: eth0}
captures:
  - {apiVersion: nightcap.dev/v1alpha1, kind: PacketCapture, metadata: {name: x}, spec: {}}
  - {apiVersion: nightcap.dev/v1alpha1, kind: PacketCapture, metadata: {name: x}, spec: {}}
"#;
    let err = LocalConfig::parse(bad).expect_err("invalid");
    for want in [
        "output",
        "targets[0].name",
        "targets[0].netns",
        "targets[1]: needs netns",
        "targets[2].name: default/db is listed twice",
        "captures[1].metadata.name: default/x is listed twice",
    ] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
}

#[test]
fn unknown_fields_are_refused() {
    let err = LocalConfig::parse("output: file:///x\ntargts: []\n").expect_err("typo");
    assert!(err.contains("unknown field `targts`"), "{err}");
    let err = LocalConfig::parse("output: file:///x\ntargets: [{name: a, netnz: b}]\n")
        .expect_err("typo");
    assert!(err.contains("unknown field `netnz`"), "{err}");
}

#[test]
fn unknown_fields_inside_manifests_are_refused_with_their_paths() {
    let text = r#"
output: file:///x
captures:
  - apiVersion: nightcap.dev/v1alpha1
    kind: PacketCapture
    metadata: {name: a, namespace: shop}
    spec: {selector: {matchLabels: {app: web}}, duraton: 10m, snapLen: 128}
triggers:
  - apiVersion: nightcap.dev/v1alpha1
    kind: CaptureTrigger
    metadata: {name: dns, namespace: shop}
    spec:
      match: {labels: {alertname: DNSLatencyHigh}, sorce: webhook}
      template: {spec: {selector: {matchLabels: {app: web}}, duration: 1m}}
schedules:
  - apiVersion: nightcap.dev/v1alpha1
    kind: CaptureSchedule
    metadata: {name: nightly, namespace: shop}
    spec:
      schedule: "*/5 * * * *"
      suspendd: true
      template: {spec: {selector: {matchLabels: {app: web}}, duration: 1m}}
"#;
    let err = LocalConfig::parse(text).expect_err("typos");
    for want in [
        "captures[0].spec.duraton: unknown field",
        "triggers[0].spec.match.sorce: unknown field",
        "schedules[0].spec.suspendd: unknown field",
    ] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
    assert!(err.contains("3 problems (nothing was started)"), "{err}");
    assert!(!err.contains("snapLen"), "known fields pass: {err}");
}
