//! The cron source: CaptureSchedules run with Kubernetes CronJob semantics. [`plan`] decides
//! (pure), [`CronController`] applies: creates the run's capture (deterministic name, owned by
//! the schedule), stops replaced ones, deletes history beyond the limits, writes the status and
//! records Events. It wakes at the next fire time (from the injected clock) or when a schedule
//! or one of its captures changes.

pub mod config;
pub mod plan;

use std::{collections::BTreeMap, sync::Arc};

use futures::{StreamExt, future::BoxFuture};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, reflector, watcher},
};
use nightcap_api::{
    CaptureSchedule, CaptureScheduleStatus, PacketCapture, TriggerRef,
    validation::{ValidationOptions, validate_packet_capture},
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

pub use config::CronConfig;
pub use plan::{CronAction, CronPlan, PlannedEvent, plan};

use crate::{
    clock::SharedClock,
    labels,
    ledger::{ObjKey, SharedLedger, Tracked},
    report::{Note, Reporter, capture_ref},
    sink::{CaptureSink, CreateResult, FIELD_MANAGER},
};

/// Where a schedule's status goes: the status subresource in a cluster
/// ([`KubeScheduleStatus`]), the state database of `nightcap local`.
pub trait ScheduleStatusWriter: Send + Sync + 'static {
    /// Writes `status` (the whole status the plan wants) for `schedule`; false when it could
    /// not be written (the run is planned again from the old status).
    fn write_status<'a>(
        &'a self,
        schedule: &'a CaptureSchedule,
        status: &'a CaptureScheduleStatus,
    ) -> BoxFuture<'a, bool>;
}

/// [`ScheduleStatusWriter`] on the Kubernetes API (merge patch of the status subresource).
#[derive(Clone)]
pub struct KubeScheduleStatus {
    client: Client,
}

impl std::fmt::Debug for KubeScheduleStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeScheduleStatus")
    }
}

impl KubeScheduleStatus {
    /// Writes with `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl ScheduleStatusWriter for KubeScheduleStatus {
    fn write_status<'a>(
        &'a self,
        schedule: &'a CaptureSchedule,
        s: &'a CaptureScheduleStatus,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let api: Api<CaptureSchedule> = Api::namespaced(
                self.client.clone(),
                &schedule.namespace().unwrap_or_default(),
            );
            // Arrays are always sent (an empty `active` must clear the list); times only when
            // set (they only move forward, and a null could wipe a newer value written
            // meanwhile).
            let mut status = serde_json::json!({"active": s.active, "conditions": s.conditions});
            if let Some(t) = &s.last_schedule_time {
                status["lastScheduleTime"] = serde_json::json!(t);
            }
            if let Some(t) = &s.last_successful_time {
                status["lastSuccessfulTime"] = serde_json::json!(t);
            }
            let patch = serde_json::json!({ "status": status });
            let pp = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            match api
                .patch_status(&schedule.name_any(), &pp, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => true,
                Err(error) => {
                    warn!(schedule = %schedule.name_any(), %error, "Could not write the schedule status.");
                    false
                }
            }
        })
    }
}

/// Runs CaptureSchedules.
#[derive(Clone)]
pub struct CronController {
    status: Arc<dyn ScheduleStatusWriter>,
    sink: Arc<dyn CaptureSink>,
    ledger: Arc<SharedLedger>,
    reporter: Reporter,
    clock: SharedClock,
    config: CronConfig,
    missed: Arc<std::sync::Mutex<std::collections::HashMap<(String, String), Timestamp>>>,
    written: Arc<std::sync::Mutex<std::collections::HashMap<String, Written>>>,
}

/// The last status written for a schedule and the resourceVersion it was based on.
#[derive(Debug, Clone)]
struct Written {
    based_on: Option<String>,
    status: CaptureScheduleStatus,
}

/// The capture a schedule's run creates: the template, in the schedule's namespace, owned by the
/// schedule (deleted with it, like a CronJob's Jobs).
pub fn run_capture(schedule: &CaptureSchedule, name: &str, scheduled: Timestamp) -> PacketCapture {
    let tpl = &schedule.spec.template;
    let meta = tpl.metadata.clone().unwrap_or_default();
    let mut l: BTreeMap<String, String> = meta.labels;
    l.insert(
        labels::CREATED_BY.into(),
        labels::CREATED_BY_SCHEDULE.into(),
    );
    l.insert(
        labels::SCHEDULE.into(),
        labels::label_value(&schedule.name_any()),
    );
    l.insert(
        labels::MANAGED_BY.into(),
        labels::MANAGED_BY_TRIGGERS.into(),
    );
    let mut a = meta.annotations;
    a.insert(labels::SCHEDULED_TIME.into(), scheduled.to_string());
    a.insert(labels::SOURCE.into(), "cron".into());
    let owner = OwnerReference {
        api_version: CaptureSchedule::api_version(&()).into_owned(),
        kind: CaptureSchedule::kind(&()).into_owned(),
        name: schedule.name_any(),
        uid: schedule.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    PacketCapture {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: schedule.namespace(),
            labels: Some(l),
            annotations: Some(a),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: tpl.spec.clone(),
        status: None,
    }
}

impl std::fmt::Debug for CronController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CronController")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl CronController {
    /// A controller.
    pub fn new(
        status: Arc<dyn ScheduleStatusWriter>,
        sink: Arc<dyn CaptureSink>,
        ledger: Arc<SharedLedger>,
        reporter: Reporter,
        clock: SharedClock,
        config: CronConfig,
    ) -> Self {
        Self {
            status,
            sink,
            ledger,
            reporter,
            clock,
            config,
            missed: Arc::default(),
            written: Arc::default(),
        }
    }

    /// Watches CaptureSchedules through `client` and runs them until the watch ends (it does
    /// not, normally).
    pub async fn run(self, client: Client) {
        let api: Api<CaptureSchedule> = Api::all(client);
        let (store, writer) = reflector::store();
        let (changed_tx, changed) = watch::channel(0u64);
        let stream = reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .for_each(move |ev| {
                if let Err(error) = ev {
                    warn!(%error, "CaptureSchedule watch failed; retrying.");
                }
                changed_tx.send_modify(|n| *n += 1);
                async {}
            });
        let watch_task = tokio::spawn(stream);
        if store.wait_until_ready().await.is_err() {
            return;
        }
        self.run_on(move || store.state(), changed).await;
        watch_task.abort();
    }

    /// Runs the schedules `schedules()` returns, looking again when `changed` ticks, a capture
    /// of a schedule changes or a run is due. Returns when `changed` closes.
    pub async fn run_on(
        self,
        schedules: impl Fn() -> Vec<Arc<CaptureSchedule>> + Send,
        mut changed: watch::Receiver<u64>,
    ) {
        self.ledger.wait_ready().await;
        info!("Running CaptureSchedules.");
        let mut captures = self.ledger.schedule_changes();
        loop {
            let schedules = schedules();
            let mut wake: Option<Timestamp> = None;
            for s in &schedules {
                if let Some(t) = self.sync(s).await {
                    wake = Some(wake.map_or(t, |w| w.min(t)));
                }
            }
            let sleep = match wake {
                Some(t) => self.clock.sleep_until(t),
                None => Box::pin(futures::future::pending()),
            };
            tokio::select! {
                () = sleep => {}
                r = changed.changed() => if r.is_err() { break },
                r = captures.changed() => if r.is_err() { break },
            }
        }
    }

    /// Plans and applies one schedule at the clock's now; returns when to look again.
    pub async fn sync(&self, schedule: &CaptureSchedule) -> Option<Timestamp> {
        // The watch may lag behind our own status writes. While the watched object is still the
        // one a write was based on, plan from what was written; and never let the times go
        // back to older values than written (the watch may show an intermediate version).
        let uid = schedule.uid().unwrap_or_default();
        let rv = schedule.resource_version();
        let mut fresh = schedule.clone();
        if let Some(w) = self
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&uid)
        {
            if w.based_on == rv {
                fresh.status = Some(w.status.clone());
            }
            let st = fresh.status.get_or_insert_with(Default::default);
            let newer = |a: &Option<Time>, b: &Option<Time>| {
                a.as_ref().map(|t| t.0) > b.as_ref().map(|t| t.0)
            };
            if newer(&w.status.last_schedule_time, &st.last_schedule_time) {
                st.last_schedule_time = w.status.last_schedule_time.clone();
            }
            if newer(&w.status.last_successful_time, &st.last_successful_time) {
                st.last_successful_time = w.status.last_successful_time.clone();
            }
        }
        let schedule = &fresh;
        let ns = schedule.namespace().unwrap_or_default();
        let owned = self
            .ledger
            .lock()
            .owned_by_schedule(&ns, &labels::label_value(&schedule.name_any()));
        let now = self.clock.now();
        let mut p = plan(schedule, &owned, now);
        let retry = now + SignedDuration::from_secs(self.config.retry_seconds as i64);
        let reference = schedule.object_ref(&());
        for e in std::mem::take(&mut p.events) {
            self.note(&reference, None, e.warning, e.reason, e.message);
        }
        if let Some((last, n)) = p.missed {
            let key = (ns.clone(), schedule.name_any());
            let new = {
                let mut reported = self.missed.lock().unwrap_or_else(|e| e.into_inner());
                reported.insert(key, last) != Some(last)
            };
            if new {
                self.reporter.metrics().cron_run("missed");
                self.note(
                    &reference,
                    None,
                    true,
                    "MissSchedule",
                    format!(
                        "missed {n} scheduled run(s), the last at {last}: later than \
                     startingDeadlineSeconds ({}s)",
                        schedule.spec.starting_deadline_seconds.unwrap_or_default()
                    ),
                );
            }
        } else if let Some(result) = p.skipped {
            self.reporter.metrics().cron_run(result);
        }
        let mut requeue = p.requeue_at;
        for action in std::mem::take(&mut p.actions) {
            match action {
                CronAction::Create { name, scheduled } => {
                    if !self.create(schedule, &name, scheduled, now).await {
                        // Not created (transient): keep the old lastScheduleTime and active list
                        // so the run is tried again.
                        let old = schedule.status.clone().unwrap_or_default();
                        p.status.last_schedule_time = old.last_schedule_time;
                        p.status.active.retain(|n| *n != name);
                        requeue = Some(requeue.map_or(retry, |r| r.min(retry)));
                    }
                }
                CronAction::Stop { name } => {
                    let why = format!(
                        "replaced by a newer run of schedule {} (concurrencyPolicy: Replace)",
                        schedule.name_any()
                    );
                    match self.sink.stop(&ns, &name, &why).await {
                        Ok(_) => self.note(
                            &reference,
                            Some(capture_ref(&ns, &name)),
                            false,
                            "StoppingCapture",
                            format!("asked capture {name} to stop: {why}"),
                        ),
                        Err(e) => {
                            warn!(%ns, capture = %name, error = %e, "Could not stop a replaced capture.")
                        }
                    }
                }
                CronAction::Delete { name } => match self.sink.delete(&ns, &name).await {
                    Ok(true) => self.note(
                        &reference,
                        Some(capture_ref(&ns, &name)),
                        false,
                        "SuccessfulDelete",
                        format!("deleted capture {name} (history limit)"),
                    ),
                    Ok(false) => {}
                    Err(e) => {
                        debug!(%ns, capture = %name, error = %e, "Could not delete a capture beyond the history limit.")
                    }
                },
            }
        }
        if schedule.status.clone().unwrap_or_default() != p.status
            && self.write_status(schedule, &p).await
        {
            self.written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    uid,
                    Written {
                        based_on: rv,
                        status: p.status.clone(),
                    },
                );
        }
        requeue
    }

    /// Creates a run's capture; false when it should be retried.
    async fn create(
        &self,
        schedule: &CaptureSchedule,
        name: &str,
        scheduled: Timestamp,
        now: Timestamp,
    ) -> bool {
        let ns = schedule.namespace().unwrap_or_default();
        let reference = schedule.object_ref(&());
        let pc = run_capture(schedule, name, scheduled);
        let metrics = self.reporter.metrics().clone();
        if let Err(errs) = validate_packet_capture(
            &pc,
            &ValidationOptions {
                now: Some(now),
                ..ValidationOptions::default()
            },
        ) {
            metrics.cron_run("failed");
            self.note(
                &reference,
                None,
                true,
                "FailedCreate",
                format!("the template renders an invalid capture: {errs}"),
            );
            return true;
        }
        let origin = TriggerRef {
            source: "cron".into(),
            name: Some(schedule.name_any()),
            event_id: Some(scheduled.to_string()),
            dedup_key: None,
        };
        match self.sink.create(pc, origin).await {
            Ok(result) => {
                if let CreateResult::Created(obj) = &result
                    && let Some(t) = Tracked::from_capture(obj)
                {
                    self.ledger.lock().upsert(ObjKey::new(&ns, name), t);
                }
                let late = now.duration_since(scheduled).as_secs_f64().max(0.0);
                metrics.create_latency("cron", late);
                metrics.cron_run("created");
                info!(%ns, schedule = %schedule.name_any(), capture = %name, %scheduled, "Created the capture of a scheduled run.");
                self.note(
                    &reference,
                    Some(capture_ref(&ns, name)),
                    false,
                    "SuccessfulCreate",
                    format!("created capture {name} for the run at {scheduled}"),
                );
                true
            }
            Err(e) if e.is_permanent() => {
                metrics.cron_run("failed");
                self.note(
                    &reference,
                    None,
                    true,
                    "FailedCreate",
                    format!("the API server refused capture {name}: {e}"),
                );
                true
            }
            Err(e) => {
                metrics.cron_run("failed");
                warn!(%ns, schedule = %schedule.name_any(), error = %e, "Could not create a scheduled capture; retrying.");
                self.note(
                    &reference,
                    None,
                    true,
                    "FailedCreate",
                    format!("could not create capture {name}: {e}; retrying"),
                );
                false
            }
        }
    }

    async fn write_status(&self, schedule: &CaptureSchedule, p: &CronPlan) -> bool {
        self.status.write_status(schedule, &p.status).await
    }

    fn note(
        &self,
        regarding: &k8s_openapi::api::core::v1::ObjectReference,
        related: Option<k8s_openapi::api::core::v1::ObjectReference>,
        warning: bool,
        reason: &'static str,
        message: String,
    ) {
        self.reporter.note(Note {
            regarding: regarding.clone(),
            related,
            warning,
            reason,
            action: "RunSchedule",
            message,
            tally: None,
            at: self.clock.now(),
        });
    }
}
