use std::net::IpAddr;

use super::*;
use crate::capture::{CaptureFilter, Direction, PortRange, Protocol};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn pkt(src: &str, dst: &str, proto: u8, ports: Option<(u16, u16)>, outbound: bool) -> PacketFields {
    PacketFields {
        ip: Some(IpFields {
            src: ip(src),
            dst: ip(dst),
            proto: Some(proto),
            ports,
        }),
        outbound,
    }
}

fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> PacketFields {
    pkt(src, dst, proto::UDP, Some((sport, dport)), false)
}

fn tcp(src: &str, sport: u16, dst: &str, dport: u16) -> PacketFields {
    pkt(src, dst, proto::TCP, Some((sport, dport)), false)
}

const ARP: PacketFields = PacketFields {
    ip: None,
    outbound: false,
};

#[test]
fn language_table() {
    let dns4 = udp("10.0.0.2", 40000, "10.0.0.1", 53);
    let dns6 = udp("fd00::2", 40000, "fd00::1", 53);
    let web4 = tcp("10.0.0.2", 40001, "192.168.1.1", 443);
    let web6 = tcp("fd00::2", 40001, "2001:db8::1", 443);
    let ping4 = pkt("10.0.0.2", "10.0.0.1", proto::ICMP, None, true);
    let ping6 = pkt("fd00::2", "fd00::1", proto::ICMPV6, None, true);
    let frag = pkt("10.0.0.2", "10.0.0.1", proto::UDP, None, false);
    let sctp = pkt("10.0.0.2", "10.0.0.1", proto::SCTP, Some((5000, 53)), false);
    let all = [
        ("dns4", dns4),
        ("dns6", dns6),
        ("web4", web4),
        ("web6", web6),
        ("ping4", ping4),
        ("ping6", ping6),
        ("frag", frag),
        ("sctp", sctp),
        ("arp", ARP),
    ];
    let cases: &[(&str, &[&str])] = &[
        ("udp", &["dns4", "dns6", "frag"]),
        ("tcp", &["web4", "web6"]),
        ("icmp", &["ping4"]),
        ("icmp6", &["ping6"]),
        ("sctp", &["sctp"]),
        ("ip", &["dns4", "web4", "ping4", "frag", "sctp"]),
        ("ip6", &["dns6", "web6", "ping6"]),
        ("port 53", &["dns4", "dns6", "sctp"]),
        ("udp port 53", &["dns4", "dns6"]),
        ("dst port 53", &["dns4", "dns6", "sctp"]),
        ("src port 53", &[]),
        ("src or dst port 443", &["web4", "web6"]),
        ("src and dst port 53", &[]),
        ("portrange 400-500", &["web4", "web6"]),
        ("tcp dst portrange 443-443", &["web4", "web6"]),
        ("host 10.0.0.1", &["dns4", "ping4", "frag", "sctp"]),
        ("src host 10.0.0.1", &[]),
        ("dst host fd00::1", &["dns6", "ping6"]),
        ("net 192.168.0.0/16", &["web4"]),
        ("net 2001:db8::/32", &["web6"]),
        ("ip6 net fd00::/16", &["dns6", "web6", "ping6"]),
        (
            "not port 53",
            &["web4", "web6", "ping4", "ping6", "frag", "arp"],
        ),
        ("! udp && ! tcp", &["ping4", "ping6", "sctp", "arp"]),
        ("outbound", &["ping4", "ping6"]),
        ("inbound and icmp", &[]),
        ("udp or tcp and ip6", &["dns6", "web6"]),
        ("udp or (tcp and ip6)", &["dns4", "dns6", "web6", "frag"]),
        ("tcp dst port 80 or 443", &["web4", "web6"]),
        ("udp and not (port 53 or host 10.0.0.1)", &[]),
        ("10.0.0.1", &["dns4", "ping4", "frag", "sctp"]),
        (
            "src 10.0.0.0/24",
            &["dns4", "web4", "ping4", "frag", "sctp"],
        ),
        ("(((icmp6)))", &["ping6"]),
    ];
    for (text, want) in cases {
        let table = compile_expression(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let expr = parse(text).expect("parsed above");
        let got: Vec<&str> = all
            .iter()
            .filter(|(_, p)| table.matches(p))
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(&got, want, "{text} (table: {table})");
        for (n, p) in &all {
            assert_eq!(expr.eval(p), table.matches(p), "{text} on {n}");
        }
    }
}

#[test]
fn errors_have_position_and_hint() {
    let cases: &[(&str, usize, &str)] = &[
        ("", 1, "empty"),
        ("udp port", 9, "ends"),
        ("port dns", 6, "53"),
        ("port 70000", 6, "0-65535"),
        ("host example.com", 6, "not resolved"),
        ("net 10.1.2.3/8", 5, "10.0.0.0/8"),
        ("portrange 9-1", 11, "1-9"),
        ("(udp", 5, "position 1"),
        ("udp)", 4, "unexpected"),
        ("udp and", 8, "ends"),
        ("tcp host 10.0.0.1", 1, "tcp and host"),
        ("icmp port 1", 6, "no ports"),
        ("ip host fd00::1", 9, "ip6"),
        ("vlan 10", 1, "does not evaluate"),
        ("53", 1, "port 53"),
        ("udp & tcp", 5, "&&"),
        ("or udp", 1, "before and after"),
        ("port 53-54", 6, "portrange"),
        ("udp port 53 or foo", 16, "unknown word"),
    ];
    for (text, pos, hint) in cases {
        let e = compile_expression(text).expect_err(text);
        assert_eq!(e.pos, *pos, "{text}: {e}");
        assert!(e.to_string().contains(hint), "{text}: {e}");
    }
}

#[test]
fn too_large_is_refused_not_widened() {
    // (a1 or b1) and (a2 or b2) and … doubles the rules with every group: 2^7 = 128 > 64.
    let groups: Vec<String> = (1..=7)
        .map(|i| format!("(port {i} or host 10.0.0.{i})"))
        .collect();
    let e = compile_expression(&groups.join(" and ")).expect_err("too many rules");
    assert!(e.to_string().contains("kernel table holds 64"), "{e}");
    // 6 groups = 64 rules fit exactly.
    let t = compile_expression(&groups[..6].join(" and ")).expect("fits");
    assert_eq!(t.rules().len(), 64);
    // 65 distinct hosts are 65 atoms.
    let hosts: Vec<String> = (0..65).map(|i| format!("host 10.0.1.{i}")).collect();
    let e = compile_expression(&hosts.join(" or ")).expect_err("too many atoms");
    assert!(e.to_string().contains("holds"), "{e}");
}

#[test]
fn simplification_is_exact() {
    assert!(
        compile_expression("udp or not udp")
            .expect("ok")
            .is_accept_all()
    );
    assert!(
        compile_expression("udp and not udp")
            .expect("ok")
            .rules()
            .is_empty()
    );
    let t = compile_expression("(udp and port 53) or udp").expect("ok");
    assert_eq!(t.rules().len(), 1, "{t}");
}

#[test]
fn structured_filters() {
    let f = |protocol, ports: Vec<u16>, cidrs: Vec<&str>, direction, exclude| CaptureFilter {
        protocol,
        port_ranges: if ports.is_empty() {
            vec![]
        } else {
            vec![PortRange {
                from: 8000,
                to: 8080,
            }]
        },
        ports,
        cidrs: cidrs.into_iter().map(String::from).collect(),
        direction,
        exclude,
    };
    let filters = vec![
        f(
            Protocol::Udp,
            vec![53],
            vec!["10.0.0.0/8", "fd00::/8"],
            Direction::Both,
            false,
        ),
        f(Protocol::Tcp, vec![443], vec![], Direction::Egress, false),
        f(
            Protocol::Any,
            vec![],
            vec!["10.9.9.9"],
            Direction::Both,
            true,
        ),
    ];
    let table = compile(Some("not icmp"), &filters).expect("compiles");
    let out = |mut p: PacketFields| {
        p.outbound = true;
        p
    };
    let cases = [
        (udp("10.0.0.2", 5, "10.0.0.1", 53), true),
        (udp("10.0.0.2", 5, "10.0.0.1", 8080), true),
        (udp("fd00::2", 5, "fd00::1", 53), true),
        (udp("192.168.0.2", 5, "192.168.0.1", 53), false),
        (udp("10.9.9.9", 5, "10.0.0.1", 53), false),
        (tcp("10.0.0.2", 5, "1.1.1.1", 443), false),
        (out(tcp("10.0.0.2", 5, "1.1.1.1", 443)), true),
        (out(tcp("10.0.0.2", 5, "1.1.1.1", 8001)), true),
        (out(tcp("10.0.0.2", 5, "10.9.9.9", 443)), false),
        (ARP, false),
    ];
    for (p, want) in cases {
        assert_eq!(table.matches(&p), want, "{p:?} with {table}");
    }
    assert!(compile(None, &[]).expect("empty").is_accept_all());
}

/// Small deterministic generator (xorshift) so the property below needs no extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const ADDRS: [&str; 6] = [
    "10.0.0.1", "10.0.0.2", "10.1.0.1", "fd00::1", "fd00::2", "fd01::1",
];
const NETS: [&str; 5] = [
    "10.0.0.0/16",
    "10.0.0.1/32",
    "0.0.0.0/0",
    "fd00::/16",
    "fd00::1/128",
];

fn random_expr(r: &mut Rng, depth: u32) -> String {
    if depth == 0 || r.below(3) == 0 {
        let side = ["", "src ", "dst ", "src or dst ", "src and dst "][r.below(5) as usize];
        return match r.below(8) {
            0 => ["tcp", "udp", "icmp", "icmp6", "sctp", "ip", "ip6"][r.below(7) as usize].into(),
            1 => format!("{side}host {}", ADDRS[r.below(6) as usize]),
            2 => format!("{side}net {}", NETS[r.below(5) as usize]),
            3 => format!("{side}port {}", [53, 80, 443][r.below(3) as usize]),
            4 => format!("{side}portrange {}-{}", r.below(100), 100 + r.below(400)),
            5 => ["inbound", "outbound"][r.below(2) as usize].into(),
            6 => format!(
                "{} {side}port 53",
                ["tcp", "udp", "sctp"][r.below(3) as usize]
            ),
            _ => format!("ip6 {side}net fd00::/8"),
        };
    }
    match r.below(3) {
        0 => format!("not ({})", random_expr(r, depth - 1)),
        1 => format!(
            "({}) and ({})",
            random_expr(r, depth - 1),
            random_expr(r, depth - 1)
        ),
        _ => format!(
            "({}) or ({})",
            random_expr(r, depth - 1),
            random_expr(r, depth - 1)
        ),
    }
}

fn random_packet(r: &mut Rng) -> PacketFields {
    if r.below(10) == 0 {
        return PacketFields {
            ip: None,
            outbound: r.below(2) == 0,
        };
    }
    let v6 = r.below(2) == 0;
    let pick = |r: &mut Rng| ip(ADDRS[(r.below(3) + if v6 { 3 } else { 0 }) as usize]);
    let proto = [
        proto::TCP,
        proto::UDP,
        proto::SCTP,
        proto::ICMP,
        proto::ICMPV6,
        47,
    ][r.below(6) as usize];
    let ports =
        (matches!(proto, proto::TCP | proto::UDP | proto::SCTP) && r.below(8) != 0).then(|| {
            let port = |r: &mut Rng| [53, 80, 443, 99, 100, 499, 1000][r.below(7) as usize];
            (port(r), port(r))
        });
    PacketFields {
        ip: Some(IpFields {
            src: pick(r),
            dst: pick(r),
            proto: (r.below(20) != 0).then_some(proto),
            ports,
        }),
        outbound: r.below(2) == 0,
    }
}

/// The compiled table decides exactly like the expression tree, on random expressions and
/// packets (or the expression is refused as too large).
#[test]
fn compilation_is_exact_on_random_expressions() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut compiled = 0;
    for _ in 0..400 {
        let text = random_expr(&mut r, 4);
        let expr = parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let table = match compile_expression(&text) {
            Ok(t) => t,
            Err(e) if e.pos == 0 => continue,
            Err(e) => panic!("{text}: {e}"),
        };
        compiled += 1;
        for _ in 0..200 {
            let p = random_packet(&mut r);
            assert_eq!(expr.eval(&p), table.matches(&p), "{text} on {p:?}");
        }
    }
    assert!(compiled > 300, "only {compiled} of 400 expressions fit");
}

#[test]
fn spec_validation_reports_expression_errors_with_position() {
    let spec = crate::PacketCaptureSpec {
        selector: Some(Default::default()),
        expression: Some("udp port".into()),
        ..Default::default()
    };
    let mut pc = crate::PacketCapture::new("dns", spec);
    pc.metadata.namespace = Some("team-a".into());
    let err = crate::validation::validate_packet_capture(&pc, &Default::default())
        .expect_err("incomplete expression");
    assert_eq!(err.paths(), ["spec.expression"]);
    assert!(err.to_string().contains("position 9"), "{err}");
}
