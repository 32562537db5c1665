//! A minimal `NETLINK_ROUTE` client: the few read-only requests [`crate::hostside`] needs
//! (one route, one link, the address, neighbour and bridge forwarding tables), each message
//! built and parsed by hand (see netlink(7), rtnetlink(7)).

use std::{
    net::IpAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use crate::{Error, Result};

const NLMSG_HDRLEN: usize = 16;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NDA_MASTER: u16 = 9;
const NUD_INCOMPLETE: u16 = 0x01;
const NUD_FAILED: u16 = 0x20;
const AF_BRIDGE: u8 = 7;
/// Attribute types carry these flags in their top bits.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// The answer to `RTM_GETROUTE` for one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    /// `rtm_type` (`RTN_UNICAST`, `RTN_LOCAL`, …).
    pub kind: u8,
    /// Output interface.
    pub oif: Option<u32>,
    /// Next hop, when the address is behind a gateway.
    pub gateway: Option<IpAddr>,
}

/// An interface's name and kind (`bridge`, `veth`, … when it has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub name: String,
    pub kind: Option<String>,
}

/// A `NETLINK_ROUTE` socket of the calling thread's network namespace.
pub(crate) struct Netlink {
    fd: OwnedFd,
    seq: std::cell::Cell<u32>,
}

/// One message of an answer: type, fixed header + attributes.
struct Message {
    kind: u16,
    payload: Vec<u8>,
}

fn family(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn ip_from(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(align4(buf.len()), 0);
}

/// The attributes in `data` as (type, value).
fn attrs(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            break;
        }
        out.push((kind, &data[4..len]));
        data = &data[align4(len).min(data.len())..];
    }
    out
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map_or(0, u32::from_ne_bytes)
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .and_then(|s| <[u8; 2]>::try_from(s).ok())
        .map_or(0, u16::from_ne_bytes)
}

fn attr_u32(v: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(v).ok().map(u32::from_ne_bytes)
}

fn c_string(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

impl Netlink {
    pub(crate) fn open() -> Result<Self> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(Error::last_os("socket(AF_NETLINK, NETLINK_ROUTE)"));
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self {
            fd,
            seq: std::cell::Cell::new(1),
        })
    }

    /// Sends one request and collects the answer: every message up to `NLMSG_DONE` for a dump,
    /// else the one reply. `Ok(Err(errno))` is the kernel refusing the request.
    fn request(
        &self,
        kind: u16,
        dump: bool,
        body: &[u8],
    ) -> Result<Result<Vec<Message>, std::io::Error>> {
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        let flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
        let mut msg = Vec::with_capacity(NLMSG_HDRLEN + body.len());
        msg.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        // SAFETY: sockaddr_nl is plain data; zeroed (pid 0: the kernel) is valid.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: sending our buffer to a valid address of the stated size.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&raw const kernel).cast(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(Error::last_os("sending a netlink request"));
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // SAFETY: receiving into our buffer of the stated length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(Error::last_os("reading a netlink answer"));
            }
            let mut data = &buf[..n as usize];
            while data.len() >= NLMSG_HDRLEN {
                let len = u32_at(data, 0) as usize;
                let mkind = u16_at(data, 4);
                let mseq = u32_at(data, 8);
                if len < NLMSG_HDRLEN || len > data.len() {
                    break;
                }
                let payload = &data[NLMSG_HDRLEN..len];
                data = &data[align4(len).min(data.len())..];
                if mseq != seq {
                    continue; // an answer to an earlier request
                }
                match mkind {
                    NLMSG_DONE => return Ok(Ok(out)),
                    NLMSG_ERROR => {
                        let errno = -(u32_at(payload, 0) as i32);
                        if errno == 0 {
                            return Ok(Ok(out)); // an acknowledgement
                        }
                        return Ok(Err(std::io::Error::from_raw_os_error(errno)));
                    }
                    _ => out.push(Message {
                        kind: mkind,
                        payload: payload.to_vec(),
                    }),
                }
            }
            if !dump && !out.is_empty() {
                return Ok(Ok(out));
            }
        }
    }

    /// The route the kernel picks for `ip` (`ip route get IP`); `Ok(Err(reason))` when there is
    /// none.
    pub(crate) fn route_get(&self, ip: IpAddr) -> Result<Result<Route, String>> {
        let addr = ip_bytes(ip);
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
        let mut body = vec![0u8; 12];
        body[0] = family(ip);
        body[1] = (addr.len() * 8) as u8;
        push_attr(&mut body, RTA_DST, &addr);
        let answer = match self.request(RTM_GETROUTE, false, &body)? {
            Ok(a) => a,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let Some(m) = answer.into_iter().find(|m| m.kind == RTM_NEWROUTE) else {
            return Ok(Err("the kernel sent no route".into()));
        };
        let mut route = Route {
            kind: m.payload.get(7).copied().unwrap_or(0),
            oif: None,
            gateway: None,
        };
        for (kind, v) in attrs(m.payload.get(12..).unwrap_or_default()) {
            match kind {
                RTA_OIF => route.oif = attr_u32(v),
                RTA_GATEWAY => route.gateway = ip_from(v),
                _ => {}
            }
        }
        Ok(Ok(route))
    }

    /// Name and kind of interface `ifindex`.
    pub(crate) fn link(&self, ifindex: u32) -> Result<Link> {
        // struct ifinfomsg: family, pad, type, index, flags, change.
        let mut body = vec![0u8; 16];
        body[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        let answer = self
            .request(RTM_GETLINK, false, &body)?
            .map_err(|e| Error::sys(format!("reading interface {ifindex}"), e))?;
        let m = answer
            .into_iter()
            .find(|m| m.kind == RTM_NEWLINK)
            .ok_or_else(|| Error::Invalid(format!("the kernel sent no interface {ifindex}")))?;
        let mut link = Link {
            name: format!("if{ifindex}"),
            kind: None,
        };
        for (kind, v) in attrs(m.payload.get(16..).unwrap_or_default()) {
            match kind {
                IFLA_IFNAME => link.name = c_string(v),
                IFLA_LINKINFO => {
                    for (k, kv) in attrs(v) {
                        if k == IFLA_INFO_KIND {
                            link.kind = Some(c_string(kv));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(link)
    }

    /// The interface holding address `ip`, if any.
    pub(crate) fn address_holder(&self, ip: IpAddr) -> Result<Option<u32>> {
        // struct ifaddrmsg: family, prefixlen, flags, scope, index.
        let mut body = vec![0u8; 8];
        body[0] = family(ip);
        let answer = self
            .request(RTM_GETADDR, true, &body)?
            .map_err(|e| Error::sys("listing addresses", e))?;
        let want = ip_bytes(ip);
        for m in answer.iter().filter(|m| m.kind == RTM_NEWADDR) {
            let index = u32_at(&m.payload, 4);
            let holds = attrs(m.payload.get(8..).unwrap_or_default())
                .into_iter()
                .any(|(k, v)| (k == IFA_LOCAL || k == IFA_ADDRESS) && v == want.as_slice());
            if holds {
                return Ok(Some(index));
            }
        }
        Ok(None)
    }

    /// The MAC address of neighbour `ip` on interface `ifindex`, if the entry is usable (not
    /// incomplete or failed).
    pub(crate) fn neighbour(&self, ip: IpAddr, ifindex: u32) -> Result<Option<[u8; 6]>> {
        // struct ndmsg: family, pad1, pad2, ifindex, state, flags, type.
        let mut body = vec![0u8; 12];
        body[0] = family(ip);
        let answer = self
            .request(RTM_GETNEIGH, true, &body)?
            .map_err(|e| Error::sys("listing neighbour entries", e))?;
        let want = ip_bytes(ip);
        for m in answer.iter().filter(|m| m.kind == RTM_NEWNEIGH) {
            let state = u16_at(&m.payload, 8);
            if u32_at(&m.payload, 4) != ifindex || state & (NUD_INCOMPLETE | NUD_FAILED) != 0 {
                continue;
            }
            let a = attrs(m.payload.get(12..).unwrap_or_default());
            let dst = a.iter().find(|(k, _)| *k == NDA_DST).map(|(_, v)| *v);
            let mac = a.iter().find(|(k, _)| *k == NDA_LLADDR).map(|(_, v)| *v);
            if dst == Some(want.as_slice())
                && let Some(mac) = mac.and_then(|m| <[u8; 6]>::try_from(m).ok())
            {
                return Ok(Some(mac));
            }
        }
        Ok(None)
    }

    /// The port of bridge `bridge` on which `mac` was learnt (or configured), if any.
    pub(crate) fn fdb_port(&self, bridge: u32, mac: [u8; 6]) -> Result<Option<u32>> {
        let mut body = vec![0u8; 12];
        body[0] = AF_BRIDGE;
        let answer = self
            .request(RTM_GETNEIGH, true, &body)?
            .map_err(|e| Error::sys("listing the bridge forwarding database", e))?;
        for m in answer.iter().filter(|m| m.kind == RTM_NEWNEIGH) {
            let port = u32_at(&m.payload, 4);
            if port == bridge {
                continue; // the bridge's own entries
            }
            let a = attrs(m.payload.get(12..).unwrap_or_default());
            let master = a
                .iter()
                .find(|(k, _)| *k == NDA_MASTER)
                .and_then(|(_, v)| attr_u32(v));
            let lladdr = a.iter().find(|(k, _)| *k == NDA_LLADDR).map(|(_, v)| *v);
            if master == Some(bridge) && lladdr == Some(&mac[..]) {
                return Ok(Some(port));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_with_padding() {
        let mut buf = Vec::new();
        push_attr(&mut buf, RTA_DST, &[10, 0, 0, 1]);
        push_attr(&mut buf, IFLA_IFNAME, b"eth0\0");
        push_attr(&mut buf, RTA_OIF, &7u32.to_ne_bytes());
        assert_eq!(buf.len() % 4, 0);
        let a = attrs(&buf);
        assert_eq!(a.len(), 3);
        assert_eq!(ip_from(a[0].1), Some("10.0.0.1".parse().expect("ip")));
        assert_eq!(c_string(a[1].1), "eth0");
        assert_eq!(attr_u32(a[2].1), Some(7));
        // A truncated attribute ends the list instead of reading past the buffer.
        assert_eq!(attrs(&buf[..buf.len() - 2]).len(), 2);
    }

    #[test]
    fn loopback_is_found_in_this_namespace() {
        let nl = Netlink::open().expect("netlink socket");
        let lo = nl.link(1).expect("interface 1");
        assert_eq!(lo.name, "lo");
        let route = nl
            .route_get("127.0.0.1".parse().expect("ip"))
            .expect("request")
            .expect("a route");
        assert_eq!(route.kind, 2, "RTN_LOCAL");
        assert_eq!(
            nl.address_holder("127.0.0.1".parse().expect("ip"))
                .expect("addresses"),
            Some(1)
        );
    }
}
