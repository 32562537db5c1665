//! What the engine decided for one (trigger, event) pair. Every decision is counted in
//! `nightcap_trigger_decisions_total` and recorded as a Kubernetes Event on the trigger.

use std::fmt;

use serde::Serialize;

/// The kind of decision (metric label `decision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A PacketCapture was created.
    Created,
    /// The capture for this event already exists (or is being created).
    Deduplicated,
    /// Cooldown or a concurrency quota held the event back.
    Throttled,
    /// The event can never create a capture (other namespace, invalid rendering, refused by the
    /// API server).
    Refused,
    /// A resolved alert stopped its capture early.
    Stopped,
    /// Nothing to do (a resolved alert without a running capture, or a trigger that does not
    /// stop on resolve).
    Ignored,
    /// A transient failure (API server unavailable); the event should be retried.
    Failed,
}

impl Outcome {
    /// Every outcome, in a fixed order (index of [`Outcome::index`]).
    pub const ALL: [Self; 7] = [
        Self::Created,
        Self::Deduplicated,
        Self::Throttled,
        Self::Refused,
        Self::Stopped,
        Self::Ignored,
        Self::Failed,
    ];

    /// Metric label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Deduplicated => "deduplicated",
            Self::Throttled => "throttled",
            Self::Refused => "refused",
            Self::Stopped => "stopped",
            Self::Ignored => "ignored",
            Self::Failed => "failed",
        }
    }

    /// Position in [`Outcome::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether the event is handled for good (a message may be acknowledged). Only
    /// [`Outcome::Failed`] asks for a retry.
    pub const fn is_final(self) -> bool {
        !matches!(self, Self::Failed)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why (metric label `reason`; also the Kubernetes Event reason). A fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Reason {
    /// Created.
    CaptureCreated,
    /// A capture with the deterministic name exists.
    AlreadyExists,
    /// Another copy of the event is creating the capture right now.
    InFlight,
    /// The dedup key fired less than `cooldownSeconds` ago.
    Cooldown,
    /// The trigger's `maxConcurrent` captures are running.
    TriggerMaxConcurrent,
    /// The namespace's limit of running triggered captures is reached.
    NamespaceMaxConcurrent,
    /// The cluster-wide limit of running triggered captures is reached.
    ClusterMaxConcurrent,
    /// The event is about another namespace than the trigger's.
    OtherNamespace,
    /// A placeholder could not be filled (missing label) or the key template failed.
    TemplateFailed,
    /// The rendered capture is not valid.
    InvalidCapture,
    /// The API server refused the capture (schema, admission, RBAC).
    RejectedByApi,
    /// A resolved alert asked the capture to stop.
    StopRequested,
    /// A resolved alert without a running capture.
    NothingToStop,
    /// The API server could not be reached or failed.
    ApiUnavailable,
}

impl Reason {
    /// Label value / Event reason.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CaptureCreated => "CaptureCreated",
            Self::AlreadyExists => "AlreadyExists",
            Self::InFlight => "InFlight",
            Self::Cooldown => "Cooldown",
            Self::TriggerMaxConcurrent => "TriggerMaxConcurrent",
            Self::NamespaceMaxConcurrent => "NamespaceMaxConcurrent",
            Self::ClusterMaxConcurrent => "ClusterMaxConcurrent",
            Self::OtherNamespace => "OtherNamespace",
            Self::TemplateFailed => "TemplateFailed",
            Self::InvalidCapture => "InvalidCapture",
            Self::RejectedByApi => "RejectedByApi",
            Self::StopRequested => "StopRequested",
            Self::NothingToStop => "NothingToStop",
            Self::ApiUnavailable => "ApiUnavailable",
        }
    }
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// What happened.
    pub decision: Outcome,
    /// Why.
    pub reason: Reason,
    /// Namespace of the trigger (and of the capture).
    pub namespace: String,
    /// Name of the trigger.
    pub trigger: String,
    /// The capture concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<String>,
    /// Human-readable details.
    pub message: String,
}

impl Decision {
    /// Whether the event is handled for good for this trigger.
    pub fn is_final(&self) -> bool {
        self.decision.is_final()
    }
}
