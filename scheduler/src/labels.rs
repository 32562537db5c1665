//! Label and annotation keys the scheduler puts on capture Jobs and reads back.

/// Label on capture Jobs and their pods: the UID of the PacketCapture they serve. Pods carrying
/// it are never capture targets themselves.
pub const CAPTURE_UID: &str = "nightcap.dev/capture-uid";
/// Standard label `app.kubernetes.io/name` (value [`APP_NAME`]).
pub const APP: &str = "app.kubernetes.io/name";
/// Value of [`APP`].
pub const APP_NAME: &str = "nightcap";
/// Standard label `app.kubernetes.io/component` (value [`COMPONENT_CAPTURE`]).
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// Value of [`COMPONENT`] on capture Jobs.
pub const COMPONENT_CAPTURE: &str = "capture";
/// Standard label `app.kubernetes.io/managed-by` (value [`MANAGED_BY_SCHEDULER`]).
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY`] on capture Jobs.
pub const MANAGED_BY_SCHEDULER: &str = "nightcap-scheduler";

/// Annotation on capture Jobs: `namespace/name` of the PacketCapture (names may be longer than a
/// label value allows).
pub const CAPTURE_REF: &str = "nightcap.dev/capture";
/// Annotation on capture Jobs: the node the Job is pinned to.
pub const NODE: &str = "nightcap.dev/node";
/// Annotation on capture Jobs: hash of the spec the Job captures with.
pub const SPEC_HASH: &str = "nightcap.dev/spec-hash";
/// Annotation on capture Jobs: since when (RFC 3339) no selected pod runs on the Job's node.
/// The Job is stopped once this is older than the pods-gone grace period.
pub const IDLE_SINCE: &str = "nightcap.dev/idle-since";

/// Annotation on capture Jobs that ended by themselves: their end was reported (an Event).
pub const END_RECORDED: &str = "nightcap.dev/end-recorded";

/// Finalizer on PacketCaptures: the scheduler stops the capture's Jobs before the capture goes.
pub const FINALIZER: &str = "nightcap.dev/stop-jobs";
