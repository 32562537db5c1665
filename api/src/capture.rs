//! `PacketCapture`: one capture of the pods selected in its own namespace.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default snap length: whole packets, like tcpdump's default.
pub const DEFAULT_SNAP_LEN: u32 = 262_144;
/// Smallest accepted snap length (enough for Ethernet + IPv6 + TCP headers with options).
pub const MIN_SNAP_LEN: u32 = 64;
/// Largest accepted snap length.
pub const MAX_SNAP_LEN: u32 = 262_144;
/// Smallest accepted rotation size.
pub const MIN_FILE_BYTES: u64 = 64 * 1024;
/// Annotation that asks the scheduler to stop a running capture early (value: why, e.g.
/// `alert resolved`). The capture ends in phase `Stopped`; its files are kept.
pub const STOP_ANNOTATION: &str = "nightcap.dev/stop";

/// Desired state of a packet capture.
///
/// The spec is immutable once the capture has started: the scheduler reports an edit as a
/// condition and keeps capturing with the spec it started with.
// Several `printcolumn(...)` share `type_ = ...`, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "nightcap.dev",
    version = "v1alpha1",
    kind = "PacketCapture",
    plural = "packetcaptures",
    shortname = "pcap",
    category = "nightcap",
    namespaced,
    status = "PacketCaptureStatus",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.nodeCount"),
    printcolumn(name = "Packets", type_ = "integer", json_path = ".status.packets"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PacketCaptureSpec {
    /// Pods to capture, selected by label in the capture's own namespace. An empty selector
    /// (`{}`) selects every pod of the namespace. Mutually exclusive with `nodeNames` and
    /// `nodeSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,

    /// Node-level capture on these nodes (host network namespace). For cluster administrators.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_names: Vec<String>,

    /// Node-level capture on the nodes with these labels (host network namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Structured filters. A packet is kept when it matches at least one include filter (or
    /// there are none) and no exclude filter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<CaptureFilter>,

    /// tcpdump-style filter expression (`tcp port 443 and net 10.0.0.0/8`), ANDed with the
    /// targeting and `filters`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,

    /// Bytes kept of each packet (64–262144). Default: 262144 (whole packets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 64, max = 262144))]
    pub snap_len: Option<u32>,

    /// When to start capturing. Default: as soon as scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When to stop capturing. Exclusive with `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,

    /// How long to capture, as a duration such as `90s`, `15m` or `1h30m`. Exclusive with
    /// `endTime`. Default: 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,

    /// Stop after this many bytes were captured in total (all nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,

    /// Stop after this many packets were captured in total (all nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_packets: Option<u64>,

    /// File rotation on each node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,

    /// Name of a store configured for nightcap (never raw credentials). Default: the default store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,

    /// Delete the capture's files this many seconds after it finished. Default: kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,
}

/// One structured filter.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaptureFilter {
    /// Transport protocol. Default: any.
    #[serde(default)]
    pub protocol: Protocol,
    /// Ports (source or destination, 1–65535).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Port ranges (source or destination, inclusive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_ranges: Vec<PortRange>,
    /// Networks (source or destination) in CIDR notation, IPv4 or IPv6 (`10.0.0.0/8`, `fd00::/8`).
    /// A bare address means a host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<String>,
    /// Traffic direction relative to the captured pod. Default: both.
    #[serde(default)]
    pub direction: Direction,
    /// Exclude the packets this filter matches instead of including them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclude: bool,
}

/// Inclusive port range.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub struct PortRange {
    /// First port (1–65535).
    pub from: u16,
    /// Last port (1–65535), not below `from`.
    pub to: u16,
}

/// Transport protocol of a filter.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Protocol {
    /// Any protocol.
    #[default]
    #[serde(rename = "any")]
    Any,
    /// TCP.
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// ICMP for IPv4.
    #[serde(rename = "ICMP")]
    Icmp,
    /// ICMP for IPv6.
    #[serde(rename = "ICMPv6")]
    Icmpv6,
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// Whether the protocol has ports.
    pub const fn has_ports(self) -> bool {
        matches!(self, Self::Any | Self::Tcp | Self::Udp | Self::Sctp)
    }
}

/// Traffic direction relative to the captured pod.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Packets sent to the pod.
    Ingress,
    /// Packets sent by the pod.
    Egress,
    /// Both directions.
    #[default]
    Both,
}

/// File rotation on each node. A file is closed (and uploaded) when it reaches `maxFileBytes` or
/// is `maxFileSeconds` old, whichever comes first.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// Close the file at this size (≥ 65536). Default: 100 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 65536))]
    pub max_file_bytes: Option<u64>,
    /// Close the file after this many seconds. Default: 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_file_seconds: Option<u32>,
    /// Keep at most this many files per node; older ones are deleted from storage (a ring).
    /// Default: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_files: Option<u32>,
}

/// Observed state of a packet capture.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PacketCaptureStatus {
    /// Lifecycle phase (set by the scheduler only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Human-readable reason for the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The generation the scheduler last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions (`Scheduled`, `Capturing`, `Complete`, `Failed`, `SpecChanged`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When capturing started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the capture finished (all nodes done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Number of nodes with a capture job (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_count: Option<u32>,
    /// Packets captured on all nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// Bytes captured on all nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Per node: the node's capture job and what it captured.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, NodeCaptureStatus>,
    /// What created this capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<TriggerRef>,
    /// Hash of the spec the capture started with (set by the scheduler when it starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// The spec the capture started with. The spec is immutable after the start: capture jobs
    /// use this copy, and an edit of `spec` only raises the `SpecChanged` condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_spec: Option<PacketCaptureSpec>,
}

/// Lifecycle phase of a capture.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// Accepted, waiting for its start time or for pods.
    Pending,
    /// Jobs created, not capturing yet.
    Scheduled,
    /// At least one node is capturing.
    Capturing,
    /// Capturing finished; the last files are being uploaded.
    Uploading,
    /// Finished and every file uploaded.
    Succeeded,
    /// Could not capture (invalid spec, jobs failed).
    Failed,
    /// Stopped early (deleted, resolved alert, limit reached).
    Stopped,
}

impl Phase {
    /// Whether the phase is final.
    pub const fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Stopped)
    }
}

/// What one node's capture job is doing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeCaptureStatus {
    /// Name of the node's capture Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// State of the node's capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<NodeCaptureState>,
    /// Pods currently attached (`namespace/name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<String>,
    /// Packets written on this node.
    #[serde(default)]
    pub packets: u64,
    /// Bytes written on this node.
    #[serde(default)]
    pub bytes: u64,
    /// Packets the kernel dropped before nightcap could read them.
    #[serde(default)]
    pub drops: u64,
    /// Files uploaded from this node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<CaptureFile>,
    /// Last error or note from the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// State of one node's capture.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum NodeCaptureState {
    /// Job created, process not running yet.
    Scheduled,
    /// Running, no selected pod on the node yet.
    WaitingForTraffic,
    /// Capturing.
    Capturing,
    /// Capture finished; uploading the last files.
    Uploading,
    /// Done, every file uploaded.
    Finished,
    /// The node's job failed.
    Failed,
}

/// One uploaded capture file.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaptureFile {
    /// Object key in the capture's store.
    pub key: String,
    /// Pods in the file (`namespace/name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<String>,
    /// First packet's time (or file open time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Time>,
    /// Time the file was closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Time>,
    /// Packets in the file.
    #[serde(default)]
    pub packets: u64,
    /// File size in bytes.
    #[serde(default)]
    pub bytes: u64,
    /// Hex SHA-256 of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// What created a capture.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerRef {
    /// Source kind: `nats`, `webhook`, `cron` or `manual`.
    pub source: String,
    /// The CaptureTrigger or CaptureSchedule name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Event id (alert fingerprint, NATS message id, schedule time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Deduplication key the capture name was derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_key: Option<String>,
}

/// A PacketCapture spec with the metadata a schedule or trigger puts on what it creates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PacketCaptureTemplate {
    /// Labels and annotations of the created captures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// Spec of the created captures.
    pub spec: PacketCaptureSpec,
}

/// Labels and annotations copied to created captures.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}
