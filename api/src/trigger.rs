//! `CaptureTrigger`: alert rules that create PacketCaptures in their own namespace.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::capture::PacketCaptureTemplate;

/// An alert rule: events that match create a capture rendered from `template`.
///
/// Placeholders `{{labels.NAME}}` and `{{annotations.NAME}}` in template strings are filled from
/// the event. A trigger only ever creates captures in its own namespace.
// Several `printcolumn(...)` share `type_ = ...`, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "nightcap.dev",
    version = "v1alpha1",
    kind = "CaptureTrigger",
    plural = "capturetriggers",
    shortname = "pcaptrig",
    category = "nightcap",
    namespaced,
    status = "CaptureTriggerStatus",
    printcolumn(name = "Created", type_ = "integer", json_path = ".status.created"),
    printcolumn(
        name = "Deduplicated",
        type_ = "integer",
        json_path = ".status.deduplicated"
    ),
    printcolumn(
        name = "Last Triggered",
        type_ = "date",
        json_path = ".status.lastTriggeredTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CaptureTriggerSpec {
    /// Where events come from. Empty: every configured source.
    #[serde(default)]
    pub sources: TriggerSources,
    /// Which events fire the trigger.
    #[serde(default, rename = "match")]
    pub match_: EventMatch,
    /// The capture to create, with placeholders.
    pub template: PacketCaptureTemplate,
    /// Deduplication of repeated events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<Dedup>,
    /// At most this many running captures created by this trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_concurrent: Option<u32>,
    /// Stop the capture early when its alert resolves.
    #[serde(default)]
    pub stop_on_resolved: bool,
}

/// Event sources a trigger listens to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerSources {
    /// NATS subjects (wildcards allowed) the event must have arrived on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nats_subjects: Vec<String>,
    /// Webhook paths (`/hooks/alertmanager`, `/hooks/capture`) the event must have arrived on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhook_paths: Vec<String>,
}

/// Label conditions on an event; all must hold.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventMatch {
    /// Labels that must equal these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Labels that must fully match these regular expressions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label_regex: BTreeMap<String, String>,
}

/// Deduplication settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dedup {
    /// Template of the dedup key. Default: the Alertmanager fingerprint, else the label set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// After a capture for a key was created, ignore the key for this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cooldown_seconds: Option<u32>,
}

/// Observed state of a trigger.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaptureTriggerStatus {
    /// Captures created.
    #[serde(default)]
    pub created: u64,
    /// Events that mapped to an existing capture.
    #[serde(default)]
    pub deduplicated: u64,
    /// Events dropped by cooldown or quotas.
    #[serde(default)]
    pub throttled: u64,
    /// Events refused (other namespace, invalid rendering).
    #[serde(default)]
    pub refused: u64,
    /// Last time an event fired the trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_triggered_time: Option<Time>,
    /// Conditions (`Valid`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
