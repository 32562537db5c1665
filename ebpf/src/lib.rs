//! nightcap-ebpf: the kernel side of a capture. Every system call the capture engine makes to
//! the kernel's packet path goes through this crate:
//!
//! - [`program`]: the C eBPF socket filter (`bpf/filter.bpf.c`, compiled by `build.rs`) loaded
//!   with aya, configured with a [`RuleTable`](nightcap_api::filter::RuleTable) and a snap
//!   length, with its seen/kept counters;
//! - [`ring`]: an AF_PACKET socket with a TPACKET_V3 mmap ring, the filter attached before the
//!   socket is bound (so no unfiltered packet is ever queued);
//! - [`netns`]: running a closure inside a network namespace, listing interfaces and addresses;
//! - [`hostside`]: the node's interface that carries a pod IP's packets (route, bridge port or
//!   local address), found with `NETLINK_ROUTE` requests in the caller's namespace;
//! - [`packet`]: the pure-Rust mirror of the program's packet parsing (the reference the kernel
//!   program is tested against).
//!
//! This crate must never keep a packet the rule table rejects, never widen a filter, and never
//! change anything outside the sockets it opens (no interface, route or sysctl changes).

pub mod hostside;
mod netlink;
pub mod netns;
pub mod packet;
pub mod program;
pub mod ring;

pub use hostside::{HostInterface, HostSideError};
pub use program::{Counters, Filter};
pub use ring::{Packet, PacketRing, RingConfig, RingStats, View};

/// Everything that can go wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The eBPF object could not be loaded (verifier, kernel too old; a refused permission is
    /// [`Error::Permission`]).
    #[error("loading the eBPF filter failed: {source} (kernel 5.8 or newer is needed)")]
    Load {
        /// aya's error.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// The program could not be loaded, attached or run.
    #[error("eBPF program: {context}: {source}")]
    Program {
        /// What was being done.
        context: String,
        /// aya's error.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map could not be read.
    #[error("eBPF map {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// aya's error.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// A system call failed.
    #[error("{context}: {source}")]
    Sys {
        /// What was being done, and the hint.
        context: String,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused an operation for lack of a capability (or a host setting).
    #[error("{action} was refused ({source}): the process lacks {needs}")]
    Permission {
        /// What was refused.
        action: String,
        /// The capability, e.g. `CAP_NET_RAW`, and any pod setting it goes with.
        needs: &'static str,
        /// The errno (EPERM or EACCES).
        #[source]
        source: std::io::Error,
    },
    /// The node's interface of a pod IP could not be found.
    #[error(transparent)]
    HostSide(HostSideError),
    /// An interface does not exist in the namespace.
    #[error("no interface {name:?} in {netns}; list them with `ip {netns_arg}link`")]
    NoInterface {
        /// Interface name.
        name: String,
        /// Namespace description (`the current network namespace` or a path).
        netns: String,
        /// `-n NAME ` when a named namespace, else empty.
        netns_arg: String,
    },
    /// A bad argument (ring size, interface name).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn sys(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        Self::Sys {
            context: context.into(),
            source: source.into(),
        }
    }

    pub(crate) fn last_os(context: impl Into<String>) -> Self {
        Self::sys(context, std::io::Error::last_os_error())
    }

    /// [`Error::Permission`] when `source` is EPERM or EACCES, else [`Error::Sys`].
    pub(crate) fn sys_or_permission(
        action: impl Into<String>,
        needs: &'static str,
        source: std::io::Error,
    ) -> Self {
        if is_permission(&source) {
            Self::Permission {
                action: action.into(),
                needs,
                source,
            }
        } else {
            Self::sys(action, source)
        }
    }

    /// The capability this error says is missing, if it is a refused permission: retrying
    /// cannot help until the process gets it.
    pub fn missing_capability(&self) -> Option<&'static str> {
        match self {
            Self::Permission { needs, .. } => Some(needs),
            _ => None,
        }
    }
}

fn is_permission(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}

/// The first EPERM/EACCES in `e`'s source chain.
pub(crate) fn permission_in(e: &(dyn std::error::Error + 'static)) -> Option<std::io::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && is_permission(io)
        {
            return io.raw_os_error().map(std::io::Error::from_raw_os_error);
        }
        cur = err.source();
    }
    None
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
