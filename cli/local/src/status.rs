//! The captures the executor plans, read from and written to the state database as an API
//! server would keep them: configured captures created (uid, generation, finalizer) and kept in
//! line with the file, status merge patches, deletion and release; logged when the phase
//! changes, written to the status file, printed at the end.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::Arc,
};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use nightcap_api::{PacketCapture, Phase};
use nightcap_scheduler::plan::{EventKind, EventNote};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::{
    replace_file,
    state::{CaptureOrigin, Created, State, StoredEvent},
};

/// A capture's namespace and name.
pub(crate) type CaptureKey = (String, String);

pub(crate) fn key_of(pc: &PacketCapture) -> CaptureKey {
    (pc.namespace().unwrap_or_default(), pc.name_any())
}

/// `namespace/name`.
pub(crate) fn show(key: &CaptureKey) -> String {
    format!("{}/{}", key.0, key.1)
}

/// Every capture in the state, as of the last [`Captures::refresh`].
pub(crate) struct Captures {
    state: Arc<State>,
    live: BTreeMap<CaptureKey, (i64, PacketCapture)>,
    /// Captures released in this run, with their last status.
    done: Vec<PacketCapture>,
    /// The phase last logged.
    phases: BTreeMap<CaptureKey, Option<Phase>>,
    status_file: Option<PathBuf>,
    status_written: Option<Vec<u8>>,
}

impl Captures {
    /// The captures of `state`; the status goes to `status_file`, if any.
    pub fn new(state: Arc<State>, status_file: Option<PathBuf>) -> Self {
        Self {
            state,
            live: BTreeMap::new(),
            done: Vec::new(),
            phases: BTreeMap::new(),
            status_file,
            status_written: None,
        }
    }

    /// Reads what changed in the state since the last call.
    pub fn refresh(&mut self) {
        let versions = match self.state.versions() {
            Ok(v) => v,
            Err(error) => {
                warn!(%error, "Cannot read the captures from the state.");
                return;
            }
        };
        let now: BTreeSet<CaptureKey> = versions
            .iter()
            .map(|v| (v.namespace.clone(), v.name.clone()))
            .collect();
        self.live.retain(|k, _| now.contains(k));
        for v in versions {
            let key = (v.namespace, v.name);
            if self.live.get(&key).is_some_and(|(rv, _)| *rv == v.rv) {
                continue;
            }
            match self.state.capture(&key.0, &key.1) {
                Ok(Some(pc)) => {
                    self.live.insert(key, (v.rv, pc));
                }
                Ok(None) => {
                    self.live.remove(&key);
                }
                Err(error) => warn!(capture = %show(&key), %error, "Cannot read a capture."),
            }
        }
    }

    /// Ticks after every write of a capture (the executor's own writes too).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state.subscribe()
    }

    /// The captures' keys.
    pub fn keys(&self) -> Vec<CaptureKey> {
        self.live.keys().cloned().collect()
    }

    /// A capture.
    pub fn get(&self, key: &CaptureKey) -> Option<&PacketCapture> {
        self.live.get(key).map(|(_, pc)| pc)
    }

    /// Whether every capture has finished.
    pub fn all_finished(&self) -> bool {
        self.live.values().all(|(_, pc)| {
            pc.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(Phase::is_finished)
        })
    }

    fn write(&mut self, key: &CaptureKey, edit: impl FnOnce(&mut PacketCapture) -> bool) {
        match self.state.update_capture(&key.0, &key.1, edit) {
            Ok(Some(pc)) => {
                let rv = pc
                    .metadata
                    .resource_version
                    .as_deref()
                    .and_then(|r| r.parse().ok())
                    .unwrap_or_default();
                self.live.insert(key.clone(), (rv, pc));
            }
            Ok(None) => {
                self.live.remove(key);
            }
            Err(error) => warn!(capture = %show(key), %error, "Cannot write a capture."),
        }
    }

    /// Brings the configured captures in line with `wanted`: new ones are created; captures of
    /// the file no longer listed are deleted; edited specs bump the generation. Captures made
    /// at run time (alerts, schedules, the API) are left alone. A configured capture that ran
    /// and is gone (expired, deleted) is not created again while the file lists it with the
    /// same spec.
    pub fn sync(&mut self, wanted: &[PacketCapture], now: Timestamp) {
        let wanted: BTreeMap<CaptureKey, &PacketCapture> =
            wanted.iter().map(|pc| (key_of(pc), pc)).collect();
        for key in self.keys() {
            let configured = matches!(
                self.state.origin(&key.0, &key.1),
                Ok(Some(CaptureOrigin::Config))
            );
            if !configured {
                continue;
            }
            match wanted.get(&key) {
                None => self.write(&key, |pc| {
                    if pc.metadata.deletion_timestamp.is_some() {
                        return false;
                    }
                    info!(capture = %show(&key), "Removed from the configuration: stopping it.");
                    pc.metadata.deletion_timestamp = Some(Time(now));
                    true
                }),
                Some(want) => {
                    let spec = want.spec.clone();
                    self.write(&key, |pc| {
                        if pc.spec == spec || pc.metadata.deletion_timestamp.is_some() {
                            return false;
                        }
                        pc.spec = spec;
                        pc.metadata.generation = Some(pc.metadata.generation.unwrap_or(1) + 1);
                        true
                    });
                }
            }
        }
        let keep: Vec<CaptureKey> = wanted.keys().cloned().collect();
        if let Err(error) = self.state.config_done_retain(&keep) {
            warn!(%error, "Cannot forget captures removed from the file.");
        }
        for (key, want) in wanted {
            if self.live.contains_key(&key) {
                continue;
            }
            let spec = serde_json::to_string(&want.spec).unwrap_or_default();
            if self
                .state
                .config_done_spec(&key.0, &key.1)
                .ok()
                .flatten()
                .is_some_and(|ran| ran == spec)
            {
                continue;
            }
            let mut pc = want.clone();
            pc.status = None;
            match self.state.create_capture(pc, CaptureOrigin::Config, now) {
                Ok(Created::Created(pc)) => {
                    info!(capture = %show(&key), uid = %pc.uid().unwrap_or_default(), "New capture.");
                }
                Ok(Created::AlreadyExists) => {}
                Err(error) => warn!(capture = %show(&key), %error, "Cannot store a capture."),
            }
        }
        self.refresh();
    }

    /// JSON merge patch on a capture's status (as the API server's status subresource).
    pub fn merge(&mut self, key: &CaptureKey, patch: &Value) {
        let key2 = key.clone();
        self.write(key, |pc| {
            let Ok(mut doc) = serde_json::to_value(&*pc) else {
                return false;
            };
            json_patch::merge(&mut doc, patch);
            match serde_json::from_value::<PacketCapture>(doc) {
                Ok(new) if new.status != pc.status => {
                    pc.status = new.status;
                    true
                }
                Ok(_) => false,
                Err(error) => {
                    warn!(capture = %show(&key2), %error, "Ignoring a status update that does not fit the status.");
                    false
                }
            }
        });
    }

    /// Removes the finalizer: the capture is gone from the state; its last status is kept for
    /// the report. Returns whether it existed.
    pub fn release(&mut self, key: &CaptureKey) -> bool {
        let Some((_, mut pc)) = self.live.remove(key) else {
            return false;
        };
        if pc
            .annotations()
            .contains_key(crate::retention::DELETE_FILES)
            && let Some(uid) = pc.uid()
            && let Err(error) = self.state.queue_file_deletion(&key.0, &key.1, &uid)
        {
            warn!(capture = %show(key), %error, "Cannot queue the deletion of its files.");
        }
        if matches!(
            self.state.origin(&key.0, &key.1),
            Ok(Some(CaptureOrigin::Config))
        ) {
            let spec = serde_json::to_string(&pc.spec).unwrap_or_default();
            if let Err(error) = self.state.config_done(&key.0, &key.1, &spec) {
                warn!(capture = %show(key), %error, "Cannot record a finished configured capture.");
            }
        }
        if let Err(error) = self.state.remove_capture(&key.0, &key.1) {
            warn!(capture = %show(key), %error, "Cannot remove a capture from the state.");
        }
        pc.metadata.finalizers = None;
        self.log_phase_of(key, &pc);
        self.phases.remove(key);
        self.done.push(pc);
        true
    }

    /// Logs the capture's phase when it changed.
    pub fn log_phase(&mut self, key: &CaptureKey) {
        if let Some(pc) = self.get(key).cloned() {
            self.log_phase_of(key, &pc);
        }
    }

    fn log_phase_of(&mut self, key: &CaptureKey, pc: &PacketCapture) {
        let status = pc.status.clone().unwrap_or_default();
        if self.phases.get(key) == Some(&status.phase) {
            return;
        }
        self.phases.insert(key.clone(), status.phase);
        let phase = status.phase.map_or("-".to_string(), |p| format!("{p:?}"));
        let message = status.message.unwrap_or_default();
        if status.phase == Some(Phase::Failed) {
            warn!(capture = %show(key), %phase, note = %message, "Capture phase.");
        } else {
            info!(capture = %show(key), %phase, note = %message, "Capture phase.");
        }
    }

    fn all(&self) -> impl Iterator<Item = &PacketCapture> {
        self.done.iter().chain(self.live.values().map(|(_, pc)| pc))
    }

    /// Writes every capture's status to the status file, when it changed.
    pub fn write_status(&mut self) {
        let Some(path) = self.status_file.clone() else {
            return;
        };
        let all: Vec<Value> = self.all().map(summary).collect();
        let bytes = serde_json::to_vec_pretty(&all).unwrap_or_default();
        if self.status_written.as_ref() == Some(&bytes) {
            return;
        }
        match replace_file(&path, &bytes) {
            Ok(()) => self.status_written = Some(bytes),
            Err(error) => warn!(path = %path.display(), %error, "Cannot write the status file."),
        }
    }

    /// Prints one JSON line per capture; returns the exit code (1 when a capture failed).
    pub fn report(&self) -> i32 {
        let mut failed = false;
        for pc in self.all() {
            failed |= pc.status.as_ref().and_then(|s| s.phase) == Some(Phase::Failed);
            println!("{}", summary(pc));
        }
        i32::from(failed)
    }

    /// Records a planner Event on a capture: logged and kept in the state.
    pub fn event(&self, key: &CaptureKey, note: &EventNote, now: Timestamp) {
        let job = note.job.as_deref().unwrap_or("");
        let event_type = match note.kind {
            EventKind::Normal => {
                info!(capture = %show(key), reason = note.reason, job, "{}", note.note);
                "Normal"
            }
            EventKind::Warning => {
                warn!(capture = %show(key), reason = note.reason, job, "{}", note.note);
                "Warning"
            }
        };
        let e = StoredEvent {
            namespace: key.0.clone(),
            kind: "PacketCapture".into(),
            name: key.1.clone(),
            event_type: event_type.into(),
            reason: note.reason.to_string(),
            message: note.note.clone(),
            related: None,
            count: 1,
            first: now,
            last: now,
        };
        if let Err(error) = self.state.record_event(&e) {
            warn!(%error, "Cannot store an Event.");
        }
    }
}

/// What is printed (and written to the status file) for a capture.
fn summary(pc: &PacketCapture) -> Value {
    json!({
        "namespace": pc.namespace(),
        "name": pc.name_any(),
        "uid": pc.uid(),
        "status": pc.status,
    })
}

#[cfg(test)]
mod tests;
