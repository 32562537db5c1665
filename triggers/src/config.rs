//! The triggers configuration file (YAML or JSON): which sources run and the cluster limits.
//! Every section refuses unknown fields, so a typo is an error at start-up.
//!
//! ```yaml
//! webhook:
//!   listen: 0.0.0.0:8080
//!   bearerTokenFile: /var/run/secrets/nightcap/webhook-token
//! nats:
//!   servers: [nats://nats.messaging:4222]
//!   auth: {credentialsFile: /var/run/secrets/nightcap/nats.creds}
//!   consumers:
//!     - {stream: ALERTS, durable: nightcap, filterSubjects: [alerts.>]}
//! cron: {enabled: true}
//! limits: {maxConcurrentPerNamespace: 10, maxConcurrentCluster: 50}
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    sources::{cron::CronConfig, nats::NatsConfig, webhook::WebhookConfig},
};

/// Default cap of running triggered captures per namespace.
pub const fn default_max_per_namespace() -> Option<u32> {
    Some(10)
}

/// Default cap of running triggered captures in the cluster.
pub const fn default_max_cluster() -> Option<u32> {
    Some(50)
}

fn default_namespace_label() -> String {
    "namespace".to_owned()
}

/// Limits on captures created by triggers (schedules are limited by their own policies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsConfig {
    /// Running triggered captures per namespace (`null`: no limit). Default: 10.
    #[serde(default = "default_max_per_namespace")]
    pub max_concurrent_per_namespace: Option<u32>,
    /// Running triggered captures in the cluster (`null`: no limit). Default: 50.
    #[serde(default = "default_max_cluster")]
    pub max_concurrent_cluster: Option<u32>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_concurrent_per_namespace: default_max_per_namespace(),
            max_concurrent_cluster: default_max_cluster(),
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// HTTP webhook (Alertmanager, capture requests). Absent: no webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookConfig>,
    /// NATS subscriptions and JetStream consumers. Absent: no NATS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsConfig>,
    /// CaptureSchedules.
    #[serde(default)]
    pub cron: CronConfig,
    /// Limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Alert label that names the namespace an alert is about. Default: `namespace`.
    #[serde(default = "default_namespace_label")]
    pub namespace_label: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            webhook: None,
            nats: None,
            cron: CronConfig::default(),
            limits: LimitsConfig::default(),
            namespace_label: default_namespace_label(),
        }
    }
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_owned(),
            source,
        })?;
        let cfg: Self = serde_yaml::from_str(&text).map_err(|source| Error::ConfigParse {
            path: path.to_owned(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        if let Some(n) = &self.nats {
            n.validate()?;
        }
        if self.webhook.is_none() && self.nats.is_none() && !self.cron.enabled {
            return Err(Error::ConfigInvalid {
                field: "(top level)".into(),
                message: "no source is enabled: configure webhook and/or nats, or enable cron"
                    .into(),
            });
        }
        if self.namespace_label.is_empty() {
            return Err(Error::ConfigInvalid {
                field: "namespaceLabel".into(),
                message: "must not be empty".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_loads() {
        let doc = include_str!("config.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```yaml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").strip_prefix(' ').unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let cfg: Config = serde_yaml::from_str(&doc).expect("example parses");
        cfg.validate().expect("example is valid");
        let nats = cfg.nats.expect("nats");
        assert_eq!(nats.consumers[0].max_deliver, 5, "defaults apply");
        assert_eq!(cfg.limits.max_concurrent_cluster, Some(50));
        assert_eq!(Config::default().namespace_label, "namespace");
        Config::default()
            .validate()
            .expect("defaults are valid (cron on)");
    }

    #[test]
    fn typos_and_empty_configs_are_refused() {
        let err = serde_yaml::from_str::<Config>("webhok: {}").expect_err("typo");
        assert!(err.to_string().contains("unknown field `webhok`"), "{err}");
        let err = serde_yaml::from_str::<Config>("webhook: {listen: 0.0.0.0:80, maxBody: 1}")
            .expect_err("typo");
        assert!(err.to_string().contains("unknown field `maxBody`"), "{err}");
        let cfg: Config = serde_yaml::from_str("cron: {enabled: false}").expect("parses");
        assert!(cfg.validate().is_err());
        let cfg: Config = serde_yaml::from_str(
            "nats: {servers: [nats://x:4222], auth: {tokenFile: /t, user: u, passwordFile: /p}, subscriptions: [{subject: a}]}",
        )
        .expect("parses");
        let err = cfg.validate().expect_err("two auth methods");
        assert!(err.to_string().contains("set one of"), "{err}");
    }
}
