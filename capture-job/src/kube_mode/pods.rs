//! Which pods on this node are captured, and attaching/detaching them as they come and go.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use nightcap_api::{PacketCaptureSpec, local::LocalTarget, selector::LabelMatcher};
use nightcap_ebpf::netns;
use tracing::{info, warn};

use crate::{Attach, Capture, Error, TargetId, TargetMeta, TargetSpec};

/// Label the scheduler puts on capture pods; they are never targets.
const CAPTURE_POD_LABEL: &str = "nightcap.dev/capture-uid";
/// The host's network namespace, seen through the host PID namespace (`hostPID: true`): where
/// node-level captures go with [`Attach::Netns`] (with [`Attach::Host`] the process runs in it).
const HOST_NETNS: &str = "/proc/1/ns/net";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Attached {
    id: TargetId,
    /// What was attached: the pod IP (Kubernetes mode) or namespace/interface (local mode).
    /// A change means a new sandbox: detach and attach again.
    key: String,
    name: String,
}

/// The capture's targets on this node.
#[derive(Debug)]
pub(super) struct Targets {
    capture: Arc<Capture>,
    namespace: String,
    /// The capture's pod selector, compiled; `None` for a node-level capture.
    selector: Option<LabelMatcher>,
    /// By pod UID.
    attached: BTreeMap<String, Attached>,
    /// Node-level targets (host interfaces).
    host: Vec<String>,
    /// Pods that could not be attached yet, with why (retried every tick).
    failing: BTreeMap<String, String>,
    /// How pods are reached.
    attach: Attach,
    /// An attachment refused for a missing capability: no target can ever be attached.
    fatal: Option<String>,
}

/// A selected pod that should be captured: (uid, `namespace/name`, IP).
type Wanted = (String, String, IpAddr);

impl Targets {
    pub fn new(
        capture: Arc<Capture>,
        namespace: &str,
        spec: &PacketCaptureSpec,
        attach: Attach,
    ) -> Self {
        Self {
            capture,
            namespace: namespace.into(),
            selector: spec.selector.as_ref().map(LabelMatcher::new),
            attached: BTreeMap::new(),
            host: Vec::new(),
            failing: BTreeMap::new(),
            attach,
            fatal: None,
        }
    }

    /// Remembers an attachment error that names a missing capability (the first one).
    fn note_fatal(&mut self, error: &Error) {
        if self.fatal.is_none() && error.missing_capability().is_some() {
            self.fatal = Some(error.to_string());
        }
    }

    /// Why no target can ever be attached (a missing capability), if that is so.
    pub fn fatal(&self) -> Option<&str> {
        self.fatal.as_deref()
    }

    /// A node-level capture (no pod selector): every interface of the node's namespace — the
    /// process's own with [`Attach::Host`], the one of PID 1 (`hostPID`) with
    /// [`Attach::Netns`].
    pub async fn attach_node_level(&mut self) {
        if self.selector.is_some() {
            return;
        }
        let path = match self.attach {
            Attach::Host => None,
            Attach::Netns => Some(PathBuf::from(HOST_NETNS)),
        };
        let p = path.clone();
        let ifaces =
            tokio::task::spawn_blocking(move || netns::run_in(p.as_deref(), netns::interfaces))
                .await;
        let ifaces = match ifaces {
            Ok(Ok(i)) => i,
            Ok(Err(error)) => {
                let error = Error::Target {
                    target: "the node's interfaces".into(),
                    source: error,
                };
                warn!(%error, "Cannot list the node's interfaces.");
                self.note_fatal(&error);
                return;
            }
            Err(error) => {
                warn!(%error, "Listing the node's interfaces failed.");
                return;
            }
        };
        for iface in ifaces.into_keys().filter(|i| i != "lo") {
            let spec = match &path {
                None => TargetSpec::Interface(iface.clone()),
                Some(path) => TargetSpec::Path {
                    path: path.clone(),
                    interface: iface.clone(),
                },
            };
            let c = self.capture.clone();
            match tokio::task::spawn_blocking(move || c.add_target(&spec, &TargetMeta::default()))
                .await
            {
                Ok(Ok(_)) => self.host.push(iface),
                Ok(Err(error)) => {
                    warn!(%error, interface = %iface, "Cannot capture on a node interface.");
                    self.note_fatal(&error);
                }
                Err(error) => warn!(%error, "Attaching a node interface failed."),
            }
        }
    }

    /// Attaches selected pods that are not attached, detaches those that left, re-attaches
    /// pods whose IP changed (a new sandbox).
    pub async fn sync(&mut self, pods: &[Arc<Pod>]) {
        if self.selector.is_none() {
            return;
        }
        let wanted: BTreeMap<String, (String, IpAddr)> = pods
            .iter()
            .filter_map(|p| wanted(&self.namespace, self.selector.as_ref()?, p))
            .map(|(uid, name, ip)| (uid, (name, ip)))
            .collect();
        let gone: Vec<String> = self
            .attached
            .iter()
            .filter(|(uid, a)| {
                wanted
                    .get(*uid)
                    .is_none_or(|(_, ip)| ip.to_string() != a.key)
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in gone {
            if let Some(a) = self.attached.remove(&uid) {
                info!(pod = %a.name, ip = %a.key, "Pod left the node (or got a new sandbox); detaching.");
                if let Err(error) = self.capture.remove_target(a.id) {
                    warn!(%error, pod = %a.name, "Detaching failed.");
                }
            }
        }
        self.failing.retain(|uid, _| wanted.contains_key(uid));
        for (uid, (name, ip)) in wanted {
            if self.attached.contains_key(&uid) {
                continue;
            }
            let (pod_ns, pod_name) = name.split_once('/').unwrap_or(("", &name));
            let meta = TargetMeta {
                pod: Some((pod_ns.to_string(), pod_name.to_string())),
                pod_uid: Some(uid.clone()),
            };
            let c = self.capture.clone();
            let spec = match self.attach {
                Attach::Host => TargetSpec::HostSide(ip),
                Attach::Netns => TargetSpec::PodIp(ip),
            };
            let attach = tokio::task::spawn_blocking(move || c.add_target(&spec, &meta)).await;
            match attach {
                Ok(Ok(id)) => {
                    info!(pod = %name, %ip, "Attached pod.");
                    self.failing.remove(&uid);
                    let key = ip.to_string();
                    self.attached.insert(uid, Attached { id, key, name });
                }
                Ok(Err(error)) if error.missing_capability().is_some() => {
                    warn!(pod = %name, %ip, %error, "Cannot attach the pod: a capability is missing.");
                    self.note_fatal(&error);
                    self.failing.insert(uid, error.to_string());
                }
                Ok(Err(error)) => {
                    // Usually the pod's network is not up yet; retried on the next tick.
                    if self.failing.insert(uid, error.to_string()).is_none() {
                        warn!(pod = %name, %ip, %error, "Cannot attach the pod yet; retrying.");
                    }
                }
                Err(error) => warn!(pod = %name, %error, "Attaching failed."),
            }
        }
    }

    /// Local mode: attaches the listed targets that are not attached, detaches those no longer
    /// listed (an id changes when a namespace is created again).
    pub async fn sync_local(&mut self, wanted: &[LocalTarget]) {
        let wanted: BTreeMap<&str, &LocalTarget> =
            wanted.iter().map(|t| (t.id.as_str(), t)).collect();
        let gone: Vec<String> = self
            .attached
            .keys()
            .filter(|id| !wanted.contains_key(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            if let Some(a) = self.attached.remove(&id) {
                info!(target = %a.name, at = %a.key, "Target left (or its namespace was recreated); detaching.");
                if let Err(error) = self.capture.remove_target(a.id) {
                    warn!(%error, target = %a.name, "Detaching failed.");
                }
            }
        }
        self.failing
            .retain(|id, _| wanted.contains_key(id.as_str()));
        for (id, t) in wanted {
            if self.attached.contains_key(id) {
                continue;
            }
            let spec = match (&t.netns, &t.interface) {
                (Some(name), interface) => TargetSpec::Netns {
                    name: name.clone(),
                    interface: interface.clone(),
                },
                (None, Some(interface)) => TargetSpec::Interface(interface.clone()),
                (None, None) => {
                    self.failing.insert(
                        id.to_string(),
                        format!("{}: no netns and no interface", t.pod),
                    );
                    continue;
                }
            };
            let key = format!(
                "{}/{}",
                t.netns.as_deref().unwrap_or("host"),
                t.interface
                    .as_deref()
                    .unwrap_or(crate::target::DEFAULT_POD_IFNAME)
            );
            let (pod_ns, pod_name) = t.pod.split_once('/').unwrap_or(("", &t.pod));
            let meta = TargetMeta {
                pod: Some((pod_ns.to_string(), pod_name.to_string())),
                pod_uid: Some(id.to_string()),
            };
            let c = self.capture.clone();
            match tokio::task::spawn_blocking(move || c.add_target(&spec, &meta)).await {
                Ok(Ok(target)) => {
                    info!(target = %t.pod, at = %key, "Attached target.");
                    self.failing.remove(id);
                    self.attached.insert(
                        id.to_string(),
                        Attached {
                            id: target,
                            key,
                            name: t.pod.clone(),
                        },
                    );
                }
                Ok(Err(error)) => {
                    self.note_fatal(&error);
                    if self
                        .failing
                        .insert(id.to_string(), error.to_string())
                        .is_none()
                    {
                        warn!(target = %t.pod, %error, "Cannot attach the target yet; retrying.");
                    }
                }
                Err(error) => warn!(target = %t.pod, %error, "Attaching failed."),
            }
        }
    }

    /// Attached pods (`namespace/name`), sorted.
    pub fn pods(&self) -> Vec<String> {
        let names: BTreeSet<String> = self.attached.values().map(|a| a.name.clone()).collect();
        names.into_iter().collect()
    }

    /// Whether anything is being captured.
    pub fn capturing(&self) -> bool {
        !self.attached.is_empty() || !self.host.is_empty()
    }

    /// Why selected pods are not captured, if any are not.
    pub fn problems(&self) -> Option<String> {
        (!self.failing.is_empty()).then(|| {
            self.failing
                .values()
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// Whether `pod` is captured: a Running pod of the capture's `namespace` selected by
/// `selector`, with an IP, neither a capture pod nor on the host network.
fn wanted(namespace: &str, selector: &LabelMatcher, pod: &Pod) -> Option<Wanted> {
    if pod.namespace().as_deref() != Some(namespace)
        || pod.labels().contains_key(CAPTURE_POD_LABEL)
        || !selector.matches(pod.labels())
    {
        return None;
    }
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None; // a pod capture never sees the node's traffic
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ip: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
    Some((pod.uid()?, format!("{namespace}/{}", pod.name_any()), ip))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::{PodSpec, PodStatus},
        apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement},
    };

    use super::*;

    fn pod(labels: &[(&str, &str)]) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("web-1".into());
        p.metadata.namespace = Some("ns".into());
        p.metadata.uid = Some("u1".into());
        p.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p.spec = Some(PodSpec::default());
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.0.0.7".into()),
            ..PodStatus::default()
        });
        p
    }

    fn selected(sel: &LabelSelector, pod: &Pod) -> bool {
        wanted("ns", &LabelMatcher::new(sel), pod).is_some()
    }

    #[test]
    fn selector_semantics() {
        let web = pod(&[("app", "web")]);
        let req = |op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "app".into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            ..LabelSelector::default()
        };
        assert!(selected(&LabelSelector::default(), &web));
        assert!(selected(&req("In", &["web", "api"]), &web));
        assert!(!selected(&req("NotIn", &["web"]), &web));
        assert!(selected(&req("Exists", &[]), &web));
        assert!(!selected(&req("DoesNotExist", &[]), &web));
        assert!(!selected(&req("Bogus", &["web"]), &web));
        let by_label = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "db".into())])),
            ..LabelSelector::default()
        };
        assert!(!selected(&by_label, &web));
    }

    #[test]
    fn only_running_pods_of_the_namespace_with_their_own_network() {
        let all = LabelSelector::default();
        assert_eq!(
            wanted("ns", &LabelMatcher::new(&all), &pod(&[])),
            Some((
                "u1".into(),
                "ns/web-1".into(),
                "10.0.0.7".parse().expect("ip")
            ))
        );
        assert!(
            !selected(&all, &pod(&[(CAPTURE_POD_LABEL, "x")])),
            "capture pod"
        );
        let mut other = pod(&[]);
        other.metadata.namespace = Some("other".into());
        assert!(!selected(&all, &other), "other namespace");
        let mut host = pod(&[]);
        host.spec = Some(PodSpec {
            host_network: Some(true),
            ..PodSpec::default()
        });
        assert!(!selected(&all, &host), "host network");
        let mut pending = pod(&[]);
        if let Some(s) = pending.status.as_mut() {
            s.phase = Some("Pending".into());
        }
        assert!(!selected(&all, &pending), "not running");
        let mut no_ip = pod(&[]);
        if let Some(s) = no_ip.status.as_mut() {
            s.pod_ip = None;
        }
        assert!(!selected(&all, &no_ip), "no IP yet");
    }
}
