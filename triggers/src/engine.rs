//! The rule engine: for each event, every matching CaptureTrigger decides — refuse, dedup,
//! throttle, create or stop — and the decision is applied through the [`CaptureSink`].
//!
//! Order of checks for a firing event: namespace claim, rendering + validation, then (in the
//! ledger, atomically) existing capture, creation in flight, cooldown, trigger/namespace/cluster
//! limits. Only then is the capture created; AlreadyExists from the API server is the durable
//! dedup behind the in-memory one.

use std::sync::Arc;

use futures::future::join_all;
use jiff::SignedDuration;
use nightcap_api::TriggerRef;
use tracing::{debug, info, warn};

use crate::{
    clock::SharedClock,
    decision::{Decision, Outcome, Reason},
    event::{AlertStatus, TriggerEvent},
    labels,
    ledger::{Admission, Limits, ObjKey, Origin, SharedLedger, Tracked},
    report::Reporter,
    rules::{self, CompiledTrigger, RenderError, TriggerSet},
    sink::{CaptureSink, CreateResult},
};

/// Cluster-level limits (the per-trigger ones are in each CaptureTrigger).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineLimits {
    /// Running triggered captures per namespace.
    pub per_namespace: Option<u32>,
    /// Running triggered captures in the cluster.
    pub cluster: Option<u32>,
}

/// The rule engine.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    triggers: Arc<TriggerSet>,
    ledger: Arc<SharedLedger>,
    sink: Arc<dyn CaptureSink>,
    reporter: Reporter,
    clock: SharedClock,
    limits: EngineLimits,
}

impl Engine {
    /// An engine over these parts.
    pub fn new(
        triggers: Arc<TriggerSet>,
        ledger: Arc<SharedLedger>,
        sink: Arc<dyn CaptureSink>,
        reporter: Reporter,
        clock: SharedClock,
        limits: EngineLimits,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                triggers,
                ledger,
                sink,
                reporter,
                clock,
                limits,
            }),
        }
    }

    /// The reporter (metrics).
    pub fn reporter(&self) -> &Reporter {
        &self.inner.reporter
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<SharedLedger> {
        &self.inner.ledger
    }

    /// The triggers.
    pub fn triggers(&self) -> &Arc<TriggerSet> {
        &self.inner.triggers
    }

    /// Handles events (e.g. the alerts of one Alertmanager notification); decisions of all of
    /// them, in order.
    pub async fn handle(&self, events: &[TriggerEvent]) -> Vec<Decision> {
        self.inner.ledger.wait_ready().await;
        self.inner.triggers.wait_ready().await;
        let mut out = Vec::new();
        for d in join_all(events.iter().map(|e| self.handle_one(e))).await {
            out.extend(d);
        }
        out
    }

    /// Handles one event: one decision per matching trigger (none when nothing matches).
    pub async fn handle_one(&self, event: &TriggerEvent) -> Vec<Decision> {
        let triggers = self.inner.triggers.snapshot();
        let matching: Vec<_> = triggers.iter().filter(|t| t.matches(event)).collect();
        if matching.is_empty() {
            debug!(event = %event.id, source = %event.source, "No trigger matches the event.");
        }
        join_all(matching.into_iter().map(|t| async move {
            let d = self.decide(t, event).await;
            let now = self.inner.clock.now();
            self.inner
                .reporter
                .decision(t, &d, event.source.kind(), now);
            log(&d, event);
            d
        }))
        .await
    }

    async fn decide(&self, t: &CompiledTrigger, event: &TriggerEvent) -> Decision {
        let decision = |outcome, reason, capture: Option<&str>, message: String| Decision {
            decision: outcome,
            reason,
            namespace: t.namespace.clone(),
            trigger: t.name.clone(),
            capture: capture.map(str::to_owned),
            message,
        };
        if let Some(ns) = &event.namespace
            && *ns != t.namespace
        {
            return decision(
                Outcome::Refused,
                Reason::OtherNamespace,
                None,
                format!(
                    "the event is about namespace {ns:?}; trigger {}/{} only creates captures in \
                     its own namespace (create the trigger in {ns:?} instead)",
                    t.namespace, t.name
                ),
            );
        }
        if event.status == AlertStatus::Resolved {
            return self.resolve(t, event).await;
        }
        let now = self.inner.clock.now();
        let rendered = match rules::render(t, event, now) {
            Ok(r) => r,
            Err(e) => {
                let reason = match e {
                    RenderError::Template(_) => Reason::TemplateFailed,
                    RenderError::Spec(_) | RenderError::Invalid(_) => Reason::InvalidCapture,
                };
                return decision(
                    Outcome::Refused,
                    reason,
                    None,
                    format!("event {}: {e}", event.id),
                );
            }
        };
        let key = ObjKey::new(&t.namespace, &rendered.name);
        let spec = &t.object.spec;
        let limits = Limits {
            per_trigger: spec.max_concurrent,
            per_namespace: self.inner.limits.per_namespace,
            cluster: self.inner.limits.cluster,
            cooldown: spec
                .dedup
                .as_ref()
                .and_then(|d| d.cooldown_seconds)
                .filter(|s| *s > 0)
                .map(|s| SignedDuration::from_secs(i64::from(s))),
        };
        let admission =
            self.inner
                .ledger
                .lock()
                .admit(&key, &t.label, &rendered.key_hash, &limits, now);
        let name = Some(rendered.name.as_str());
        let throttled = |reason, message| decision(Outcome::Throttled, reason, name, message);
        match admission {
            Admission::Exists => decision(
                Outcome::Deduplicated,
                Reason::AlreadyExists,
                name,
                format!("capture {} exists for key {}", rendered.name, rendered.key),
            ),
            Admission::InFlight(mut rx) => {
                let ok = matches!(
                    rx.wait_for(Option::is_some).await.map(|v| *v),
                    Ok(Some(true))
                );
                if ok {
                    decision(
                        Outcome::Deduplicated,
                        Reason::InFlight,
                        name,
                        format!(
                            "capture {} was created for a copy of this event",
                            rendered.name
                        ),
                    )
                } else {
                    decision(
                        Outcome::Failed,
                        Reason::ApiUnavailable,
                        name,
                        format!(
                            "creating capture {} failed for a copy of this event; retry",
                            rendered.name
                        ),
                    )
                }
            }
            Admission::Cooldown { last, until } => throttled(
                Reason::Cooldown,
                format!(
                    "key {} created a capture at {last}; cooldown until {until}",
                    rendered.key
                ),
            ),
            Admission::TriggerFull(max) => throttled(
                Reason::TriggerMaxConcurrent,
                format!("{max} captures of this trigger are running (spec.maxConcurrent)"),
            ),
            Admission::NamespaceFull(max) => throttled(
                Reason::NamespaceMaxConcurrent,
                format!(
                    "{max} triggered captures are running in namespace {} (limit of the triggers component)",
                    t.namespace
                ),
            ),
            Admission::ClusterFull(max) => throttled(
                Reason::ClusterMaxConcurrent,
                format!(
                    "{max} triggered captures are running in the cluster (limit of the triggers component)"
                ),
            ),
            Admission::Admitted => self.create(t, event, rendered, key).await,
        }
    }

    async fn create(
        &self,
        t: &CompiledTrigger,
        event: &TriggerEvent,
        rendered: rules::Rendered,
        key: ObjKey,
    ) -> Decision {
        let origin = TriggerRef {
            source: event.source.kind().to_owned(),
            name: Some(t.name.clone()),
            event_id: Some(event.id.clone()),
            dedup_key: Some(rendered.key.clone()),
        };
        let placeholder = Tracked {
            origin: Origin::Trigger {
                trigger: t.label.clone(),
                key_hash: Some(rendered.key_hash.clone()),
            },
            phase: None,
            created: Some(self.inner.clock.now()),
            completed: None,
            scheduled: None,
            stop_requested: false,
        };
        let result = self.inner.sink.create(rendered.capture, origin).await;
        let mk = |outcome, reason, message| Decision {
            decision: outcome,
            reason,
            namespace: t.namespace.clone(),
            trigger: t.name.clone(),
            capture: Some(rendered.name.clone()),
            message,
        };
        match result {
            Ok(CreateResult::Created(obj)) => {
                let created = placeholder.created;
                let mut tracked = Tracked::from_capture(&obj).unwrap_or(placeholder);
                tracked.created = tracked.created.or(created);
                self.inner.ledger.lock().created(key, tracked);
                let waited = self.inner.clock.now().duration_since(event.received);
                self.inner
                    .reporter
                    .metrics()
                    .create_latency(event.source.kind(), waited.as_secs_f64().max(0.0));
                mk(
                    Outcome::Created,
                    Reason::CaptureCreated,
                    format!(
                        "created capture {} for event {} ({})",
                        rendered.name, event.id, event.source
                    ),
                )
            }
            Ok(CreateResult::AlreadyExists) => {
                self.inner.ledger.lock().exists(key, placeholder);
                mk(
                    Outcome::Deduplicated,
                    Reason::AlreadyExists,
                    format!("capture {} exists for key {}", rendered.name, rendered.key),
                )
            }
            Err(e) => {
                self.inner.ledger.lock().release(&key);
                if e.is_permanent() {
                    mk(
                        Outcome::Refused,
                        Reason::RejectedByApi,
                        format!("the API server refused capture {}: {e}", rendered.name),
                    )
                } else {
                    mk(
                        Outcome::Failed,
                        Reason::ApiUnavailable,
                        format!(
                            "could not create capture {}: {e}; the event will be retried",
                            rendered.name
                        ),
                    )
                }
            }
        }
    }

    async fn resolve(&self, t: &CompiledTrigger, event: &TriggerEvent) -> Decision {
        let mk = |outcome, reason, capture: Option<String>, message: String| Decision {
            decision: outcome,
            reason,
            namespace: t.namespace.clone(),
            trigger: t.name.clone(),
            capture,
            message,
        };
        if !t.object.spec.stop_on_resolved {
            return mk(
                Outcome::Ignored,
                Reason::NothingToStop,
                None,
                "resolved; the trigger does not stop captures on resolve (spec.stopOnResolved)"
                    .into(),
            );
        }
        let name = match rules::dedup_key(t, event) {
            Ok(k) => {
                labels::trigger_capture_name(&t.namespace, &t.name, &k, &rules::episode(event))
            }
            Err(e) => {
                return mk(
                    Outcome::Ignored,
                    Reason::NothingToStop,
                    None,
                    format!("resolved; {e}"),
                );
            }
        };
        let key = ObjKey::new(&t.namespace, &name);
        let running = self
            .inner
            .ledger
            .lock()
            .get(&key)
            .is_some_and(|c| c.running() && !c.stop_requested);
        if !running {
            return mk(
                Outcome::Ignored,
                Reason::NothingToStop,
                Some(name.clone()),
                format!("resolved; capture {name} is not running"),
            );
        }
        let why = format!("alert resolved (event {})", event.id);
        match self.inner.sink.stop(&t.namespace, &name, &why).await {
            Ok(true) => mk(
                Outcome::Stopped,
                Reason::StopRequested,
                Some(name.clone()),
                format!("asked capture {name} to stop: {why}"),
            ),
            Ok(false) => mk(
                Outcome::Ignored,
                Reason::NothingToStop,
                Some(name.clone()),
                format!("resolved; capture {name} no longer exists"),
            ),
            Err(e) => mk(
                Outcome::Failed,
                Reason::ApiUnavailable,
                Some(name.clone()),
                format!("could not stop capture {name}: {e}"),
            ),
        }
    }
}

fn log(d: &Decision, event: &TriggerEvent) {
    let trigger = format!("{}/{}", d.namespace, d.trigger);
    let capture = d.capture.as_deref().unwrap_or("-");
    match d.decision {
        Outcome::Created | Outcome::Stopped => info!(
            %trigger, capture, event = %event.id, source = %event.source,
            decision = %d.decision, reason = d.reason.as_str(), "{}.", capitalised(&d.message)
        ),
        Outcome::Refused | Outcome::Failed => warn!(
            %trigger, capture, event = %event.id, source = %event.source,
            decision = %d.decision, reason = d.reason.as_str(), "{}.", capitalised(&d.message)
        ),
        _ => debug!(
            %trigger, capture, event = %event.id, source = %event.source,
            decision = %d.decision, reason = d.reason.as_str(), "{}.", capitalised(&d.message)
        ),
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests;
