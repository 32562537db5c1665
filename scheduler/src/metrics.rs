//! The scheduler's Prometheus metrics (listed in docs/ARCHITECTURE.md, section Scheduler).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `nightcap_scheduler_captures` | gauge | `phase` |
//! | `nightcap_scheduler_jobs_started_total` | counter | |
//! | `nightcap_scheduler_jobs_stopped_total` | counter | `reason` |
//! | `nightcap_scheduler_reconcile_duration_seconds` | histogram | |
//! | `nightcap_scheduler_reconcile_errors_total` | counter | `error` |
//! | `nightcap_scheduler_leader` | gauge (0/1) | |

use std::sync::Arc;

use nightcap_api::{PacketCapture, Phase};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabel {
    error: &'static str,
}

/// Phases reported by `nightcap_scheduler_captures` (`None` = not planned yet).
const PHASES: [(Option<Phase>, &str); 8] = [
    (None, "None"),
    (Some(Phase::Pending), "Pending"),
    (Some(Phase::Scheduled), "Scheduled"),
    (Some(Phase::Capturing), "Capturing"),
    (Some(Phase::Uploading), "Uploading"),
    (Some(Phase::Succeeded), "Succeeded"),
    (Some(Phase::Failed), "Failed"),
    (Some(Phase::Stopped), "Stopped"),
];

/// Metric handles and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    captures: Family<PhaseLabel, Gauge>,
    jobs_started: Counter,
    jobs_stopped: Family<ReasonLabel, Counter>,
    reconcile_duration: Histogram,
    reconcile_errors: Family<ErrorLabel, Counter>,
    leader: Gauge,
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
        let captures = Family::<PhaseLabel, Gauge>::default();
        let jobs_started = Counter::default();
        let jobs_stopped = Family::<ReasonLabel, Counter>::default();
        // 0.25 ms … ~17 s in steps of 1.5× (fine enough to read a p99 from).
        let reconcile_duration = Histogram::new(exponential_buckets(0.00025, 1.5, 28));
        let reconcile_errors = Family::<ErrorLabel, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "nightcap_scheduler_captures",
            "PacketCaptures by phase",
            captures.clone(),
        );
        registry.register(
            "nightcap_scheduler_jobs_started",
            "Capture Jobs created",
            jobs_started.clone(),
        );
        registry.register(
            "nightcap_scheduler_jobs_stopped",
            "Capture Jobs stopped, by reason",
            jobs_stopped.clone(),
        );
        registry.register(
            "nightcap_scheduler_reconcile_duration_seconds",
            "Time to plan and apply one PacketCapture",
            reconcile_duration.clone(),
        );
        registry.register(
            "nightcap_scheduler_reconcile_errors",
            "Failed reconciles, by error kind",
            reconcile_errors.clone(),
        );
        registry.register(
            "nightcap_scheduler_leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        Self {
            registry,
            captures,
            jobs_started,
            jobs_stopped,
            reconcile_duration,
            reconcile_errors,
            leader,
        }
    }

    /// One Job created.
    pub fn job_started(&self) {
        self.jobs_started.inc();
    }

    /// One Job stopped.
    pub fn job_stopped(&self, reason: &'static str) {
        self.jobs_stopped
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// One reconcile took `seconds`.
    pub fn reconciled(&self, seconds: f64) {
        self.reconcile_duration.observe(seconds);
    }

    /// One reconcile failed.
    pub fn reconcile_failed(&self, error: &'static str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabel { error })
            .inc();
    }

    /// Whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The text exposition, with the capture gauge recomputed from `captures`.
    pub fn encode(&self, captures: &[Arc<PacketCapture>]) -> String {
        for (phase, label) in PHASES {
            let n = captures
                .iter()
                .filter(|c| c.status.as_ref().and_then(|s| s.phase) == phase)
                .count();
            self.captures
                .get_or_create(&PhaseLabel { phase: label })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_and_values() {
        let m = Metrics::new();
        m.job_started();
        m.job_stopped("PodsGone");
        m.reconciled(0.002);
        m.reconcile_failed("Kube");
        m.set_leader(true);
        let mut c = PacketCapture::new("a", Default::default());
        c.status = Some(nightcap_api::PacketCaptureStatus {
            phase: Some(Phase::Capturing),
            ..Default::default()
        });
        let text = m.encode(&[Arc::new(c)]);
        for line in [
            "nightcap_scheduler_jobs_started_total 1",
            "nightcap_scheduler_jobs_stopped_total{reason=\"PodsGone\"} 1",
            "nightcap_scheduler_reconcile_errors_total{error=\"Kube\"} 1",
            "nightcap_scheduler_captures{phase=\"Capturing\"} 1",
            "nightcap_scheduler_captures{phase=\"Pending\"} 0",
            "nightcap_scheduler_leader 1",
            "nightcap_scheduler_reconcile_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }
}
