//! Inside the window: one Job per node with selected pods, following them as they move.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use kube::ResourceExt;
use nightcap_api::{NodeCaptureState, PacketCaptureSpec, Phase};

use super::Run;
use crate::plan::{
    Action, JobRequest, StopReason,
    facts::{JobFact, JobState},
    health::{NodeHealth, node_health},
    status::{CAPTURING, SCHEDULED},
    targets::targets,
    window::{add, deadline_seconds, until},
};

/// What the per-node pass found, for the phase.
#[derive(Default)]
struct Tally {
    /// Jobs running or being created.
    running: usize,
    /// Running Jobs whose node reports Capturing.
    capturing: usize,
    /// Why wanted nodes have no Job.
    waiting: Vec<String>,
}

impl Run<'_> {
    pub(super) fn capturing(&mut self, spec: &PacketCaptureSpec, end: Timestamp) {
        let namespace = self.capture.namespace().unwrap_or_default();
        let wanted = targets(spec, &namespace, self.targets, self.nodes);
        let jobs = std::mem::take(&mut self.jobs);
        let mut by_node: BTreeMap<&str, Vec<&JobFact>> = BTreeMap::new();
        for job in &jobs {
            by_node.entry(job.node.as_str()).or_default().push(*job);
        }
        let all: BTreeSet<String> = wanted
            .nodes
            .keys()
            .cloned()
            .chain(by_node.keys().map(|n| n.to_string()))
            .chain(self.status.nodes.keys().cloned())
            .collect();
        let mut tally = Tally::default();
        for node in &all {
            let node = node.as_str();
            let expected = self.expected_job_name(node);
            let here = by_node.get(node).map(Vec::as_slice).unwrap_or_default();
            for other in here.iter().filter(|j| j.name != expected) {
                if other.state == JobState::Active {
                    self.stop(other, StopReason::Duplicate);
                }
            }
            let job = here.iter().find(|j| j.name == expected).copied();
            self.node(
                node,
                job,
                wanted.nodes.get(node),
                &expected,
                end,
                &mut tally,
            );
        }
        if !self.phase_while_capturing(&tally, wanted.host_network_skipped) {
            self.requeue_in(until(self.now, end));
        }
    }

    fn node(
        &mut self,
        node: &str,
        job: Option<&JobFact>,
        pods: Option<&Vec<String>>,
        expected: &str,
        end: Timestamp,
        tally: &mut Tally,
    ) {
        let health = node_health(self.nodes, node);
        let Some(job) = job else {
            match (pods, health) {
                (Some(pods), NodeHealth::Ready) => {
                    if self.node_state(node) == Some(NodeCaptureState::Failed) {
                        // A failed node is not retried (its message says why it failed).
                        tally
                            .waiting
                            .push(format!("the capture Job on node {node} failed"));
                        return;
                    }
                    self.actions.push(Action::CreateJob(JobRequest {
                        node: node.to_string(),
                        name: expected.to_string(),
                        active_deadline_seconds: deadline_seconds(self.now, end),
                        pods: pods.clone(),
                    }));
                    let u = self.draft.node(node);
                    u.job = Some(expected.to_string());
                    u.state = Some(NodeCaptureState::Scheduled);
                    u.message = Some(format!("Capture Job {expected} created."));
                    tally.running += 1;
                }
                (Some(_), NodeHealth::NotReady(_)) => {
                    tally.waiting.push(format!("node {node} is NotReady"));
                }
                (Some(_), NodeHealth::Missing) => {
                    tally.waiting.push(format!("node {node} does not exist"));
                }
                (None, _) => self.job_gone(node),
            }
            return;
        };
        match &job.state {
            JobState::Terminating => tally.running += 1,
            JobState::Active => self.active_job(job, pods.is_some(), health, tally),
            JobState::Finished | JobState::Failed { .. } => {
                self.settle(job);
                let failed = matches!(job.state, JobState::Failed { .. });
                if pods.is_some() && health == NodeHealth::Ready && !failed {
                    // The Job ended although pods still need it: free the name for a new one.
                    self.stop(job, StopReason::Replace);
                    tally.running += 1;
                }
            }
        }
    }

    /// No Job and no selected pod: a node the capture used before. If its Job vanished without
    /// a final report, record that it ended.
    fn job_gone(&mut self, node: &str) {
        let state = self.node_state(node);
        if matches!(
            state,
            Some(
                NodeCaptureState::Scheduled
                    | NodeCaptureState::WaitingForTraffic
                    | NodeCaptureState::Capturing
                    | NodeCaptureState::Uploading
            )
        ) {
            self.draft.node_state(
                node,
                NodeCaptureState::Finished,
                "The capture Job ended without a final report from the node.",
            );
        }
    }

    fn active_job(&mut self, job: &JobFact, wanted: bool, health: NodeHealth, tally: &mut Tally) {
        let grace = self.cfg.node_not_ready_grace;
        match health {
            NodeHealth::Missing => {
                self.stop(job, StopReason::NodeGone);
                self.draft.node_state(
                    &job.node,
                    NodeCaptureState::Failed,
                    format!(
                        "Node {} was deleted while capturing; files it had not uploaded are lost.",
                        job.node
                    ),
                );
                tally.running += 1;
                return;
            }
            NodeHealth::NotReady(since) => {
                let expired = since.is_none_or(|s| until(s, self.now) >= grace);
                if expired {
                    self.stop(job, StopReason::NodeNotReady);
                    self.draft.node_state(
                        &job.node,
                        NodeCaptureState::Failed,
                        format!(
                            "Node {} stayed NotReady for {}s; its capture Job was stopped.",
                            job.node,
                            grace.as_secs()
                        ),
                    );
                } else if let Some(since) = since {
                    self.requeue_in(until(self.now, add(since, grace)));
                }
                tally.running += 1;
                return;
            }
            NodeHealth::Ready => {}
        }
        tally.running += 1;
        if self.node_state(&job.node) == Some(NodeCaptureState::Capturing) {
            tally.capturing += 1;
        }
        // The capture process stops by itself after `pods_gone_grace` without pods; the Job is
        // deleted only if it has not ended `stop_grace` later.
        let grace = self.cfg.pods_gone_grace + self.cfg.stop_grace;
        match (wanted, job.idle_since) {
            (true, Some(_)) => self.actions.push(Action::ClearJobIdle {
                node: job.node.clone(),
                job: job.name.clone(),
            }),
            (true, None) => {}
            (false, None) => {
                self.actions.push(Action::MarkJobIdle {
                    node: job.node.clone(),
                    job: job.name.clone(),
                    since: self.now,
                });
                self.requeue_in(grace);
            }
            (false, Some(since)) if until(since, self.now) >= grace => {
                self.stop(job, StopReason::PodsGone);
            }
            (false, Some(since)) => self.requeue_in(until(self.now, add(since, grace))),
        }
    }

    /// Sets phase and conditions; true when the capture has thereby finished.
    fn phase_while_capturing(&mut self, tally: &Tally, host_network_skipped: usize) -> bool {
        let mut note = String::new();
        if host_network_skipped > 0 {
            note = format!(
                " {host_network_skipped} selected pod(s) use the host network and are not \
                 captured (a pod capture never sees node traffic; use nodeNames/nodeSelector)."
            );
        }
        let nodes: Vec<&String> = self.status.nodes.keys().collect();
        let any_failed = nodes
            .iter()
            .any(|n| self.node_state(n) == Some(NodeCaptureState::Failed));
        let any_ok = nodes
            .iter()
            .any(|n| self.node_state(n) != Some(NodeCaptureState::Failed));
        let waiting_only_failed = tally.waiting.iter().all(|w| w.ends_with("failed"));
        if tally.capturing > 0 {
            self.draft.phase(
                Phase::Capturing,
                format!(
                    "Capturing on {} node(s); {} capture Job(s) running.{note}",
                    tally.capturing, tally.running
                ),
            );
        } else if tally.running > 0 {
            self.draft.phase(
                Phase::Scheduled,
                format!("{} capture Job(s) starting.{note}", tally.running),
            );
        } else if any_failed && !any_ok && waiting_only_failed {
            self.final_phase(
                Phase::Failed,
                "JobsFailed",
                "Every capture Job failed; see status.nodes[*].message.".into(),
            );
            return true;
        } else {
            let why = if tally.waiting.is_empty() {
                "no selected pod runs on any node".to_string()
            } else {
                tally.waiting.join("; ")
            };
            self.draft.phase(
                Phase::Pending,
                format!("Waiting for selected pods: {why}.{note}"),
            );
        }
        if tally.running > 0 {
            self.draft.condition(
                SCHEDULED,
                true,
                "JobsCreated",
                format!("{} capture Job(s) running.", tally.running),
            );
        } else {
            self.draft.condition(
                SCHEDULED,
                false,
                "NoTargets",
                "No selected pod runs on a Ready node.",
            );
        }
        if tally.capturing > 0 {
            self.draft.condition(
                CAPTURING,
                true,
                "Capturing",
                format!("Capturing on {} node(s).", tally.capturing),
            );
        } else {
            self.draft.clear_condition(
                CAPTURING,
                "NotCapturing",
                "No node is capturing right now.",
            );
        }
        false
    }
}
