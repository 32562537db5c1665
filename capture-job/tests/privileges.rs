//! A capture without one of the capabilities it needs fails at once, exit ≠ 0, with a message
//! naming the capability. Each case runs `nightcap-capture` with that capability removed from
//! its bounding set (`capsh --drop`; root's exec then lacks it). `SYS_ADMIN` is dropped along
//! with `BPF` and `PERFMON`, since the kernel accepts it in their place. The filter is not empty:
//! the verifier prunes the rule loop of an empty table (its configuration is read-only data it
//! knows), and only the loop needs `PERFMON`. Needs root and capsh.

mod common;

use std::process::Command;

use common::tempdir;
use nightcap_testsupport::{NetnsPod, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_nightcap-capture");

/// Runs a capture of `pod` with `attach`, without the capabilities `drop`; returns (exit
/// status success, stderr).
fn capture_without(pod: &NetnsPod, attach: &str, drop: &str) -> (bool, String) {
    let dir = tempdir("privileges");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let command = format!(
        "exec {BIN} --pod-ip {} --attach {attach} --filter 'udp port 7000' --duration 1s \
         --output file://{} --spool-dir {}",
        pod.ipv4(),
        out.display(),
        dir.path().join("spool").display()
    );
    let run = Command::new("capsh")
        .arg(format!("--drop={drop}"))
        .args(["--", "-c", &command])
        .env_remove("NIGHTCAP_FILTER")
        .output()
        .expect("capsh runs (apt-get install libcap2-bin)");
    (
        run.status.success(),
        String::from_utf8_lossy(&run.stderr).into_owned(),
    )
}

#[test]
fn a_missing_capability_is_named() {
    require_root();
    let pod = NetnsPod::new();
    let (ok, stderr) = capture_without(&pod, "host", "cap_sys_ptrace");
    assert!(ok, "host mode needs no SYS_PTRACE: {stderr}");
    for (attach, drop, named) in [
        ("host", "cap_net_raw", "CAP_NET_RAW"),
        ("host", "cap_bpf,cap_sys_admin", "CAP_BPF"),
        ("host", "cap_perfmon,cap_sys_admin", "CAP_PERFMON"),
        ("netns", "cap_net_raw", "CAP_NET_RAW"),
        ("netns", "cap_sys_admin", "CAP_SYS_ADMIN"),
    ] {
        let (ok, stderr) = capture_without(&pod, attach, drop);
        assert!(!ok, "{attach} without {drop} must fail: {stderr}");
        assert!(
            stderr.contains(&format!("the process lacks {named}")),
            "{attach} without {drop}: {stderr}"
        );
    }
}
