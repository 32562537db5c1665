//! The trigger components of `nightcap triggers`, on the state database instead of the
//! Kubernetes API: captures are created through [`StateSink`] (one atomic insert: the dedup),
//! the ledger is fed from the captures table, CaptureSchedules come from the configuration
//! with their runs kept in the state, and Events go to the state's `events` table.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use futures::future::BoxFuture;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use nightcap_api::{
    CaptureSchedule, CaptureScheduleStatus, PacketCapture, PacketCaptureStatus, TriggerRef,
};
use nightcap_triggers::{
    CaptureSink, CreateResult, Error as TriggersError,
    ledger::{ObjKey, Origin, SharedLedger, Tracked},
    report::{Coalescer, Note},
    sources::cron::ScheduleStatusWriter,
};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tracing::warn;

use crate::{
    config::LocalConfig,
    state::{CaptureOrigin, Created, State, StoredEvent},
};

fn store_error(e: crate::Error) -> TriggersError {
    TriggersError::Store(e.to_string())
}

/// [`CaptureSink`] on the state database.
#[derive(Debug, Clone)]
pub(crate) struct StateSink {
    state: Arc<State>,
}

impl StateSink {
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

impl CaptureSink for StateSink {
    fn create(
        &self,
        mut capture: PacketCapture,
        origin: TriggerRef,
    ) -> BoxFuture<'_, nightcap_triggers::Result<CreateResult>> {
        Box::pin(async move {
            let kind = if origin.source == "cron" {
                CaptureOrigin::Schedule
            } else {
                CaptureOrigin::Trigger
            };
            capture.status = Some(PacketCaptureStatus {
                trigger: Some(origin),
                ..PacketCaptureStatus::default()
            });
            let state = self.state.clone();
            let created = state
                .create_capture(capture, kind, Timestamp::now())
                .map_err(store_error)?;
            Ok(match created {
                Created::Created(pc) => CreateResult::Created(pc),
                Created::AlreadyExists => CreateResult::AlreadyExists,
            })
        })
    }

    fn stop<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, nightcap_triggers::Result<bool>> {
        Box::pin(async move {
            let found = self
                .state
                .request_stop(namespace, name, reason)
                .map_err(store_error)?;
            Ok(found.is_some())
        })
    }

    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, nightcap_triggers::Result<bool>> {
        Box::pin(async move {
            let found = self
                .state
                .request_delete(namespace, name, false, Timestamp::now())
                .map_err(store_error)?;
            Ok(found.is_some())
        })
    }
}

/// Keeps the ledger equal to the captures nightcap created, as the capture watch does in a
/// cluster. Ready after the first pass. Runs until the state is dropped.
pub(crate) async fn feed_ledger(state: Arc<State>, ledger: Arc<SharedLedger>) {
    let mut changes = state.subscribe();
    let mut seen: HashMap<(String, String), i64> = HashMap::new();
    let mut ready = false;
    loop {
        match state.versions() {
            Ok(versions) => {
                let mut schedule_touched = false;
                let now: HashSet<(String, String)> = versions
                    .iter()
                    .map(|v| (v.namespace.clone(), v.name.clone()))
                    .collect();
                let gone: Vec<_> = seen.keys().filter(|k| !now.contains(*k)).cloned().collect();
                for k in gone {
                    seen.remove(&k);
                    let mut l = ledger.lock();
                    let key = ObjKey::new(&k.0, &k.1);
                    schedule_touched |= l
                        .get(&key)
                        .is_some_and(|t| matches!(t.origin, Origin::Schedule { .. }));
                    l.remove(&key);
                }
                for v in versions {
                    let k = (v.namespace.clone(), v.name.clone());
                    if seen.get(&k) == Some(&v.rv) {
                        continue;
                    }
                    seen.insert(k, v.rv);
                    if let Ok(Some(pc)) = state.capture(&v.namespace, &v.name)
                        && let Some(t) = Tracked::from_capture(&pc)
                    {
                        schedule_touched |= matches!(t.origin, Origin::Schedule { .. });
                        ledger.lock().upsert(ObjKey::new(v.namespace, v.name), t);
                    }
                }
                if !ready {
                    ready = true;
                    ledger.set_ready();
                    schedule_touched = true;
                }
                if schedule_touched {
                    ledger.schedule_changed();
                }
            }
            Err(error) => warn!(%error, "Cannot read the captures for the trigger ledger."),
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// The configured CaptureSchedules with what the state knows of them (uid, first seen, status).
pub(crate) fn schedules(state: &State, config: &LocalConfig) -> Vec<Arc<CaptureSchedule>> {
    let now = Timestamp::now();
    let mut out = Vec::new();
    for s in &config.schedules {
        let ns = s.namespace().unwrap_or_default();
        match state.schedule(&ns, &s.name_any(), now) {
            Ok(rec) => {
                let mut s = s.clone();
                s.metadata.uid = Some(rec.uid);
                s.metadata.creation_timestamp = Some(Time(rec.created));
                s.status = Some(rec.status);
                out.push(Arc::new(s));
            }
            Err(error) => warn!(schedule = %s.name_any(), %error, "Cannot read a schedule's runs."),
        }
    }
    out
}

/// A tick whenever the configuration changes (the schedules are read again); forgets the
/// runs of schedules no longer configured.
pub(crate) fn schedule_changes(
    state: Arc<State>,
    mut config: watch::Receiver<Arc<LocalConfig>>,
) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        while config.changed().await.is_ok() {
            let keep: Vec<(String, String)> = config
                .borrow()
                .schedules
                .iter()
                .map(|s| (s.namespace().unwrap_or_default(), s.name_any()))
                .collect();
            if let Err(error) = state.retain_schedules(&keep) {
                warn!(%error, "Cannot forget removed schedules.");
            }
            tx.send_modify(|n| *n += 1);
        }
    });
    rx
}

/// [`ScheduleStatusWriter`] on the state.
#[derive(Debug)]
pub(crate) struct StateScheduleStatus {
    pub state: Arc<State>,
}

impl ScheduleStatusWriter for StateScheduleStatus {
    fn write_status<'a>(
        &'a self,
        schedule: &'a CaptureSchedule,
        status: &'a CaptureScheduleStatus,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let ns = schedule.namespace().unwrap_or_default();
            match self
                .state
                .write_schedule_status(&ns, &schedule.name_any(), status)
            {
                Ok(written) => written,
                Err(error) => {
                    warn!(schedule = %schedule.name_any(), %error, "Cannot write the schedule's runs.");
                    false
                }
            }
        })
    }
}

/// Writes the notes of the trigger components as Events in the state (repeats within the
/// window folded, as in a cluster) until the queue closes.
pub(crate) async fn write_events(state: Arc<State>, mut rx: mpsc::Receiver<Note>) {
    let mut coalescer = Coalescer::new(Duration::from_secs(10));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let notes = tokio::select! {
            note = rx.recv() => {
                let Some(note) = note else { return };
                coalescer.push(note, Instant::now()).into_iter().collect::<Vec<_>>()
            }
            _ = tick.tick() => coalescer.flush(Instant::now()),
        };
        for n in notes {
            let e = StoredEvent {
                namespace: n.regarding.namespace.clone().unwrap_or_default(),
                kind: n.regarding.kind.clone().unwrap_or_default(),
                name: n.regarding.name.clone().unwrap_or_default(),
                event_type: if n.warning { "Warning" } else { "Normal" }.into(),
                reason: n.reason.into(),
                message: n.message.clone(),
                related: n.related.as_ref().map(|r| {
                    format!(
                        "{}/{}",
                        r.kind.as_deref().unwrap_or_default(),
                        r.name.as_deref().unwrap_or_default()
                    )
                }),
                count: 1,
                first: n.at,
                last: n.at,
            };
            if let Err(error) = state.record_event(&e) {
                warn!(%error, "Cannot store an Event.");
            }
        }
    }
}
