//! Every Job the builder makes is checked against the Kubernetes 1.33 schema with
//! `kubernetes-validate --strict`, and its security-relevant fields are checked one by one.

use std::{io::Write, process::Command};

use k8s_openapi::api::{batch::v1::Job, core::v1::Toleration};

use super::*;
use crate::plan::{
    MAX_JOB_NAME, job_name,
    tests::{UID, capture, started},
};

/// Runs `kubernetes-validate --strict -k 1.33.0` on `yaml`; panics with its output on failure.
pub(crate) fn kubernetes_validate(what: &str, yaml: &str) {
    let mut file = tempfile::Builder::new()
        .prefix("nightcap-scheduler-")
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    file.write_all(yaml.as_bytes()).expect("write YAML");
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.33.0"])
        .arg(file.path())
        .output()
        .expect(
            "kubernetes-validate must be installed (pip install kubernetes-validate; .ci/run \
             installs it)",
        );
    assert!(
        out.status.success(),
        "{what} is not a valid Kubernetes 1.33 object:\n{}{}\n{yaml}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn request(node: &str, c: &PacketCapture) -> JobRequest {
    JobRequest {
        node: node.into(),
        name: job_name(
            c.metadata.namespace.as_deref().unwrap_or_default(),
            &c.name_any(),
            UID,
            node,
        ),
        active_deadline_seconds: 300,
        pods: vec!["team-a/web-1".into()],
    }
}

fn validated(c: &PacketCapture, node: &str, cfg: &JobConfig) -> Job {
    let job = build_job(c, &request(node, c), cfg).expect("job builds");
    let yaml = serde_yaml::to_string(&job).expect("job serialises");
    kubernetes_validate(&format!("the Job for {node}"), &yaml);
    job
}

#[test]
fn jobs_validate_against_kubernetes_1_33() {
    let long_node = format!("{}.eu-west-1.compute.internal", "ip-10-0-0-1".repeat(10));
    let mut named_store = started(capture(), 0);
    named_store.spec.storage = Some("archive".into());
    let mut long_name = capture();
    long_name.metadata.name = Some("x".repeat(200));
    let custom = JobConfig {
        image_pull_policy: Some("IfNotPresent".into()),
        tolerations: vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("capture".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        }],
        priority_class_name: Some("system-node-critical".into()),
        namespace: Some("nightcap-system".into()),
        log_filter: Some("info,nightcap=debug".into()),
        ..JobConfig::default()
    };
    let cases: Vec<(&str, PacketCapture, &str, JobConfig)> = vec![
        ("defaults", capture(), "node-a", JobConfig::default()),
        (
            "started, named store",
            named_store,
            "node-b",
            JobConfig::default(),
        ),
        (
            "long node name",
            capture(),
            &long_node,
            JobConfig::default(),
        ),
        (
            "long capture name",
            long_name,
            "node-a",
            JobConfig::default(),
        ),
        (
            "system namespace, custom settings",
            capture(),
            "node-a",
            custom.clone(),
        ),
        (
            "netns mode",
            capture(),
            "node-a",
            JobConfig {
                attach: CaptureAttach::Netns,
                ..JobConfig::default()
            },
        ),
        (
            "netns mode, custom settings",
            capture(),
            "node-b",
            JobConfig {
                attach: CaptureAttach::Netns,
                ..custom
            },
        ),
    ];
    for (what, c, node, cfg) in cases {
        let job = validated(&c, node, &cfg);
        let name = job.metadata.name.clone().expect("name");
        assert!(name.len() <= MAX_JOB_NAME, "{what}: {name}");
    }
}

#[test]
fn job_spec_is_pinned_bounded_and_least_privileged() {
    let c = started(capture(), 0);
    let job = validated(&c, "node-a", &JobConfig::default());
    let spec = job.spec.as_ref().expect("spec");
    assert_eq!(spec.active_deadline_seconds, Some(300));
    assert_eq!(spec.backoff_limit, Some(3));
    assert_eq!(spec.ttl_seconds_after_finished, Some(3600));
    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.node_name.as_deref(), Some("node-a"));
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("nightcap-capture")
    );
    assert_eq!(
        pod.host_pid,
        Some(false),
        "nothing of other processes is read"
    );
    assert_eq!(
        pod.host_network,
        Some(true),
        "the pods' host-side interfaces are in the node's namespace"
    );
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(pod.host_ipc, Some(false));
    let tolerations = pod.tolerations.as_ref().expect("tolerations");
    assert_eq!(tolerations[0].operator.as_deref(), Some("Exists"));
    assert_eq!(pod.containers.len(), 1);
    let ctr = &pod.containers[0];
    let sc = ctr.security_context.as_ref().expect("security context");
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let pod_sc = pod.security_context.as_ref().expect("pod security context");
    assert_eq!(
        pod_sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let added = caps.add.clone().expect("added capabilities");
    assert_eq!(added, ["NET_RAW", "BPF", "PERFMON"]);
    for forbidden in [
        "SYS_ADMIN",
        "SYS_PTRACE",
        "NET_ADMIN",
        "SYS_MODULE",
        "DAC_OVERRIDE",
        "ALL",
    ] {
        assert!(
            !added.iter().any(|c| c == forbidden),
            "{forbidden} must not be added"
        );
    }
    // Every volume: an emptyDir with a size limit; no host path.
    for v in pod.volumes.as_ref().expect("volumes") {
        match (&v.empty_dir, &v.host_path) {
            (Some(e), None) => assert!(e.size_limit.is_some(), "{} has no sizeLimit", v.name),
            _ => panic!("unexpected volume {v:?}"),
        }
    }
    let spool = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "spool")
        .and_then(|v| v.empty_dir.as_ref())
        .and_then(|e| e.size_limit.clone())
        .expect("spool sizeLimit");
    assert_eq!(spool.0, (1u64 << 30).to_string());
    let mounts = ctr.volume_mounts.as_ref().expect("mounts");
    assert!(mounts.iter().all(|m| m.name != "host-netns"), "{mounts:?}");
    let command = ctr.command.clone().expect("command");
    assert_eq!(
        command[..8],
        [
            "nightcap",
            "capture",
            "--capture",
            "team-a/web-debug",
            "--uid",
            UID,
            "--node",
            "$(NODE_NAME)"
        ]
    );
    let idle = command
        .iter()
        .position(|a| a == "--exit-when-idle")
        .expect("--exit-when-idle");
    assert_eq!(command[idle + 1], "30000ms", "the pods-gone grace period");
    let attach = command
        .iter()
        .position(|a| a == "--attach")
        .expect("--attach");
    assert_eq!(command[attach + 1], "host", "the process knows its mode");
    let env = ctr.env.as_ref().expect("env");
    let node_env = env
        .iter()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME");
    let field = node_env
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("downward API");
    assert_eq!(field.field_path, "spec.nodeName");
    let secret = ctr.env_from.as_ref().expect("envFrom")[0]
        .secret_ref
        .as_ref()
        .expect("storage Secret");
    assert_eq!(secret.name, "nightcap-storage");
    // No credential is ever a literal value.
    assert!(
        env.iter()
            .all(|e| e.value.is_none() || e.name == "RUST_LOG")
    );
}

#[test]
fn netns_mode_enters_pod_namespaces_with_what_that_needs() {
    let c = started(capture(), 0);
    let cfg = JobConfig {
        attach: CaptureAttach::Netns,
        ..JobConfig::default()
    };
    let job = validated(&c, "node-a", &cfg);
    let pod = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec");
    assert_eq!(
        pod.host_pid,
        Some(true),
        "the netns resolver scans /proc/*/ns/net"
    );
    assert_eq!(pod.host_network, Some(false));
    assert_eq!(pod.dns_policy, None);
    let ctr = &pod.containers[0];
    let sc = ctr.security_context.as_ref().expect("security context");
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.allow_privilege_escalation, None,
        "Kubernetes rejects allowPrivilegeEscalation=false with SYS_ADMIN"
    );
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(
        caps.add.clone().expect("added"),
        ["NET_RAW", "SYS_ADMIN", "SYS_PTRACE"]
    );
    let hosts: Vec<_> = pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.host_path.as_ref())
        .collect();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].path, HOST_NETNS_DIR);
    let netns = ctr
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "host-netns")
        .expect("netns mount");
    assert_eq!(netns.read_only, Some(true));
    assert_eq!(netns.mount_propagation.as_deref(), Some("HostToContainer"));
    let command = ctr.command.clone().expect("command");
    let attach = command
        .iter()
        .position(|a| a == "--attach")
        .expect("--attach");
    assert_eq!(command[attach + 1], "netns");
}

#[test]
fn each_mode_lists_its_capabilities_with_a_reason() {
    for (attach, want) in [
        (CaptureAttach::Host, &["NET_RAW", "BPF", "PERFMON"][..]),
        (
            CaptureAttach::Netns,
            &["NET_RAW", "SYS_ADMIN", "SYS_PTRACE"][..],
        ),
    ] {
        let caps = capabilities(attach);
        let names: Vec<&str> = caps.iter().map(|(c, _)| *c).collect();
        assert_eq!(names, want, "{attach:?}");
        assert!(caps.iter().all(|(_, why)| !why.is_empty()));
    }
}

#[test]
fn owner_reference_only_in_the_captures_namespace() {
    let c = capture();
    let job = validated(&c, "node-a", &JobConfig::default());
    assert_eq!(job.metadata.namespace.as_deref(), Some("team-a"));
    let owners = job.metadata.owner_references.expect("owner reference");
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].kind, "PacketCapture");
    assert_eq!(owners[0].api_version, "nightcap.dev/v1alpha1");
    assert_eq!(owners[0].uid, UID);
    assert_eq!(owners[0].controller, Some(true));
    let cfg = JobConfig {
        namespace: Some("nightcap-system".into()),
        ..JobConfig::default()
    };
    let job = validated(&c, "node-a", &cfg);
    assert_eq!(job.metadata.namespace.as_deref(), Some("nightcap-system"));
    assert!(
        job.metadata.owner_references.is_none(),
        "no cross-namespace owner"
    );
    let annotations = job.metadata.annotations.expect("annotations");
    assert_eq!(annotations[crate::labels::CAPTURE_REF], "team-a/web-debug");
    assert_eq!(
        job.metadata.labels.expect("labels")[crate::labels::CAPTURE_UID],
        UID
    );
}

#[test]
fn spec_hash_annotation_is_of_the_accepted_spec() {
    let mut c = started(capture(), 0);
    let accepted = crate::plan::spec_hash(&c.spec);
    c.spec.duration = Some("1h".into()); // edited after the start
    let job = validated(&c, "node-a", &JobConfig::default());
    assert_eq!(
        job.metadata.annotations.expect("annotations")[crate::labels::SPEC_HASH],
        accepted
    );
}

#[test]
fn missing_metadata_is_an_error() {
    let mut c = capture();
    c.metadata.uid = None;
    let err = build_job(&c, &request("node-a", &c), &JobConfig::default()).expect_err("no uid");
    assert!(err.to_string().contains("metadata.uid"), "{err}");
}
