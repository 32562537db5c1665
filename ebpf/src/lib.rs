//! nightcap-ebpf: the kernel side of a capture. Every system call the capture engine makes to
//! the kernel's packet path goes through this crate:
//!
//! - [`program`]: the C eBPF socket filter (`bpf/filter.bpf.c`, compiled by `build.rs`) loaded
//!   with aya, configured with a [`RuleTable`](nightcap_api::filter::RuleTable) and a snap
//!   length, with its seen/kept counters;
//! - [`ring`]: an AF_PACKET socket with a TPACKET_V3 mmap ring, the filter attached before the
//!   socket is bound (so no unfiltered packet is ever queued);
//! - [`netns`]: running a closure inside a network namespace, listing interfaces and addresses;
//! - [`packet`]: the pure-Rust mirror of the program's packet parsing (the reference the kernel
//!   program is tested against).
//!
//! This crate must never keep a packet the rule table rejects, never widen a filter, and never
//! change anything outside the sockets it opens (no interface, route or sysctl changes).

pub mod netns;
pub mod packet;
pub mod program;
pub mod ring;

pub use program::{Counters, Filter};
pub use ring::{Packet, PacketRing, RingConfig, RingStats};

/// Everything that can go wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The eBPF object could not be loaded (verifier, permissions, kernel too old).
    #[error(
        "loading the eBPF filter failed: {source}. Run as root or with CAP_BPF+CAP_NET_ADMIN \
         (kernel 5.8 or newer)"
    )]
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
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
