//! Target observation: which configured targets exist right now (as the planner's facts and as
//! what a capture process attaches), the nodes they run on, and the targets each capture
//! process gets.

use std::{collections::BTreeSet, os::unix::fs::MetadataExt, path::Path};

use kube::ResourceExt;
use nightcap_api::{
    PacketCapture,
    local::{LocalTarget, LocalTargets},
    selector::LabelMatcher,
};

use crate::config::TargetConfig;
use nightcap_scheduler::plan::{NodeFact, Readiness, TargetFact, TargetPhase};

/// Where `ip netns` keeps named network namespaces.
const NETNS_DIR: &str = "/var/run/netns";

/// A target that exists now: what the planner sees and what a capture process attaches.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    pub fact: TargetFact,
    pub target: LocalTarget,
}

impl Observed {
    fn node(&self) -> &str {
        self.fact.node.as_deref().unwrap_or_default()
    }
}

/// The configured targets whose network namespace (or interface) exists, each running on its
/// node (`default_node` when it names none).
pub(crate) fn observe(targets: &[TargetConfig], default_node: &str) -> Vec<Observed> {
    let mut out = Vec::new();
    for t in targets {
        // The identity of this incarnation: the namespace file's inode or the interface's
        // index, so a target created again is a new sandbox.
        let incarnation = match (&t.netns, &t.interface) {
            (Some(ns), _) => std::fs::metadata(Path::new(NETNS_DIR).join(ns))
                .ok()
                .map(|m| format!("ns{}", m.ino())),
            (None, Some(iface)) => {
                std::fs::read_to_string(format!("/sys/class/net/{iface}/ifindex"))
                    .ok()
                    .map(|i| format!("if{}", i.trim()))
            }
            (None, None) => None,
        };
        let Some(incarnation) = incarnation else {
            continue;
        };
        let node = t.node.clone().unwrap_or_else(|| default_node.to_string());
        let id = format!("{}.{}.{incarnation}", t.namespace, t.name);
        out.push(Observed {
            fact: TargetFact {
                namespace: t.namespace.clone(),
                name: t.name.clone(),
                uid: id.clone(),
                labels: t.labels.clone(),
                node: Some(node),
                phase: TargetPhase::Running,
                host_network: false,
                ips: Vec::new(),
            },
            target: LocalTarget {
                id,
                pod: format!("{}/{}", t.namespace, t.name),
                netns: t.netns.clone(),
                interface: t.interface.clone(),
            },
        });
    }
    out
}

/// Every node named in the configuration (and the default one), all Ready: this machine.
pub(crate) fn nodes(
    targets: &[TargetConfig],
    default_node: &str,
    observed: &[Observed],
) -> Vec<NodeFact> {
    let mut names: BTreeSet<String> = BTreeSet::from([default_node.to_string()]);
    names.extend(targets.iter().filter_map(|t| t.node.clone()));
    names.extend(observed.iter().map(|o| o.node().to_string()));
    names
        .into_iter()
        .map(|name| NodeFact {
            name,
            labels: Default::default(),
            readiness: Readiness::Ready,
        })
        .collect()
}

/// The targets `pc` selects on `node`: targets of its namespace matching its selector, or every
/// target on the node for a node-level capture.
pub(crate) fn selected(pc: &PacketCapture, node: &str, observed: &[Observed]) -> LocalTargets {
    let ns = pc.namespace().unwrap_or_default();
    let spec = pc
        .status
        .as_ref()
        .and_then(|s| s.accepted_spec.as_ref())
        .unwrap_or(&pc.spec);
    let matcher = spec.selector.as_ref().map(LabelMatcher::new);
    let mut targets: Vec<LocalTarget> = observed
        .iter()
        .filter(|o| o.node() == node)
        .filter(|o| match &matcher {
            Some(m) => o.fact.namespace == ns && m.matches(&o.fact.labels),
            None => true,
        })
        .map(|o| o.target.clone())
        .collect();
    targets.sort();
    LocalTargets { targets }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use nightcap_api::PacketCaptureSpec;

    use super::*;

    fn observed(ns: &str, name: &str, app: &str, node: &str) -> Observed {
        Observed {
            fact: TargetFact {
                namespace: ns.into(),
                name: name.into(),
                labels: BTreeMap::from([("app".into(), app.into())]),
                node: Some(node.into()),
                ..TargetFact::default()
            },
            target: LocalTarget {
                id: format!("{ns}.{name}.ns1"),
                pod: format!("{ns}/{name}"),
                netns: Some(name.into()),
                interface: None,
            },
        }
    }

    fn capture(spec: &str) -> PacketCapture {
        let spec: PacketCaptureSpec = serde_yaml::from_str(spec).expect("spec");
        let mut pc = PacketCapture::new("c", spec);
        pc.metadata.namespace = Some("shop".into());
        pc
    }

    fn pods(t: &LocalTargets) -> Vec<&str> {
        t.targets.iter().map(|t| t.pod.as_str()).collect()
    }

    fn target(name: &str, netns: Option<&str>, interface: Option<&str>) -> TargetConfig {
        TargetConfig {
            name: name.into(),
            namespace: "shop".into(),
            netns: netns.map(Into::into),
            interface: interface.map(Into::into),
            labels: BTreeMap::from([("app".into(), "web".into())]),
            node: None,
        }
    }

    #[test]
    fn selects_by_labels_in_the_capture_namespace_on_the_node() {
        let all = [
            observed("shop", "web-1", "web", "a"),
            observed("shop", "web-2", "web", "b"),
            observed("shop", "db", "db", "a"),
            observed("other", "web-x", "web", "a"),
        ];
        let pc = capture("{selector: {matchLabels: {app: web}}}");
        assert_eq!(pods(&selected(&pc, "a", &all)), ["shop/web-1"]);
        assert_eq!(pods(&selected(&pc, "b", &all)), ["shop/web-2"]);
        assert!(selected(&pc, "c", &all).targets.is_empty());
        // A node-level capture takes every target of its node, whatever the namespace.
        let node_level = capture("{nodeNames: [a]}");
        assert_eq!(
            pods(&selected(&node_level, "a", &all)),
            ["other/web-x", "shop/db", "shop/web-1"]
        );
    }

    #[test]
    fn the_accepted_spec_wins_over_an_edited_one() {
        let all = [
            observed("shop", "web-1", "web", "a"),
            observed("shop", "db", "db", "a"),
        ];
        let mut pc = capture("{selector: {matchLabels: {app: db}}}");
        pc.status = Some(nightcap_api::PacketCaptureStatus {
            accepted_spec: Some(
                serde_yaml::from_str("{selector: {matchLabels: {app: web}}}").expect("spec"),
            ),
            ..Default::default()
        });
        assert_eq!(pods(&selected(&pc, "a", &all)), ["shop/web-1"]);
    }

    #[test]
    fn targets_exist_while_their_interface_or_namespace_does() {
        let ifindex = std::fs::read_to_string("/sys/class/net/lo/ifindex").expect("lo exists");
        let mut on_b = target("uplink", None, Some("lo"));
        on_b.node = Some("node-b".into());
        let config = [
            on_b,
            target("gone", Some("nightcap-test-no-such-netns"), None),
            target("no-iface", None, Some("nightcap-no-such-if")),
        ];
        let seen = observe(&config, "node-a");
        assert_eq!(seen.len(), 1, "only the existing interface: {seen:?}");
        let o = &seen[0];
        let id = format!("shop.uplink.if{}", ifindex.trim());
        assert_eq!(
            o.fact,
            TargetFact {
                namespace: "shop".into(),
                name: "uplink".into(),
                uid: id.clone(),
                labels: BTreeMap::from([("app".into(), "web".into())]),
                node: Some("node-b".into()),
                phase: TargetPhase::Running,
                host_network: false,
                ips: Vec::new(),
            }
        );
        assert_eq!(
            o.target,
            LocalTarget {
                id,
                pod: "shop/uplink".into(),
                netns: None,
                interface: Some("lo".into()),
            }
        );
        let names: Vec<(String, Readiness)> = nodes(&config, "node-a", &seen)
            .into_iter()
            .map(|n| (n.name, n.readiness))
            .collect();
        assert_eq!(
            names,
            [
                ("node-a".to_string(), Readiness::Ready),
                ("node-b".to_string(), Readiness::Ready)
            ]
        );
    }
}
