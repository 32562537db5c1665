//! The capture Job: one per (capture, node), pinned to the node, with the least privilege the
//! capture engine needs.
//!
//! # Security context (each capability and host setting, and why)
//!
//! The container is **not** privileged. It runs as root inside the container with every
//! capability dropped except those of its [`CaptureAttach`] mode ([`capabilities`]; Kubernetes
//! gives no ambient capabilities to non-root users, so uid 0 with a minimal bounding set is the
//! least-privilege form). Each listed capability was measured to be needed: removing any one
//! makes the capture fail with an error naming it (docs/decisions/0008-capture-privileges.md).
//!
//! **`host` (the default)**: the engine captures on the node's interface that carries the
//! pod's packets (the host side of its veth, or the bridge port its MAC is behind), found with
//! netlink in the node's network namespace. No namespace is entered.
//!
//! | setting | why the capture engine needs it |
//! |---|---|
//! | `NET_RAW` | `socket(AF_PACKET, …)` — the packet socket (TPACKET_V3 ring) that reads the packets |
//! | `BPF` | `bpf(BPF_MAP_CREATE, BPF_PROG_LOAD)` of the eBPF socket filter and its maps; distributions disable unprivileged BPF |
//! | `PERFMON` | without it the verifier checks the program as an unprivileged one (Spectre v1 pointer-arithmetic rules) and refuses the filter with EACCES |
//! | `hostNetwork: true`, `dnsPolicy: ClusterFirstWithHostNet` | the pods' host-side interfaces, routes, neighbour and bridge tables are in the node's network namespace; the DNS policy keeps cluster DNS for the API and storage |
//! | `hostPID: false`, no host path | nothing of other processes is read |
//! | `allowPrivilegeEscalation: false` | nothing needs to gain privileges (Kubernetes accepts `false` without `SYS_ADMIN`) |
//!
//! **`netns`** (`--capture-attach=netns`, for CNIs that do not route a pod IP to a per-pod
//! device of the node, e.g. overlay or eBPF datapaths): the engine finds the pod's namespace by
//! its IP and opens the socket inside it.
//!
//! | setting | why the capture engine needs it |
//! |---|---|
//! | `NET_RAW` | the packet socket, as above |
//! | `SYS_ADMIN` | `setns(fd, CLONE_NEWNET)` into the pod's network namespace; Linux has no narrower capability for `setns`. The kernel also accepts it in place of `BPF` and `PERFMON` (`bpf_capable()`, `perfmon_capable()`), so those are not added |
//! | `SYS_PTRACE` | opening `/proc/<pid>/ns/net` of pod processes that hold capabilities the capture process lacks passes the kernel's ptrace read-access check only with it |
//! | `hostPID: true` | the netns resolver scans `/proc/*/ns/net` for the pod's IP; only the host PID namespace shows the pods' processes |
//! | `/var/run/netns` (hostPath, read-only, `HostToContainer`) | the runtime's named network namespaces (containerd, CRI-O); propagation makes namespaces created after the Job started visible |
//! | `hostNetwork: false` | the engine enters each pod's namespace itself |
//! | `allowPrivilegeEscalation` unset | Kubernetes rejects `false` together with `SYS_ADMIN` |
//!
//! Both: read-only root filesystem, the spool is an `emptyDir` with a `sizeLimit`, `/tmp` is a
//! small `emptyDir`, seccomp `RuntimeDefault` (it allows `bpf` and `setns` to holders of the
//! capabilities above), the service account `nightcap-capture`, storage credentials only from a
//! Secret via `envFrom`. The mode reaches the capture process as `--attach`, so it never
//! enters a namespace in `host` mode.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{
            Capabilities, Container, EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource,
            HostPathVolumeSource, ObjectFieldSelector, PodSecurityContext, PodSpec,
            PodTemplateSpec, ResourceRequirements, SeccompProfile, SecretEnvSource,
            SecurityContext, Toleration, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};
use kube::{Resource, ResourceExt};
use nightcap_api::PacketCapture;

use crate::{
    Error, Result, labels,
    plan::{JobRequest, spec_hash},
};

/// How a capture Job reaches the pods of its node (the scheduler's `--capture-attach`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CaptureAttach {
    /// On the node's interface that carries each pod's packets, from the node's network
    /// namespace (`hostNetwork`); capabilities [`HOST_CAPABILITIES`].
    #[default]
    Host,
    /// Inside each pod's network namespace (`hostPID`, `setns`); capabilities
    /// [`NETNS_CAPABILITIES`].
    Netns,
}

impl CaptureAttach {
    /// The value of the capture process's `--attach`.
    pub fn as_arg(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Netns => "netns",
        }
    }
}

/// Capabilities added in [`CaptureAttach::Host`] mode (all others are dropped), with the reason.
pub const HOST_CAPABILITIES: &[(&str, &str)] = &[
    (
        "NET_RAW",
        "open the AF_PACKET socket on the pod's host-side interface",
    ),
    ("BPF", "load the eBPF socket filter and its maps"),
    (
        "PERFMON",
        "have the verifier check the filter in its privileged mode (it refuses it otherwise)",
    ),
];

/// Capabilities added in [`CaptureAttach::Netns`] mode (all others are dropped), with the
/// reason. `SYS_ADMIN` also satisfies the kernel's checks for `BPF` and `PERFMON`, so those are
/// not listed.
pub const NETNS_CAPABILITIES: &[(&str, &str)] = &[
    (
        "NET_RAW",
        "open the AF_PACKET socket inside the pod's network namespace",
    ),
    (
        "SYS_ADMIN",
        "setns() into the pod's network namespace (and, for the kernel, BPF and PERFMON)",
    ),
    (
        "SYS_PTRACE",
        "open /proc/<pid>/ns/net of pod processes with capabilities the capture lacks",
    ),
];

/// The capabilities a capture Job of mode `attach` adds, with the reason for each.
pub fn capabilities(attach: CaptureAttach) -> &'static [(&'static str, &'static str)] {
    match attach {
        CaptureAttach::Host => HOST_CAPABILITIES,
        CaptureAttach::Netns => NETNS_CAPABILITIES,
    }
}

/// Default mount path of the spool (files not uploaded yet) in the capture container.
pub const SPOOL_DIR: &str = "/var/spool/nightcap";
/// Host directory of the runtime's named network namespaces.
pub const HOST_NETNS_DIR: &str = "/var/run/netns";
/// Name of the capture container.
pub const CONTAINER: &str = "capture";

/// Cluster-wide settings of capture Jobs (from the scheduler's flags).
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Container image (the nightcap image).
    pub image: String,
    /// `imagePullPolicy`, if set.
    pub image_pull_policy: Option<String>,
    /// The nightcap binary inside the image.
    pub program: String,
    /// Service account of capture pods.
    pub service_account: String,
    /// Secret with the default store's settings and credentials; a capture with
    /// `spec.storage: NAME` uses `<this>-NAME`.
    pub storage_secret: String,
    /// `sizeLimit` of the spool `emptyDir`, in bytes (also passed to the engine).
    pub spool_bytes: u64,
    /// `backoffLimit` (pod restarts before the Job fails).
    pub backoff_limit: i32,
    /// `ttlSecondsAfterFinished` of the Job object (not of the files).
    pub ttl_seconds_after_finished: i32,
    /// Time the pod gets after SIGTERM to upload its open file.
    pub termination_grace_period_seconds: i64,
    /// Tolerations (default: tolerate every taint, so tainted nodes are captured too).
    pub tolerations: Vec<Toleration>,
    /// Container resources.
    pub resources: Option<ResourceRequirements>,
    /// `priorityClassName`, if any.
    pub priority_class_name: Option<String>,
    /// Namespace of capture Jobs. `None`: the capture's own namespace, with an owner reference
    /// to the capture. `Some(ns)`: that namespace (e.g. `nightcap-system`), without an owner
    /// reference (Kubernetes forbids cross-namespace owners; the finalizer cleans up).
    pub namespace: Option<String>,
    /// `RUST_LOG` of the capture process, if set.
    pub log_filter: Option<String>,
    /// Where the spool `emptyDir` is mounted in the capture container.
    pub spool_dir: String,
    /// The capture process stops by itself after its node had no selected pod this long (the
    /// planner's pods-gone grace period).
    pub exit_when_idle: Option<std::time::Duration>,
    /// How the capture process reaches pods (host network or pod namespaces), which decides
    /// its privileges.
    pub attach: CaptureAttach,
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            image: "ghcr.io/nightcap-dev/nightcap:latest".into(),
            image_pull_policy: None,
            program: "nightcap".into(),
            service_account: "nightcap-capture".into(),
            storage_secret: "nightcap-storage".into(),
            spool_bytes: 1 << 30,
            backoff_limit: 3,
            ttl_seconds_after_finished: 3600,
            termination_grace_period_seconds: 60,
            tolerations: vec![Toleration {
                operator: Some("Exists".into()),
                ..Toleration::default()
            }],
            resources: None,
            priority_class_name: None,
            namespace: None,
            log_filter: None,
            spool_dir: SPOOL_DIR.into(),
            exit_when_idle: Some(crate::plan::DEFAULT_PODS_GONE_GRACE),
            attach: CaptureAttach::Host,
        }
    }
}

/// The namespace a capture's Jobs live in.
pub fn job_namespace(capture: &PacketCapture, cfg: &JobConfig) -> Result<String> {
    match &cfg.namespace {
        Some(ns) => Ok(ns.clone()),
        None => capture
            .namespace()
            .ok_or_else(|| Error::MissingMetadata(capture.name_any(), "namespace")),
    }
}

/// The Secret a capture's Job reads its storage settings from.
pub fn storage_secret(capture: &PacketCapture, cfg: &JobConfig) -> String {
    match &capture.spec.storage {
        Some(store) => format!("{}-{store}", cfg.storage_secret),
        None => cfg.storage_secret.clone(),
    }
}

/// The Job for one node of a capture.
pub fn build_job(capture: &PacketCapture, req: &JobRequest, cfg: &JobConfig) -> Result<Job> {
    let name = capture.name_any();
    let capture_ns = capture
        .namespace()
        .ok_or_else(|| Error::MissingMetadata(name.clone(), "namespace"))?;
    let uid = capture
        .uid()
        .ok_or_else(|| Error::MissingMetadata(name.clone(), "uid"))?;
    let namespace = job_namespace(capture, cfg)?;
    let owner_references = match cfg.namespace {
        None => capture.controller_owner_ref(&()).map(|r| vec![r]),
        Some(_) => None,
    };
    let accepted = capture
        .status
        .as_ref()
        .and_then(|s| s.accepted_spec.as_ref())
        .unwrap_or(&capture.spec);
    let pod_labels = BTreeMap::from([
        (labels::APP.to_string(), labels::APP_NAME.to_string()),
        (
            labels::COMPONENT.to_string(),
            labels::COMPONENT_CAPTURE.to_string(),
        ),
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_SCHEDULER.to_string(),
        ),
        (labels::CAPTURE_UID.to_string(), uid.clone()),
    ]);
    let annotations = BTreeMap::from([
        (
            labels::CAPTURE_REF.to_string(),
            format!("{capture_ns}/{name}"),
        ),
        (labels::NODE.to_string(), req.node.clone()),
        (labels::SPEC_HASH.to_string(), spec_hash(accepted)),
    ]);
    let spool_quantity = Quantity(cfg.spool_bytes.to_string());
    let host = cfg.attach == CaptureAttach::Host;
    let mut volumes = vec![
        Volume {
            name: "spool".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(spool_quantity),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("16Mi".into())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    if !host {
        volumes.push(Volume {
            name: "host-netns".into(),
            host_path: Some(HostPathVolumeSource {
                path: HOST_NETNS_DIR.into(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            ..Volume::default()
        });
    }
    let pod = PodSpec {
        node_name: Some(req.node.clone()),
        restart_policy: Some("OnFailure".into()),
        service_account_name: Some(cfg.service_account.clone()),
        automount_service_account_token: Some(true),
        host_pid: Some(!host),
        host_network: Some(host),
        dns_policy: host.then(|| "ClusterFirstWithHostNet".into()),
        host_ipc: Some(false),
        termination_grace_period_seconds: Some(cfg.termination_grace_period_seconds),
        tolerations: Some(cfg.tolerations.clone()).filter(|t| !t.is_empty()),
        priority_class_name: cfg.priority_class_name.clone(),
        security_context: Some(PodSecurityContext {
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![container(capture_ns.as_str(), &name, &uid, capture, cfg)],
        volumes: Some(volumes),
        ..PodSpec::default()
    };
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(req.name.clone()),
            namespace: Some(namespace),
            labels: Some(pod_labels.clone()),
            annotations: Some(annotations),
            owner_references,
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            active_deadline_seconds: Some(req.active_deadline_seconds),
            backoff_limit: Some(cfg.backoff_limit),
            ttl_seconds_after_finished: Some(cfg.ttl_seconds_after_finished),
            completions: Some(1),
            parallelism: Some(1),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        status: None,
    })
}

fn container(
    capture_ns: &str,
    name: &str,
    uid: &str,
    capture: &PacketCapture,
    cfg: &JobConfig,
) -> Container {
    let field = |path: &str| EnvVarSource {
        field_ref: Some(ObjectFieldSelector {
            field_path: path.into(),
            ..ObjectFieldSelector::default()
        }),
        ..EnvVarSource::default()
    };
    let mut env = vec![
        EnvVar {
            name: "NODE_NAME".into(),
            value_from: Some(field("spec.nodeName")),
            ..EnvVar::default()
        },
        EnvVar {
            name: "POD_NAME".into(),
            value_from: Some(field("metadata.name")),
            ..EnvVar::default()
        },
        EnvVar {
            name: "POD_NAMESPACE".into(),
            value_from: Some(field("metadata.namespace")),
            ..EnvVar::default()
        },
    ];
    if let Some(filter) = &cfg.log_filter {
        env.push(EnvVar {
            name: "RUST_LOG".into(),
            value: Some(filter.clone()),
            ..EnvVar::default()
        });
    }
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    };
    let mut command = vec![
        cfg.program.clone(),
        "capture".into(),
        "--capture".into(),
        format!("{capture_ns}/{name}"),
        "--uid".into(),
        uid.into(),
        "--node".into(),
        "$(NODE_NAME)".into(),
        "--spool-dir".into(),
        cfg.spool_dir.clone(),
        "--spool-max-bytes".into(),
        cfg.spool_bytes.to_string(),
    ];
    if let Some(idle) = cfg.exit_when_idle {
        command.extend(["--exit-when-idle".into(), format!("{}ms", idle.as_millis())]);
    }
    command.extend(["--attach".into(), cfg.attach.as_arg().into()]);
    let host = cfg.attach == CaptureAttach::Host;
    let mut mounts = vec![
        mount("spool", &cfg.spool_dir, false),
        mount("tmp", "/tmp", false),
    ];
    if !host {
        mounts.push(VolumeMount {
            mount_propagation: Some("HostToContainer".into()),
            ..mount("host-netns", HOST_NETNS_DIR, true)
        });
    }
    Container {
        name: CONTAINER.into(),
        image: Some(cfg.image.clone()),
        image_pull_policy: cfg.image_pull_policy.clone(),
        command: Some(command),
        env: Some(env),
        env_from: Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: storage_secret(capture, cfg),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        resources: cfg.resources.clone(),
        security_context: Some(SecurityContext {
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            // Kubernetes rejects `false` with SYS_ADMIN (netns mode).
            allow_privilege_escalation: host.then_some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(
                    capabilities(cfg.attach)
                        .iter()
                        .map(|(c, _)| (*c).to_string())
                        .collect(),
                ),
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

#[cfg(test)]
mod tests;
