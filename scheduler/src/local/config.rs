//! The `nightcap local` configuration file: where files go, the targets (network namespaces or
//! interfaces standing in for pods, each with labels and a node) and the captures.
//!
//! ```yaml
//! output: s3://captures/laptop        # or file:///var/lib/nightcap
//! node: laptop                        # node of targets without one (default: the host name)
//! targets:
//!   - name: web-1                     # a "pod": namespace/name, labels, node
//!     namespace: shop                 # default: default
//!     netns: web-1                    # /var/run/netns/web-1, interface eth0 by default
//!     labels: {app: web}
//!   - name: uplink
//!     interface: enp1s0               # an interface of the host's namespace
//!     labels: {role: uplink}
//! captures:                           # PacketCapture manifests, as for kubectl apply
//!   - apiVersion: nightcap.dev/v1alpha1
//!     kind: PacketCapture
//!     metadata: {name: web-debug, namespace: shop}
//!     spec: {selector: {matchLabels: {app: web}}, duration: 10m}
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use kube::ResourceExt;
use nightcap_api::{
    PacketCapture, ValidationErrors,
    validation::{validate_dns1123_label, validate_dns1123_subdomain, validate_labels},
};
use serde::Deserialize;

use crate::{Error, Result};

/// Namespace of targets and captures that name none.
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
    /// The captures.
    #[serde(default)]
    pub captures: Vec<PacketCapture>,
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

impl LocalConfig {
    /// Reads and checks the file; every problem is reported with its path.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Parses and checks the YAML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut cfg: Self = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        for pc in &mut cfg.captures {
            if pc.metadata.namespace.is_none() {
                pc.metadata.namespace = Some(DEFAULT_NAMESPACE.into());
            }
        }
        cfg.check().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        if self.output.trim().is_empty() {
            errs.push("output", "required: file:///dir or s3://bucket/prefix");
        }
        if let Some(node) = &self.node {
            validate_dns1123_subdomain(node, "node", &mut errs);
        }
        let mut seen = BTreeSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let path = format!("targets[{i}]");
            validate_dns1123_subdomain(&t.name, &format!("{path}.name"), &mut errs);
            validate_dns1123_label(&t.namespace, &format!("{path}.namespace"), &mut errs);
            validate_labels(&t.labels, &format!("{path}.labels"), &mut errs);
            if let Some(node) = &t.node {
                validate_dns1123_subdomain(node, &format!("{path}.node"), &mut errs);
            }
            if t.netns.is_none() && t.interface.is_none() {
                errs.push(
                    path.clone(),
                    "needs netns (a named network namespace) or interface (of the host)",
                );
            }
            for (field, value) in [("netns", &t.netns), ("interface", &t.interface)] {
                if let Some(v) = value
                    && (v.is_empty() || v.contains('/') || v.len() > 255)
                {
                    errs.push(format!("{path}.{field}"), "must be a plain name");
                }
            }
            if !seen.insert((t.namespace.as_str(), t.name.as_str())) {
                errs.push(
                    format!("{path}.name"),
                    format!("{}/{} is listed twice", t.namespace, t.name),
                );
            }
        }
        let mut seen = BTreeSet::new();
        for (i, pc) in self.captures.iter().enumerate() {
            let path = format!("captures[{i}]");
            let name = pc.name_any();
            let ns = pc.namespace().unwrap_or_default();
            validate_dns1123_subdomain(&name, &format!("{path}.metadata.name"), &mut errs);
            validate_dns1123_label(&ns, &format!("{path}.metadata.namespace"), &mut errs);
            if !seen.insert((ns.clone(), name.clone())) {
                errs.push(
                    format!("{path}.metadata.name"),
                    format!("{ns}/{name} is listed twice"),
                );
            }
        }
        errs.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
output: file:///tmp/x
targets:
  - {name: web-1, namespace: shop, netns: web-1, labels: {app: web}, node: node-a}
  - {name: uplink, interface: eth1}
captures:
  - apiVersion: nightcap.dev/v1alpha1
    kind: PacketCapture
    metadata: {name: web-debug, namespace: shop}
    spec: {selector: {matchLabels: {app: web}}, duration: 10m}
  - apiVersion: nightcap.dev/v1alpha1
    kind: PacketCapture
    metadata: {name: uplink}
    spec: {selector: {matchLabels: {role: uplink}}}
"#;

    #[test]
    fn parses_with_defaults() {
        let cfg = LocalConfig::parse(GOOD).expect("valid");
        assert_eq!(cfg.targets[1].namespace, "default");
        assert_eq!(cfg.targets[0].node.as_deref(), Some("node-a"));
        assert_eq!(cfg.captures[1].namespace().as_deref(), Some("default"));
        assert_eq!(cfg.captures[0].spec.duration.as_deref(), Some("10m"));
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let bad = r#"
output: ""
targets:
  - {name: Web_1, netns: a/b}
  - {name: db}
  - {name: db, interface: eth0}
captures:
  - {apiVersion: nightcap.dev/v1alpha1, kind: PacketCapture, metadata: {name: x}, spec: {}}
  - {apiVersion: nightcap.dev/v1alpha1, kind: PacketCapture, metadata: {name: x}, spec: {}}
"#;
        let err = LocalConfig::parse(bad).expect_err("invalid");
        for want in [
            "output",
            "targets[0].name",
            "targets[0].netns",
            "targets[1]: needs netns",
            "targets[2].name: default/db is listed twice",
            "captures[1].metadata.name: default/x is listed twice",
        ] {
            assert!(err.contains(want), "{want:?} missing from: {err}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = LocalConfig::parse("output: file:///x\ntargts: []\n").expect_err("typo");
        assert!(err.contains("unknown field `targts`"), "{err}");
        let err = LocalConfig::parse("output: file:///x\ntargets: [{name: a, netnz: b}]\n")
            .expect_err("typo");
        assert!(err.contains("unknown field `netnz`"), "{err}");
    }
}
