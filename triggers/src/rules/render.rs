//! Rendering a trigger's template for one event: the dedup key, the deterministic name and a
//! validated PacketCapture in the trigger's own namespace.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use nightcap_api::{
    PacketCapture, PacketCaptureTemplate, ValidationErrors,
    template::{self, EventValues, TemplateError},
    validation::{ValidationOptions, validate_labels, validate_packet_capture},
};

use super::CompiledTrigger;
use crate::{event::TriggerEvent, labels};

/// A capture ready to be created.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The capture (name, namespace, labels, annotations, spec).
    pub capture: PacketCapture,
    /// Its deterministic name.
    pub name: String,
    /// The dedup key.
    pub key: String,
    /// Short hash of the dedup key (cooldown slot).
    pub key_hash: String,
}

/// Why an event could not be turned into a capture. Always final: retrying gives the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// A placeholder could not be filled.
    Template(TemplateError),
    /// The rendered template is not a PacketCapture spec.
    Spec(String),
    /// The rendered capture does not validate.
    Invalid(ValidationErrors),
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Template(e) => write!(f, "template: {e}"),
            Self::Spec(e) => write!(f, "the rendered template is not a capture spec: {e}"),
            Self::Invalid(e) => write!(f, "the rendered capture is invalid: {e}"),
        }
    }
}

fn values(event: &TriggerEvent) -> EventValues<'_> {
    EventValues {
        labels: &event.labels,
        annotations: &event.annotations,
    }
}

/// The dedup key: the trigger's `dedup.key` template, else the Alertmanager fingerprint, else
/// the label set.
pub fn dedup_key(trigger: &CompiledTrigger, event: &TriggerEvent) -> Result<String, TemplateError> {
    match trigger
        .object
        .spec
        .dedup
        .as_ref()
        .and_then(|d| d.key.as_deref())
    {
        Some(tpl) => template::render(tpl, &values(event)).map(|k| format!("key:{k}")),
        None => Ok(match &event.fingerprint {
            Some(fp) => format!("fingerprint:{fp}"),
            None => format!("labels:{}", event.label_set()),
        }),
    }
}

/// The firing episode: Alertmanager's `startsAt` (same for every notification of one firing,
/// new after a resolve), else the request id when it has one, else empty.
pub fn episode(event: &TriggerEvent) -> String {
    match (&event.starts_at, &event.fingerprint) {
        (Some(t), _) => t.to_string(),
        (None, Some(_)) => String::new(),
        (None, None) => event.id.clone(),
    }
}

/// Renders the trigger's capture for the event and validates it.
pub fn render(
    trigger: &CompiledTrigger,
    event: &TriggerEvent,
    now: Timestamp,
) -> Result<Rendered, RenderError> {
    let key = dedup_key(trigger, event).map_err(RenderError::Template)?;
    let name =
        labels::trigger_capture_name(&trigger.namespace, &trigger.name, &key, &episode(event));
    let key_hash = labels::hash_parts(&[&key], 16);
    let json = template::render_json(trigger.template_json(), &values(event))
        .map_err(RenderError::Template)?;
    let tpl: PacketCaptureTemplate =
        serde_json::from_value(json).map_err(|e| RenderError::Spec(e.to_string()))?;
    let meta = tpl.metadata.unwrap_or_default();
    let mut labels_map: BTreeMap<String, String> = meta.labels;
    labels_map.insert(labels::CREATED_BY.into(), labels::CREATED_BY_TRIGGER.into());
    labels_map.insert(labels::TRIGGER.into(), trigger.label.clone());
    labels_map.insert(labels::DEDUP_HASH.into(), key_hash.clone());
    labels_map.insert(
        labels::MANAGED_BY.into(),
        labels::MANAGED_BY_TRIGGERS.into(),
    );
    let mut annotations = meta.annotations;
    annotations.insert(labels::TRIGGER_NAME.into(), trigger.name.clone());
    annotations.insert(
        labels::DEDUP_KEY.into(),
        truncate(&key, labels::MAX_KEY_ANNOTATION),
    );
    annotations.insert(
        labels::EVENT_ID.into(),
        truncate(&event.id, labels::MAX_KEY_ANNOTATION),
    );
    annotations.insert(labels::SOURCE.into(), event.source.kind().into());
    let capture = PacketCapture {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            // Always the trigger's namespace: templates cannot name another one.
            namespace: Some(trigger.namespace.clone()),
            labels: Some(labels_map),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: tpl.spec,
        status: None,
    };
    let opts = ValidationOptions {
        now: Some(now),
        ..ValidationOptions::default()
    };
    let mut errs = validate_packet_capture(&capture, &opts)
        .err()
        .unwrap_or_default();
    if let Some(l) = &capture.metadata.labels {
        validate_labels(l, "metadata.labels", &mut errs);
    }
    errs.into_result().map_err(RenderError::Invalid)?;
    Ok(Rendered {
        capture,
        name,
        key,
        key_hash,
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
