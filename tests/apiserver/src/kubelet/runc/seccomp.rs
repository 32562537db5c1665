//! The seccomp profile behind `seccompProfile: {type: RuntimeDefault}` in runc mode.
//!
//! This is our own **capability-gated denylist approximating RuntimeDefault**, not the
//! container runtimes' profile: every syscall is allowed except those RuntimeDefault withholds
//! from a container that lacks the capability the syscall is about, which fail with `EPERM`
//! (`clone3` with `ENOSYS`, so libc falls back to `clone`, whose namespace flags can be checked).
//! A container holding the matching capability (any one of those listed) gets the syscall.
//! Real profiles are allowlists, so a syscall newer than the profile is denied there and allowed
//! here; tests asserting "this is refused" must pick syscalls from [`GATED`].

use serde_json::{Value, json};

/// Syscalls and the capabilities that lift their denial (empty: always denied).
pub(crate) const GATED: &[(&[&str], &[&str])] = &[
    (&["bpf"], &["CAP_BPF", "CAP_SYS_ADMIN"]),
    (&["perf_event_open"], &["CAP_PERFMON", "CAP_SYS_ADMIN"]),
    (
        &[
            "setns",
            "unshare",
            "mount",
            "umount2",
            "pivot_root",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "quotactl",
            "quotactl_fd",
            "lookup_dcookie",
            "fanotify_init",
            "swapon",
            "swapoff",
            "sethostname",
            "setdomainname",
        ],
        &["CAP_SYS_ADMIN"],
    ),
    (
        &[
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "kcmp",
            "pidfd_getfd",
        ],
        &["CAP_SYS_PTRACE"],
    ),
    (
        &[
            "init_module",
            "finit_module",
            "delete_module",
            "create_module",
            "query_module",
            "get_kernel_syms",
        ],
        &["CAP_SYS_MODULE"],
    ),
    (
        &["kexec_load", "kexec_file_load", "reboot"],
        &["CAP_SYS_BOOT"],
    ),
    (
        &["settimeofday", "clock_settime", "clock_adjtime", "stime"],
        &["CAP_SYS_TIME"],
    ),
    (&["acct"], &["CAP_SYS_PACCT"]),
    (&["iopl", "ioperm"], &["CAP_SYS_RAWIO"]),
    (&["syslog"], &["CAP_SYSLOG"]),
    (&["open_by_handle_at"], &["CAP_DAC_READ_SEARCH"]),
    (
        &["mbind", "set_mempolicy", "move_pages", "get_mempolicy"],
        &["CAP_SYS_NICE"],
    ),
    (
        &[
            "keyctl",
            "add_key",
            "request_key",
            "userfaultfd",
            "uselib",
            "nfsservctl",
            "_sysctl",
            "vm86",
            "vm86old",
        ],
        &[],
    ),
];

/// `CLONE_NEW*` flags: `clone` with any of them needs CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    0x0000_0080, // CLONE_NEWTIME
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

const EPERM: i64 = 1;
const ENOSYS: i64 = 38;

/// The runc `linux.seccomp` object for a container holding `caps` (`CAP_…` names).
pub(crate) fn runtime_default(caps: &[String]) -> Value {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let mut denied: Vec<&str> = vec![];
    for (calls, lift) in GATED {
        if !lift.iter().any(|c| has(c)) {
            denied.extend(calls.iter());
        }
    }
    let mut syscalls = vec![];
    if !denied.is_empty() {
        syscalls.push(json!({"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}));
    }
    if !has("CAP_SYS_ADMIN") {
        syscalls.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}));
        for flag in CLONE_NAMESPACE_FLAGS {
            syscalls.push(json!({
                "names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            }));
        }
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": syscalls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(profile: &Value) -> Vec<String> {
        profile["syscalls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["args"].is_null())
            .flat_map(|r| r["names"].as_array().cloned().unwrap_or_default())
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect()
    }

    #[test]
    fn capabilities_lift_their_syscalls() {
        let caps = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: &[(&[&str], &str, bool)] = &[
            (&[], "bpf", true),
            (&["CAP_BPF"], "bpf", false),
            (&["CAP_SYS_ADMIN"], "bpf", false),
            (&["CAP_PERFMON"], "perf_event_open", false),
            (&["CAP_NET_RAW"], "perf_event_open", true),
            (&["CAP_NET_ADMIN"], "unshare", true),
            (&["CAP_SYS_ADMIN"], "unshare", false),
            (&["CAP_SYS_ADMIN"], "setns", false),
            (&[], "ptrace", true),
            (&["CAP_SYS_PTRACE"], "process_vm_readv", false),
            (&["CAP_SYS_ADMIN"], "keyctl", true),
            (&["CAP_SYS_TIME"], "clock_settime", false),
            (&[], "clone3", true),
            (&["CAP_SYS_ADMIN"], "clone3", false),
            (&[], "read", false),
        ];
        for (have, call, want_denied) in cases {
            let p = runtime_default(&caps(have));
            assert_eq!(
                denied(&p).iter().any(|d| d == call),
                *want_denied,
                "{call} with {have:?}"
            );
        }
        let clone_rules = |p: &Value| {
            p["syscalls"]
                .as_array()
                .map(|a| a.iter().filter(|r| r["names"][0] == "clone").count())
                .unwrap_or(0)
        };
        assert_eq!(
            clone_rules(&runtime_default(&[])),
            CLONE_NAMESPACE_FLAGS.len()
        );
        assert_eq!(clone_rules(&runtime_default(&caps(&["CAP_SYS_ADMIN"]))), 0);
    }
}
