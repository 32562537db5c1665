//! Applies planned actions to the cluster: status patches, Jobs, idle marks, Events.

use std::time::Duration;

use k8s_openapi::api::{batch::v1::Job, core::v1::ObjectReference};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::events::{Event, EventType},
};
use nightcap_api::PacketCapture;
use serde_json::json;
use tracing::{info, warn};

use super::Context;
use crate::{
    Error, Result,
    job::{build_job, job_namespace},
    labels,
    plan::{Action, EventKind, EventNote, JobRequest, StopJob},
};

/// Longest an API call of the executor may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

async fn timed<T>(
    action: impl Into<String>,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T> {
    let action = action.into();
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => r.map_err(|source| Error::Kube { action, source }),
        Err(_) => Err(Error::Timeout { action }),
    }
}

fn is_status(e: &Error, code: u16) -> bool {
    matches!(e, Error::Kube { source: kube::Error::Api(s), .. } if s.code == code)
}

impl Context {
    /// Applies `actions` in order; returns the requested requeue. Stops at the first failure (the
    /// controller plans again after an error, so nothing is lost).
    pub(super) async fn apply(
        &self,
        capture: &PacketCapture,
        actions: Vec<Action>,
    ) -> Result<Option<Duration>> {
        let mut requeue = None;
        for action in actions {
            match action {
                Action::UpdateStatus(update) => {
                    self.patch_status(capture, &update.to_merge_patch()).await?
                }
                Action::CreateJob(req) => self.create_job(capture, &req).await?,
                Action::StopJob(stop) => self.stop_job(capture, &stop).await?,
                Action::MarkJobIdle { job, since, .. } => {
                    self.annotate_job(capture, &job, labels::IDLE_SINCE, json!(since.to_string()))
                        .await?;
                }
                Action::ClearJobIdle { job, .. } => {
                    self.annotate_job(capture, &job, labels::IDLE_SINCE, serde_json::Value::Null)
                        .await?;
                }
                Action::MarkJobEnded { job, .. } => {
                    self.annotate_job(capture, &job, labels::END_RECORDED, json!("true"))
                        .await?;
                }
                Action::Event(note) => {
                    let related = note
                        .job
                        .as_ref()
                        .map(|name| self.job_ref_by_name(capture, name));
                    self.publish(capture, &note, related).await;
                }
                Action::ReleaseFinalizer => {} // the finalizer helper removes it
                Action::RequeueAfter(d) => requeue = Some(d),
            }
        }
        Ok(requeue)
    }

    async fn patch_status(&self, capture: &PacketCapture, patch: &serde_json::Value) -> Result<()> {
        let api: Api<PacketCapture> = Api::namespaced(
            self.client.clone(),
            &capture.namespace().unwrap_or_default(),
        );
        let name = capture.name_any();
        timed(
            format!("patching the status of PacketCapture {name}"),
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch)),
        )
        .await
        .map(drop)
    }

    fn job_api(&self, capture: &PacketCapture) -> Result<Api<Job>> {
        Ok(Api::namespaced(
            self.client.clone(),
            &job_namespace(capture, &self.jobs)?,
        ))
    }

    async fn create_job(&self, capture: &PacketCapture, req: &JobRequest) -> Result<()> {
        let job = build_job(capture, req, &self.jobs)?;
        let api = self.job_api(capture)?;
        match timed(
            format!("creating capture Job {} on node {}", req.name, req.node),
            api.create(&PostParams::default(), &job),
        )
        .await
        {
            Ok(created) => {
                self.metrics.job_started();
                info!(job = %req.name, node = %req.node, "Capture Job created.");
                let note = EventNote {
                    kind: EventKind::Normal,
                    reason: "JobStarted",
                    job: None,
                    note: format!(
                        "Started capture Job {} on node {} for {}.",
                        req.name,
                        req.node,
                        if req.pods.is_empty() {
                            "the node".to_string()
                        } else {
                            req.pods.join(", ")
                        }
                    ),
                };
                self.publish(capture, &note, Some(job_ref(&created))).await;
                Ok(())
            }
            // Created before (a restarted scheduler, a stale cache): nothing to do.
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn stop_job(&self, capture: &PacketCapture, stop: &StopJob) -> Result<()> {
        let api = self.job_api(capture)?;
        match timed(
            format!("stopping capture Job {} on node {}", stop.name, stop.node),
            api.delete(&stop.name, &DeleteParams::foreground()),
        )
        .await
        {
            Ok(_) => {
                self.metrics.job_stopped(stop.reason.as_str());
                info!(job = %stop.name, node = %stop.node, reason = %stop.reason, "Capture Job stopped.");
                let note = EventNote {
                    kind: EventKind::Normal,
                    reason: "JobStopped",
                    job: None,
                    note: format!(
                        "Stopped capture Job {} on node {} ({}); it uploads its last file before it exits.",
                        stop.name, stop.node, stop.reason
                    ),
                };
                let related = self.job_ref_by_name(capture, &stop.name);
                self.publish(capture, &note, Some(related)).await;
                Ok(())
            }
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn job_ref_by_name(&self, capture: &PacketCapture, name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("batch/v1".into()),
            kind: Some("Job".into()),
            name: Some(name.into()),
            namespace: job_namespace(capture, &self.jobs).ok(),
            ..ObjectReference::default()
        }
    }

    async fn annotate_job(
        &self,
        capture: &PacketCapture,
        job: &str,
        key: &str,
        value: serde_json::Value,
    ) -> Result<()> {
        let api = self.job_api(capture)?;
        let patch = json!({ "metadata": { "annotations": { key: value } } });
        match timed(
            format!("annotating capture Job {job}"),
            api.patch(job, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await
        {
            Err(e) if is_status(&e, 404) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Records an Event; a failure is logged, never fatal.
    async fn publish(
        &self,
        capture: &PacketCapture,
        note: &EventNote,
        related: Option<ObjectReference>,
    ) {
        let event = Event {
            type_: match note.kind {
                EventKind::Normal => EventType::Normal,
                EventKind::Warning => EventType::Warning,
            },
            reason: note.reason.into(),
            note: Some(truncate(&note.note, 1000)),
            action: "Reconcile".into(),
            secondary: related,
        };
        let reference = capture.object_ref(&());
        if let Err(error) = self.recorder.publish(&event, &reference).await {
            warn!(%error, reason = note.reason, "Failed to record an Event.");
        }
    }
}

fn job_ref(job: &Job) -> ObjectReference {
    job.object_ref(&())
}

/// At most `max` bytes, cut at a character boundary.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
