//! The `nightcap local` configuration file: where files go, the "pods" (network namespaces or
//! interfaces, each with a namespace, labels and a node), the sources of alerts, the gateway,
//! and the manifests — PacketCaptures, CaptureTriggers and CaptureSchedules exactly as
//! `kubectl apply` takes them. `examples/local/nightcap.yaml` is a commented example.
//!
//! ```yaml
//! output: file:///var/lib/nightcap/files  # or s3://bucket/prefix (AWS_* environment)
//! node: laptop                            # node of targets without one (default: host name)
//! targets:
//!   - {name: web-1, namespace: shop, netns: web-1, labels: {app: web}}
//! webhook: {listen: 127.0.0.1:9093, bearerTokenFile: /etc/nightcap/webhook-token}
//! gateway:
//!   listen: 127.0.0.1:9094
//!   tokens: [{user: oncall, token: "…", namespaces: [shop]}]
//! captures: []                            # PacketCapture manifests
//! triggers: []                            # CaptureTrigger manifests
//! schedules: []                           # CaptureSchedule manifests
//! ```
//!
//! Every problem is reported with its path, all at once; unknown fields are refused, inside
//! the manifests too.

mod check;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use nightcap_api::{CaptureSchedule, CaptureTrigger, PacketCapture};
use nightcap_gateway::auth::TokenEntry;
use nightcap_triggers::{
    config::LimitsConfig,
    sources::{nats::NatsConfig, webhook::WebhookConfig},
};
use serde::Deserialize;

use crate::{Error, Result};

/// Namespace of targets and manifests that name none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalConfig {
    /// Where files go: `file:///dir` or `s3://bucket/prefix` (endpoint and credentials from the
    /// `AWS_*` environment, as for `nightcap capture`).
    pub output: String,
    /// Node of targets that name none (default: the host name).
    #[serde(default)]
    pub node: Option<String>,
    /// What can be captured.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// The HTTP webhook for Alertmanager and capture requests (as in `nightcap triggers`).
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// NATS subscriptions and JetStream consumers (as in `nightcap triggers`).
    #[serde(default)]
    pub nats: Option<NatsConfig>,
    /// Limits on captures started by triggers.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Alert label naming the namespace an alert is about. Default: `namespace`.
    #[serde(default = "default_namespace_label")]
    pub namespace_label: String,
    /// The gateway: files, files.zip, share links and the capture API, with `/metrics`.
    #[serde(default)]
    pub gateway: Option<GatewayConfig>,
    /// PacketCapture manifests.
    #[serde(default)]
    pub captures: Vec<PacketCapture>,
    /// CaptureTrigger manifests.
    #[serde(default)]
    pub triggers: Vec<CaptureTrigger>,
    /// CaptureSchedule manifests.
    #[serde(default)]
    pub schedules: Vec<CaptureSchedule>,
}

fn default_namespace_label() -> String {
    "namespace".into()
}

/// One target: a network namespace (or a host interface) standing in for a pod.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetConfig {
    /// Pod name.
    pub name: String,
    /// Pod namespace (captures select targets of their own namespace only).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Named network namespace (`/var/run/netns/NAME`); the target exists while it does.
    #[serde(default)]
    pub netns: Option<String>,
    /// Interface: inside `netns` (default `eth0`), or of the host's namespace without one.
    #[serde(default)]
    pub interface: Option<String>,
    /// Labels for capture selectors.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Node the target runs on (default: the file's `node`).
    #[serde(default)]
    pub node: Option<String>,
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.into()
}

/// The gateway of `nightcap local`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address to listen on. Default: `127.0.0.1:9094`.
    #[serde(default = "default_gateway_listen")]
    pub listen: SocketAddr,
    /// Base URL clients reach it at (share links, signed URLs). Default: `http://LISTEN`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Who may read (and, with `edit: true`, create and stop) captures of which namespaces.
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
    /// Or a token file (`tokens:` in the same form), read at start.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    /// Expiry of file URLs when a request names none. Default: `15m`.
    #[serde(default)]
    pub default_expiry: Option<String>,
    /// Longest expiry a caller may ask for. Default: `7d`.
    #[serde(default)]
    pub max_expiry: Option<String>,
}

fn default_gateway_listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 9094))
}

impl LocalConfig {
    /// Reads and checks the file; every problem is reported with its path.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Parses and checks the YAML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: serde_json::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let mut cfg: Self = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        for pc in &mut cfg.captures {
            pc.metadata.namespace.get_or_insert_with(default_namespace);
        }
        for t in &mut cfg.triggers {
            t.metadata.namespace.get_or_insert_with(default_namespace);
        }
        for s in &mut cfg.schedules {
            s.metadata.namespace.get_or_insert_with(default_namespace);
        }
        let mut errs = check::unknown_fields(&raw, &cfg);
        errs.0.extend(cfg.check().0);
        if errs.is_empty() {
            Ok(cfg)
        } else {
            Err(check::describe(&errs))
        }
    }

    /// Whether anything here starts captures by itself or serves requests: then `nightcap
    /// local` keeps running after the listed captures finished.
    pub fn serves(&self) -> bool {
        self.webhook.is_some()
            || self.nats.is_some()
            || self.gateway.is_some()
            || !self.triggers.is_empty()
            || !self.schedules.is_empty()
    }
}
