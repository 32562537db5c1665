use super::*;

const FIRING: &str = include_str!("../../tests/fixtures/alertmanager-firing.json");

fn webhook() -> EventSource {
    EventSource::Webhook {
        path: "/hooks/alertmanager".to_owned(),
    }
}

fn now() -> Timestamp {
    "2026-11-21T02:03:10Z".parse().expect("test time")
}

#[test]
fn alertmanager_payload_becomes_one_event_per_alert() {
    let events = parse_alertmanager(
        FIRING.as_bytes(),
        &webhook(),
        now(),
        &ParseOptions::default(),
    )
    .expect("documented payload parses");
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.status, AlertStatus::Firing);
    assert_eq!(e.labels["pod"], "checkout-7d9f6c5b8-x2x9k");
    assert_eq!(e.annotations["summary"], "p99 latency of checkout above 2s");
    assert_eq!(e.fingerprint.as_deref(), Some("7a3c1f9e2b4d6a80"));
    assert_eq!(e.namespace.as_deref(), Some("shop"));
    let starts: Timestamp = "2026-11-21T02:03:04.512Z".parse().expect("time");
    assert_eq!(e.starts_at, Some(starts));
    assert_eq!(e.id, format!("7a3c1f9e2b4d6a80@{starts}"));
    assert_eq!(e.received, now());
}

#[test]
fn alertmanager_fields_nightcap_does_not_use_are_accepted() {
    let mut v: serde_json::Value = serde_json::from_str(FIRING).expect("fixture");
    v["someFutureField"] = serde_json::json!({"x": 1});
    v["alerts"][0]["silencedBy"] = serde_json::json!([]);
    let body = serde_json::to_vec(&v).expect("json");
    let events = parse_alertmanager(&body, &webhook(), now(), &ParseOptions::default())
        .expect("forward compatible");
    assert_eq!(events.len(), 1);
}

#[test]
fn bad_alertmanager_payloads_say_what_is_wrong() {
    let mut wrong_version: serde_json::Value = serde_json::from_str(FIRING).expect("fixture");
    wrong_version["version"] = "3".into();
    let mut bad_status: serde_json::Value = serde_json::from_str(FIRING).expect("fixture");
    bad_status["alerts"][0]["status"] = "pending".into();
    let mut bad_time: serde_json::Value = serde_json::from_str(FIRING).expect("fixture");
    bad_time["alerts"][0]["startsAt"] = "yesterday".into();
    let mut label_number: serde_json::Value = serde_json::from_str(FIRING).expect("fixture");
    label_number["alerts"][0]["labels"]["pod"] = 7.into();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"version\": \"4\", ".to_vec(), "EOF while parsing"),
        (b"<html>".to_vec(), "expected value at line 1 column 1"),
        (b"{}".to_vec(), "missing field `version`"),
        (
            serde_json::to_vec(&wrong_version).expect("json"),
            "unsupported Alertmanager payload version \"3\"",
        ),
        (
            serde_json::to_vec(&bad_status).expect("json"),
            "unknown variant `pending`, expected `firing` or `resolved`",
        ),
        (
            serde_json::to_vec(&bad_time).expect("json"),
            "alerts[0].startsAt: \"yesterday\" is not an RFC 3339 time",
        ),
        (
            serde_json::to_vec(&label_number).expect("json"),
            "invalid type: integer `7`, expected a string",
        ),
    ];
    for (body, want) in cases {
        let err = parse_alertmanager(&body, &webhook(), now(), &ParseOptions::default())
            .expect_err("must be refused");
        assert!(err.to_string().contains(want), "want {want:?} in {err}");
    }
}

#[test]
fn capture_requests_refuse_unknown_fields() {
    let err = parse_capture_request(
        br#"{"labels": {"app": "web"}, "namespce": "shop"}"#,
        &webhook(),
        now(),
        &ParseOptions::default(),
    )
    .expect_err("typo must be refused");
    assert!(
        err.to_string().contains("unknown field `namespce`"),
        "{err}"
    );
}

#[test]
fn capture_request_ids_default_to_the_label_set() {
    let a = parse_capture_request(
        br#"{"labels": {"app": "web", "pod": "web-1"}}"#,
        &webhook(),
        now(),
        &ParseOptions::default(),
    )
    .expect("valid");
    let b = parse_capture_request(
        br#"{"labels": {"pod": "web-1", "app": "web"}, "namespace": "shop"}"#,
        &webhook(),
        now(),
        &ParseOptions::default(),
    )
    .expect("valid");
    assert_eq!(a.id, b.id, "same labels, same id");
    assert_eq!(a.namespace, None);
    assert_eq!(b.namespace.as_deref(), Some("shop"));
    let c = parse_capture_request(
        br#"{"id": "deploy-42", "status": "resolved", "labels": {"namespace": "dev"}}"#,
        &webhook(),
        now(),
        &ParseOptions::default(),
    )
    .expect("valid");
    assert_eq!(c.id, "deploy-42");
    assert_eq!(c.status, AlertStatus::Resolved);
    assert_eq!(
        c.namespace.as_deref(),
        Some("dev"),
        "the namespace label claims too"
    );
}

#[test]
fn nats_messages_are_told_apart_by_their_shape() {
    let source = EventSource::Nats {
        subject: "alerts.shop".to_owned(),
    };
    let opts = ParseOptions::default();
    let am = parse_any(FIRING.as_bytes(), &source, now(), &opts).expect("alertmanager");
    assert_eq!(am[0].fingerprint.as_deref(), Some("7a3c1f9e2b4d6a80"));
    let req = parse_any(br#"{"labels": {"app": "x"}}"#, &source, now(), &opts).expect("request");
    assert_eq!(req.len(), 1);
    assert_eq!(req[0].fingerprint, None);
    for (body, want) in [
        (&b"[1, 2]"[..], "must be a JSON object"),
        (
            &b"{\"alerts\": 1}"[..],
            "invalid Alertmanager webhook payload",
        ),
        (&b"{\"bogus\": 1}"[..], "unknown field `bogus`"),
    ] {
        let err = parse_any(body, &source, now(), &opts).expect_err("refused");
        assert!(err.to_string().contains(want), "want {want:?} in {err}");
    }
}
