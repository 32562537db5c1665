//! [`TriggerEvent`]: what every source (NATS, webhook, cron) hands to the rule engine.

use std::{collections::BTreeMap, fmt};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Whether an alert is firing or resolved. Only firing events start captures; resolved events
/// may stop them (`stopOnResolved`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// The condition holds: start a capture.
    #[default]
    Firing,
    /// The condition is over.
    Resolved,
}

impl AlertStatus {
    /// `firing` or `resolved`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// Where an event came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventSource {
    /// An HTTP webhook; `path` is the request path (`/hooks/alertmanager`, `/hooks/capture/x`).
    Webhook {
        /// Request path.
        path: String,
    },
    /// A NATS core subscription.
    Nats {
        /// Subject the message was published on.
        subject: String,
    },
    /// A JetStream durable consumer.
    JetStream {
        /// Subject the message was published on.
        subject: String,
    },
    /// A CaptureSchedule run.
    Cron {
        /// `namespace/name` of the schedule.
        schedule: String,
    },
}

impl EventSource {
    /// Bounded metric label: `webhook`, `nats`, `jetstream` or `cron`.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Webhook { .. } => "webhook",
            Self::Nats { .. } => "nats",
            Self::JetStream { .. } => "jetstream",
            Self::Cron { .. } => "cron",
        }
    }

    /// The NATS subject, for NATS and JetStream events.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Self::Nats { subject } | Self::JetStream { subject } => Some(subject),
            _ => None,
        }
    }

    /// The webhook path, for webhook events.
    pub fn path(&self) -> Option<&str> {
        match self {
            Self::Webhook { path } => Some(path),
            _ => None,
        }
    }
}

impl fmt::Display for EventSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Webhook { path } => write!(f, "webhook {path}"),
            Self::Nats { subject } => write!(f, "nats {subject}"),
            Self::JetStream { subject } => write!(f, "jetstream {subject}"),
            Self::Cron { schedule } => write!(f, "cron {schedule}"),
        }
    }
}

/// One alert or capture request, whatever its source.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerEvent {
    /// Where it came from.
    pub source: EventSource,
    /// Identifier for logs and `status.trigger.eventId`: the Alertmanager fingerprint (with
    /// `startsAt`), the request's `id`, or a hash of the labels.
    pub id: String,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// Labels (matched by rules, available to templates as `{{labels.NAME}}`).
    pub labels: BTreeMap<String, String>,
    /// Annotations (available to templates as `{{annotations.NAME}}`).
    pub annotations: BTreeMap<String, String>,
    /// Alertmanager fingerprint (stable for one label set).
    pub fingerprint: Option<String>,
    /// When the alert started firing: the same for every notification of one firing episode,
    /// new after it resolved. Part of the default dedup identity.
    pub starts_at: Option<Timestamp>,
    /// The namespace the event is about (the alert's `namespace` label, or a capture request's
    /// `namespace`). A trigger in another namespace refuses the event.
    pub namespace: Option<String>,
    /// Only this trigger (by name) may act on the event (capture requests may name one).
    pub trigger: Option<String>,
    /// When nightcap received it.
    pub received: Timestamp,
}

impl TriggerEvent {
    /// A firing event with labels only (for tests and simple sources).
    pub fn new(source: EventSource, id: impl Into<String>, received: Timestamp) -> Self {
        Self {
            source,
            id: id.into(),
            status: AlertStatus::Firing,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            fingerprint: None,
            starts_at: None,
            namespace: None,
            trigger: None,
            received,
        }
    }

    /// Adds a label.
    pub fn with_label(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    /// The label set in canonical form `{a="1", b="2"}` (Prometheus style, sorted).
    pub fn label_set(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.labels.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(k);
            out.push('=');
            out.push_str(&format!("{v:?}"));
        }
        out.push('}');
        out
    }
}
