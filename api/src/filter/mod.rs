//! The capture filter: the tcpdump subset users type (`tcp port 443 and net 10.0.0.0/8`), the
//! structured `filters` of a PacketCapture, and the rule table both compile to.
//!
//! The rule table is what the in-kernel program (nightcap-ebpf) evaluates: up to [`MAX_ATOMS`]
//! atoms (protocol, address family, src/dst/either CIDR, src/dst/either port range, direction)
//! and up to [`MAX_RULES`] rules, each a conjunction of possibly negated atoms. A packet is kept
//! when any rule holds (disjunctive normal form). Compilation is exact: an expression whose
//! table does not fit is rejected with a message, never widened.
//!
//! [`RuleTable::matches`] is the reference semantics, written for clarity; the kernel program
//! is tested against it.
//!
//! Pure: no I/O.

mod compile;
mod parse;

use std::{fmt, net::IpAddr};

use ipnet::IpNet;

pub use compile::{compile, compile_expression, compile_filters};
pub use parse::{Expr, parse};

/// Most atoms a rule table may hold (the kernel evaluates them into a 64-bit set).
pub const MAX_ATOMS: usize = 64;
/// Most rules (conjunctions) a rule table may hold.
pub const MAX_RULES: usize = 64;

/// IP protocol numbers the language names.
pub mod proto {
    /// ICMP (IPv4 only).
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6 (IPv6 only).
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// Why a filter was refused: where, what, and what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct FilterError {
    /// 1-based character position in the expression (0 when the problem is the whole filter,
    /// e.g. its size).
    pub pos: usize,
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub hint: Option<String>,
}

impl FilterError {
    fn render(&self) -> String {
        let mut s = self.message.clone();
        if self.pos > 0 {
            s.push_str(&format!(" at position {}", self.pos));
        }
        if let Some(h) = &self.hint {
            s.push_str(&format!("; {h}"));
        }
        s
    }

    pub(crate) fn new(pos: usize, message: impl Into<String>, hint: Option<String>) -> Self {
        Self {
            pos,
            message: message.into(),
            hint,
        }
    }
}

/// Which address or port of a packet an atom looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// The source.
    Src,
    /// The destination.
    Dst,
    /// Either (`host`, `port` without `src`/`dst`).
    Either,
}

/// IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// One test on a packet. Every atom is false for packets it does not apply to (a port atom on
/// ICMP, an IPv4 network on IPv6), so negation is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Atom {
    /// The transport protocol is `proto`, on `family` only when given (ICMP is IPv4, ICMPv6 is
    /// IPv6). False when the protocol is unknown (IPv6 extension chain too long or truncated).
    Proto {
        /// IP protocol number.
        proto: u8,
        /// Restrict to one IP version.
        family: Option<Family>,
    },
    /// The packet is IPv4 / IPv6.
    Family(Family),
    /// The address on `side` is in `net`.
    Net {
        /// Source, destination or either.
        side: Side,
        /// The network (host bits zero).
        net: IpNet,
    },
    /// TCP, UDP or SCTP with readable ports (not a non-first fragment), the port on `side` in
    /// `lo..=hi`.
    Port {
        /// Source, destination or either.
        side: Side,
        /// First port.
        lo: u16,
        /// Last port.
        hi: u16,
    },
    /// Sent by the captured interface (outgoing); its negation is "received".
    Outbound,
}

/// What the matcher knows about a packet (the kernel program extracts the same fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketFields {
    /// IP fields; `None` for non-IP packets (ARP, …) and unreadable IP headers.
    pub ip: Option<IpFields>,
    /// Sent by the captured interface.
    pub outbound: bool,
}

/// IP-level fields of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpFields {
    /// Source address (its version is the packet's).
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Transport protocol, when known.
    pub proto: Option<u8>,
    /// Source and destination port, for TCP/UDP/SCTP with a readable transport header.
    pub ports: Option<(u16, u16)>,
}

impl IpFields {
    fn family(&self) -> Family {
        if self.src.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

impl Atom {
    /// Reference semantics of one atom.
    pub fn holds(&self, p: &PacketFields) -> bool {
        match *self {
            Atom::Outbound => p.outbound,
            Atom::Family(f) => p.ip.is_some_and(|ip| ip.family() == f),
            Atom::Proto { proto, family } => p.ip.is_some_and(|ip| {
                ip.proto == Some(proto) && family.is_none_or(|f| f == ip.family())
            }),
            Atom::Net { side, net } => p.ip.is_some_and(|ip| {
                let on = |a: IpAddr| net.contains(&a);
                match side {
                    Side::Src => on(ip.src),
                    Side::Dst => on(ip.dst),
                    Side::Either => on(ip.src) || on(ip.dst),
                }
            }),
            Atom::Port { side, lo, hi } => {
                let Some((sport, dport)) = p.ip.and_then(|ip| ip.ports) else {
                    return false;
                };
                let on = |port: u16| (lo..=hi).contains(&port);
                match side {
                    Side::Src => on(sport),
                    Side::Dst => on(dport),
                    Side::Either => on(sport) || on(dport),
                }
            }
        }
    }
}

/// A conjunction of literals: atom `i` must be true where `mask` bit `i` is set and `want` bit
/// `i` is set, false where `mask` is set and `want` is clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// Atoms this rule looks at.
    pub mask: u64,
    /// Required truth values (a subset of `mask`).
    pub want: u64,
}

/// The compiled filter: atoms and rules in disjunctive normal form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTable {
    atoms: Vec<Atom>,
    rules: Vec<Rule>,
}

impl RuleTable {
    /// Keeps every packet (one rule without literals).
    pub fn accept_all() -> Self {
        Self {
            atoms: Vec::new(),
            rules: vec![Rule { mask: 0, want: 0 }],
        }
    }

    /// A table from its parts, checking the limits and that every rule only names existing
    /// atoms (used by generators in tests and by [`compile`]).
    pub fn new(atoms: Vec<Atom>, rules: Vec<Rule>) -> Result<Self, FilterError> {
        if atoms.len() > MAX_ATOMS {
            return Err(FilterError::new(
                0,
                format!(
                    "the filter needs {} distinct tests; the kernel table holds {MAX_ATOMS}",
                    atoms.len()
                ),
                Some("split the capture or use fewer hosts, networks and ports".into()),
            ));
        }
        if rules.len() > MAX_RULES {
            return Err(FilterError::new(
                0,
                format!(
                    "the filter expands to {} alternatives; the kernel table holds {MAX_RULES}",
                    rules.len()
                ),
                Some(
                    "use net CIDR or portrange A-B instead of many host/port alternatives, or \
                     fewer and-ed groups of ors"
                        .into(),
                ),
            ));
        }
        let valid = if atoms.len() == 64 {
            u64::MAX
        } else {
            (1u64 << atoms.len()) - 1
        };
        if let Some(r) = rules
            .iter()
            .find(|r| r.mask & !valid != 0 || r.want & !r.mask != 0)
        {
            return Err(FilterError::new(
                0,
                format!("rule {r:?} names atoms the table does not have"),
                None,
            ));
        }
        Ok(Self { atoms, rules })
    }

    /// The atoms, in kernel order.
    pub fn atoms(&self) -> &[Atom] {
        &self.atoms
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether the table keeps every packet.
    pub fn is_accept_all(&self) -> bool {
        self.rules.iter().any(|r| r.mask == 0)
    }

    /// Reference matcher: whether the packet is kept.
    pub fn matches(&self, p: &PacketFields) -> bool {
        let truth = self
            .atoms
            .iter()
            .enumerate()
            .filter(|(_, a)| a.holds(p))
            .fold(0u64, |t, (i, _)| t | (1 << i));
        self.rules.iter().any(|r| truth & r.mask == r.want)
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |s: Side| match s {
            Side::Src => "src ",
            Side::Dst => "dst ",
            Side::Either => "",
        };
        match *self {
            Atom::Outbound => write!(f, "outbound"),
            Atom::Family(Family::V4) => write!(f, "ip"),
            Atom::Family(Family::V6) => write!(f, "ip6"),
            Atom::Proto { proto, family } => match (proto, family) {
                (proto::TCP, None) => write!(f, "tcp"),
                (proto::UDP, None) => write!(f, "udp"),
                (proto::SCTP, None) => write!(f, "sctp"),
                (proto::ICMP, Some(Family::V4)) => write!(f, "icmp"),
                (proto::ICMPV6, Some(Family::V6)) => write!(f, "icmp6"),
                (p, None) => write!(f, "proto {p}"),
                (p, Some(Family::V4)) => write!(f, "ip proto {p}"),
                (p, Some(Family::V6)) => write!(f, "ip6 proto {p}"),
            },
            Atom::Net { side: s, net } if net.prefix_len() == net.max_prefix_len() => {
                write!(f, "{}host {}", side(s), net.addr())
            }
            Atom::Net { side: s, net } => write!(f, "{}net {net}", side(s)),
            Atom::Port { side: s, lo, hi } if lo == hi => write!(f, "{}port {lo}", side(s)),
            Atom::Port { side: s, lo, hi } => write!(f, "{}portrange {lo}-{hi}", side(s)),
        }
    }
}

impl fmt::Display for RuleTable {
    /// The table as an expression in the filter language (`(a and not b) or (c)`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rules.is_empty() {
            return write!(f, "nothing (the filter can never match)");
        }
        if self.is_accept_all() {
            return write!(f, "everything");
        }
        for (i, r) in self.rules.iter().enumerate() {
            if i > 0 {
                write!(f, " or ")?;
            }
            write!(f, "(")?;
            let mut first = true;
            for (a, atom) in self.atoms.iter().enumerate() {
                if r.mask & (1 << a) == 0 {
                    continue;
                }
                if !first {
                    write!(f, " and ")?;
                }
                first = false;
                if r.want & (1 << a) == 0 {
                    write!(f, "not ")?;
                }
                write!(f, "{atom}")?;
            }
            write!(f, ")")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
