//! AF_PACKET socket with a TPACKET_V3 receive ring: the kernel fills blocks of packets that
//! passed the eBPF filter (already cut to the snap length) and hands whole blocks to user space,
//! which reads them in place (no copy, one wake-up per block).
//!
//! Order of set-up matters: the socket is created with protocol 0 (receives nothing), the
//! filter is attached, the ring is configured and mapped, and only then the socket is bound to
//! `ETH_P_ALL` on the interface — so no packet ever bypasses the filter.

use std::{
    ffi::CString,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

use crate::{Error, Filter, Result};

const SOL_PACKET: libc::c_int = 263;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_VERSION: libc::c_int = 10;
const TPACKET_V3: libc::c_int = 2;
const ETH_P_ALL: u16 = 0x0003;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
const PACKET_OUTGOING: u8 = 4;

// Offsets in `struct tpacket_block_desc` (version, offset_to_priv, then tpacket_hdr_v1).
const BD_BLOCK_STATUS: usize = 8;
const BD_NUM_PKTS: usize = 12;
const BD_OFFSET_TO_FIRST: usize = 16;
// Offsets in `struct tpacket3_hdr`.
const H_NEXT_OFFSET: usize = 0;
const H_SEC: usize = 4;
const H_NSEC: usize = 8;
const H_SNAPLEN: usize = 12;
const H_LEN: usize = 16;
const H_STATUS: usize = 20;
const H_MAC: usize = 24;
const H_VLAN_TCI: usize = 32;
const H_VLAN_TPID: usize = 36;
/// `struct sockaddr_ll` follows the aligned header; its `sll_pkttype` tells the direction.
const H_SOCKADDR_LL: usize = 48;
const SLL_PKTTYPE: usize = 10;

#[repr(C)]
struct TpacketReq3 {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
    retire_blk_tov: u32,
    sizeof_priv: u32,
    feature_req_word: u32,
}

/// Whose point of view a socket takes for directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum View {
    /// The interface the socket is bound to is the captured one: what it sends is outbound.
    #[default]
    Interface,
    /// The socket is bound to the far end of the captured interface's link (the node's side of
    /// a pod's veth, or the bridge port it is plugged into): what that end receives, the captured
    /// interface sent, so it is outbound, and what it sends is inbound.
    Peer,
}

/// What a missing `CAP_NET_RAW` is reported as.
const NEEDS_NET_RAW: &str = "CAP_NET_RAW (AF_PACKET sockets; grant NET_RAW)";

/// Size of the receive ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Bytes per block (a power of two, a multiple of the page size). Default 1 MiB.
    pub block_size: u32,
    /// Number of blocks. Default 8 (8 MiB per interface).
    pub block_count: u32,
    /// A block that is not full is handed over after this many milliseconds. Default 50.
    pub block_timeout_ms: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            block_size: 1 << 20,
            block_count: 8,
            block_timeout_ms: 50,
        }
    }
}

/// Kernel statistics of a ring since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Packets the filter kept and the socket received (including dropped ones).
    pub packets: u64,
    /// Packets dropped because the ring was full.
    pub drops: u64,
}

/// One packet in a ring block.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Bytes kept (at most the snap length), from the link-layer header.
    pub data: &'a [u8],
    /// Length of the packet on the wire.
    pub orig_len: u32,
    /// The 802.1Q/802.1ad tag the device took out of the packet (TPID, TCI), if any; writers
    /// put it back in front of the ethertype.
    pub vlan: Option<(u16, u16)>,
    /// Sent by the captured interface (rather than received), per the ring's [`View`].
    pub outbound: bool,
}

/// An AF_PACKET TPACKET_V3 socket bound to one interface, filtered by a [`Filter`].
#[derive(Debug)]
pub struct PacketRing {
    fd: OwnedFd,
    map: NonNull<u8>,
    map_len: usize,
    block_size: usize,
    block_count: usize,
    next: usize,
    stats: RingStats,
    ifname: String,
    view: View,
}

// SAFETY: the mapping is owned by this value alone; nothing else aliases it in user space.
unsafe impl Send for PacketRing {}

impl PacketRing {
    /// Opens a ring on `ifname` in the calling thread's network namespace (see
    /// [`crate::netns::run_in`] to open one elsewhere; the socket stays in the namespace it was
    /// created in).
    pub fn open(ifname: &str, filter: &mut Filter, cfg: RingConfig) -> Result<Self> {
        let cname = CString::new(ifname)
            .map_err(|_| Error::Invalid(format!("interface name {ifname:?} contains NUL")))?;
        // SAFETY: plain libc calls with valid arguments; results are checked.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(Error::NoInterface {
                name: ifname.to_owned(),
                netns: "this network namespace".into(),
                netns_arg: String::new(),
            });
        }
        Self::open_index(ifindex, ifname, filter, cfg)
    }

    /// Opens a ring on interface `ifindex` (named `ifname` in messages) of the calling thread's
    /// network namespace. Directions take the filter's [`View`] (see [`Filter::load_for`]).
    /// A refused socket is [`Error::Permission`] naming `CAP_NET_RAW`.
    pub fn open_index(
        ifindex: u32,
        ifname: &str,
        filter: &mut Filter,
        cfg: RingConfig,
    ) -> Result<Self> {
        if !cfg.block_size.is_power_of_two() || cfg.block_size < 4096 || cfg.block_count == 0 {
            return Err(Error::Invalid(format!(
                "ring blocks must be a power of two of at least 4096 bytes and at least one; \
                 got {} x {}",
                cfg.block_count, cfg.block_size
            )));
        }
        // SAFETY: socket(2) with constant arguments.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if raw < 0 {
            return Err(Error::sys_or_permission(
                "socket(AF_PACKET)",
                NEEDS_NET_RAW,
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        filter.attach(fd.as_fd())?;
        setsockopt(
            &fd,
            PACKET_VERSION,
            &TPACKET_V3,
            "PACKET_VERSION TPACKET_V3",
        )?;
        let req = TpacketReq3 {
            block_size: cfg.block_size,
            block_nr: cfg.block_count,
            frame_size: 2048,
            frame_nr: cfg.block_size / 2048 * cfg.block_count,
            retire_blk_tov: cfg.block_timeout_ms,
            sizeof_priv: 0,
            feature_req_word: 0,
        };
        setsockopt(&fd, PACKET_RX_RING, &req, "PACKET_RX_RING")?;
        let map_len = cfg.block_size as usize * cfg.block_count as usize;
        // SAFETY: mapping the ring the kernel just allocated for this socket.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::last_os("mmap of the packet ring"));
        }
        let map = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| Error::last_os("mmap"))?;
        let ring = Self {
            fd,
            map,
            map_len,
            block_size: cfg.block_size as usize,
            block_count: cfg.block_count as usize,
            next: 0,
            stats: RingStats::default(),
            ifname: ifname.to_owned(),
            view: filter.view(),
        };
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: binding our socket to a valid sockaddr_ll.
        let rc = unsafe {
            libc::bind(
                ring.fd.as_raw_fd(),
                (&raw const sll).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(Error::last_os(format!(
                "binding the packet socket to {ifname}"
            )));
        }
        Ok(ring)
    }

    /// The interface the ring is bound to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Whose point of view [`Packet::outbound`] takes.
    pub fn view(&self) -> View {
        self.view
    }

    /// The socket (poll it for readability: a block is ready).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn block_ptr(&self, i: usize) -> *mut u8 {
        // SAFETY: i < block_count, so the offset stays inside the mapping.
        unsafe { self.map.as_ptr().add(i * self.block_size) }
    }

    fn block_status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: the status word is 4-aligned inside the mapping and shared with the kernel,
        // hence accessed atomically.
        unsafe { &*self.block_ptr(i).add(BD_BLOCK_STATUS).cast::<AtomicU32>() }
    }

    /// Calls `f` for every packet of every block the kernel has handed over, returning each block
    /// to the kernel after its packets were seen. Returns the number of packets. Stops early
    /// after `max_blocks` blocks so a busy ring cannot starve other work.
    pub fn drain(&mut self, max_blocks: usize, mut f: impl FnMut(&Packet<'_>)) -> usize {
        let mut n = 0;
        let peer = self.view == View::Peer;
        for _ in 0..max_blocks {
            let i = self.next;
            if self.block_status(i).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                break;
            }
            let block = self.block_ptr(i);
            // SAFETY: the block belongs to user space until its status is reset; all offsets come
            // from the kernel and stay inside the block.
            unsafe {
                let num = read_u32(block, BD_NUM_PKTS);
                let mut off = read_u32(block, BD_OFFSET_TO_FIRST) as usize;
                for _ in 0..num {
                    if off + H_SOCKADDR_LL + 12 > self.block_size {
                        break;
                    }
                    let h = block.add(off);
                    let status = read_u32(h, H_STATUS);
                    let snap = read_u32(h, H_SNAPLEN) as usize;
                    let mac = std::ptr::read_unaligned(h.add(H_MAC).cast::<u16>()) as usize;
                    if off + mac + snap > self.block_size {
                        break;
                    }
                    let vlan = (status & TP_STATUS_VLAN_VALID != 0).then(|| {
                        let tci = read_u32(h, H_VLAN_TCI) as u16;
                        let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 {
                            std::ptr::read_unaligned(h.add(H_VLAN_TPID).cast::<u16>())
                        } else {
                            0x8100
                        };
                        (tpid, tci)
                    });
                    let pkt = Packet {
                        ts_ns: u64::from(read_u32(h, H_SEC)) * 1_000_000_000
                            + u64::from(read_u32(h, H_NSEC)),
                        data: std::slice::from_raw_parts(h.add(mac), snap),
                        orig_len: read_u32(h, H_LEN),
                        vlan,
                        outbound: (*h.add(H_SOCKADDR_LL + SLL_PKTTYPE) == PACKET_OUTGOING) != peer,
                    };
                    f(&pkt);
                    n += 1;
                    let next = read_u32(h, H_NEXT_OFFSET) as usize;
                    if next == 0 {
                        break;
                    }
                    off += next;
                }
            }
            self.block_status(i)
                .store(TP_STATUS_KERNEL, Ordering::Release);
            self.next = (i + 1) % self.block_count;
        }
        n
    }

    /// Kernel statistics since the ring was opened (the kernel resets its counters on every
    /// read, so this accumulates).
    pub fn stats(&mut self) -> Result<RingStats> {
        let mut s = [0u32; 3];
        let mut len = size_of_val(&s) as libc::socklen_t;
        // SAFETY: getsockopt into a buffer of the size we pass.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                SOL_PACKET,
                PACKET_STATISTICS,
                s.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(Error::last_os("getsockopt(PACKET_STATISTICS)"));
        }
        self.stats.packets += u64::from(s[0]);
        self.stats.drops += u64::from(s[1]);
        Ok(self.stats)
    }
}

impl Drop for PacketRing {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping once; the fd closes after.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.map_len);
        }
    }
}

/// # Safety
/// `base + off .. +4` must be inside a live mapping.
unsafe fn read_u32(base: *const u8, off: usize) -> u32 {
    // SAFETY: guaranteed by the caller.
    unsafe { std::ptr::read_unaligned(base.add(off).cast::<u32>()) }
}

fn setsockopt<T>(fd: &OwnedFd, opt: libc::c_int, value: &T, what: &str) -> Result<()> {
    // SAFETY: passing a pointer to a live value of the size we state.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_PACKET,
            opt,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(Error::last_os(format!("setsockopt({what})")));
    }
    Ok(())
}
