//! Network namespaces: run code inside one, identify one, list its interfaces.
//!
//! A thread joins the namespace with `setns(CLONE_NEWNET)` and does the work there; sockets
//! created there stay in that namespace for their whole life, whichever thread uses them later.

use std::{
    collections::BTreeMap,
    fs::File,
    net::IpAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use nix::sched::{CloneFlags, setns};

use crate::{Error, Result};

/// Where `ip netns add NAME` puts its bind mounts.
pub const NAMED_NETNS_DIR: &str = "/var/run/netns";

/// What a refused `setns` is reported as.
const NEEDS_SYS_ADMIN: &str = "CAP_SYS_ADMIN (setns into another network namespace)";
/// What a refused open of a namespace file is reported as (`/proc/PID/ns/net` of a process
/// with more privileges than the caller).
const NEEDS_PTRACE: &str =
    "CAP_SYS_PTRACE (opening /proc/PID/ns/net of other processes; in a pod also hostPID: true)";

/// The path of a named namespace (`/var/run/netns/NAME`), refusing names that could escape it.
pub fn named(name: &str) -> Result<PathBuf> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Error::Invalid(format!(
            "{name:?} is not a network namespace name (see `ip netns list`)"
        )));
    }
    let path = Path::new(NAMED_NETNS_DIR).join(name);
    if !path.exists() {
        return Err(Error::Invalid(format!(
            "no network namespace {name:?} ({} does not exist); see `ip netns list`",
            path.display()
        )));
    }
    Ok(path)
}

/// Runs `f` on a new thread inside the namespace at `path` (`None`: the caller's namespace) and
/// returns its result.
pub fn run_in<T, F>(path: Option<&Path>, f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send,
    T: Send,
{
    let Some(path) = path else {
        return f();
    };
    let ns = File::open(path).map_err(|e| {
        Error::sys_or_permission(
            format!("opening network namespace {}", path.display()),
            NEEDS_PTRACE,
            e,
        )
    })?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| {
                    Error::sys_or_permission(
                        format!("entering network namespace {} (setns)", path.display()),
                        NEEDS_SYS_ADMIN,
                        std::io::Error::from(e),
                    )
                })?;
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Inode of a namespace file (`/proc/PID/ns/net` or a bind mount): equal inodes (on the nsfs
/// device) are the same namespace.
pub fn inode(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|e| Error::sys_or_permission(format!("stat {}", path.display()), NEEDS_PTRACE, e))
}

/// Interfaces of the calling thread's namespace and their addresses.
pub fn interfaces() -> Result<BTreeMap<String, Vec<IpAddr>>> {
    let mut out: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| Error::sys("getifaddrs", std::io::Error::from(e)))?;
    for a in addrs {
        let entry = out.entry(a.interface_name.clone()).or_default();
        let Some(addr) = a.address else { continue };
        if let Some(v4) = addr.as_sockaddr_in() {
            entry.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            entry.push(IpAddr::V6(v6.ip()));
        }
    }
    Ok(out)
}
