//! The captures of `nightcap local` and their status, kept as an API server would keep them:
//! created from the configuration (UID, generation, finalizer), status merge patches, deletion
//! and release; written to the status file, logged when the phase changes, printed at the end.

use std::{collections::BTreeMap, path::PathBuf};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use nightcap_api::{PacketCapture, Phase};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::replace_file;
use crate::{
    labels,
    plan::{EventKind, EventNote},
};

/// A capture's namespace and name.
pub(super) type CaptureKey = (String, String);

pub(super) fn key_of(pc: &PacketCapture) -> CaptureKey {
    (pc.namespace().unwrap_or_default(), pc.name_any())
}

/// `namespace/name`.
pub(super) fn show(key: &CaptureKey) -> String {
    format!("{}/{}", key.0, key.1)
}

/// Every capture, live or released.
pub(super) struct Captures {
    live: BTreeMap<CaptureKey, PacketCapture>,
    /// Captures released after deletion, with their last status.
    done: Vec<PacketCapture>,
    /// The phase last logged.
    phases: BTreeMap<CaptureKey, Option<Phase>>,
    status_file: Option<PathBuf>,
    status_written: Option<Vec<u8>>,
}

impl Captures {
    /// No captures yet; the status goes to `status_file`, if any.
    pub fn new(status_file: Option<PathBuf>) -> Self {
        Self {
            live: BTreeMap::new(),
            done: Vec::new(),
            phases: BTreeMap::new(),
            status_file,
            status_written: None,
        }
    }

    /// The live captures' keys.
    pub fn keys(&self) -> Vec<CaptureKey> {
        self.live.keys().cloned().collect()
    }

    /// A live capture.
    pub fn get(&self, key: &CaptureKey) -> Option<&PacketCapture> {
        self.live.get(key)
    }

    /// Whether no capture is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Whether every live capture has finished.
    pub fn all_finished(&self) -> bool {
        self.live.values().all(|pc| {
            pc.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(Phase::is_finished)
        })
    }

    /// Brings the live captures in line with `wanted`: new captures get a UID and the
    /// finalizer; captures not wanted are deleted; edited specs bump the generation. A capture
    /// finished before and still wanted is not run again unless `rerun_finished`.
    pub fn sync(&mut self, wanted: &[PacketCapture], rerun_finished: bool, now: Timestamp) {
        let now = Time(now);
        let wanted: BTreeMap<CaptureKey, &PacketCapture> =
            wanted.iter().map(|pc| (key_of(pc), pc)).collect();
        for (key, pc) in &mut self.live {
            if pc.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match wanted.get(key) {
                None => {
                    info!(capture = %show(key), "Removed from the configuration: stopping it.");
                    pc.metadata.deletion_timestamp = Some(now.clone());
                }
                Some(want) if want.spec != pc.spec => {
                    pc.spec = want.spec.clone();
                    pc.metadata.generation = Some(pc.metadata.generation.unwrap_or(1) + 1);
                }
                Some(_) => {}
            }
        }
        for (key, want) in wanted {
            if self.live.contains_key(&key) {
                continue;
            }
            if !rerun_finished && self.done.iter().any(|d| key_of(d) == key) {
                continue;
            }
            let mut pc = want.clone();
            pc.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
            pc.metadata.generation = Some(1);
            pc.metadata.creation_timestamp = Some(now.clone());
            pc.metadata.finalizers = Some(vec![labels::FINALIZER.to_string()]);
            pc.status = None;
            info!(capture = %show(&key), uid = %pc.uid().unwrap_or_default(), "New capture.");
            self.live.insert(key, pc);
        }
    }

    /// Deletes every live capture (shutting down).
    pub fn delete_all(&mut self, now: Timestamp) {
        for pc in self.live.values_mut() {
            pc.metadata.deletion_timestamp.get_or_insert(Time(now));
        }
    }

    /// JSON merge patch on a capture's status (as the API server's status subresource).
    pub fn merge(&mut self, key: &CaptureKey, patch: &Value) {
        let Some(pc) = self.live.get_mut(key) else {
            return;
        };
        let Ok(mut doc) = serde_json::to_value(&*pc) else {
            return;
        };
        json_patch::merge(&mut doc, patch);
        match serde_json::from_value::<PacketCapture>(doc) {
            Ok(new) => pc.status = new.status,
            Err(error) => {
                warn!(capture = %show(key), %error, "Ignoring a status update that does not fit the status.")
            }
        }
    }

    /// Removes the finalizer: the capture is gone, its last status is kept for the report.
    /// Returns whether it was live.
    pub fn release(&mut self, key: &CaptureKey) -> bool {
        let Some(mut pc) = self.live.remove(key) else {
            return false;
        };
        pc.metadata.finalizers = None;
        self.log_phase_of(key, &pc);
        self.phases.remove(key);
        self.done.push(pc);
        true
    }

    /// Logs the capture's phase when it changed.
    pub fn log_phase(&mut self, key: &CaptureKey) {
        if let Some(pc) = self.live.get(key).cloned() {
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
        self.done.iter().chain(self.live.values())
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
}

/// An Event on a capture, logged.
pub(super) fn event(key: &CaptureKey, note: &EventNote) {
    let job = note.job.as_deref().unwrap_or("");
    match note.kind {
        EventKind::Normal => {
            info!(capture = %show(key), reason = note.reason, job, "{}", note.note)
        }
        EventKind::Warning => {
            warn!(capture = %show(key), reason = note.reason, job, "{}", note.note)
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
mod tests {
    use nightcap_api::PacketCaptureSpec;

    use super::*;

    fn capture(name: &str, duration: &str) -> PacketCapture {
        let mut pc = PacketCapture::new(
            name,
            PacketCaptureSpec {
                duration: Some(duration.into()),
                ..PacketCaptureSpec::default()
            },
        );
        pc.metadata.namespace = Some("shop".into());
        pc
    }

    fn key(name: &str) -> CaptureKey {
        ("shop".into(), name.into())
    }

    #[test]
    fn captures_live_like_api_objects() {
        let now = Timestamp::from_second(1_800_000_000).expect("time");
        let mut c = Captures::new(None);
        c.sync(&[capture("a", "1m"), capture("b", "1m")], false, now);
        let a = c.get(&key("a")).expect("a is live");
        assert!(a.uid().is_some_and(|u| !u.is_empty()));
        assert_eq!(a.metadata.generation, Some(1));
        assert_eq!(a.finalizers(), [labels::FINALIZER]);

        // An edit bumps the generation; a capture gone from the file is deleted.
        c.sync(&[capture("a", "2m")], false, now);
        let a = c.get(&key("a")).expect("a is live");
        assert_eq!(a.metadata.generation, Some(2));
        assert_eq!(a.spec.duration.as_deref(), Some("2m"));
        assert!(
            c.get(&key("b"))
                .is_some_and(|b| b.metadata.deletion_timestamp.is_some())
        );

        c.merge(&key("a"), &json!({"status": {"phase": "Succeeded"}}));
        c.merge(&key("a"), &json!({"status": {"phase": 7}}));
        let phase = |c: &Captures| c.get(&key("a")).and_then(|a| a.status.as_ref()?.phase);
        assert_eq!(
            phase(&c),
            Some(Phase::Succeeded),
            "a patch that does not fit is ignored"
        );

        c.delete_all(now);
        assert!(
            c.get(&key("a"))
                .is_some_and(|a| a.metadata.deletion_timestamp.is_some())
        );
        assert!(c.release(&key("a")));
        assert!(!c.release(&key("a")));
        c.sync(&[capture("a", "2m")], false, now);
        assert!(
            c.get(&key("a")).is_none(),
            "a finished capture is not run again"
        );
        c.sync(&[capture("a", "2m")], true, now);
        assert!(c.get(&key("a")).is_some(), "unless finished ones run again");
    }

    #[test]
    fn the_status_file_is_replaced_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("status.json");
        let mut c = Captures::new(Some(path.clone()));
        c.sync(&[capture("a", "1m")], false, Timestamp::now());
        c.write_status();
        let text = std::fs::read_to_string(&path).expect("status file");
        let all: Vec<Value> = serde_json::from_str(&text).expect("JSON");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0]["name"], "a");
        let leftovers = std::fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }
}
