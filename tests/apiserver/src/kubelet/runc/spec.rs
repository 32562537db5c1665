//! Pod spec → runc `config.json`, as the kubelet and containerd's CRI plugin translate it: argv,
//! user, capabilities, no_new_privs, read-only root, privileged, seccomp, namespaces and the
//! standard mounts. Pure functions over the pod, the image and what the kubelet prepared.

use std::{collections::BTreeMap, path::PathBuf};

use k8s_openapi::api::core::v1::{Container, PodSpec, SecurityContext};
use serde_json::{Value, json};

use super::seccomp;
use crate::{kubelet::container::expand, oci::Image};

/// Capability names by bit number (`CAP_CHOWN` = 0 … `CAP_CHECKPOINT_RESTORE` = 40).
pub(crate) const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities containerd gives a container that drops nothing.
pub(crate) const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// A capability as Kubernetes writes it (`NET_RAW`) in the kernel's spelling (`CAP_NET_RAW`).
fn cap_name(k8s: &str) -> String {
    let up = k8s.trim().to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// Capability names from a `CapBnd`-style mask.
pub(crate) fn caps_from_mask(mask: u64) -> Vec<String> {
    CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// The security decisions for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Security {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Bounding = permitted set; effective too for uid 0.
    pub capabilities: Vec<String>,
    pub no_new_privileges: bool,
    pub read_only_root: bool,
    pub privileged: bool,
    /// `linux.seccomp`, if any.
    pub seccomp: Option<Value>,
}

/// Decide user, capabilities and confinement. `host_caps` is the kubelet's own bounding set
/// (what `privileged` can hand out); `image` supplies the user when the pod names none.
pub(crate) fn security(
    spec: &PodSpec,
    c: &Container,
    image: &Image,
    host_caps: &[String],
) -> Result<Security, String> {
    let psc = spec.security_context.as_ref();
    let sc: Option<&SecurityContext> = c.security_context.as_ref();
    let privileged = sc.and_then(|s| s.privileged) == Some(true);
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or(psc.and_then(|p| p.run_as_user));
    let run_as_group = sc
        .and_then(|s| s.run_as_group)
        .or(psc.and_then(|p| p.run_as_group));
    let uid = run_as_user.map_or(image.uid, |u| u as u32);
    let gid = match (run_as_group, run_as_user) {
        (Some(g), _) => g as u32,
        (None, Some(_)) => 0,
        (None, None) => image.gid,
    };
    let non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or(psc.and_then(|p| p.run_as_non_root));
    if non_root == Some(true) && uid == 0 {
        return Err("container has runAsNonRoot and image will run as root".into());
    }
    let mut groups: Vec<u32> = if run_as_user.is_none() {
        image.additional_gids.clone()
    } else {
        vec![]
    };
    for g in psc
        .and_then(|p| p.supplemental_groups.clone())
        .into_iter()
        .flatten()
        .chain(psc.and_then(|p| p.fs_group))
    {
        if !groups.contains(&(g as u32)) {
            groups.push(g as u32);
        }
    }
    let capabilities = if privileged {
        host_caps.to_vec()
    } else {
        let caps = sc.and_then(|s| s.capabilities.as_ref());
        let drops: Vec<String> = caps
            .and_then(|c| c.drop.clone())
            .into_iter()
            .flatten()
            .map(|d| cap_name(&d))
            .collect();
        let mut set: Vec<String> = if drops.iter().any(|d| d == "CAP_ALL") {
            vec![]
        } else {
            DEFAULT_CAPABILITIES
                .iter()
                .map(|s| s.to_string())
                .filter(|c| !drops.contains(c))
                .collect()
        };
        for a in caps.and_then(|c| c.add.clone()).into_iter().flatten() {
            let a = cap_name(&a);
            if a == "CAP_ALL" {
                set = host_caps.to_vec();
            } else if !set.contains(&a) {
                set.push(a);
            }
        }
        set
    };
    let profile = sc
        .and_then(|s| s.seccomp_profile.as_ref())
        .or(psc.and_then(|p| p.seccomp_profile.as_ref()));
    let seccomp = match (privileged, profile.map(|p| p.type_.as_str())) {
        (true, _) | (false, None | Some("Unconfined")) => None,
        (false, Some("RuntimeDefault")) => Some(seccomp::runtime_default(&capabilities)),
        (false, Some(other)) => {
            return Err(format!(
                "seccomp profile type {other:?} is not supported by the fake kubelet (RuntimeDefault and Unconfined are)"
            ));
        }
    };
    Ok(Security {
        uid,
        gid,
        groups,
        capabilities,
        no_new_privileges: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
        read_only_root: sc.and_then(|s| s.read_only_root_filesystem) == Some(true),
        privileged,
        seccomp,
    })
}

/// argv with Kubernetes semantics: `command` replaces the entrypoint (and drops the image cmd),
/// `args` replace the cmd; both are `$(VAR)`-expanded against the container's environment.
pub(crate) fn argv(
    c: &Container,
    image: &Image,
    env: &BTreeMap<String, String>,
) -> Result<Vec<String>, String> {
    let x = |v: &Vec<String>| v.iter().map(|a| expand(a, env)).collect::<Vec<_>>();
    let command = c.command.as_ref().filter(|v| !v.is_empty());
    let args = c.args.as_ref().filter(|v| !v.is_empty());
    let argv = match (command, args) {
        (Some(cmd), Some(args)) => [x(cmd), x(args)].concat(),
        (Some(cmd), None) => x(cmd),
        (None, Some(args)) => [image.entrypoint.clone(), x(args)].concat(),
        (None, None) => [image.entrypoint.clone(), image.cmd.clone()].concat(),
    };
    if argv.is_empty() {
        return Err(format!(
            "container {:?}: no command specified (neither the pod nor the image has one)",
            c.name
        ));
    }
    Ok(argv)
}

/// The network namespace a container joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Network {
    /// The host's (hostNetwork, or no sandbox provider).
    Host,
    /// The pod sandbox's namespace.
    Path(PathBuf),
}

/// Everything the kubelet prepared for one container.
#[derive(Debug, Clone)]
pub(crate) struct Inputs {
    pub argv: Vec<String>,
    /// `KEY=VALUE`, image env first.
    pub env: Vec<String>,
    pub cwd: String,
    pub rootfs: PathBuf,
    pub hostname: Option<String>,
    pub network: Network,
    pub host_pid: bool,
    pub host_ipc: bool,
    /// Volume and `/etc` mounts (runc mount objects), after the standard ones.
    pub mounts: Vec<Value>,
    pub rootfs_propagation: Option<&'static str>,
    pub cgroups_path: String,
    pub resources: Value,
}

fn mount(dest: &str, ty: &str, source: &str, options: &[&str]) -> Value {
    json!({"destination": dest, "type": ty, "source": source, "options": options})
}

/// The runc `config.json`.
pub(crate) fn config(sec: &Security, i: &Inputs) -> Value {
    let sys = if sec.privileged { "rw" } else { "ro" };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys],
        ),
    ];
    mounts.extend(i.mounts.iter().cloned());
    let mut namespaces = vec![json!({"type": "mount"})];
    if !i.host_pid {
        namespaces.push(json!({"type": "pid"}));
    }
    if !i.host_ipc {
        namespaces.push(json!({"type": "ipc"}));
    }
    if i.hostname.is_some() {
        namespaces.push(json!({"type": "uts"}));
    }
    if let Network::Path(p) = &i.network {
        namespaces.push(json!({"type": "network", "path": p}));
    }
    let effective: Vec<String> = if sec.uid == 0 {
        sec.capabilities.clone()
    } else {
        vec![]
    };
    let mut process = json!({
        "terminal": false,
        "user": {"uid": sec.uid, "gid": sec.gid},
        "args": i.argv,
        "env": i.env,
        "cwd": if i.cwd.is_empty() { "/" } else { i.cwd.as_str() },
        "capabilities": {
            "bounding": sec.capabilities,
            "permitted": sec.capabilities,
            "effective": effective,
        },
        "noNewPrivileges": sec.no_new_privileges,
    });
    if !sec.groups.is_empty() {
        process["user"]["additionalGids"] = json!(sec.groups);
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": i.cgroups_path,
        "resources": i.resources,
    });
    if !sec.privileged {
        linux["maskedPaths"] = json!([
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
            "/sys/devices/virtual/powercap"
        ]);
        linux["readonlyPaths"] = json!([
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger"
        ]);
    }
    if let Some(s) = &sec.seccomp {
        linux["seccomp"] = s.clone();
    }
    if let Some(p) = i.rootfs_propagation {
        linux["rootfsPropagation"] = json!(p);
    }
    let mut cfg = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": i.rootfs, "readonly": sec.read_only_root},
        "mounts": mounts,
        "linux": linux,
    });
    if let Some(h) = &i.hostname {
        cfg["hostname"] = json!(h);
    }
    cfg
}

#[cfg(test)]
mod tests;
