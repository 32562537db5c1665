//! The eBPF socket filter: rule table in, keep/drop + snap length out.

use std::os::fd::{AsFd, BorrowedFd};

use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::PerCpuArray,
    programs::{ProgramError, SocketFilter, TestRun, TestRunOptions},
};
use nightcap_api::filter::{Atom, Family, MAX_ATOMS, MAX_RULES, RuleTable, Side};

use crate::{Error, Result, View};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/filter.bpf.o"));

const PROGRAM: &str = "nightcap_filter";
const COUNTERS: &str = "nc_counters";

// Atom kinds and sides; must match bpf/filter.bpf.c.
const KIND_PROTO: u8 = 1;
const KIND_FAMILY: u8 = 2;
const KIND_NET: u8 = 3;
const KIND_PORT: u8 = 4;
const KIND_OUTBOUND: u8 = 5;
const SIDE_SRC: u8 = 1;
const SIDE_DST: u8 = 2;
const SIDE_EITHER: u8 = 3;
/// `nc_config.flags`: the socket is on the peer of the captured interface (must match
/// bpf/filter.bpf.c).
const CFG_PEER: u32 = 1;
/// What a missing `CAP_BPF` is reported as.
const NEEDS_BPF: &str = "CAP_BPF (the eBPF socket filter is loaded with bpf(2); grant BPF)";
/// What the verifier refusing the program for lack of `CAP_PERFMON` is reported as: without it
/// the verifier checks as for unprivileged programs (no pointer comparisons or leaks, Spectre
/// v1 masking) and refuses this program with EACCES.
const NEEDS_PERFMON: &str =
    "CAP_PERFMON (the verifier accepts the filter only in its privileged mode; grant PERFMON)";

/// `struct nc_atom` (44 bytes, no padding).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct RawAtom {
    kind: u8,
    side: u8,
    family: u8,
    pad: u8,
    proto: u16,
    lo: u16,
    hi: u16,
    pad2: u16,
    addr: [u32; 4],
    mask: [u32; 4],
}

/// `struct nc_config` (3856 bytes, no padding).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct RawConfig {
    snaplen: u32,
    n_atoms: u32,
    n_rules: u32,
    flags: u32,
    atoms: [RawAtom; MAX_ATOMS],
    rule_mask: [u64; MAX_RULES],
    rule_want: [u64; MAX_RULES],
}

// SAFETY: both are repr(C), Copy, made of integers only, with no padding bytes (the explicit
// pad fields fill every gap; sizes are asserted below).
unsafe impl Pod for RawConfig {}
const _: () = assert!(size_of::<RawAtom>() == 44);
const _: () = assert!(size_of::<RawConfig>() == 16 + 44 * MAX_ATOMS + 16 * MAX_RULES);

fn family_code(f: Family) -> u8 {
    match f {
        Family::V4 => 4,
        Family::V6 => 6,
    }
}

fn side_code(s: Side) -> u8 {
    match s {
        Side::Src => SIDE_SRC,
        Side::Dst => SIDE_DST,
        Side::Either => SIDE_EITHER,
    }
}

/// Network-order words of an address as the program reads them from the packet.
fn words(bytes: &[u8]) -> [u32; 4] {
    let mut w = [0u32; 4];
    for (i, chunk) in bytes.chunks(4).enumerate() {
        w[i] = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    w
}

fn raw_atom(atom: &Atom) -> RawAtom {
    let mut r = RawAtom::default();
    match *atom {
        Atom::Proto { proto, family } => {
            r.kind = KIND_PROTO;
            r.proto = proto.into();
            r.family = family.map_or(0, family_code);
        }
        Atom::Family(f) => {
            r.kind = KIND_FAMILY;
            r.family = family_code(f);
        }
        Atom::Net { side, net } => {
            r.kind = KIND_NET;
            r.side = side_code(side);
            let (addr, mask, family) = match net {
                ipnet::IpNet::V4(n) => (
                    words(&n.network().octets()),
                    words(&n.netmask().octets()),
                    4,
                ),
                ipnet::IpNet::V6(n) => (
                    words(&n.network().octets()),
                    words(&n.netmask().octets()),
                    6,
                ),
            };
            r.addr = addr;
            r.mask = mask;
            r.family = family;
        }
        Atom::Port { side, lo, hi } => {
            r.kind = KIND_PORT;
            r.side = side_code(side);
            r.lo = lo;
            r.hi = hi;
        }
        Atom::Outbound => r.kind = KIND_OUTBOUND,
    }
    r
}

fn raw_config(table: &RuleTable, snaplen: u32, view: View) -> RawConfig {
    let mut c = RawConfig {
        snaplen,
        n_atoms: table.atoms().len() as u32,
        n_rules: table.rules().len() as u32,
        flags: match view {
            View::Interface => 0,
            View::Peer => CFG_PEER,
        },
        atoms: [RawAtom::default(); MAX_ATOMS],
        rule_mask: [0; MAX_RULES],
        rule_want: [0; MAX_RULES],
    };
    for (i, a) in table.atoms().iter().enumerate() {
        c.atoms[i] = raw_atom(a);
    }
    for (i, r) in table.rules().iter().enumerate() {
        c.rule_mask[i] = r.mask;
        c.rule_want[i] = r.want;
    }
    c
}

/// Packets the program saw and kept, summed over CPUs, since it was loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets the program ran on (all sockets it is attached to).
    pub seen: u64,
    /// Packets it kept.
    pub matched: u64,
}

/// The loaded filter program. One load serves any number of sockets; unloaded on drop (the
/// sockets it is attached to keep their own reference).
#[derive(Debug)]
pub struct Filter {
    ebpf: Ebpf,
    snaplen: u32,
    view: View,
}

impl Filter {
    /// Loads the program with `table` and `snaplen` (bytes kept of each packet, counted from
    /// the link-layer header; at least 1), for sockets on the captured interface itself.
    pub fn load(table: &RuleTable, snaplen: u32) -> Result<Self> {
        Self::load_for(table, snaplen, View::Interface)
    }

    /// Loads the program for sockets whose packets `view` sees: with [`View::Peer`] the
    /// `outbound` atom is true for what the socket's interface receives (what the far end of
    /// the link sent). A refused `bpf(2)` is [`Error::Permission`] naming `CAP_BPF`.
    pub fn load_for(table: &RuleTable, snaplen: u32, view: View) -> Result<Self> {
        if snaplen == 0 {
            return Err(Error::Invalid("snap length must be at least 1 byte".into()));
        }
        let config = raw_config(table, snaplen, view);
        let mut ebpf = EbpfLoader::new()
            .override_global("cfg", &config, true)
            .load(OBJECT)
            .map_err(|source| match crate::permission_in(&source) {
                Some(e) => Error::Permission {
                    action: "creating the eBPF filter's maps (BPF_MAP_CREATE)".into(),
                    needs: NEEDS_BPF,
                    source: e,
                },
                None => Error::Load {
                    source: Box::new(source),
                },
            })?;
        let program = socket_filter(&mut ebpf)?;
        program.load().map_err(|source| {
            let refused = crate::permission_in(&source);
            let verifier = match &source {
                ProgramError::LoadError { verifier_log, .. } => verifier_log
                    .to_string()
                    .lines()
                    .rev()
                    .find(|l| {
                        let l = l.trim();
                        !l.is_empty()
                            && !["processed ", "stack depth", "verification time"]
                                .iter()
                                .any(|p| l.starts_with(p))
                    })
                    .map(str::to_owned),
                _ => None,
            };
            match refused {
                // EACCES with a verifier log: the verifier refused it in unprivileged mode.
                Some(e) if e.raw_os_error() == Some(libc::EACCES) && verifier.is_some() => {
                    Error::Permission {
                        action: format!(
                            "loading the eBPF socket filter (BPF_PROG_LOAD; verifier: {})",
                            verifier.unwrap_or_default()
                        ),
                        needs: NEEDS_PERFMON,
                        source: e,
                    }
                }
                Some(e) => Error::Permission {
                    action: "loading the eBPF socket filter (BPF_PROG_LOAD)".into(),
                    needs: NEEDS_BPF,
                    source: e,
                },
                None => Error::Program {
                    context: "loading (the verifier log follows)".into(),
                    source: Box::new(source),
                },
            }
        })?;
        Ok(Self {
            ebpf,
            snaplen,
            view,
        })
    }

    /// Whose point of view the `outbound` atom takes.
    pub fn view(&self) -> View {
        self.view
    }

    /// The snap length the program returns for kept packets.
    pub fn snaplen(&self) -> u32 {
        self.snaplen
    }

    /// Attaches the program to a socket (replacing any filter it had).
    pub fn attach(&mut self, socket: BorrowedFd<'_>) -> Result<()> {
        socket_filter(&mut self.ebpf)?
            .attach(socket)
            .map_err(|source| Error::Program {
                context: "attaching to the packet socket".into(),
                source: Box::new(source),
            })
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters> {
        let map = self
            .ebpf
            .map(COUNTERS)
            .ok_or_else(|| Error::Invalid(format!("the eBPF object has no map {COUNTERS}")))?;
        let array: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|source| Error::Map {
                name: COUNTERS,
                source: Box::new(source),
            })?;
        let sum = |idx: u32| -> Result<u64> {
            let values = array.get(&idx, 0).map_err(|source| Error::Map {
                name: COUNTERS,
                source: Box::new(source),
            })?;
            Ok(values.iter().sum())
        };
        Ok(Counters {
            seen: sum(0)?,
            matched: sum(1)?,
        })
    }

    /// Runs the program once on `frame` (an Ethernet frame) with `BPF_PROG_TEST_RUN` and returns
    /// its verdict: 0 to drop, else the bytes to keep. The kernel runs such a test as a received
    /// packet, so outbound atoms are false ([`View::Interface`]) or true ([`View::Peer`]).
    pub fn test_run(&mut self, frame: &[u8]) -> Result<u32> {
        let program = socket_filter(&mut self.ebpf)?;
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = 1;
        program
            .test_run(opts)
            .map(|r| r.return_value)
            .map_err(|source| Error::Program {
                context: "BPF_PROG_TEST_RUN".into(),
                source: Box::new(source),
            })
    }

    /// A borrowed descriptor of the loaded program (for diagnostics).
    pub fn program_fd(&mut self) -> Result<BorrowedFd<'_>> {
        let program: &SocketFilter = socket_filter(&mut self.ebpf)?;
        let fd = program.fd().map_err(|source| Error::Program {
            context: "reading the program descriptor".into(),
            source: Box::new(source),
        })?;
        Ok(fd.as_fd())
    }
}

fn socket_filter(ebpf: &mut Ebpf) -> Result<&mut SocketFilter> {
    let program = ebpf.program_mut(PROGRAM).ok_or_else(|| Error::Program {
        context: format!("the object has no program {PROGRAM}"),
        source: Box::new(ProgramError::UnexpectedProgramType),
    })?;
    program.try_into().map_err(|source| Error::Program {
        context: format!("{PROGRAM} is not a socket filter"),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoms_encode_in_network_order() {
        let a = raw_atom(&Atom::Net {
            side: Side::Src,
            net: "10.1.0.0/16".parse().expect("net"),
        });
        assert_eq!(a.kind, KIND_NET);
        assert_eq!(a.family, 4);
        assert_eq!(a.addr[0].to_ne_bytes(), [10, 1, 0, 0]);
        assert_eq!(a.mask[0].to_ne_bytes(), [255, 255, 0, 0]);
        assert_eq!(a.mask[1], 0);
        let b = raw_atom(&Atom::Net {
            side: Side::Either,
            net: "fd00::/12".parse().expect("net"),
        });
        assert_eq!(b.family, 6);
        assert_eq!(b.mask[0].to_ne_bytes(), [255, 0xf0, 0, 0]);
        assert_eq!(b.addr[0].to_ne_bytes(), [0xfd, 0, 0, 0]);
    }
}
