//! `CaptureSchedule`: captures on a cron schedule, with Kubernetes CronJob semantics.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::capture::PacketCaptureTemplate;

/// Default number of finished successful captures kept.
pub const DEFAULT_SUCCESSFUL_HISTORY_LIMIT: u32 = 3;
/// Default number of failed captures kept.
pub const DEFAULT_FAILED_HISTORY_LIMIT: u32 = 1;

/// A schedule that creates PacketCaptures, like a CronJob creates Jobs.
// Several `printcolumn(...)` share `type_ = ...`, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "nightcap.dev",
    version = "v1alpha1",
    kind = "CaptureSchedule",
    plural = "captureschedules",
    shortname = "pcapsched",
    category = "nightcap",
    namespaced,
    status = "CaptureScheduleStatus",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Timezone", type_ = "string", json_path = ".spec.timeZone"),
    printcolumn(name = "Suspend", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(
        name = "Last Schedule",
        type_ = "date",
        json_path = ".status.lastScheduleTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CaptureScheduleSpec {
    /// Cron schedule: 5 fields (`minute hour day-of-month month day-of-week`) or a macro
    /// (`@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`).
    pub schedule: String,
    /// IANA time zone the schedule is read in (`Europe/Berlin`). Default: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// What to do when a run is due while the previous capture is still running.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// A run missed by more than this many seconds is skipped (counted as missed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_deadline_seconds: Option<i64>,
    /// Suspend future runs (running captures continue).
    #[serde(default)]
    pub suspend: bool,
    /// Finished successful captures to keep. Default: 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successful_history_limit: Option<u32>,
    /// Failed captures to keep. Default: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_history_limit: Option<u32>,
    /// The capture each run creates (in the schedule's namespace).
    pub template: PacketCaptureTemplate,
}

/// CronJob's concurrency policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Runs may overlap.
    #[default]
    Allow,
    /// Skip a run while the previous capture is still running.
    Forbid,
    /// Stop the running capture and start the new one.
    Replace,
}

/// Observed state of a schedule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaptureScheduleStatus {
    /// Captures created by this schedule that are still running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<String>,
    /// Last time a run was scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// Last time a run finished successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// Conditions (`Valid`, `TooManyMissedRuns`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
