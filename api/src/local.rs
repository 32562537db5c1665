//! Local mode: what `nightcap local` hands its capture processes instead of the Kubernetes API.
//!
//! The local executor writes, per (capture, node), a targets file: the JSON list of
//! [`LocalTarget`]s selected on that node right now. The capture process re-reads it and
//! attaches/detaches as it changes, the way a capture Job follows pods through a watch. The
//! process reports its `status.nodes[N]` entry ([`crate::NodeCaptureStatus`]) into a report
//! file the executor merges into the capture's status.

use serde::{Deserialize, Serialize};

/// One target a local capture process should capture on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalTarget {
    /// Identity of this incarnation of the target: a network namespace deleted and created
    /// again under the same name gets a new id, so the process attaches to the new one.
    pub id: String,
    /// The target as a pod (`namespace/name`): pcapng interface names, file listings.
    pub pod: String,
    /// Named network namespace (`/var/run/netns/NAME`); `None`: the host's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// Interface (default `eth0` inside a namespace; required without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

/// The targets file: every target of one (capture, node), replaced as a whole.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalTargets {
    /// The targets.
    pub targets: Vec<LocalTarget>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_fields() {
        let t = LocalTargets {
            targets: vec![LocalTarget {
                id: "web-1-4026532000".into(),
                pod: "shop/web-1".into(),
                netns: Some("web-1".into()),
                interface: None,
            }],
        };
        let text = serde_json::to_string(&t).expect("json");
        assert_eq!(
            text,
            r#"{"targets":[{"id":"web-1-4026532000","pod":"shop/web-1","netns":"web-1"}]}"#
        );
        assert_eq!(
            serde_json::from_str::<LocalTargets>(&text).expect("parse"),
            t
        );
        let bad = r#"{"targets":[{"id":"a","pod":"x/y","netnss":"typo"}]}"#;
        assert!(serde_json::from_str::<LocalTargets>(bad).is_err());
    }
}
