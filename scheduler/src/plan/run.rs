//! One planning pass over one capture.

use std::{borrow::Cow, collections::BTreeSet, time::Duration};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use nightcap_api::{
    NodeCaptureState, PacketCapture, PacketCaptureSpec, PacketCaptureStatus, Phase,
    capture::STOP_ANNOTATION,
    validation::{ValidationOptions, validate_packet_capture},
};

use super::{
    Action, EventKind, EventNote, PlanConfig, StopJob, StopReason,
    facts::{JobFact, JobState, NodeFact, TargetFact},
    name::job_name,
    status::{CAPTURING, COMPLETE, Draft, FAILED, SCHEDULED, SPEC_CHANGED, spec_hash},
    window::{add, requested_start, until, window_end},
};

pub(crate) struct Run<'a> {
    cfg: &'a PlanConfig,
    capture: &'a PacketCapture,
    status: Cow<'a, PacketCaptureStatus>,
    targets: &'a [TargetFact],
    nodes: &'a [NodeFact],
    /// The capture's own Jobs.
    jobs: Vec<&'a JobFact>,
    now: Timestamp,
    draft: Draft,
    actions: Vec<Action>,
    events: Vec<EventNote>,
    requeue: Option<Duration>,
}

impl<'a> Run<'a> {
    pub fn new(
        cfg: &'a PlanConfig,
        capture: &'a PacketCapture,
        targets: &'a [TargetFact],
        nodes: &'a [NodeFact],
        jobs: &'a [JobFact],
        now: Timestamp,
    ) -> Self {
        let status = match &capture.status {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(PacketCaptureStatus::default()),
        };
        let draft = Draft::new(&status, now, capture.metadata.generation);
        Self {
            cfg,
            capture,
            status,
            targets,
            nodes,
            jobs: own_jobs(capture.metadata.uid.as_deref(), jobs),
            now,
            draft,
            actions: Vec::new(),
            events: Vec::new(),
            requeue: None,
        }
    }

    pub fn plan(mut self) -> Vec<Action> {
        if self.capture.metadata.deletion_timestamp.is_some() {
            self.deleting();
        } else if self.status.phase.is_some_and(Phase::is_finished) {
            self.finished();
        } else {
            self.live();
        }
        let update = self.draft.diff(&self.status);
        let mut out = Vec::with_capacity(self.actions.len() + self.events.len() + 2);
        // Status first: a new capture's accepted spec must be recorded before its Jobs start
        // (they capture with `status.acceptedSpec`).
        if !update.is_empty() {
            out.push(Action::UpdateStatus(Box::new(update)));
        }
        out.append(&mut self.actions);
        out.extend(self.events.into_iter().map(Action::Event));
        if let Some(after) = self.requeue {
            out.push(Action::RequeueAfter(after));
        }
        out
    }

    // ---- helpers -------------------------------------------------------------------------

    fn requeue_in(&mut self, after: Duration) {
        let after = after.max(Duration::from_secs(1));
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }

    fn event(&mut self, kind: EventKind, reason: &'static str, note: impl Into<String>) {
        self.events.push(EventNote {
            kind,
            reason,
            note: note.into(),
            job: None,
        });
    }

    fn stop(&mut self, job: &JobFact, reason: StopReason) {
        self.actions.push(Action::StopJob(StopJob {
            node: job.node.clone(),
            name: job.name.clone(),
            reason,
        }));
    }

    /// Stops an Active Job whose capture process had `stop_grace` since `began` to end on its
    /// own (it watches the capture and exits after uploading); else waits for it.
    fn stop_after_grace(&mut self, job: &JobFact, reason: StopReason, began: Timestamp) {
        let deadline = add(began, self.cfg.stop_grace);
        if self.now >= deadline {
            self.stop(job, reason);
        } else {
            self.requeue_in(until(self.now, deadline));
        }
    }

    fn expected_job_name(&self, node: &str) -> String {
        let c = self.capture;
        job_name(
            c.namespace().as_deref().unwrap_or_default(),
            &c.name_any(),
            c.metadata.uid.as_deref().unwrap_or_default(),
            node,
        )
    }

    /// The node's state after this pass (draft first, then the current status).
    fn node_state(&self, node: &str) -> Option<NodeCaptureState> {
        self.draft
            .nodes
            .get(node)
            .and_then(|u| u.state)
            .or_else(|| self.status.nodes.get(node).and_then(|n| n.state))
    }

    fn node_message(&self, node: &str) -> Option<String> {
        self.draft
            .nodes
            .get(node)
            .and_then(|u| u.message.clone())
            .or_else(|| self.status.nodes.get(node).and_then(|n| n.message.clone()))
    }

    /// The node message of a failed Job. When the capture process reported `Failed` itself
    /// (e.g. a missing capability), its message says why: it is kept after the Job's reason.
    fn failed_message(&self, job: &JobFact, reason: &str, message: &str) -> String {
        let head = format!("Capture Job {} failed ({reason}): {message}", job.name);
        let reported = self
            .status
            .nodes
            .get(&job.node)
            .filter(|n| n.state == Some(NodeCaptureState::Failed));
        match reported.and_then(|n| n.message.as_deref()) {
            // Already a message of this planner (with or without the process's report).
            Some(m) if m.starts_with("Capture Job ") => m.to_owned(),
            Some(m) => format!("{head}. The capture process reported: {m}"),
            None => head,
        }
    }

    /// Records what a Job that ended by itself means for its node (once, with an Event).
    fn settle(&mut self, job: &JobFact) {
        let (state, message, kind, reason) = match &job.state {
            JobState::Finished => (
                NodeCaptureState::Finished,
                format!("Capture Job {} finished.", job.name),
                EventKind::Normal,
                "JobFinished",
            ),
            JobState::Failed { reason, message } => (
                NodeCaptureState::Failed,
                self.failed_message(job, reason, message),
                EventKind::Warning,
                "JobFailed",
            ),
            JobState::Active | JobState::Terminating => return,
        };
        if !job.end_recorded {
            // Once per Job: the mark on the Job survives restarts of the scheduler.
            self.events.push(EventNote {
                kind,
                reason,
                note: format!("Node {}: {message}", job.node),
                job: Some(job.name.clone()),
            });
            self.actions.push(Action::MarkJobEnded {
                node: job.node.clone(),
                job: job.name.clone(),
            });
        }
        let have = self.node_state(&job.node);
        // The capture process reports Finished itself; only a failure overrides that.
        if have == Some(NodeCaptureState::Finished) && state == NodeCaptureState::Finished {
            return;
        }
        if have == Some(state) && self.node_message(&job.node).as_deref() == Some(&message) {
            return;
        }
        self.draft.node_state(&job.node, state, message);
    }

    fn final_phase(&mut self, phase: Phase, reason: &'static str, message: String) {
        self.draft.phase(phase, message.clone());
        self.draft.completion_time = Some(Time(self.now));
        self.draft
            .clear_condition(CAPTURING, reason, "The capture has ended.");
        if phase == Phase::Failed {
            self.draft.condition(FAILED, true, reason, message.clone());
            self.event(EventKind::Warning, reason, message);
        } else {
            self.draft
                .condition(COMPLETE, true, reason, message.clone());
            self.event(EventKind::Normal, "Completed", message);
        }
    }

    // ---- the three lives of a capture -----------------------------------------------------

    /// Deleted: stop every Job; release the finalizer once none runs. Files stay in storage.
    fn deleting(&mut self) {
        let jobs = std::mem::take(&mut self.jobs);
        let began = self
            .capture
            .metadata
            .deletion_timestamp
            .as_ref()
            .map_or(self.now, |t| t.0);
        let mut running = 0;
        for job in &jobs {
            match job.state {
                JobState::Active => {
                    self.stop_after_grace(job, StopReason::CaptureDeleted, began);
                    running += 1;
                }
                JobState::Terminating => running += 1,
                _ => self.settle(job),
            }
        }
        let final_already = self.status.phase.is_some_and(Phase::is_finished);
        if running == 0 {
            self.actions.push(Action::ReleaseFinalizer);
            if !final_already {
                self.final_phase(
                    Phase::Stopped,
                    StopReason::CaptureDeleted.as_str(),
                    "The capture was deleted; its uploaded files are kept until their TTL.".into(),
                );
            }
        } else if !final_already {
            self.draft.phase(
                Phase::Uploading,
                format!(
                    "The capture was deleted; waiting for {running} capture Job(s) to upload \
                     their last files."
                ),
            );
        }
    }

    /// Finished (sticky): only stop leftovers and record Jobs that ended.
    fn finished(&mut self) {
        let reason = match self.status.phase {
            Some(Phase::Failed) => StopReason::CaptureFailed,
            Some(Phase::Stopped) => StopReason::StopRequested,
            _ => StopReason::WindowEnded,
        };
        let jobs = std::mem::take(&mut self.jobs);
        for job in &jobs {
            match job.state {
                JobState::Active => self.stop(job, reason),
                JobState::Terminating => {}
                _ => self.settle(job),
            }
        }
    }

    /// Not finished: accept the spec, follow the pods, end the window.
    fn live(&mut self) {
        let started = self.status.start_time.is_some() && self.status.accepted_spec.is_some();
        let spec = if started {
            self.check_spec_unchanged();
            self.status.accepted_spec.clone().unwrap_or_default()
        } else {
            match self.accept() {
                Some(spec) => spec,
                None => return,
            }
        };
        let started_at = self.draft.start_time.as_ref().map_or(self.now, |t| t.0);
        let end = window_end(&spec, started_at);
        if let Some(cause) = self.end_cause(&spec, end) {
            self.ending(cause, end);
        } else {
            self.capturing(&spec, end);
        }
    }

    /// Validates a capture that has not started and starts it when its time has come.
    fn accept(&mut self) -> Option<PacketCaptureSpec> {
        let opts = ValidationOptions {
            max_window: self.cfg.max_window,
            now: Some(self.now),
        };
        if let Err(errs) = validate_packet_capture(self.capture, &opts) {
            self.final_phase(
                Phase::Failed,
                "InvalidSpec",
                format!(
                    "The spec is invalid, so nothing was captured: {errs}. Create a corrected \
                     PacketCapture."
                ),
            );
            return None;
        }
        let spec = self.capture.spec.clone();
        if let Some(start) = requested_start(&spec)
            && start > self.now
        {
            self.draft
                .phase(Phase::Pending, format!("Waiting for startTime {start}."));
            self.draft.condition(
                SCHEDULED,
                false,
                "WaitingForStartTime",
                format!("Starts at {start}."),
            );
            self.requeue_in(until(self.now, start));
            return None;
        }
        let end = window_end(&spec, self.now);
        if end <= self.now {
            self.final_phase(
                Phase::Failed,
                "WindowMissed",
                format!(
                    "The capture window ended at {end}, before the scheduler could start it; \
                     create a new PacketCapture with a later startTime or without one."
                ),
            );
            return None;
        }
        self.draft.start_time = Some(Time(self.now));
        self.draft.spec_hash = Some(spec_hash(&spec));
        self.draft.accepted_spec = Some(spec.clone());
        self.event(
            EventKind::Normal,
            "Started",
            format!("Capturing from {} until {end}.", self.now),
        );
        Some(spec)
    }

    /// The spec is immutable after the start: an edit raises `SpecChanged` (and one Event per
    /// distinct edit); the capture goes on with the accepted spec.
    fn check_spec_unchanged(&mut self) {
        let Some(accepted) = self.status.accepted_spec.as_ref() else {
            return;
        };
        if &self.capture.spec == accepted {
            self.draft.clear_condition(
                SPEC_CHANGED,
                "SpecUnchanged",
                "The spec matches the spec the capture started with.",
            );
            return;
        }
        let started_with = self
            .status
            .spec_hash
            .clone()
            .unwrap_or_else(|| spec_hash(accepted));
        let message = format!(
            "The spec was edited after the capture started (spec hash {} instead of {started_with}). \
             A running capture's spec is immutable: it keeps capturing with the spec it started \
             with (status.acceptedSpec). To capture with the edited spec, create a new \
             PacketCapture.",
            spec_hash(&self.capture.spec)
        );
        let already = self
            .draft
            .condition_of(SPEC_CHANGED)
            .is_some_and(|c| c.status == "True" && c.message == message);
        self.draft
            .condition(SPEC_CHANGED, true, "SpecImmutable", message.clone());
        if !already {
            self.event(EventKind::Warning, "SpecChanged", message);
        }
    }

    fn end_cause(&self, spec: &PacketCaptureSpec, end: Timestamp) -> Option<StopReason> {
        if self.capture.annotations().contains_key(STOP_ANNOTATION) {
            return Some(StopReason::StopRequested);
        }
        let packets: u64 = self.status.nodes.values().map(|n| n.packets).sum();
        let bytes: u64 = self.status.nodes.values().map(|n| n.bytes).sum();
        if spec.max_packets.is_some_and(|m| packets >= m)
            || spec.max_bytes.is_some_and(|m| bytes >= m)
        {
            return Some(StopReason::LimitReached);
        }
        (self.now >= end).then_some(StopReason::WindowEnded)
    }

    /// The window is over (or a limit or a stop request ended it): stop the Jobs, wait for them
    /// to upload, then finish.
    fn ending(&mut self, cause: StopReason, end: Timestamp) {
        // When stopping began: the window's end, or when this cause first ended capturing.
        let began = match cause {
            StopReason::WindowEnded => end,
            _ => self
                .draft
                .condition_of(CAPTURING)
                .filter(|c| c.status == "False" && c.reason == cause.as_str())
                .map_or(self.now, |c| c.last_transition_time.0),
        };
        let jobs = std::mem::take(&mut self.jobs);
        let mut running = 0;
        for job in &jobs {
            match job.state {
                JobState::Active => {
                    self.stop_after_grace(job, cause, began);
                    running += 1;
                }
                JobState::Terminating => running += 1,
                _ => self.settle(job),
            }
        }
        let why = match cause {
            StopReason::LimitReached => "The maxBytes/maxPackets limit was reached".to_string(),
            StopReason::StopRequested => format!(
                "Stop was requested ({})",
                self.capture
                    .annotations()
                    .get(STOP_ANNOTATION)
                    .map_or("", String::as_str)
            ),
            _ => "The capture window ended".to_string(),
        };
        if running > 0 {
            self.draft.phase(
                Phase::Uploading,
                format!("{why}; waiting for {running} capture Job(s) to upload their last files."),
            );
            self.draft
                .condition(CAPTURING, false, cause.as_str(), format!("{why}."));
            return;
        }
        let nodes: BTreeSet<&String> = self.status.nodes.keys().collect();
        let states: Vec<Option<NodeCaptureState>> =
            nodes.iter().map(|n| self.node_state(n)).collect();
        let all_failed =
            !states.is_empty() && states.iter().all(|s| *s == Some(NodeCaptureState::Failed));
        match cause {
            StopReason::WindowEnded if all_failed => self.final_phase(
                Phase::Failed,
                "JobsFailed",
                "Every capture Job failed; see status.nodes[*].message.".into(),
            ),
            StopReason::WindowEnded => self.final_phase(
                Phase::Succeeded,
                cause.as_str(),
                format!("{why}; every file is uploaded."),
            ),
            _ => self.final_phase(
                Phase::Stopped,
                cause.as_str(),
                format!("{why}; every file is uploaded."),
            ),
        }
    }
}

/// The Jobs serving the capture with this UID (none when the capture has no UID yet).
fn own_jobs<'a>(uid: Option<&str>, jobs: &'a [JobFact]) -> Vec<&'a JobFact> {
    let Some(uid) = uid else {
        return Vec::new();
    };
    jobs.iter().filter(|j| j.capture_uid == uid).collect()
}

mod capturing;
