//! Small helpers shared by the guards: root check, unique names, ports, command runner and the
//! cross-process lock files under [`state_dir`].
//!
//! Cross-process safety: nextest runs every test in its own process, in parallel. Anything that
//! must be unique across those processes (pod address slots, reserved ports) is claimed with an
//! exclusive, non-blocking `flock(2)` on a file under [`state_dir`]. The kernel drops the lock when
//! the owning process exits, even on SIGKILL, so a crashed test never leaks a claim.

use crate::error::{Error, Result};
use nix::fcntl::{Flock, FlockArg};
use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU64, Ordering},
};

/// Where the harness keeps its cross-process lock files and pod registry when running as root.
/// Other users get `$TMPDIR/nightcap-testsupport-UID` (see [`state_dir`]).
pub const STATE_DIR: &str = "/run/nightcap-testsupport";

/// The directory for lock files and the pod registry: [`STATE_DIR`] for root, else a per-user
/// directory under the temp dir (non-root processes only reserve ports; pods need root).
pub fn state_dir() -> PathBuf {
    if is_root() {
        PathBuf::from(STATE_DIR)
    } else {
        std::env::temp_dir().join(format!("nightcap-testsupport-{}", nix::unistd::geteuid()))
    }
}

/// Ports handed out by [`reserve_tcp_port`] come from this range. It lies below Linux's default
/// ephemeral range (32768–60999), so outgoing connections never take a reserved port in between
/// a server's stop and restart.
pub const RESERVED_PORT_RANGE: std::ops::Range<u16> = 20000..32000;

/// Panics with a clear message unless the process runs as root. Use it at the top of tests that
/// need namespaces, veth pairs or sysctls: CI runs as root, so such tests must never pass
/// silently elsewhere.
pub fn require_root() {
    if !is_root() {
        panic!(
            "this test needs root (network namespaces, veth pairs, sysctls); run the tests as \
             root, e.g. `sudo -E env \"PATH=$PATH\" cargo nextest run --workspace` (CI runs as root)"
        );
    }
}

/// Sends SIGTERM to a process (a child under test that must stop gracefully).
pub fn terminate(pid: u32) -> Result<()> {
    let pid = i32::try_from(pid).map_err(|_| {
        Error::io(
            format!("pid {pid}"),
            std::io::ErrorKind::InvalidInput.into(),
        )
    })?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .map_err(|e| Error::io(format!("SIGTERM to {pid}"), e.into()))
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A name unique among all live processes on this host: `{prefix}-{pid}-{n}{rand}` where `n`
/// counts per process and `rand` is 4 hex digits (guards against a reused pid finding leftovers
/// of a killed process). Only `[a-z0-9-]` characters.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let salt: u16 = rand::random();
    format!("{prefix}-{}-{n}{salt:04x}", std::process::id())
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it from the ephemeral
/// range). Fine for a server you bind right away; for a port that must stay yours across a
/// restart, use [`reserve_tcp_port`].
pub fn free_tcp_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 must work on any host with loopback")
}

/// A TCP port on 127.0.0.1 claimed for as long as the value lives, across processes (see the
/// module docs). Dropping it releases the claim.
#[derive(Debug)]
pub struct ReservedPort {
    port: u16,
    _lock: Flock<File>,
}

impl ReservedPort {
    /// The port number.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Claims a free TCP port from [`RESERVED_PORT_RANGE`] (free on 127.0.0.1 now, and not claimed by
/// another harness user until the returned value is dropped).
pub fn reserve_tcp_port() -> Result<ReservedPort> {
    let dir = state_subdir("ports")?;
    let span = RESERVED_PORT_RANGE.end - RESERVED_PORT_RANGE.start;
    let start: u16 = rand::random::<u16>() % span;
    for i in 0..span {
        let port = RESERVED_PORT_RANGE.start + (start + i) % span;
        let Some(lock) = try_lock_file(&dir.join(format!("{port}.lock")))? else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(ReservedPort { port, _lock: lock });
        }
    }
    Err(Error::io(
        "reserving a TCP port",
        std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("every port in {RESERVED_PORT_RANGE:?} is taken"),
        ),
    ))
}

/// `state_dir()/name`, created if missing.
pub(crate) fn state_subdir(name: &str) -> Result<PathBuf> {
    let dir = state_dir().join(name);
    fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating harness state dir {}", dir.display()), e))?;
    Ok(dir)
}

/// Opens (creating) `path` and takes an exclusive non-blocking flock. `None` if someone else
/// holds it.
pub(crate) fn try_lock_file(path: &Path) -> Result<Option<Flock<File>>> {
    let file = open_rw(path)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(Error::sys(format!("flock {}", path.display()), e)),
    }
}

/// Increments the counter stored in `path` under an exclusive (blocking) flock and returns the
/// value before the increment, modulo `modulus`.
pub(crate) fn next_counter(path: &Path, modulus: u32) -> Result<u32> {
    let file = open_rw(path)?;
    let mut lock = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::sys(format!("flock {}", path.display()), e))?;
    let mut text = String::new();
    lock.read_to_string(&mut text)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let current = text.trim().parse::<u32>().unwrap_or(0) % modulus;
    let next = (current + 1) % modulus;
    lock.set_len(0)
        .and_then(|()| lock.seek(SeekFrom::Start(0)))
        .and_then(|_| lock.write_all(next.to_string().as_bytes()))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(current)
}

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

/// Runs `program args…`, returning stdout on success and [`Error::Command`] (with stderr) on a
/// non-zero exit.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            program: program.to_owned(),
            hint: "install it (apt: iproute2) or run `.ci/run`",
            source,
        })?;
    check_output(&format!("{program} {}", args.join(" ")), output)
}

/// Turns a finished command's output into stdout or [`Error::Command`].
pub(crate) fn check_output(command: &str, output: Output) -> Result<String> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: command.to_owned(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Runs `ip args…`.
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Writes `path`'s dirty pages to disk and drops its pages from the page cache, so the next read
/// comes from the disk (as it does for a capture file written with `O_DIRECT`).
pub fn drop_from_page_cache(path: &Path) -> std::io::Result<()> {
    let file = File::open(path)?;
    file.sync_all()?;
    nix::fcntl::posix_fadvise(
        &file,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_use_safe_characters() {
        let a = unique_name("t");
        let b = unique_name("t");
        assert_ne!(a, b);
        for name in [a, b] {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
        }
    }

    #[test]
    fn free_tcp_port_is_bindable() {
        let port = free_tcp_port();
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port from free_tcp_port binds");
    }
}
