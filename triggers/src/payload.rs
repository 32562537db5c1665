//! Payloads sources accept: the Alertmanager webhook payload (version 4) and nightcap's
//! capture request. Both turn into [`TriggerEvent`]s.
//!
//! Alertmanager payloads are read as Alertmanager sends them: fields nightcap does not use are
//! accepted (so a newer Alertmanager keeps working). Capture requests are nightcap's own format
//! and refuse unknown fields, so a typo is an error instead of a silently ignored setting.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    error::{Error, Result},
    event::{AlertStatus, EventSource, TriggerEvent},
};

/// The Alertmanager webhook payload, version 4 (`webhook_configs` receivers).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerPayload {
    /// Payload version; nightcap accepts `"4"`.
    pub version: String,
    /// Key of the alert group (used in logs).
    #[serde(default)]
    pub group_key: String,
    /// Alerts left out because of `max_alerts`.
    #[serde(default)]
    pub truncated_alerts: u64,
    /// Status of the group.
    pub status: AlertStatus,
    /// Receiver name.
    #[serde(default)]
    pub receiver: String,
    /// Labels the group was formed by.
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    /// Labels every alert of the group has.
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    /// Annotations every alert of the group has.
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    /// Alertmanager's URL.
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    /// The alerts.
    pub alerts: Vec<Alert>,
}

/// One alert of an Alertmanager payload.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: AlertStatus,
    /// Alert labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Alert annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// When the alert started firing (RFC 3339).
    #[serde(default)]
    pub starts_at: Option<String>,
    /// When it ended; `0001-01-01T00:00:00Z` while firing.
    #[serde(default)]
    pub ends_at: Option<String>,
    /// Link to the alerting rule's expression.
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    /// Alertmanager's hash of the label set.
    #[serde(default)]
    pub fingerprint: String,
}

/// nightcap's own request to start (or, with `status: resolved`, stop) a capture.
///
/// ```json
/// {"id": "deploy-1234", "namespace": "shop", "trigger": "checkout-errors",
///  "labels": {"app": "checkout", "pod": "checkout-7d9f"}, "annotations": {}}
/// ```
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaptureRequest {
    /// Request id; requests with the same id (and labels) are duplicates. Default: the labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The namespace the request is for; triggers of other namespaces refuse it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only the CaptureTrigger with this name may act on the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// `firing` (default) or `resolved`.
    #[serde(default)]
    pub status: AlertStatus,
    /// Labels matched by rules and used in templates.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations used in templates.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// How payloads map onto events.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    /// The alert label naming the namespace an alert is about (`namespace`, as set by
    /// kube-state-metrics and the Prometheus Operator).
    pub namespace_label: String,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            namespace_label: "namespace".to_owned(),
        }
    }
}

fn bad(message: impl Into<String>) -> Error {
    Error::BadPayload {
        message: message.into(),
    }
}

fn json_error(what: &str, e: &serde_json::Error) -> Error {
    bad(format!("invalid {what}: {e}"))
}

/// Parses an Alertmanager webhook body into one event per alert.
pub fn parse_alertmanager(
    body: &[u8],
    source: &EventSource,
    received: Timestamp,
    opts: &ParseOptions,
) -> Result<Vec<TriggerEvent>> {
    let payload: AlertmanagerPayload = serde_json::from_slice(body)
        .map_err(|e| json_error("Alertmanager webhook payload (version 4)", &e))?;
    alertmanager_events(payload, source, received, opts)
}

fn alertmanager_events(
    payload: AlertmanagerPayload,
    source: &EventSource,
    received: Timestamp,
    opts: &ParseOptions,
) -> Result<Vec<TriggerEvent>> {
    if payload.version != "4" {
        return Err(bad(format!(
            "unsupported Alertmanager payload version {:?}; nightcap reads version \"4\" \
             (Alertmanager 0.x webhook_configs)",
            payload.version
        )));
    }
    let mut events = Vec::with_capacity(payload.alerts.len());
    for (i, alert) in payload.alerts.into_iter().enumerate() {
        let starts_at = match alert.starts_at.as_deref() {
            None | Some("") => None,
            Some(text) => Some(text.parse::<Timestamp>().map_err(|e| {
                bad(format!(
                    "alerts[{i}].startsAt: {text:?} is not an RFC 3339 time: {e}"
                ))
            })?),
        };
        let fingerprint = Some(alert.fingerprint).filter(|f| !f.is_empty());
        let mut event = TriggerEvent {
            source: source.clone(),
            id: String::new(),
            status: alert.status,
            namespace: alert.labels.get(&opts.namespace_label).cloned(),
            labels: alert.labels,
            annotations: alert.annotations,
            fingerprint,
            starts_at,
            trigger: None,
            received,
        };
        let base = event
            .fingerprint
            .clone()
            .unwrap_or_else(|| short_hash(&event.label_set()));
        event.id = match starts_at {
            Some(t) => format!("{base}@{t}"),
            None => base,
        };
        events.push(event);
    }
    Ok(events)
}

/// Parses a capture request body.
pub fn parse_capture_request(
    body: &[u8],
    source: &EventSource,
    received: Timestamp,
    opts: &ParseOptions,
) -> Result<TriggerEvent> {
    let req: CaptureRequest =
        serde_json::from_slice(body).map_err(|e| json_error("capture request", &e))?;
    Ok(request_event(req, source, received, opts))
}

fn request_event(
    req: CaptureRequest,
    source: &EventSource,
    received: Timestamp,
    opts: &ParseOptions,
) -> TriggerEvent {
    let namespace = req
        .namespace
        .or_else(|| req.labels.get(&opts.namespace_label).cloned());
    let mut event = TriggerEvent {
        source: source.clone(),
        id: String::new(),
        status: req.status,
        labels: req.labels,
        annotations: req.annotations,
        fingerprint: None,
        starts_at: None,
        namespace,
        trigger: req.trigger,
        received,
    };
    event.id = req.id.unwrap_or_else(|| short_hash(&event.label_set()));
    event
}

/// Parses a NATS message: an Alertmanager payload when the JSON object has `alerts`, otherwise a
/// capture request.
pub fn parse_any(
    body: &[u8],
    source: &EventSource,
    received: Timestamp,
    opts: &ParseOptions,
) -> Result<Vec<TriggerEvent>> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| json_error("JSON message", &e))?;
    if !value.is_object() {
        return Err(bad(
            "the message must be a JSON object (an Alertmanager payload or a capture request)",
        ));
    }
    if value.get("alerts").is_some() {
        let payload = serde_json::from_value(value)
            .map_err(|e| json_error("Alertmanager webhook payload (version 4)", &e))?;
        alertmanager_events(payload, source, received, opts)
    } else {
        let req = serde_json::from_value(value).map_err(|e| json_error("capture request", &e))?;
        Ok(vec![request_event(req, source, received, opts)])
    }
}

/// First 16 hex digits of the SHA-256 of `text`.
pub(crate) fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests;
