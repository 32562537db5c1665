//! The watches the controller shares with its caches: one watch per kind, objects trimmed to
//! what the planner reads (10k pods stay small), and the mappers from a changed Pod, Node or Job
//! to the captures that must be planned again.

use futures::Stream;
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Node, NodeCondition, NodeStatus, Pod, PodSpec, PodStatus},
};
use kube::{
    Api, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use nightcap_api::{PacketCapture, Phase, selector::selects};

use crate::labels;

/// A watch stream whose objects also land in a [`Store`].
pub(crate) fn reflected<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, config)
        .modify(trim)
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    (store, stream)
}

/// Keeps what the planner reads of a Pod: identity, labels, node, host network, phase, IP.
pub(crate) fn trim_pod(pod: &mut Pod) {
    let m = &mut pod.metadata;
    m.managed_fields = None;
    m.annotations = None;
    m.owner_references = None;
    m.finalizers = None;
    if let Some(spec) = pod.spec.as_mut() {
        *spec = PodSpec {
            node_name: spec.node_name.take(),
            host_network: spec.host_network,
            ..PodSpec::default()
        };
    }
    if let Some(status) = pod.status.as_mut() {
        *status = PodStatus {
            phase: status.phase.take(),
            pod_ip: status.pod_ip.take(),
            ..PodStatus::default()
        };
    }
}

/// Keeps what the planner reads of a Node: identity, labels and the Ready condition (without its
/// heartbeat, so a heartbeat does not change the cached object).
pub(crate) fn trim_node(node: &mut Node) {
    let m = &mut node.metadata;
    m.managed_fields = None;
    m.annotations = None;
    node.spec = None;
    if let Some(status) = node.status.as_mut() {
        let ready = status
            .conditions
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ == "Ready")
            .map(|c| NodeCondition {
                last_heartbeat_time: None,
                message: None,
                ..c
            })
            .collect();
        *status = NodeStatus {
            conditions: Some(ready),
            ..NodeStatus::default()
        };
    }
}

/// Jobs are the scheduler's own and small; only managed fields go.
pub(crate) fn trim_job(job: &mut Job) {
    job.metadata.managed_fields = None;
}

/// PacketCaptures keep everything (the planner reads spec and status).
pub(crate) fn trim_capture(capture: &mut PacketCapture) {
    capture.metadata.managed_fields = None;
}

fn live(c: &PacketCapture) -> bool {
    c.metadata.deletion_timestamp.is_some()
        || !c
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(Phase::is_finished)
}

/// Captures to plan again when a pod changes: running captures of the pod's namespace that
/// select it, or that have a Job on its node (so a pod that left is noticed).
pub(crate) fn captures_for_pod(
    captures: &Store<PacketCapture>,
    pod: &Pod,
) -> Vec<ObjectRef<PacketCapture>> {
    let Some(ns) = pod.namespace() else {
        return Vec::new();
    };
    if pod.labels().contains_key(labels::CAPTURE_UID) {
        return Vec::new(); // our own capture pods; their Jobs trigger the capture
    }
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    captures
        .state()
        .iter()
        .filter(|c| c.metadata.namespace.as_deref() == Some(ns.as_str()) && live(c))
        .filter(|c| {
            let selects = c
                .spec
                .selector
                .as_ref()
                .is_some_and(|sel| selects(sel, pod.labels()));
            let on_node =
                node.is_some_and(|n| c.status.as_ref().is_some_and(|s| s.nodes.contains_key(n)));
            selects || on_node
        })
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// Captures to plan again when a node changes: running captures with a Job on it, and every
/// running node-level capture.
pub(crate) fn captures_for_node(
    captures: &Store<PacketCapture>,
    node: &Node,
) -> Vec<ObjectRef<PacketCapture>> {
    let name = node.name_any();
    captures
        .state()
        .iter()
        .filter(|c| live(c))
        .filter(|c| {
            c.spec.selector.is_none()
                || c.status
                    .as_ref()
                    .is_some_and(|s| s.nodes.contains_key(&name))
        })
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// The capture a Job serves (from its `nightcap.dev/capture` annotation).
pub(crate) fn capture_for_job(job: &Job) -> Option<ObjectRef<PacketCapture>> {
    let (ns, name) = job
        .annotations()
        .get(labels::CAPTURE_REF)?
        .split_once('/')?;
    Some(ObjectRef::new(name).within(ns))
}

/// Label selector of every capture Job.
pub(crate) fn job_selector() -> String {
    format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_SCHEDULER)
}
