//! Running code and commands inside a pod's namespace.
//!
//! Sockets are created by a short-lived thread that first joins the namespace with
//! `setns(CLONE_NEWNET)`; a socket stays in the namespace it was created in, so the returned
//! std sockets can be used from any thread afterwards (and turned into tokio sockets with
//! `from_std` after `set_nonblocking(true)`).

use super::NetnsPod;
use crate::{
    error::{Error, Result},
    util,
};
use nix::sched::{CloneFlags, setns};
use std::{
    ffi::OsStr,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// How long [`NetnsPod::tcp_connect`] waits for the handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl NetnsPod {
    /// Runs `f` on a new thread inside the pod's network namespace and returns its result. A panic
    /// in `f` is passed on to the caller.
    pub fn enter<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let path = self.netns_path();
        let ns = std::fs::File::open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        std::thread::scope(|scope| {
            let handle = scope.spawn(move || -> Result<T> {
                setns(&ns, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Error::sys(format!("setns({})", path.display()), e))?;
                drop(ns);
                Ok(f())
            });
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// A UDP socket bound to `bind` inside the pod (e.g. `(pod.ipv4(), 0)` or `[::]:5353`).
    pub fn udp_socket(&self, bind: SocketAddr) -> Result<UdpSocket> {
        self.enter(|| UdpSocket::bind(bind))?
            .map_err(|e| Error::io(format!("binding UDP {bind} in pod {}", self.name()), e))
    }

    /// A TCP listener bound to `bind` inside the pod.
    pub fn tcp_listener(&self, bind: SocketAddr) -> Result<TcpListener> {
        self.enter(|| TcpListener::bind(bind))?
            .map_err(|e| Error::io(format!("listening on TCP {bind} in pod {}", self.name()), e))
    }

    /// A TCP connection from inside the pod to `addr` (waits at most [`CONNECT_TIMEOUT`]).
    pub fn tcp_connect(&self, addr: SocketAddr) -> Result<TcpStream> {
        self.enter(|| TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT))?
            .map_err(|e| Error::io(format!("connecting to {addr} from pod {}", self.name()), e))
    }

    /// Sends `count` UDP datagrams of `payload_len` bytes each from the pod to `dst`, from an
    /// ephemeral port. Payload byte `i` is `i % 251`, so captures can recognise it.
    pub fn send_udp(&self, dst: SocketAddr, count: usize, payload_len: usize) -> Result<()> {
        let bind: SocketAddr = if dst.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = self.udp_socket(bind)?;
        let payload: Vec<u8> = (0..payload_len).map(|i| (i % 251) as u8).collect();
        for _ in 0..count {
            socket.send_to(&payload, dst).map_err(|e| {
                Error::io(format!("sending UDP to {dst} from pod {}", self.name()), e)
            })?;
        }
        Ok(())
    }

    /// A [`Command`] that runs `program` inside the pod (`ip netns exec NAME program`). Add
    /// arguments, then `output()`/`spawn()` it yourself.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `argv` inside the pod and returns its stdout; a non-zero exit is an
    /// [`Error::Command`] carrying its stderr.
    pub fn run(&self, argv: &[&str]) -> Result<String> {
        let (program, args) = split(argv)?;
        let output = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| spawn_error(argv, source))?;
        util::check_output(
            &format!("ip netns exec {} {}", self.name, argv.join(" ")),
            output,
        )
    }

    /// Starts `argv` inside the pod (stdin null, stdout/stderr inherited). The pod kills it on
    /// drop if it still runs; wait for it yourself to reap it earlier.
    pub fn spawn(&self, argv: &[&str]) -> Result<Child> {
        let (program, args) = split(argv)?;
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|source| spawn_error(argv, source))
    }
}

fn split<'a>(argv: &'a [&'a str]) -> Result<(&'a str, &'a [&'a str])> {
    argv.split_first()
        .map(|(p, a)| (*p, a))
        .ok_or_else(|| Error::InvalidArgument("empty command line".into()))
}

fn spawn_error(argv: &[&str], source: std::io::Error) -> Error {
    Error::Spawn {
        program: format!("ip netns exec … {}", argv.join(" ")),
        hint: "install iproute2 (`ip`) or run `.ci/run`",
        source,
    }
}
