//! The planner: what should happen to one PacketCapture, computed from plain values.
//!
//! [`Planner::plan`] looks at a capture, the [facts](facts) the scheduler sees (targets, nodes,
//! capture Jobs) and the current time, and returns the [`Action`]s that move the world towards
//! the capture's spec. It never performs I/O and never reads the clock; the controller
//! (Kubernetes) and the local executor (child processes) turn what they observe into facts and
//! apply the actions.

pub mod facts;
mod health;
mod name;
mod run;
mod status;
mod targets;
mod window;

#[cfg(test)]
pub(crate) mod tests;

use std::{collections::BTreeMap, fmt, time::Duration};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use nightcap_api::{NodeCaptureState, PacketCapture, PacketCaptureSpec, Phase};
use serde_json::{Map, Value, json};

pub use facts::{JobFact, JobState, NodeFact, Readiness, TargetFact, TargetPhase};
pub use name::{MAX_JOB_NAME, job_name};
pub use status::spec_hash;

/// Tunables of the planner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanConfig {
    /// How long a node's Job keeps running after the last selected pod left the node (a pod
    /// restarting on the same node comes back within this time and keeps the Job).
    pub pods_gone_grace: Duration,
    /// How long a Job on a NotReady node is kept before it is stopped.
    pub node_not_ready_grace: Duration,
    /// Longest accepted capture window.
    pub max_window: Duration,
    /// How long a capture Job gets to stop on its own (upload its last file, report, exit)
    /// after the capture ended, was deleted or its node's pods left, before it is deleted.
    pub stop_grace: Duration,
}

/// Default [`PlanConfig::pods_gone_grace`].
pub const DEFAULT_PODS_GONE_GRACE: Duration = Duration::from_secs(30);
/// Default [`PlanConfig::node_not_ready_grace`].
pub const DEFAULT_NODE_NOT_READY_GRACE: Duration = Duration::from_secs(60);
/// Default [`PlanConfig::stop_grace`].
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(60);

impl Default for PlanConfig {
    fn default() -> Self {
        Self {
            pods_gone_grace: DEFAULT_PODS_GONE_GRACE,
            node_not_ready_grace: DEFAULT_NODE_NOT_READY_GRACE,
            max_window: nightcap_api::validation::DEFAULT_MAX_WINDOW,
            stop_grace: DEFAULT_STOP_GRACE,
        }
    }
}

/// One step towards the desired state.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a capture Job on a node.
    CreateJob(JobRequest),
    /// Stop a node's capture Job (delete it in the foreground: its pod gets SIGTERM, uploads the
    /// open file and exits; the Job disappears once the pod is gone). Capture processes normally
    /// stop by themselves first (they watch the capture); this is the fallback after
    /// [`PlanConfig::stop_grace`], and the way to stop leftovers.
    StopJob(StopJob),
    /// Record on the Job that no selected pod runs on its node any more.
    MarkJobIdle {
        /// Node of the Job.
        node: String,
        /// Job name.
        job: String,
        /// Since when the node has no selected pod.
        since: Timestamp,
    },
    /// Remove the idle mark: a selected pod is back on the Job's node.
    ClearJobIdle {
        /// Node of the Job.
        node: String,
        /// Job name.
        job: String,
    },
    /// Record on a Job that ended by itself that its end has been reported (Event sent).
    MarkJobEnded {
        /// Node of the Job.
        node: String,
        /// Job name.
        job: String,
    },
    /// Merge-patch the scheduler-owned fields of the capture's status.
    UpdateStatus(Box<StatusUpdate>),
    /// Record a Kubernetes Event on the capture.
    Event(EventNote),
    /// The capture is being deleted and all its Jobs are gone: remove the finalizer.
    ReleaseFinalizer,
    /// Plan again after this long at the latest (a start time, a window end, a grace period).
    RequeueAfter(Duration),
}

/// A Job to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    /// Node the Job is pinned to.
    pub node: String,
    /// Job name ([`job_name`]).
    pub name: String,
    /// Seconds left in the capture window: the Job's `activeDeadlineSeconds`.
    pub active_deadline_seconds: i64,
    /// Selected targets on the node (`namespace/name`), for the Event.
    pub pods: Vec<String>,
}

/// A Job to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopJob {
    /// Node of the Job.
    pub node: String,
    /// Job name.
    pub name: String,
    /// Why.
    pub reason: StopReason,
}

/// Why a Job is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// No selected pod ran on the node for the whole grace period.
    PodsGone,
    /// The node was deleted.
    NodeGone,
    /// The node stayed NotReady for the whole grace period.
    NodeNotReady,
    /// The capture window ended.
    WindowEnded,
    /// `maxBytes` or `maxPackets` was reached.
    LimitReached,
    /// Someone asked the capture to stop (the stop annotation).
    StopRequested,
    /// The capture is being deleted.
    CaptureDeleted,
    /// The capture failed.
    CaptureFailed,
    /// A finished Job holds the name a new Job on the node needs.
    Replace,
    /// A second Job for the same node (only the one with the deterministic name is kept).
    Duplicate,
}

impl StopReason {
    /// CamelCase reason for Events and conditions.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PodsGone => "PodsGone",
            Self::NodeGone => "NodeGone",
            Self::NodeNotReady => "NodeNotReady",
            Self::WindowEnded => "WindowEnded",
            Self::LimitReached => "LimitReached",
            Self::StopRequested => "StopRequested",
            Self::CaptureDeleted => "CaptureDeleted",
            Self::CaptureFailed => "CaptureFailed",
            Self::Replace => "Replace",
            Self::Duplicate => "Duplicate",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Type of a Kubernetes Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Something expected happened.
    Normal,
    /// Something the user should look at.
    Warning,
}

/// An Event to record on the capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventNote {
    /// Normal or Warning.
    pub kind: EventKind,
    /// CamelCase reason (`SpecChanged`, `InvalidSpec`, `JobFinished`, …).
    pub reason: &'static str,
    /// Human-readable note.
    pub note: String,
    /// The capture Job the Event is about, if any (Events about different Jobs stay apart).
    pub job: Option<String>,
}

/// The scheduler-owned status fields that changed; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusUpdate {
    /// New phase.
    pub phase: Option<Phase>,
    /// New message.
    pub message: Option<String>,
    /// Generation acted on.
    pub observed_generation: Option<i64>,
    /// The complete new condition list.
    pub conditions: Option<Vec<Condition>>,
    /// When capturing started (set once).
    pub start_time: Option<Time>,
    /// When the capture finished (set once).
    pub completion_time: Option<Time>,
    /// Nodes that had a capture Job.
    pub node_count: Option<u32>,
    /// Packets on all nodes.
    pub packets: Option<u64>,
    /// Bytes on all nodes.
    pub bytes: Option<u64>,
    /// Hash of the accepted spec (set once).
    pub spec_hash: Option<String>,
    /// The accepted spec (set once).
    pub accepted_spec: Option<PacketCaptureSpec>,
    /// Per node: the fields the scheduler sets (job, state, message).
    pub nodes: BTreeMap<String, NodeUpdate>,
}

/// The scheduler-owned fields of one `status.nodes[N]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeUpdate {
    /// Job name.
    pub job: Option<String>,
    /// New state.
    pub state: Option<NodeCaptureState>,
    /// New message.
    pub message: Option<String>,
}

impl StatusUpdate {
    /// The JSON merge patch (`{"status": {…}}`) for the status subresource. Fields the capture
    /// jobs own (`nodes[N].packets`, `files`, …) are never in it.
    pub fn to_merge_patch(&self) -> Value {
        let mut s = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                s.insert(k.to_string(), v);
            }
        };
        put("phase", self.phase.map(|p| json!(p)));
        put("message", self.message.as_ref().map(|m| json!(m)));
        put(
            "observedGeneration",
            self.observed_generation.map(|g| json!(g)),
        );
        put("conditions", self.conditions.as_ref().map(|c| json!(c)));
        put("startTime", self.start_time.as_ref().map(|t| json!(t)));
        put(
            "completionTime",
            self.completion_time.as_ref().map(|t| json!(t)),
        );
        put("nodeCount", self.node_count.map(|n| json!(n)));
        put("packets", self.packets.map(|n| json!(n)));
        put("bytes", self.bytes.map(|n| json!(n)));
        put("specHash", self.spec_hash.as_ref().map(|h| json!(h)));
        put(
            "acceptedSpec",
            self.accepted_spec.as_ref().map(|a| json!(a)),
        );
        if !self.nodes.is_empty() {
            let mut nodes = Map::new();
            for (name, u) in &self.nodes {
                let mut n = Map::new();
                if let Some(job) = &u.job {
                    n.insert("job".into(), json!(job));
                }
                if let Some(state) = u.state {
                    n.insert("state".into(), json!(state));
                }
                if let Some(message) = &u.message {
                    n.insert("message".into(), json!(message));
                }
                nodes.insert(name.clone(), Value::Object(n));
            }
            s.insert("nodes".into(), Value::Object(nodes));
        }
        json!({ "status": s })
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Plans captures with one [`PlanConfig`].
#[derive(Debug, Clone, Default)]
pub struct Planner {
    config: PlanConfig,
}

impl Planner {
    /// A planner with these tunables.
    pub fn new(config: PlanConfig) -> Self {
        Self { config }
    }

    /// The tunables.
    pub fn config(&self) -> &PlanConfig {
        &self.config
    }

    /// What should happen to `capture`, given the targets and nodes the scheduler sees, the
    /// capture Jobs (only those serving the capture's UID are considered) and the current time.
    /// A pod capture reads the targets of its namespace and the nodes they (and its Jobs) are
    /// on; a node-level capture reads every node. A node not given is a node that does not
    /// exist.
    ///
    /// Returns at most one [`Action::UpdateStatus`] and at most one [`Action::RequeueAfter`].
    pub fn plan(
        &self,
        capture: &PacketCapture,
        targets: &[TargetFact],
        nodes: &[NodeFact],
        jobs: &[JobFact],
        now: Timestamp,
    ) -> Vec<Action> {
        run::Run::new(&self.config, capture, targets, nodes, jobs, now).plan()
    }
}
