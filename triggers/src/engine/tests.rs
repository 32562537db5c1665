//! Engine tests at the pure level: a capture sink that keeps objects in memory and answers
//! AlreadyExists like the API server. ApiServer-backed tests live in `tests/`.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use futures::future::BoxFuture;
use jiff::SignedDuration;
use nightcap_api::{PacketCapture, Phase, TriggerRef};

use super::*;
use crate::{
    clock::ManualClock,
    error::{Error, Result},
    event::{EventSource, TriggerEvent},
    ledger::{ObjKey, SharedLedger, Tracked},
    metrics::Metrics,
    rules::{
        TriggerSet,
        tests::{LATENCY, trigger},
    },
};

#[derive(Debug, Default)]
struct MemorySink {
    objects: Mutex<BTreeMap<(String, String), PacketCapture>>,
    creates: AtomicUsize,
    fail_with: Mutex<Option<u16>>,
    stops: Mutex<Vec<(String, String, String)>>,
}

fn api_error(code: u16) -> Error {
    Error::Kube(kube::Error::Api(
        kube::core::Status::failure("test failure", "Test")
            .with_code(code)
            .boxed(),
    ))
}

impl CaptureSink for MemorySink {
    fn create(&self, capture: PacketCapture, _: TriggerRef) -> BoxFuture<'_, Result<CreateResult>> {
        Box::pin(async move {
            self.creates.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            if let Some(code) = self.fail_with.lock().expect("lock").take() {
                return Err(api_error(code));
            }
            let key = (
                capture.metadata.namespace.clone().expect("namespace"),
                capture.metadata.name.clone().expect("name"),
            );
            let mut objects = self.objects.lock().expect("lock");
            if objects.contains_key(&key) {
                return Ok(CreateResult::AlreadyExists);
            }
            objects.insert(key, capture.clone());
            Ok(CreateResult::Created(Box::new(capture)))
        })
    }

    fn stop<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            self.stops
                .lock()
                .expect("lock")
                .push((ns.into(), name.into(), reason.into()));
            Ok(true)
        })
    }

    fn delete<'a>(&'a self, ns: &'a str, name: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            Ok(self
                .objects
                .lock()
                .expect("lock")
                .remove(&(ns.to_owned(), name.to_owned()))
                .is_some())
        })
    }
}

struct Fixture {
    engine: Engine,
    sink: Arc<MemorySink>,
    clock: ManualClock,
    metrics: Arc<Metrics>,
}

fn fixture(triggers: &[&str]) -> Fixture {
    let set = Arc::new(TriggerSet::default());
    set.replace(triggers.iter().map(|y| trigger(y)).collect());
    set.set_ready();
    let ledger = Arc::new(SharedLedger::default());
    ledger.set_ready();
    let sink = Arc::new(MemorySink::default());
    let clock = ManualClock::new("2026-11-21T02:03:10Z".parse().expect("time"));
    let metrics = Arc::new(Metrics::new());
    let engine = Engine::new(
        set,
        ledger,
        sink.clone(),
        Reporter::metrics_only(metrics.clone()),
        Arc::new(clock.clone()),
        EngineLimits::default(),
    );
    Fixture {
        engine,
        sink,
        clock,
        metrics,
    }
}

fn alert(app: &str, starts: &str) -> TriggerEvent {
    let mut e = TriggerEvent::new(
        EventSource::Webhook {
            path: "/hooks/alertmanager".into(),
        },
        format!("{app}@{starts}"),
        "2026-11-21T02:03:10Z".parse().expect("time"),
    )
    .with_label("alertname", "CheckoutLatencyHigh")
    .with_label("severity", "critical")
    .with_label("app", app)
    .with_label("namespace", "shop");
    e.namespace = Some("shop".into());
    e.fingerprint = Some(format!("fp-{app}"));
    e.starts_at = Some(starts.parse().expect("time"));
    e
}

const STARTS: &str = "2026-11-21T02:03:04Z";

fn outcomes(d: &[Decision]) -> Vec<Outcome> {
    d.iter().map(|d| d.decision).collect()
}

#[tokio::test]
async fn a_thousand_copies_make_one_capture() {
    let f = fixture(&[LATENCY]);
    let events: Vec<_> = (0..1000).map(|_| alert("checkout", STARTS)).collect();
    let decisions = f.engine.handle(&events).await;
    assert_eq!(decisions.len(), 1000);
    let created = decisions
        .iter()
        .filter(|d| d.decision == Outcome::Created)
        .count();
    let dedup = decisions
        .iter()
        .filter(|d| d.decision == Outcome::Deduplicated)
        .count();
    assert_eq!((created, dedup), (1, 999));
    assert_eq!(f.sink.creates.load(Ordering::SeqCst), 1, "one API call");
    assert_eq!(f.sink.objects.lock().expect("lock").len(), 1);
    assert_eq!(f.metrics.decisions_total(Outcome::Deduplicated), 999);
}

#[tokio::test]
async fn refusals_create_nothing() {
    let f = fixture(&[LATENCY]);
    let mut other_ns = alert("checkout", STARTS);
    other_ns.namespace = Some("payments".into());
    let mut no_app = alert("checkout", STARTS);
    no_app.labels.remove("app");
    let bad_value = alert("not a label value!", STARTS);
    let d = f.engine.handle(&[other_ns, no_app, bad_value]).await;
    assert_eq!(outcomes(&d), [Outcome::Refused; 3]);
    let reasons: Vec<_> = d.iter().map(|d| d.reason).collect();
    assert_eq!(
        reasons,
        [
            Reason::OtherNamespace,
            Reason::TemplateFailed,
            Reason::InvalidCapture
        ]
    );
    assert!(
        d[0].message
            .contains("only creates captures in its own namespace"),
        "{}",
        d[0].message
    );
    assert!(
        d[2].message.contains("spec.selector.matchLabels"),
        "{}",
        d[2].message
    );
    assert_eq!(f.sink.creates.load(Ordering::SeqCst), 0);
    assert_eq!(f.metrics.decisions_total(Outcome::Refused), 3);
}

#[tokio::test]
async fn unmatched_events_decide_nothing() {
    let f = fixture(&[LATENCY]);
    let mut e = alert("checkout", STARTS);
    e.labels.insert("alertname".into(), "DiskFull".into());
    assert!(f.engine.handle(&[e]).await.is_empty());
}

const LIMITED: &str = r#"
metadata: {name: limited, namespace: shop}
spec:
  maxConcurrent: 2
  dedup: {key: "{{labels.app}}", cooldownSeconds: 600}
  template: {spec: {selector: {matchLabels: {app: "{{labels.app}}"}}, duration: 1m}}
"#;

#[tokio::test]
async fn cooldown_and_max_concurrent_throttle() {
    let f = fixture(&[LIMITED]);
    let first = f.engine.handle(&[alert("a", STARTS)]).await;
    assert_eq!(outcomes(&first), [Outcome::Created]);
    // Same key, new episode, inside the cooldown.
    let again = f.engine.handle(&[alert("a", "2026-11-21T02:05:00Z")]).await;
    assert_eq!(
        (again[0].decision, again[0].reason),
        (Outcome::Throttled, Reason::Cooldown)
    );
    // Other keys until maxConcurrent.
    let more = f.engine.handle(&[alert("b", STARTS)]).await;
    assert_eq!(outcomes(&more), [Outcome::Created]);
    let full = f.engine.handle(&[alert("c", STARTS)]).await;
    assert_eq!(
        (full[0].decision, full[0].reason),
        (Outcome::Throttled, Reason::TriggerMaxConcurrent)
    );
    // A capture finishes (the watch reports it) and the cooldown passes.
    let name = first[0].capture.clone().expect("name");
    let mut tracked = f
        .engine
        .ledger()
        .lock()
        .get(&ObjKey::new("shop", &name))
        .cloned()
        .expect("tracked");
    tracked.phase = Some(Phase::Succeeded);
    f.engine
        .ledger()
        .lock()
        .upsert(ObjKey::new("shop", &name), tracked);
    f.clock.advance(SignedDuration::from_secs(601));
    let after = f.engine.handle(&[alert("a", "2026-11-21T02:20:00Z")]).await;
    assert_eq!(outcomes(&after), [Outcome::Created]);
    assert_eq!(f.sink.objects.lock().expect("lock").len(), 3);
}

#[tokio::test]
async fn transient_failures_are_retryable_and_release_the_slot() {
    let f = fixture(&[LATENCY]);
    *f.sink.fail_with.lock().expect("lock") = Some(503);
    let d = f.engine.handle(&[alert("checkout", STARTS)]).await;
    assert_eq!(
        (d[0].decision, d[0].reason),
        (Outcome::Failed, Reason::ApiUnavailable)
    );
    assert!(!d[0].is_final());
    let d = f.engine.handle(&[alert("checkout", STARTS)]).await;
    assert_eq!(outcomes(&d), [Outcome::Created], "the retry creates it");
    *f.sink.fail_with.lock().expect("lock") = Some(422);
    let d = f.engine.handle(&[alert("other", STARTS)]).await;
    assert_eq!(
        (d[0].decision, d[0].reason),
        (Outcome::Refused, Reason::RejectedByApi)
    );
    assert!(d[0].is_final());
}

#[tokio::test]
async fn durable_dedup_survives_a_restart() {
    // A capture created before a restart: the new engine's ledger does not know it, the
    // deterministic name makes the API server answer AlreadyExists.
    let f = fixture(&[LATENCY]);
    f.engine.handle(&[alert("checkout", STARTS)]).await;
    let g = fixture(&[LATENCY]);
    let engine = Engine::new(
        g.engine.triggers().clone(),
        Arc::new(SharedLedger::default()),
        f.sink.clone(),
        Reporter::metrics_only(g.metrics.clone()),
        Arc::new(g.clock.clone()),
        EngineLimits::default(),
    );
    engine.ledger().set_ready();
    let d = engine.handle(&[alert("checkout", STARTS)]).await;
    assert_eq!(
        (d[0].decision, d[0].reason),
        (Outcome::Deduplicated, Reason::AlreadyExists)
    );
    assert_eq!(f.sink.objects.lock().expect("lock").len(), 1);
}

const STOPPING: &str = r#"
metadata: {name: stopping, namespace: shop}
spec:
  stopOnResolved: true
  template: {spec: {selector: {matchLabels: {app: "{{labels.app}}"}}}}
"#;

#[tokio::test]
async fn resolved_alerts_stop_captures_when_asked() {
    let f = fixture(&[STOPPING, LATENCY]);
    let d = f.engine.handle(&[alert("checkout", STARTS)]).await;
    assert_eq!(
        outcomes(&d),
        [Outcome::Created, Outcome::Created],
        "two triggers, two captures"
    );
    let mut resolved = alert("checkout", STARTS);
    resolved.status = AlertStatus::Resolved;
    let d = f.engine.handle(&[resolved.clone()]).await;
    assert_eq!(outcomes(&d), [Outcome::Stopped, Outcome::Ignored]);
    let stops = f.sink.stops.lock().expect("lock").clone();
    assert_eq!(stops.len(), 1);
    assert_eq!(Some(&stops[0].1), d[0].capture.as_ref());
    assert!(stops[0].2.contains("alert resolved"), "{}", stops[0].2);
    // Once the stop annotation is seen, another resolved notification does nothing.
    let key = ObjKey::new("shop", d[0].capture.as_deref().expect("name"));
    let mut t: Tracked = f
        .engine
        .ledger()
        .lock()
        .get(&key)
        .cloned()
        .expect("tracked");
    t.stop_requested = true;
    f.engine.ledger().lock().upsert(key, t);
    let d = f.engine.handle(&[resolved]).await;
    assert_eq!(outcomes(&d), [Outcome::Ignored, Outcome::Ignored]);
}
