use std::sync::Arc;

use jiff::Timestamp;
use nightcap_api::CaptureTrigger;

use super::*;
use crate::event::{EventSource, TriggerEvent};

pub(crate) fn trigger(yaml: &str) -> Arc<CompiledTrigger> {
    let t: CaptureTrigger = serde_yaml::from_str(yaml).expect("test trigger YAML");
    Arc::new(CompiledTrigger::compile(Arc::new(t)).expect("valid test trigger"))
}

pub(crate) const LATENCY: &str = r#"
apiVersion: nightcap.dev/v1alpha1
kind: CaptureTrigger
metadata: {name: latency, namespace: shop, uid: 0b7f6c1e-1111-4a5b-9c0d-000000000001}
spec:
  match:
    labels: {alertname: CheckoutLatencyHigh}
    labelRegex: {severity: "critical|page"}
  template:
    metadata: {labels: {team: payments}}
    spec:
      selector: {matchLabels: {app: "{{labels.app}}"}}
      duration: 2m
"#;

fn now() -> Timestamp {
    "2026-11-21T02:03:10Z".parse().expect("time")
}

fn alert(labels: &[(&str, &str)]) -> TriggerEvent {
    let mut e = TriggerEvent::new(
        EventSource::Webhook {
            path: "/hooks/alertmanager".into(),
        },
        "fp@t",
        now(),
    );
    for (k, v) in labels {
        e.labels.insert((*k).into(), (*v).into());
    }
    e.fingerprint = Some("7a3c1f9e2b4d6a80".into());
    e.starts_at = Some("2026-11-21T02:03:04.512Z".parse().expect("time"));
    e
}

#[test]
fn label_conditions() {
    let t = trigger(LATENCY);
    let cases: &[(&[(&str, &str)], bool)] = &[
        (
            &[
                ("alertname", "CheckoutLatencyHigh"),
                ("severity", "critical"),
            ],
            true,
        ),
        (
            &[("alertname", "CheckoutLatencyHigh"), ("severity", "page")],
            true,
        ),
        (
            &[
                ("alertname", "CheckoutLatencyHigh"),
                ("severity", "critical-ish"),
            ],
            false,
        ),
        (&[("alertname", "CheckoutLatencyHigh")], false),
        (&[("alertname", "Other"), ("severity", "critical")], false),
    ];
    for (labels, want) in cases {
        assert_eq!(t.matches(&alert(labels)), *want, "{labels:?}");
    }
}

#[test]
fn sources_and_target_names() {
    let t = trigger(
        r#"
metadata: {name: nats-only, namespace: shop}
spec:
  sources: {natsSubjects: ["alerts.shop.>", "alerts.*.critical"], webhookPaths: ["/hooks/capture/shop"]}
  template: {spec: {selector: {}}}
"#,
    );
    let ev = |source: EventSource| TriggerEvent::new(source, "id", now());
    let nats = |s: &str| EventSource::Nats { subject: s.into() };
    let cases = [
        (ev(nats("alerts.shop.latency")), true),
        (
            ev(EventSource::JetStream {
                subject: "alerts.shop.a.b".into(),
            }),
            true,
        ),
        (ev(nats("alerts.dev.critical")), true),
        (ev(nats("alerts.shop")), false),
        (ev(nats("alerts.dev.warning")), false),
        (
            ev(EventSource::Webhook {
                path: "/hooks/capture/shop".into(),
            }),
            true,
        ),
        (
            ev(EventSource::Webhook {
                path: "/hooks/alertmanager".into(),
            }),
            false,
        ),
    ];
    for (e, want) in cases {
        assert_eq!(t.matches(&e), want, "{}", e.source);
    }
    let mut named = ev(nats("alerts.shop.x"));
    named.trigger = Some("other".into());
    assert!(!t.matches(&named), "a request for another trigger");
    named.trigger = Some("nats-only".into());
    assert!(t.matches(&named));
}

#[test]
fn subject_wildcards() {
    let cases = [
        ("a.b", "a.b", true),
        ("a.*", "a.b", true),
        ("a.*", "a.b.c", false),
        ("a.>", "a.b.c", true),
        ("a.>", "a", false),
        ("*.b", "a.b", true),
        ("a.b", "a.b.c", false),
        (">", "x", true),
    ];
    for (p, s, want) in cases {
        assert_eq!(subject_matches(p, s), want, "{p} vs {s}");
    }
}

#[test]
fn renders_a_valid_capture_in_the_triggers_namespace() {
    let t = trigger(LATENCY);
    let e = alert(&[
        ("alertname", "CheckoutLatencyHigh"),
        ("app", "checkout"),
        ("severity", "critical"),
    ]);
    let r = render(&t, &e, now()).expect("renders");
    let pc = &r.capture;
    assert_eq!(pc.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(pc.metadata.name.as_deref(), Some(r.name.as_str()));
    let sel = pc.spec.selector.as_ref().expect("selector");
    assert_eq!(
        sel.match_labels.as_ref().expect("labels")["app"],
        "checkout"
    );
    let labels = pc.metadata.labels.as_ref().expect("labels");
    assert_eq!(labels["team"], "payments");
    assert_eq!(labels[crate::labels::CREATED_BY], "trigger");
    assert_eq!(labels[crate::labels::TRIGGER], "latency");
    assert_eq!(r.key, "fingerprint:7a3c1f9e2b4d6a80");
    // Same alert again (a repeat notification): same name.
    assert_eq!(render(&t, &e, now()).expect("renders").name, r.name);
    // A new firing episode of the same alert: a new capture.
    let mut later = e.clone();
    later.starts_at = Some("2026-11-22T09:00:00Z".parse().expect("time"));
    assert_ne!(render(&t, &later, now()).expect("renders").name, r.name);
}

#[test]
fn dedup_key_templates() {
    let t = trigger(
        r#"
metadata: {name: per-app, namespace: shop}
spec:
  dedup: {key: "{{labels.app}}", cooldownSeconds: 600}
  template: {spec: {selector: {matchLabels: {app: "{{labels.app}}"}}}}
"#,
    );
    let a = alert(&[("app", "checkout"), ("pod", "a")]);
    let b = alert(&[("app", "checkout"), ("pod", "b")]);
    assert_eq!(dedup_key(&t, &a), Ok("key:checkout".to_owned()));
    assert_eq!(
        render(&t, &a, now()).expect("a").key_hash,
        render(&t, &b, now()).expect("b").key_hash
    );
    let mut no_fp = alert(&[("app", "x")]);
    no_fp.fingerprint = None;
    let t2 = trigger(LATENCY);
    assert_eq!(dedup_key(&t2, &no_fp), Ok("labels:{app=\"x\"}".to_owned()));
}

#[test]
fn rendering_errors_are_precise() {
    let t = trigger(LATENCY);
    let missing = alert(&[("alertname", "CheckoutLatencyHigh")]);
    let err = render(&t, &missing, now()).expect_err("no app label");
    assert!(matches!(err, RenderError::Template(_)), "{err}");
    assert!(
        err.to_string().contains("the event has no label \"app\""),
        "{err}"
    );
    let bad = alert(&[("app", "check out; rm -rf /")]);
    let err = render(&t, &bad, now()).expect_err("invalid label value");
    assert!(matches!(err, RenderError::Invalid(_)), "{err}");
    assert!(
        err.to_string().contains("spec.selector.matchLabels"),
        "{err}"
    );
}
