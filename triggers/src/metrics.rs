//! Prometheus metrics of the triggers component (served on `/metrics`). Names follow
//! `nightcap_<thing>_<unit>_total`; every label has a fixed, small set of values.

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::decision::{Decision, Outcome};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
    reason: &'static str,
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    code: u16,
}

/// Every metric of the component.
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    decision_totals: [AtomicU64; Outcome::ALL.len()],
    received: Family<SourceLabels, Counter>,
    rejected_payloads: Family<SourceLabels, Counter>,
    create_latency: Family<SourceLabels, Histogram>,
    jetstream_acks: Family<KindLabels, Counter>,
    poison: Counter,
    events_dropped: Counter,
    cron_runs: Family<ResultLabels, Counter>,
    webhook_requests: Family<RequestLabels, Counter>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "nightcap_trigger_decisions",
            "Decisions of the rule engine per (trigger, event): created, deduplicated, throttled, \
             refused, stopped, ignored, failed",
            decisions.clone(),
        );
        let received = Family::<SourceLabels, Counter>::default();
        registry.register(
            "nightcap_trigger_events_received",
            "Events (alerts, capture requests) received per source",
            received.clone(),
        );
        let rejected_payloads = Family::<SourceLabels, Counter>::default();
        registry.register(
            "nightcap_trigger_payloads_rejected",
            "Payloads refused before matching (malformed JSON, unknown fields, wrong version)",
            rejected_payloads.clone(),
        );
        let create_latency =
            Family::<SourceLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "nightcap_trigger_create_latency_seconds",
            "From receiving an event to the PacketCapture existing",
            create_latency.clone(),
        );
        let jetstream_acks = Family::<KindLabels, Counter>::default();
        registry.register(
            "nightcap_trigger_jetstream_acks",
            "JetStream acknowledgements sent, by kind (ack, nak, term)",
            jetstream_acks.clone(),
        );
        let poison = Counter::default();
        registry.register(
            "nightcap_trigger_jetstream_poison_messages",
            "JetStream messages given up on (unparseable, or still failing at maxDeliver)",
            poison.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "nightcap_trigger_kube_events_dropped",
            "Kubernetes Events not recorded because the recorder queue was full",
            events_dropped.clone(),
        );
        let cron_runs = Family::<ResultLabels, Counter>::default();
        registry.register(
            "nightcap_cron_runs",
            "CaptureSchedule runs by result (created, missed, already_active, failed)",
            cron_runs.clone(),
        );
        let webhook_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "nightcap_trigger_webhook_requests",
            "Webhook requests by endpoint and HTTP status code",
            webhook_requests.clone(),
        );
        Self {
            registry,
            decisions,
            decision_totals: Default::default(),
            received,
            rejected_payloads,
            create_latency,
            jetstream_acks,
            poison,
            events_dropped,
            cron_runs,
            webhook_requests,
        }
    }

    /// Counts a decision.
    pub fn decision(&self, d: &Decision, source: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                decision: d.decision.as_str(),
                reason: d.reason.as_str(),
                source,
            })
            .inc();
        self.decision_totals[d.decision.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Decisions with this outcome so far (all sources and reasons).
    pub fn decisions_total(&self, outcome: Outcome) -> u64 {
        self.decision_totals[outcome.index()].load(Ordering::Relaxed)
    }

    /// Counts received events.
    pub fn received(&self, source: &'static str, n: u64) {
        self.received
            .get_or_create(&SourceLabels { source })
            .inc_by(n);
    }

    /// Counts a refused payload.
    pub fn rejected_payload(&self, source: &'static str) {
        self.rejected_payloads
            .get_or_create(&SourceLabels { source })
            .inc();
    }

    /// Records the receive → created latency.
    pub fn create_latency(&self, source: &'static str, seconds: f64) {
        self.create_latency
            .get_or_create(&SourceLabels { source })
            .observe(seconds);
    }

    /// Counts a JetStream acknowledgement (`ack`, `nak`, `term`).
    pub fn jetstream_ack(&self, kind: &'static str) {
        self.jetstream_acks
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// Counts a poison message.
    pub fn poison(&self) {
        self.poison.inc();
    }

    /// Poison messages so far.
    pub fn poison_total(&self) -> u64 {
        self.poison.get()
    }

    /// Counts a Kubernetes Event that could not be queued.
    pub fn event_dropped(&self) {
        self.events_dropped.inc();
    }

    /// Counts a cron run result.
    pub fn cron_run(&self, result: &'static str) {
        self.cron_runs.get_or_create(&ResultLabels { result }).inc();
    }

    /// Counts a webhook response.
    pub fn webhook_request(&self, endpoint: &'static str, code: u16) {
        self.webhook_requests
            .get_or_create(&RequestLabels { endpoint, code })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Reason;

    #[test]
    fn decisions_are_exposed_with_bounded_labels() {
        let m = Metrics::new();
        let d = Decision {
            decision: Outcome::Deduplicated,
            reason: Reason::AlreadyExists,
            namespace: "shop".into(),
            trigger: "latency".into(),
            capture: Some("latency-0123456789".into()),
            message: String::new(),
        };
        m.decision(&d, "webhook");
        m.decision(&d, "webhook");
        assert_eq!(m.decisions_total(Outcome::Deduplicated), 2);
        assert_eq!(m.decisions_total(Outcome::Created), 0);
        let text = m.encode();
        assert!(
            text.contains(
                "nightcap_trigger_decisions_total{decision=\"deduplicated\",reason=\"AlreadyExists\",source=\"webhook\"} 2"
            ),
            "{text}"
        );
        m.create_latency("nats", 0.003);
        let text = m.encode();
        assert!(
            text.contains(
                "nightcap_trigger_create_latency_seconds_bucket{le=\"0.004\",source=\"nats\"} 1"
            ),
            "{text}"
        );
    }
}
