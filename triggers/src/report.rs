//! Reporting decisions: Prometheus counters at once, Kubernetes Events and CaptureTrigger
//! status counters from a background writer that coalesces bursts (1000 duplicates of an alert
//! make one Event with a count, not 1000 API calls).

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use jiff::Timestamp;
use k8s_openapi::{api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::Time};
use kube::{
    Api, Client,
    api::PostParams,
    runtime::events::{Event, EventType, Recorder, Reporter as KubeReporter},
};
use nightcap_api::CaptureTrigger;
use tokio::{sync::mpsc, time::Instant};
use tracing::{debug, warn};

use crate::{
    decision::{Decision, Outcome},
    metrics::Metrics,
    rules::CompiledTrigger,
};

/// Queue length between the engine and the event writer.
pub const QUEUE: usize = 8192;

/// One Kubernetes Event to record (and, for triggers, a status counter to bump).
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// The object the Event is about (a CaptureTrigger or CaptureSchedule).
    pub regarding: ObjectReference,
    /// A second object (the PacketCapture).
    pub related: Option<ObjectReference>,
    /// Warning rather than Normal.
    pub warning: bool,
    /// Event reason (PascalCase).
    pub reason: &'static str,
    /// Event action (PascalCase).
    pub action: &'static str,
    /// Event message.
    pub message: String,
    /// A CaptureTrigger status counter to bump.
    pub tally: Option<Outcome>,
    /// When it happened.
    pub at: Timestamp,
}

/// Hands decisions to metrics and (when running against Kubernetes) to the event writer.
#[derive(Clone)]
pub struct Reporter {
    metrics: Arc<Metrics>,
    tx: Option<mpsc::Sender<Note>>,
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reporter")
            .field("events", &self.tx.is_some())
            .finish()
    }
}

/// Reference to a PacketCapture for Events.
pub fn capture_ref(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(format!("{}/{}", nightcap_api::GROUP, nightcap_api::VERSION)),
        kind: Some("PacketCapture".to_owned()),
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        ..ObjectReference::default()
    }
}

impl Reporter {
    /// A reporter and the queue its notes arrive on.
    pub fn new(metrics: Arc<Metrics>) -> (Self, mpsc::Receiver<Note>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (
            Self {
                metrics,
                tx: Some(tx),
            },
            rx,
        )
    }

    /// A reporter that only counts (no Kubernetes Events).
    pub fn metrics_only(metrics: Arc<Metrics>) -> Self {
        Self { metrics, tx: None }
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Records a rule-engine decision.
    pub fn decision(
        &self,
        trigger: &CompiledTrigger,
        d: &Decision,
        source: &'static str,
        at: Timestamp,
    ) {
        self.metrics.decision(d, source);
        if d.decision == Outcome::Ignored {
            return;
        }
        let action = match d.decision {
            Outcome::Stopped => "StopCapture",
            _ => "CreateCapture",
        };
        self.note(Note {
            regarding: trigger.reference.clone(),
            related: d
                .capture
                .as_deref()
                .filter(|_| matches!(d.decision, Outcome::Created | Outcome::Stopped))
                .map(|c| capture_ref(&d.namespace, c)),
            warning: matches!(
                d.decision,
                Outcome::Refused | Outcome::Failed | Outcome::Throttled
            ),
            reason: d.reason.as_str(),
            action,
            message: d.message.clone(),
            tally: Some(d.decision),
            at,
        });
    }

    /// Queues an Event; counted as dropped when the queue is full.
    pub fn note(&self, note: Note) {
        if let Some(tx) = &self.tx
            && tx.try_send(note).is_err()
        {
            self.metrics.event_dropped();
        }
    }
}

type NoteKey = (Option<String>, Option<String>, Option<String>, &'static str);

fn key(n: &Note) -> NoteKey {
    (
        n.regarding.namespace.clone(),
        n.regarding.kind.clone(),
        n.regarding.name.clone(),
        n.reason,
    )
}

#[derive(Debug)]
struct Slot {
    last_sent: Instant,
    suppressed: u32,
    latest: Option<Note>,
}

/// Coalesces notes: the first of a kind (object, reason) goes out at once, repeats within
/// `window` are folded into one note with a count.
#[derive(Debug)]
pub struct Coalescer {
    window: Duration,
    slots: HashMap<NoteKey, Slot>,
}

impl Coalescer {
    /// A coalescer with this window.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            slots: HashMap::new(),
        }
    }

    /// A note arrived; returns it when it should be published now.
    pub fn push(&mut self, note: Note, now: Instant) -> Option<Note> {
        let k = key(&note);
        match self.slots.get_mut(&k) {
            Some(slot) if now.duration_since(slot.last_sent) < self.window => {
                slot.suppressed += 1;
                slot.latest = Some(note);
                None
            }
            _ => {
                self.slots.insert(
                    k,
                    Slot {
                        last_sent: now,
                        suppressed: 0,
                        latest: None,
                    },
                );
                Some(note)
            }
        }
    }

    /// Notes whose window is over, folded (`message` says how many were folded).
    pub fn flush(&mut self, now: Instant) -> Vec<Note> {
        let mut out = Vec::new();
        let window = self.window;
        self.slots.retain(|_, slot| {
            let due = now.duration_since(slot.last_sent) >= window;
            if due && let Some(mut n) = slot.latest.take() {
                n.message = format!(
                    "{} (and {} more like it in the last {}s)",
                    n.message,
                    slot.suppressed.saturating_sub(1),
                    window.as_secs()
                );
                slot.suppressed = 0;
                slot.last_sent = now;
                out.push(n);
                return true;
            }
            // Forget idle slots after a quiet window.
            !(due && slot.latest.is_none())
        });
        out
    }
}

/// Timing of the event writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// Repeats within this window are folded into one Event.
    pub window: Duration,
    /// CaptureTrigger status counters are written at most this often.
    pub status_every: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            status_every: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    counts: [u64; Outcome::ALL.len()],
    last: Option<Timestamp>,
}

/// Writes Events and trigger status counters until the queue closes.
pub async fn run_writer(client: Client, mut rx: mpsc::Receiver<Note>, opts: WriterOptions) {
    let recorder = Recorder::new(
        client.clone(),
        KubeReporter {
            controller: "nightcap-triggers".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let mut coalescer = Coalescer::new(opts.window);
    let mut tallies: HashMap<(String, String), Tally> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(opts.window));
    let mut status_tick = tokio::time::interval(opts.status_every);
    loop {
        tokio::select! {
            note = rx.recv() => {
                let Some(note) = note else { break };
                if let (Some(outcome), Some("CaptureTrigger"), Some(ns), Some(name)) = (
                    note.tally,
                    note.regarding.kind.as_deref(),
                    note.regarding.namespace.clone(),
                    note.regarding.name.clone(),
                ) {
                    let t = tallies.entry((ns, name)).or_default();
                    t.counts[outcome.index()] += 1;
                    t.last = t.last.max(Some(note.at));
                }
                if let Some(n) = coalescer.push(note, Instant::now()) {
                    publish(&recorder, &n).await;
                }
            }
            _ = tick.tick() => {
                for n in coalescer.flush(Instant::now()) {
                    publish(&recorder, &n).await;
                }
            }
            _ = status_tick.tick() => {
                for ((ns, name), t) in std::mem::take(&mut tallies) {
                    write_status(&client, &ns, &name, &t).await;
                }
            }
        }
    }
}

async fn publish(recorder: &Recorder, n: &Note) {
    let ev = Event {
        type_: if n.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: n.reason.to_owned(),
        note: Some(n.message.chars().take(1000).collect()),
        action: n.action.to_owned(),
        secondary: n.related.clone(),
    };
    if let Err(error) = recorder.publish(&ev, &n.regarding).await {
        debug!(%error, reason = n.reason, "Could not record a Kubernetes Event.");
    }
}

/// Adds the tally to the trigger's status counters (optimistic concurrency, retried on conflict).
async fn write_status(client: &Client, ns: &str, name: &str, t: &Tally) {
    let api: Api<CaptureTrigger> = Api::namespaced(client.clone(), ns);
    for _ in 0..5 {
        let mut obj = match api.get_status(name).await {
            Ok(o) => o,
            Err(error) => {
                debug!(%ns, %name, %error, "Cannot read trigger status.");
                return;
            }
        };
        let status = obj.status.get_or_insert_with(Default::default);
        let c = &t.counts;
        status.created += c[Outcome::Created.index()];
        status.deduplicated += c[Outcome::Deduplicated.index()];
        status.throttled += c[Outcome::Throttled.index()];
        status.refused += c[Outcome::Refused.index()];
        if let Some(last) = t.last {
            let newer = status
                .last_triggered_time
                .as_ref()
                .is_none_or(|old| old.0 < last);
            if newer {
                status.last_triggered_time = Some(Time(last));
            }
        }
        match api.replace_status(name, &PostParams::default(), &obj).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(error) => {
                warn!(%ns, %name, %error, "Cannot update trigger status counters.");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &str, reason: &'static str, msg: &str) -> Note {
        Note {
            regarding: ObjectReference {
                kind: Some("CaptureTrigger".into()),
                namespace: Some("shop".into()),
                name: Some(name.into()),
                ..ObjectReference::default()
            },
            related: None,
            warning: false,
            reason,
            action: "CreateCapture",
            message: msg.into(),
            tally: None,
            at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn bursts_become_one_event_with_a_count() {
        let mut c = Coalescer::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(
            c.push(note("a", "AlreadyExists", "dup 1"), t0).is_some(),
            "first goes out"
        );
        for i in 2..=1000 {
            assert!(
                c.push(note("a", "AlreadyExists", &format!("dup {i}")), t0)
                    .is_none()
            );
        }
        assert!(
            c.push(note("b", "AlreadyExists", "other trigger"), t0)
                .is_some(),
            "another object is another slot"
        );
        assert!(
            c.push(note("a", "Cooldown", "other reason"), t0).is_some(),
            "another reason is another slot"
        );
        assert!(
            c.flush(t0 + Duration::from_secs(5)).is_empty(),
            "window not over"
        );
        let out = c.flush(t0 + Duration::from_secs(10));
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].message,
            "dup 1000 (and 998 more like it in the last 10s)"
        );
        // Quiet afterwards: nothing more, and the slot is eventually forgotten.
        assert!(c.flush(t0 + Duration::from_secs(20)).is_empty());
        assert!(
            c.push(
                note("a", "AlreadyExists", "later"),
                t0 + Duration::from_secs(31)
            )
            .is_some()
        );
    }
}
