//! Registry of live pods, so pods of a killed test process (nextest timeout, SIGKILL) do not
//! pile up. Each pod writes `/run/nightcap-testsupport/pods/NAME` = "PID\nHOST_VETH\n" before it
//! creates anything; the first pod created by a process removes every registered pod whose PID
//! no longer exists. Only pods registered here are ever collected.

use crate::util;
use nix::{
    errno::Errno,
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use std::sync::Once;

/// Records that this process owns pod `name` with host veth `host_veth`.
pub(super) fn register(name: &str, host_veth: &str) -> crate::Result<()> {
    let path = util::state_subdir("pods")?.join(name);
    let text = format!("{}\n{host_veth}\n", std::process::id());
    std::fs::write(&path, text)
        .map_err(|e| crate::Error::io(format!("writing {}", path.display()), e))
}

/// Forgets pod `name` (best effort).
pub(super) fn unregister(name: &str) {
    if let Ok(dir) = util::state_subdir("pods") {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

/// Collects stale pods once per process.
pub(super) fn collect_stale_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(collect_stale_pods);
}

/// Removes every registered pod (namespace, veth, processes inside) whose owning process no
/// longer exists. Runs automatically before a process creates its first pod; call it directly
/// to clean up after killed test runs.
pub fn collect_stale_pods() {
    let Ok(dir) = util::state_subdir("pods") else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let mut lines = text.lines();
        let (Some(pid), Some(veth)) = (lines.next(), lines.next()) else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<i32>() else {
            continue;
        };
        if kill(Pid::from_raw(pid), None) != Err(Errno::ESRCH) {
            continue; // owner alive (or not ours to judge)
        }
        eprintln!(
            "nightcap-testsupport: removing stale pod {name} (veth {veth}) of dead process {pid}"
        );
        kill_processes_in(&name);
        let _ = super::delete_link(veth.trim());
        let _ = super::delete_netns(&name);
        let _ = std::fs::remove_file(entry.path());
    }
}

/// SIGKILLs every process whose network namespace is `name` (never this process).
pub(super) fn kill_processes_in(name: &str) {
    if !std::path::Path::new("/var/run/netns").join(name).exists() {
        return;
    }
    let Ok(pids) = util::ip(&["netns", "pids", name]) else {
        return;
    };
    let me = std::process::id();
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
    {
        if pid == me {
            continue;
        }
        if let Ok(raw) = i32::try_from(pid) {
            let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
        }
    }
}
