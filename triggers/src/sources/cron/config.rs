//! Configuration of the cron source (`cron:` in the triggers configuration file).

use serde::{Deserialize, Serialize};

/// Default: run CaptureSchedules.
pub const fn default_enabled() -> bool {
    true
}

/// Default seconds before a failed creation is retried.
pub const fn default_retry_seconds() -> u64 {
    5
}

/// CaptureSchedules, run with Kubernetes CronJob semantics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CronConfig {
    /// Run CaptureSchedules. Default: true.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Seconds before a run whose capture could not be created (API server unavailable) is
    /// tried again. Default: 5.
    #[serde(default = "default_retry_seconds")]
    pub retry_seconds: u64,
}

impl Default for CronConfig {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            retry_seconds: default_retry_seconds(),
        }
    }
}
