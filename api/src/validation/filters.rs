//! Structured filters: protocols, ports, port ranges, CIDRs.

use ipnet::IpNet;

use super::ValidationErrors;
use crate::capture::CaptureFilter;

/// Parses a CIDR (`10.0.0.0/8`, `fd00::/8`) or a bare address (a host). Host bits must be zero
/// so `10.1.2.3/8` (probably a typo) is refused rather than silently widened.
pub fn validate_cidr(value: &str) -> Result<IpNet, String> {
    if let Ok(addr) = value.parse::<std::net::IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    let net: IpNet = value.parse().map_err(|_| {
        format!("{value:?} is not a CIDR or an IP address (e.g. 10.0.0.0/8, fd00::/64, 10.1.2.3)")
    })?;
    if net.network() != net.addr() {
        return Err(format!(
            "{value:?} has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Every filter of a spec.
pub fn validate_filters(filters: &[CaptureFilter], path: &str, errs: &mut ValidationErrors) {
    for (i, f) in filters.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let has_ports = !f.ports.is_empty() || !f.port_ranges.is_empty();
        if has_ports && !f.protocol.has_ports() {
            errs.push(
                format!("{p}.protocol"),
                format!(
                    "{:?} has no ports; remove ports/portRanges or use TCP, UDP, SCTP or any",
                    f.protocol
                ),
            );
        }
        for (j, port) in f.ports.iter().enumerate() {
            if *port == 0 {
                errs.push(format!("{p}.ports[{j}]"), "port must be 1-65535");
            }
        }
        for (j, r) in f.port_ranges.iter().enumerate() {
            let rp = format!("{p}.portRanges[{j}]");
            if r.from == 0 {
                errs.push(format!("{rp}.from"), "port must be 1-65535");
            }
            if r.to == 0 {
                errs.push(format!("{rp}.to"), "port must be 1-65535");
            }
            if r.from > r.to {
                errs.push(
                    rp,
                    format!(
                        "range {}-{} is empty: from must not exceed to",
                        r.from, r.to
                    ),
                );
            }
        }
        for (j, cidr) in f.cidrs.iter().enumerate() {
            if let Err(msg) = validate_cidr(cidr) {
                errs.push(format!("{p}.cidrs[{j}]"), msg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{PortRange, Protocol};

    #[test]
    fn cidrs() {
        let cases = [
            ("10.0.0.0/8", true),
            ("10.1.2.3", true),
            ("0.0.0.0/0", true),
            ("fd00::/8", true),
            ("2001:db8::1", true),
            ("::/0", true),
            ("10.1.2.3/8", false),
            ("10.0.0.0/33", false),
            ("fd00::/129", false),
            ("10.0.0", false),
            ("example.com", false),
            ("", false),
        ];
        for (value, valid) in cases {
            assert_eq!(validate_cidr(value).is_ok(), valid, "{value}");
        }
        let err = validate_cidr("10.1.2.3/8").expect_err("host bits");
        assert!(err.contains("10.0.0.0/8"), "hint names the network: {err}");
    }

    #[test]
    fn filter_table() {
        let f =
            |protocol, ports: Vec<u16>, ranges: Vec<(u16, u16)>, cidrs: Vec<&str>| CaptureFilter {
                protocol,
                ports,
                port_ranges: ranges
                    .into_iter()
                    .map(|(from, to)| PortRange { from, to })
                    .collect(),
                cidrs: cidrs.into_iter().map(String::from).collect(),
                ..Default::default()
            };
        let cases: Vec<(CaptureFilter, Vec<&str>)> = vec![
            (
                f(Protocol::Tcp, vec![80, 443], vec![(8000, 8080)], vec![]),
                vec![],
            ),
            (
                f(
                    Protocol::Udp,
                    vec![53],
                    vec![],
                    vec!["10.0.0.0/8", "fd00::/8"],
                ),
                vec![],
            ),
            (f(Protocol::Icmp, vec![], vec![], vec!["10.0.0.1"]), vec![]),
            (f(Protocol::Any, vec![65535], vec![(1, 1)], vec![]), vec![]),
            (
                f(Protocol::Tcp, vec![0], vec![], vec![]),
                vec!["f[0].ports[0]"],
            ),
            (
                f(Protocol::Tcp, vec![], vec![(9000, 8000)], vec![]),
                vec!["f[0].portRanges[0]"],
            ),
            (
                f(Protocol::Tcp, vec![], vec![(0, 10)], vec![]),
                vec!["f[0].portRanges[0].from"],
            ),
            (
                f(Protocol::Icmpv6, vec![1], vec![], vec![]),
                vec!["f[0].protocol"],
            ),
            (
                f(Protocol::Udp, vec![], vec![], vec!["10.0.0.0/8", "nope"]),
                vec!["f[0].cidrs[1]"],
            ),
        ];
        for (filter, want) in cases {
            let mut errs = ValidationErrors::default();
            validate_filters(std::slice::from_ref(&filter), "f", &mut errs);
            assert_eq!(errs.paths(), want, "{filter:?}");
        }
    }
}
