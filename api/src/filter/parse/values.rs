//! Turning a qualified value (`tcp dst port 80`, `net 10.0.0.0/8`, `portrange 1-1024`) into
//! an expression, with tcpdump's meaning and errors that say what is accepted.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{DirQ, Expr, Kind, ProtoQ, Quals, SUPPORTED, lex::Token};
use crate::filter::{Atom, Family, FilterError, Side};

pub(super) fn default_kind(t: &Token) -> Kind {
    if t.text.contains('/') {
        Kind::Net
    } else {
        Kind::Host
    }
}

pub(super) fn unknown_word(t: &Token) -> FilterError {
    let w = t.text.as_str();
    let hint = if w.parse::<u32>().is_ok() {
        format!("a number alone is not a primitive; did you mean 'port {w}'?")
    } else if matches!(
        w,
        "ether"
            | "arp"
            | "rarp"
            | "vlan"
            | "mpls"
            | "less"
            | "greater"
            | "broadcast"
            | "multicast"
            | "gateway"
            | "proto"
            | "protochain"
            | "ether6"
            | "igmp"
            | "pim"
            | "vrrp"
            | "wlan"
            | "link"
    ) || w.contains('[')
    {
        format!(
            "{w:?} is tcpdump syntax nightcap's in-kernel filter does not evaluate; {SUPPORTED}"
        )
    } else {
        SUPPORTED.to_owned()
    };
    FilterError::new(t.pos, format!("unknown word {w:?}"), Some(hint))
}

pub(super) fn build(q: Quals, value: &Token) -> Result<Expr, FilterError> {
    let sides: &[Side] = match q.dir {
        None | Some(DirQ::SrcOrDst) => &[Side::Either],
        Some(DirQ::Src) => &[Side::Src],
        Some(DirQ::Dst) => &[Side::Dst],
        Some(DirQ::SrcAndDst) => &[Side::Src, Side::Dst],
    };
    let mut atoms = Vec::new();
    match q.kind {
        Kind::Host | Kind::Net => {
            let net = parse_net(q.kind, value)?;
            let want = match q.proto {
                Some(ProtoQ::Ip) => Some(Family::V4),
                Some(ProtoQ::Ip6) => Some(Family::V6),
                _ => None,
            };
            let family = if net.addr().is_ipv4() {
                Family::V4
            } else {
                Family::V6
            };
            if want.is_some_and(|w| w != family) {
                return Err(FilterError::new(
                    value.pos,
                    format!(
                        "{} is not an {} address",
                        value.text,
                        if want == Some(Family::V4) {
                            "IPv4"
                        } else {
                            "IPv6"
                        }
                    ),
                    Some("use ip with IPv4 and ip6 with IPv6 addresses".into()),
                ));
            }
            for &side in sides {
                atoms.push(Atom::Net { side, net });
            }
        }
        Kind::Port | Kind::PortRange => {
            let (lo, hi) = parse_ports(q.kind, value)?;
            for &side in sides {
                atoms.push(Atom::Port { side, lo, hi });
            }
            if let Some(pq) = q.proto {
                atoms.insert(0, pq.atom());
            }
        }
    }
    let mut it = atoms.into_iter().map(Expr::Atom);
    let first = it.next().unwrap_or(Expr::True);
    Ok(it.fold(first, Expr::and))
}

fn parse_net(kind: Kind, t: &Token) -> Result<IpNet, FilterError> {
    let text = t.text.as_str();
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    if kind == Kind::Host {
        let hint = if text.contains('/') {
            format!("use 'net {text}' for a network")
        } else {
            "names are not resolved; write the IP address (e.g. host 10.0.0.1 or host fd00::1)"
                .to_owned()
        };
        return Err(FilterError::new(
            t.pos,
            format!("{text:?} is not an IP address"),
            Some(hint),
        ));
    }
    let net: IpNet = text.parse().map_err(|_| {
        FilterError::new(
            t.pos,
            format!("{text:?} is not a network"),
            Some("write a CIDR such as 10.0.0.0/8 or fd00::/64".into()),
        )
    })?;
    if net.addr() != net.network() {
        return Err(FilterError::new(
            t.pos,
            format!("{text} has host bits set"),
            Some(format!("did you mean {}?", net.trunc())),
        ));
    }
    Ok(net)
}

fn parse_port(text: &str, pos: usize) -> Result<u16, FilterError> {
    text.parse::<u16>().map_err(|_| {
        let hint = match well_known_port(text) {
            Some(n) => format!("service names are not resolved; write {n} for {text}"),
            None if text.parse::<u64>().is_ok() => "ports are 0-65535".to_owned(),
            None => "write the port number, e.g. port 53".to_owned(),
        };
        FilterError::new(pos, format!("{text:?} is not a port number"), Some(hint))
    })
}

fn parse_ports(kind: Kind, t: &Token) -> Result<(u16, u16), FilterError> {
    let text = t.text.as_str();
    if kind == Kind::Port {
        if text.contains('-') {
            return Err(FilterError::new(
                t.pos,
                format!("{text:?} is a range"),
                Some(format!("use 'portrange {text}'")),
            ));
        }
        let p = parse_port(text, t.pos)?;
        return Ok((p, p));
    }
    let Some((a, b)) = text.split_once('-') else {
        return Err(FilterError::new(
            t.pos,
            format!("{text:?} is not a port range"),
            Some("write FIRST-LAST, e.g. portrange 8000-8080".into()),
        ));
    };
    let lo = parse_port(a, t.pos)?;
    let hi = parse_port(b, t.pos + a.chars().count() + 1)?;
    if lo > hi {
        return Err(FilterError::new(
            t.pos,
            format!("range {lo}-{hi} is empty"),
            Some(format!("write {hi}-{lo}")),
        ));
    }
    Ok((lo, hi))
}

pub(super) fn well_known_port(name: &str) -> Option<u16> {
    Some(match name {
        "ftp" => 21,
        "ssh" => 22,
        "telnet" => 23,
        "smtp" => 25,
        "domain" | "dns" => 53,
        "http" | "www" => 80,
        "ntp" => 123,
        "https" => 443,
        _ => return None,
    })
}
