//! The webhook against a real HTTP client and the API test server: Alertmanager payloads create
//! exactly one capture, copies are deduplicated, bad input creates nothing.

mod common;

use common::*;
use futures::{StreamExt, stream};
use k8s_openapi::api::events::v1::Event;
use kube::{Api, api::ListParams};
use nightcap_api::{CaptureTrigger, capture::STOP_ANNOTATION};
use nightcap_triggers::{Config, Outcome, sources::webhook::sign};
use serde_json::Value;

struct Hook {
    _cluster: Cluster,
    client: kube::Client,
    running: nightcap_triggers::runtime::Running,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn hook(triggers: &[&str]) -> Hook {
    let c = cluster().await;
    for t in triggers {
        create_trigger(&c.client, t).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        webhook: Some(webhook_config(&dir)),
        ..Config::default()
    };
    let running = start(&c.client, config, None, triggers.len()).await;
    let base = format!("http://{}", running.webhook_addr.expect("webhook bound"));
    Hook {
        client: c.client.clone(),
        _cluster: c,
        running,
        base,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Hook {
    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let code = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (code, body)
    }
}

#[tokio::test]
async fn alertmanager_payload_creates_exactly_one_capture_with_the_rendered_selector() {
    let h = hook(&[LATENCY_TRIGGER]).await;
    let (code, body) = h.post("/hooks/alertmanager", FIRING).await;
    assert_eq!(code, 202, "{body}");
    let names = body["captures"].as_array().expect("captures");
    assert_eq!(names.len(), 1, "{body}");
    assert_eq!(body["decisions"][0]["decision"], "created", "{body}");
    let list = captures(&h.client, "shop").await;
    assert_eq!(list.len(), 1);
    let pc = &list[0];
    assert_eq!(
        format!("shop/{}", pc.metadata.name.as_deref().expect("name")),
        names[0]
    );
    let sel = pc.spec.selector.as_ref().expect("selector");
    assert_eq!(
        sel.match_labels.as_ref().expect("matchLabels")["app"],
        "checkout"
    );
    assert_eq!(pc.spec.duration.as_deref(), Some("5m"));
    let labels = pc.metadata.labels.as_ref().expect("labels");
    assert_eq!(labels["team"], "payments");
    assert_eq!(labels["nightcap.dev/trigger"], "checkout-latency");
    // status.trigger records where it came from.
    let name = pc.metadata.name.clone().expect("name");
    let api: Api<nightcap_api::PacketCapture> = Api::namespaced(h.client.clone(), "shop");
    let origin = wait_for("status.trigger", || {
        let (api, name) = (api.clone(), name.clone());
        async move { api.get(&name).await.ok()?.status?.trigger }
    })
    .await;
    assert_eq!(origin.source, "webhook");
    assert_eq!(origin.name.as_deref(), Some("checkout-latency"));
    assert_eq!(
        origin.dedup_key.as_deref(),
        Some("fingerprint:7a3c1f9e2b4d6a80")
    );
    // The same notification again (Alertmanager repeats it): deduplicated.
    let (code, body) = h.post("/hooks/alertmanager", FIRING).await;
    assert_eq!(code, 202);
    assert_eq!(body["decisions"][0]["decision"], "deduplicated", "{body}");
    assert_eq!(captures(&h.client, "shop").await.len(), 1);
}

#[tokio::test]
async fn a_thousand_copies_of_one_alert_make_one_capture() {
    let h = hook(&[LATENCY_TRIGGER]).await;
    let codes: Vec<(u16, Value)> = stream::iter(0..1000)
        .map(|_| h.post("/hooks/alertmanager", FIRING))
        .buffer_unordered(50)
        .collect()
        .await;
    assert!(
        codes.iter().all(|(c, _)| *c == 202),
        "every copy is accepted"
    );
    let created = codes
        .iter()
        .filter(|(_, b)| b["decisions"][0]["decision"] == "created")
        .count();
    assert_eq!(created, 1);
    assert_eq!(captures(&h.client, "shop").await.len(), 1);
    let m = &h.running.metrics;
    assert_eq!(m.decisions_total(Outcome::Created), 1);
    assert_eq!(m.decisions_total(Outcome::Deduplicated), 999);
    // One Kubernetes Event per kind of decision (coalesced), and the trigger's counters.
    let events: Api<Event> = Api::namespaced(h.client.clone(), "shop");
    wait_for("CaptureCreated and AlreadyExists events", || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?.items;
            let has = |r: &str| list.iter().any(|e| e.reason.as_deref() == Some(r));
            (has("CaptureCreated") && (has("AlreadyExists") || has("InFlight"))).then_some(())
        }
    })
    .await;
    let triggers: Api<CaptureTrigger> = Api::namespaced(h.client.clone(), "shop");
    let status = wait_for("trigger status counts every decision", || {
        let triggers = triggers.clone();
        async move {
            let s = triggers.get("checkout-latency").await.ok()?.status?;
            (s.created + s.deduplicated == 1000).then_some(s)
        }
    })
    .await;
    assert_eq!(status.created, 1);
    assert!(status.last_triggered_time.is_some());
}

const BAD_TEMPLATE: &str = r#"
apiVersion: nightcap.dev/v1alpha1
kind: CaptureTrigger
metadata: {name: by-summary, namespace: shop}
spec:
  match: {labels: {alertname: CheckoutLatencyHigh}}
  template:
    spec:
      selector: {matchLabels: {app: "{{annotations.summary}}"}}
"#;

#[tokio::test]
async fn bad_input_gets_a_precise_error_and_creates_nothing() {
    let h = hook(&[BAD_TEMPLATE]).await;
    let mut unknown: Value = serde_json::from_str(FIRING).expect("fixture");
    unknown["version"] = "5".into();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "/hooks/alertmanager",
            b"{\"version\": \"4\", \"alerts\": [".to_vec(),
            400,
            "EOF while parsing",
        ),
        (
            "/hooks/alertmanager",
            serde_json::to_vec(&unknown).expect("json"),
            400,
            "unsupported Alertmanager payload version \"5\"",
        ),
        (
            "/hooks/capture",
            br#"{"labels": {"app": "x"}, "namespase": "shop"}"#.to_vec(),
            400,
            "unknown field `namespase`",
        ),
        (
            "/hooks/capture",
            vec![b' '; 10 * 1024 * 1024],
            413,
            "larger than 1048576 bytes",
        ),
        ("/hooks/elsewhere", b"{}".to_vec(), 404, "unknown path"),
    ];
    for (path, body, want_code, want) in cases {
        let (code, resp) = h.post(path, body).await;
        assert_eq!(code, want_code, "{path}: {resp}");
        let msg = resp["error"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{path}: want {want:?} in {msg:?}");
    }
    // Template renders an invalid selector (the summary has spaces): refused, with the field.
    let (code, resp) = h.post("/hooks/alertmanager", FIRING).await;
    assert_eq!(code, 202, "{resp}");
    let d = &resp["decisions"][0];
    assert_eq!(d["decision"], "refused", "{resp}");
    assert_eq!(d["reason"], "InvalidCapture", "{resp}");
    let msg = d["message"].as_str().unwrap_or_default();
    assert!(msg.contains("spec.selector.matchLabels"), "{msg}");
    assert!(resp["captures"].as_array().is_some_and(Vec::is_empty));
    assert!(
        captures(&h.client, "shop").await.is_empty(),
        "nothing created"
    );
}

#[tokio::test]
async fn credentials_are_checked() {
    let h = hook(&[LATENCY_TRIGGER]).await;
    let url = format!("{}/hooks/alertmanager", h.base);
    let send = |req: reqwest::RequestBuilder| async move {
        let r = req.body(FIRING).send().await.expect("request");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    let (code, body) = send(h.http.post(&url)).await;
    assert_eq!(code, 401);
    assert!(body.contains("authentication required"), "{body}");
    let (code, body) = send(h.http.post(&url).bearer_auth("guess")).await;
    assert_eq!(
        (code, body.contains("bearer token is not valid")),
        (401, true),
        "{body}"
    );
    let (code, body) = send(
        h.http
            .post(&url)
            .header("x-nightcap-signature", sign(b"wrong", FIRING.as_bytes())),
    )
    .await;
    assert_eq!(
        (code, body.contains("signature does not match")),
        (401, true),
        "{body}"
    );
    assert!(
        captures(&h.client, "shop").await.is_empty(),
        "nothing created without credentials"
    );
    let (code, body) = send(h.http.post(&url).header(
        "x-nightcap-signature",
        sign(b"hmac-secret", FIRING.as_bytes()),
    ))
    .await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(captures(&h.client, "shop").await.len(), 1);
}

#[tokio::test]
async fn alerts_about_other_namespaces_are_refused_and_counted() {
    let h = hook(&[LATENCY_TRIGGER]).await;
    let mut v: Value = serde_json::from_str(FIRING).expect("fixture");
    v["alerts"][0]["labels"]["namespace"] = "payments".into();
    let (code, resp) = h
        .post("/hooks/alertmanager", serde_json::to_vec(&v).expect("json"))
        .await;
    assert_eq!(code, 202);
    assert_eq!(resp["decisions"][0]["reason"], "OtherNamespace", "{resp}");
    assert!(captures(&h.client, "shop").await.is_empty());
    assert!(captures(&h.client, "payments").await.is_empty());
    assert_eq!(h.running.metrics.decisions_total(Outcome::Refused), 1);
    let text = h.running.metrics.encode();
    assert!(text.contains(r#"nightcap_trigger_decisions_total{decision="refused",reason="OtherNamespace",source="webhook"} 1"#), "{text}");
}

#[tokio::test]
async fn a_resolved_alert_stops_its_capture() {
    let h = hook(&[LATENCY_TRIGGER]).await;
    let (_, resp) = h.post("/hooks/alertmanager", FIRING).await;
    let name = resp["decisions"][0]["capture"]
        .as_str()
        .expect("capture")
        .to_owned();
    let mut v: Value = serde_json::from_str(FIRING).expect("fixture");
    v["status"] = "resolved".into();
    v["alerts"][0]["status"] = "resolved".into();
    v["alerts"][0]["endsAt"] = "2026-11-21T02:13:04Z".into();
    let (code, resp) = h
        .post("/hooks/alertmanager", serde_json::to_vec(&v).expect("json"))
        .await;
    assert_eq!(code, 202);
    assert_eq!(resp["decisions"][0]["decision"], "stopped", "{resp}");
    let api: Api<nightcap_api::PacketCapture> = Api::namespaced(h.client.clone(), "shop");
    let pc = api.get(&name).await.expect("capture");
    let why = pc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STOP_ANNOTATION))
        .expect("stop annotation");
    assert!(why.contains("alert resolved"), "{why}");
}
