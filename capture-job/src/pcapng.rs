//! A small pcapng writer: Section Header Block with a comment, one Interface Description Block
//! per target (name, description, nanosecond resolution, comments) and Enhanced Packet Blocks.
//! Little-endian, one section per file. See the pcapng specification (IETF draft
//! draft-ietf-opsawg-pcapng) for the block layouts.

use std::io::{self, Read, Write};

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 0x0000_0001;
const EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_DESCRIPTION: u16 = 3;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;
/// `epb_flags` bits 0-1: 01 inbound, 10 outbound.
const EPB_INBOUND: u32 = 1;
const EPB_OUTBOUND: u32 = 2;
/// Bytes of an Enhanced Packet Block besides the packet and its padding: header (28), the
/// `epb_flags` option (8), the end of options (4) and the trailing length (4).
pub const EPB_OVERHEAD: usize = 28 + 8 + 4 + 4;
/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u16 = 1;

/// What an Interface Description Block says about a target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// `if_name`: `namespace/pod` for pods, else `netns/interface`.
    pub name: String,
    /// `if_description`.
    pub description: String,
    /// `opt_comment`s (node, pod uid, capture name/uid).
    pub comments: Vec<String>,
    /// Link type (Ethernet for every interface nightcap opens).
    pub link_type: u16,
    /// Snap length recorded in the block.
    pub snaplen: u32,
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

fn option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    // Option lengths are 16-bit; longer text is cut (comments are short in practice).
    let value = &value[..value.len().min(u16::MAX as usize - 3)];
    buf.extend_from_slice(&code.to_le_bytes());
    buf.extend_from_slice(&(value.len() as u16).to_le_bytes());
    buf.extend_from_slice(value);
    buf.extend(std::iter::repeat_n(0, pad4(value.len())));
}

fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let total = (12 + body.len()) as u32;
    let mut b = Vec::with_capacity(total as usize);
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(&total.to_le_bytes());
    b.extend_from_slice(body);
    b.extend_from_slice(&total.to_le_bytes());
    b
}

/// Writes one pcapng section to `W`, counting packets and bytes.
#[derive(Debug)]
pub struct PcapngWriter<W: Write> {
    out: W,
    interfaces: u32,
    packets: u64,
    bytes: u64,
}

impl<W: Write> PcapngWriter<W> {
    /// Starts a section: writes the Section Header Block with `comment` (the filter).
    pub fn new(mut out: W, comment: &str, application: &str) -> io::Result<Self> {
        let mut body = Vec::new();
        body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&(-1i64).to_le_bytes()); // section length unknown
        if !comment.is_empty() {
            option(&mut body, OPT_COMMENT, comment.as_bytes());
        }
        option(&mut body, SHB_USERAPPL, application.as_bytes());
        option(&mut body, OPT_END, &[]);
        let b = block(SHB, &body);
        out.write_all(&b)?;
        Ok(Self {
            out,
            interfaces: 0,
            packets: 0,
            bytes: b.len() as u64,
        })
    }

    /// Adds an interface; returns its id for [`write_packet`](Self::write_packet).
    pub fn add_interface(&mut self, info: &InterfaceInfo) -> io::Result<u32> {
        let mut body = Vec::new();
        body.extend_from_slice(&info.link_type.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&info.snaplen.to_le_bytes());
        option(&mut body, IF_NAME, info.name.as_bytes());
        if !info.description.is_empty() {
            option(&mut body, IF_DESCRIPTION, info.description.as_bytes());
        }
        option(&mut body, IF_TSRESOL, &[9]);
        for c in &info.comments {
            option(&mut body, OPT_COMMENT, c.as_bytes());
        }
        option(&mut body, OPT_END, &[]);
        let b = block(IDB, &body);
        self.out.write_all(&b)?;
        self.bytes += b.len() as u64;
        self.interfaces += 1;
        Ok(self.interfaces - 1)
    }

    /// Writes one packet (Enhanced Packet Block, nanosecond timestamp, `epb_flags` with the
    /// direction: `outbound` as the captured interface sees it). A VLAN tag the device took out
    /// (`vlan` = TPID, TCI) is put back after the MAC addresses.
    pub fn write_packet(
        &mut self,
        interface: u32,
        ts_ns: u64,
        data: &[u8],
        orig_len: u32,
        vlan: Option<(u16, u16)>,
        outbound: bool,
    ) -> io::Result<()> {
        let tag = vlan.filter(|_| data.len() >= 12);
        let extra = if tag.is_some() { 4 } else { 0 };
        let cap = data.len() + extra;
        let padding = pad4(cap);
        let total = (EPB_OVERHEAD + cap + padding) as u32;
        let mut head = [0u8; 28];
        head[0..4].copy_from_slice(&EPB.to_le_bytes());
        head[4..8].copy_from_slice(&total.to_le_bytes());
        head[8..12].copy_from_slice(&interface.to_le_bytes());
        head[12..16].copy_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
        head[16..20].copy_from_slice(&(ts_ns as u32).to_le_bytes());
        head[20..24].copy_from_slice(&(cap as u32).to_le_bytes());
        head[24..28].copy_from_slice(&(orig_len + extra as u32).to_le_bytes());
        self.out.write_all(&head)?;
        match tag {
            Some((tpid, tci)) => {
                self.out.write_all(&data[..12])?;
                self.out.write_all(&tpid.to_be_bytes())?;
                self.out.write_all(&tci.to_be_bytes())?;
                self.out.write_all(&data[12..])?;
            }
            None => self.out.write_all(data)?,
        }
        let flags = if outbound { EPB_OUTBOUND } else { EPB_INBOUND };
        let mut tail = [0u8; 3 + 16];
        let opts = &mut tail[padding..padding + 16];
        opts[0..2].copy_from_slice(&EPB_FLAGS.to_le_bytes());
        opts[2..4].copy_from_slice(&4u16.to_le_bytes());
        opts[4..8].copy_from_slice(&flags.to_le_bytes());
        // opts[8..12]: opt_endofopt (zeros).
        opts[12..16].copy_from_slice(&total.to_le_bytes());
        self.out.write_all(&tail[..padding + 16])?;
        self.packets += 1;
        self.bytes += u64::from(total);
        Ok(())
    }

    /// Packets written.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Bytes written (all blocks).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flushes and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }

    /// The inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }
}

/// Length of the longest prefix of `data` made of whole blocks (what survives of a file whose
/// writer died mid-block).
pub fn complete_prefix(data: &[u8]) -> usize {
    // Reading from memory cannot fail.
    complete_prefix_in(io::Cursor::new(data), data.len() as u64).map_or(0, |n| n as usize)
}

/// [`complete_prefix`] of the first `len` bytes of `r`, read from its start without holding the
/// file in memory: each block's length and trailer are read and its body skipped.
pub fn complete_prefix_in(r: impl io::Read + io::Seek, len: u64) -> io::Result<u64> {
    let mut r = io::BufReader::with_capacity(256 << 10, r);
    let mut at = 0u64;
    let mut word = [0u8; 4];
    while at + 12 <= len {
        r.seek_relative(4)?;
        r.read_exact(&mut word)?;
        let block = u64::from(u32::from_le_bytes(word));
        if block < 12 || !block.is_multiple_of(4) || at + block > len {
            break;
        }
        r.seek_relative(block as i64 - 12)?;
        r.read_exact(&mut word)?;
        if u64::from(u32::from_le_bytes(word)) != block {
            break;
        }
        at += block;
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_well_formed_and_recoverable() {
        let mut w = PcapngWriter::new(Vec::new(), "udp port 53", "nightcap").expect("shb");
        let id = w
            .add_interface(&InterfaceInfo {
                name: "default/web-0".into(),
                description: "eth0".into(),
                comments: vec!["node: n1".into()],
                link_type: LINKTYPE_ETHERNET,
                snaplen: 65535,
            })
            .expect("idb");
        assert_eq!(id, 0);
        w.write_packet(0, 1_700_000_000_123_456_789, &[1u8; 61], 61, None, false)
            .expect("epb");
        w.write_packet(0, 1, &[2u8; 20], 100, Some((0x8100, 7)), true)
            .expect("epb vlan");
        let bytes = w.bytes();
        let data = w.finish().expect("finish");
        assert_eq!(data.len() as u64, bytes);
        assert_eq!(data.len() % 4, 0);
        assert_eq!(complete_prefix(&data), data.len());
        assert!(complete_prefix(&data[..data.len() - 3]) < data.len() - 3);
        // Every cut keeps exactly the whole blocks before it, and zeros where blocks were lost keep
        // only whole blocks.
        let ends: Vec<usize> = {
            let mut at = 0;
            let mut ends = vec![0];
            while at < data.len() {
                at += u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4")) as usize;
                ends.push(at);
            }
            ends
        };
        for cut in 0..=data.len() {
            let whole = *ends.iter().rev().find(|&&e| e <= cut).expect("0 is an end");
            assert_eq!(complete_prefix(&data[..cut]), whole, "cut at {cut}");
            let mut zeroed = data.clone();
            zeroed[cut..].fill(0);
            // A block whose zeroed bytes were zeros already survives; nothing zeroed is kept.
            let got = complete_prefix(&zeroed);
            assert!(
                ends.contains(&got) && got >= whole,
                "zeros from {cut}: {got}"
            );
            assert!(zeroed[..got] == data[..got], "zeros from {cut}: {got}");
        }
        // The VLAN tag went back in after the MAC addresses.
        let vlan_epb = &data[data.len() - (EPB_OVERHEAD + 24)..];
        assert_eq!(&vlan_epb[28 + 12..28 + 16], &[0x81, 0x00, 0x00, 0x07]);
        // Its epb_flags say outbound; the first packet's say inbound.
        assert_eq!(&vlan_epb[28 + 24..28 + 32], &[2, 0, 4, 0, 2, 0, 0, 0]);
        let first_epb = ends[2];
        let flags_at = first_epb + 28 + 64; // 61 bytes padded to 64
        assert_eq!(&data[flags_at..flags_at + 8], &[2, 0, 4, 0, 1, 0, 0, 0]);
    }
}
