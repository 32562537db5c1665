//! The pure-Rust mirror of `bpf/filter.bpf.c`'s parsing: an Ethernet frame to the
//! [`PacketFields`] the rule table looks at. The kernel program is tested against
//! `RuleTable::matches(&fields(frame))`, so every rule here must be the program's rule.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nightcap_api::filter::{IpFields, PacketFields};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// IPv6 extension headers followed at most this many times.
pub const MAX_EXT: usize = 8;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// What the program extracts from `frame` (starting at the Ethernet header), for a packet in
/// the given direction.
pub fn fields(frame: &[u8], outbound: bool) -> PacketFields {
    PacketFields {
        ip: ip_fields(frame),
        outbound,
    }
}

fn ip_fields(frame: &[u8]) -> Option<IpFields> {
    let mut ethertype = be16(frame, 12)?;
    let mut l3 = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        l3 += 4;
        ethertype = be16(frame, l3 - 2)?;
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            l3 += 4;
            ethertype = be16(frame, l3 - 2)?;
        }
    }
    let net = frame.get(l3..)?;
    match ethertype {
        ETH_P_IP => ipv4(net),
        ETH_P_IPV6 => ipv6(net),
        _ => None,
    }
}

fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132)
}

fn ports(net: &[u8], at: usize, proto: u8) -> Option<(u16, u16)> {
    if !has_ports(proto) {
        return None;
    }
    Some((be16(net, at)?, be16(net, at + 2)?))
}

fn ipv4(net: &[u8]) -> Option<IpFields> {
    let h = net.get(..20)?;
    let ihl = usize::from(h[0] & 0x0f);
    if h[0] >> 4 != 4 || ihl < 5 {
        return None;
    }
    let proto = h[9];
    let frag = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
    Some(IpFields {
        src: IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
        dst: IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
        proto: Some(proto),
        ports: if frag == 0 {
            ports(net, ihl * 4, proto)
        } else {
            None
        },
    })
}

fn ipv6(net: &[u8]) -> Option<IpFields> {
    let h = net.get(..40)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&h[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    let mut f = IpFields {
        src: addr(8),
        dst: addr(24),
        proto: None,
        ports: None,
    };
    let mut next = h[6];
    let mut pos = 40usize;
    let mut first_fragment = true;
    for i in 0..=MAX_EXT {
        if !matches!(next, 0 | 43 | 44 | 60 | 51) {
            f.proto = Some(next);
            if first_fragment {
                f.ports = ports(net, pos, next);
            }
            return Some(f);
        }
        if i == MAX_EXT {
            break;
        }
        let Some(e) = net.get(pos..pos + 4) else {
            return Some(f);
        };
        match next {
            44 => {
                if u16::from_be_bytes([e[2], e[3]]) & 0xfff8 != 0 {
                    first_fragment = false;
                }
                pos += 8;
            }
            51 => pos += (usize::from(e[1]) + 2) * 4,
            _ => pos += (usize::from(e[1]) + 1) * 8,
        }
        next = e[0];
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vlan_v6_with_extension_headers() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a, 0x86, 0xdd]);
        let mut ip6 = vec![0u8; 40];
        ip6[0] = 0x60;
        ip6[6] = 0; // hop-by-hop
        ip6[8] = 0xfd;
        ip6[24] = 0xfd;
        ip6[39] = 1;
        f.extend_from_slice(&ip6);
        f.extend_from_slice(&[44, 0, 0, 0, 0, 0, 0, 0]); // hop-by-hop, len 0 -> fragment next
        f.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 1]); // fragment, offset 0 -> udp
        f.extend_from_slice(&[0x12, 0x34, 0x00, 0x35, 0, 8, 0, 0]);
        let p = fields(&f, false).ip.expect("ip");
        assert_eq!(p.proto, Some(17));
        assert_eq!(p.ports, Some((0x1234, 53)));
        assert_eq!(p.dst, "fd00::1".parse::<IpAddr>().expect("addr"));
    }
}
