//! The scheduler-owned part of the status: a draft the planner edits, and the diff against the
//! current status that becomes [`super::Action::UpdateStatus`].

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use nightcap_api::{NodeCaptureState, PacketCaptureSpec, PacketCaptureStatus, Phase};
use sha2::{Digest, Sha256};

use super::{NodeUpdate, StatusUpdate};

/// Condition types the scheduler sets.
pub(crate) const SCHEDULED: &str = "Scheduled";
pub(crate) const CAPTURING: &str = "Capturing";
pub(crate) const COMPLETE: &str = "Complete";
pub(crate) const FAILED: &str = "Failed";
pub(crate) const SPEC_CHANGED: &str = "SpecChanged";

/// A short, stable hash of a spec (16 hex digits of SHA-256 over its JSON form).
pub fn spec_hash(spec: &PacketCaptureSpec) -> String {
    // Serialising plain data into a Vec cannot fail; an empty input still hashes.
    let bytes = serde_json::to_vec(spec).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    hex::encode(&digest[..8])
}

/// What the scheduler wants the status to be.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub phase: Option<Phase>,
    pub message: Option<String>,
    pub observed_generation: Option<i64>,
    pub conditions: Vec<Condition>,
    pub start_time: Option<Time>,
    pub completion_time: Option<Time>,
    pub spec_hash: Option<String>,
    pub accepted_spec: Option<PacketCaptureSpec>,
    pub nodes: BTreeMap<String, NodeUpdate>,
    now: Timestamp,
    generation: Option<i64>,
}

impl Draft {
    pub fn new(current: &PacketCaptureStatus, now: Timestamp, generation: Option<i64>) -> Self {
        Self {
            phase: current.phase,
            message: current.message.clone(),
            observed_generation: generation,
            conditions: current.conditions.clone(),
            start_time: current.start_time.clone(),
            completion_time: current.completion_time.clone(),
            spec_hash: current.spec_hash.clone(),
            accepted_spec: current.accepted_spec.clone(),
            nodes: BTreeMap::new(),
            now,
            generation,
        }
    }

    pub fn phase(&mut self, phase: Phase, message: impl Into<String>) {
        self.phase = Some(phase);
        self.message = Some(message.into());
    }

    /// Sets a condition; `lastTransitionTime` changes only when the status flips.
    pub fn condition(
        &mut self,
        type_: &str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) {
        let status = if status { "True" } else { "False" };
        let message = message.into();
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = Time(self.now);
                }
                c.status = status.into();
                c.reason = reason.into();
                c.message = message;
                c.observed_generation = self.generation;
            }
            None => self.conditions.push(Condition {
                type_: type_.into(),
                status: status.into(),
                reason: reason.into(),
                message,
                last_transition_time: Time(self.now),
                observed_generation: self.generation,
            }),
        }
    }

    /// Sets a condition to False only if it exists (absent conditions stay absent).
    pub fn clear_condition(&mut self, type_: &str, reason: &str, message: &str) {
        if self.conditions.iter().any(|c| c.type_ == type_) {
            self.condition(type_, false, reason, message);
        }
    }

    pub fn condition_of(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    pub fn node(&mut self, node: &str) -> &mut NodeUpdate {
        self.nodes.entry(node.to_string()).or_default()
    }

    pub fn node_state(&mut self, node: &str, state: NodeCaptureState, message: impl Into<String>) {
        let u = self.node(node);
        u.state = Some(state);
        u.message = Some(message.into());
    }

    /// The changes relative to `current`.
    pub fn diff(self, current: &PacketCaptureStatus) -> StatusUpdate {
        fn changed<T: PartialEq + Clone>(want: &Option<T>, have: &Option<T>) -> Option<T> {
            if want != have { want.clone() } else { None }
        }
        let nodes = self
            .nodes
            .into_iter()
            .filter_map(|(name, want)| {
                let have = current.nodes.get(&name);
                let u = NodeUpdate {
                    job: changed(&want.job, &have.and_then(|h| h.job.clone())),
                    state: changed(&want.state, &have.and_then(|h| h.state)),
                    message: changed(&want.message, &have.and_then(|h| h.message.clone())),
                };
                (u != NodeUpdate::default()).then_some((name, u))
            })
            .collect::<BTreeMap<_, _>>();
        // Totals over every node (known nodes plus nodes this update creates).
        let mut node_names: Vec<&String> = current.nodes.keys().collect();
        node_names.extend(nodes.keys().filter(|n| !current.nodes.contains_key(*n)));
        let node_count = u32::try_from(node_names.len()).unwrap_or(u32::MAX);
        let packets = current.nodes.values().map(|n| n.packets).sum::<u64>();
        let bytes = current.nodes.values().map(|n| n.bytes).sum::<u64>();
        let conditions = (self.conditions != current.conditions).then_some(self.conditions);
        let mut update = StatusUpdate {
            phase: changed(&self.phase, &current.phase),
            message: changed(&self.message, &current.message),
            observed_generation: None,
            conditions,
            start_time: changed(&self.start_time, &current.start_time),
            completion_time: changed(&self.completion_time, &current.completion_time),
            node_count: changed(&Some(node_count), &current.node_count.or(Some(0))),
            packets: changed(&Some(packets), &current.packets.or(Some(0))),
            bytes: changed(&Some(bytes), &current.bytes.or(Some(0))),
            spec_hash: changed(&self.spec_hash, &current.spec_hash),
            accepted_spec: changed(&self.accepted_spec, &current.accepted_spec),
            nodes,
        };
        // observedGeneration alone is not worth a write; it rides along with real changes.
        if !update.is_empty() || current.observed_generation.is_none() {
            update.observed_generation =
                changed(&self.observed_generation, &current.observed_generation);
        }
        update
    }
}
