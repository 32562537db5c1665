//! CaptureTrigger rules: which events a trigger selects, and what capture it renders.

mod render;

use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{Resource, ResourceExt};
use nightcap_api::{
    CaptureTrigger, ValidationErrors,
    validation::{ValidationOptions, validate_trigger},
};
use regex::Regex;

pub use render::{RenderError, Rendered, dedup_key, episode, render};

use crate::event::{EventSource, TriggerEvent};

/// A validated trigger, ready to match events.
#[derive(Debug)]
pub struct CompiledTrigger {
    /// The object as read.
    pub object: Arc<CaptureTrigger>,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `nightcap.dev/trigger` label value of its captures.
    pub label: String,
    /// Reference for Kubernetes Events.
    pub reference: ObjectReference,
    regexes: Vec<(String, Regex)>,
    template: serde_json::Value,
}

impl CompiledTrigger {
    /// Validates and compiles a trigger.
    pub fn compile(object: Arc<CaptureTrigger>) -> Result<Self, ValidationErrors> {
        validate_trigger(&object, &ValidationOptions::default())?;
        let mut errs = ValidationErrors::default();
        let namespace = object.namespace().unwrap_or_default();
        if namespace.is_empty() {
            errs.push("metadata.namespace", "a CaptureTrigger must be namespaced");
        }
        let mut regexes = Vec::new();
        for (label, pattern) in &object.spec.match_.label_regex {
            match Regex::new(&format!("^(?:{pattern})$")) {
                Ok(r) => regexes.push((label.clone(), r)),
                Err(e) => errs.push(
                    format!("spec.match.labelRegex[{label}]"),
                    format!("invalid regular expression: {e}"),
                ),
            }
        }
        let template = match serde_json::to_value(&object.spec.template) {
            Ok(v) => v,
            Err(e) => {
                errs.push("spec.template", format!("cannot be serialised: {e}"));
                serde_json::Value::Null
            }
        };
        errs.into_result()?;
        let name = object.name_any();
        Ok(Self {
            label: crate::labels::label_value(&name),
            reference: object.object_ref(&()),
            namespace,
            name,
            regexes,
            template,
            object,
        })
    }

    /// Whether the event is for this trigger: source, target name and label conditions.
    /// (The namespace claim is checked later so that a refusal can be counted.)
    pub fn matches(&self, event: &TriggerEvent) -> bool {
        if event.trigger.as_ref().is_some_and(|t| *t != self.name) {
            return false;
        }
        if !self.source_matches(&event.source) {
            return false;
        }
        let value = |k: &str| event.labels.get(k).map_or("", String::as_str);
        self.object
            .spec
            .match_
            .labels
            .iter()
            .all(|(k, v)| value(k) == v)
            && self.regexes.iter().all(|(k, r)| r.is_match(value(k)))
    }

    fn source_matches(&self, source: &EventSource) -> bool {
        let s = &self.object.spec.sources;
        if s.nats_subjects.is_empty() && s.webhook_paths.is_empty() {
            return true;
        }
        match source {
            EventSource::Nats { subject } | EventSource::JetStream { subject } => {
                s.nats_subjects.iter().any(|p| subject_matches(p, subject))
            }
            EventSource::Webhook { path } => s.webhook_paths.iter().any(|p| p == path),
            EventSource::Cron { .. } => false,
        }
    }

    /// The template as JSON (placeholders not yet filled).
    pub fn template_json(&self) -> &serde_json::Value {
        &self.template
    }
}

/// NATS subject matching: `*` matches one token, a final `>` one or more.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The current set of compiled triggers (replaced as CaptureTriggers change).
#[derive(Debug)]
pub struct TriggerSet {
    current: RwLock<Arc<Vec<Arc<CompiledTrigger>>>>,
    ready: tokio::sync::watch::Sender<bool>,
}

impl Default for TriggerSet {
    fn default() -> Self {
        Self {
            current: RwLock::default(),
            ready: tokio::sync::watch::channel(false).0,
        }
    }
}

impl TriggerSet {
    /// Marks the set as loaded (the first full list of CaptureTriggers is in).
    pub fn set_ready(&self) {
        self.ready.send_replace(true);
    }

    /// Whether the set is loaded.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the set is loaded.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// A snapshot.
    pub fn snapshot(&self) -> Arc<Vec<Arc<CompiledTrigger>>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the set.
    pub fn replace(&self, triggers: Vec<Arc<CompiledTrigger>>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(triggers);
    }

    /// The trigger `namespace/name`, if loaded.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<CompiledTrigger>> {
        self.snapshot()
            .iter()
            .find(|t| t.namespace == namespace && t.name == name)
            .cloned()
    }
}

#[cfg(test)]
pub(crate) mod tests;
