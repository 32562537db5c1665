//! The eBPF filter in a real kernel: random rule tables and random packets decided by the
//! program (BPF_PROG_TEST_RUN) and by the pure-Rust reference must agree; real traffic through a
//! veth into a network namespace is counted, cut to the snap length and filtered.
//! Needs root (CI runs as root).

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use nightcap_api::filter::{
    Atom, Family, MAX_ATOMS, MAX_RULES, Rule, RuleTable, Side, compile_expression,
};
use nightcap_ebpf::{Filter, PacketRing, RingConfig, netns, packet};
use nightcap_testsupport::{NetnsPod, require_root};
use rand::{Rng, SeedableRng, rngs::StdRng};

const V4: [&str; 4] = ["10.0.0.1", "10.0.0.2", "10.1.2.3", "192.168.7.9"];
const V6: [&str; 4] = ["fd00::1", "fd00::2", "fd01::9", "2001:db8::1"];
const NETS: [&str; 8] = [
    "10.0.0.0/8",
    "10.0.0.0/30",
    "10.1.2.3/32",
    "0.0.0.0/0",
    "fd00::/8",
    "fd00::/127",
    "2001:db8::1/128",
    "::/0",
];
const PORTS: [u16; 6] = [0, 53, 80, 443, 8080, 65535];

fn random_atom(r: &mut StdRng) -> Atom {
    let side = [Side::Src, Side::Dst, Side::Either][r.random_range(0..3)];
    match r.random_range(0..5) {
        0 => Atom::Proto {
            proto: [6, 17, 132, 1, 58, 47][r.random_range(0..6)],
            family: [None, Some(Family::V4), Some(Family::V6)][r.random_range(0..3)],
        },
        1 => Atom::Family([Family::V4, Family::V6][r.random_range(0..2)]),
        2 => Atom::Net {
            side,
            net: NETS[r.random_range(0..NETS.len())].parse().expect("net"),
        },
        3 => {
            let a = PORTS[r.random_range(0..PORTS.len())];
            let b = PORTS[r.random_range(0..PORTS.len())];
            Atom::Port {
                side,
                lo: a.min(b),
                hi: a.max(b),
            }
        }
        _ => Atom::Outbound,
    }
}

fn random_table(r: &mut StdRng) -> RuleTable {
    let n_atoms = r.random_range(0..=MAX_ATOMS);
    let atoms: Vec<Atom> = (0..n_atoms).map(|_| random_atom(r)).collect();
    let valid = if n_atoms == 64 {
        u64::MAX
    } else {
        (1u64 << n_atoms) - 1
    };
    // Mostly a few rules (so both verdicts are common), sometimes a full table.
    let n_rules = if r.random_bool(0.2) {
        MAX_RULES
    } else {
        r.random_range(0..=6)
    };
    let rules = (0..n_rules)
        .map(|_| {
            // Few literals per rule, so rules hold often enough to be interesting.
            let mut mask = 0u64;
            for _ in 0..r.random_range(1..6) {
                if n_atoms > 0 {
                    mask |= 1 << r.random_range(0..n_atoms);
                }
            }
            Rule {
                mask: mask & valid,
                want: r.random::<u64>() & mask & valid,
            }
        })
        .collect();
    RuleTable::new(atoms, rules).expect("within limits")
}

fn random_frame(r: &mut StdRng) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    let v6 = r.random_bool(0.5);
    let ethertype: u16 = match r.random_range(0..20) {
        0 => 0x0806, // ARP
        1 => 0x88cc,
        _ if v6 => 0x86dd,
        _ => 0x0800,
    };
    for _ in 0..[0, 0, 0, 1, 2][r.random_range(0..5)] {
        f.extend_from_slice(&[0x81, 0x00, 0x00, r.random()]);
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    let proto: u8 = [6, 17, 132, 1, 58, 47][r.random_range(0..6)];
    let pick = |r: &mut StdRng, list: &[&str]| -> IpAddr {
        list[r.random_range(0..list.len())].parse().expect("addr")
    };
    if ethertype == 0x0800 {
        let ihl: u8 = if r.random_bool(0.1) { 6 } else { 5 };
        let mut h = vec![0u8; usize::from(ihl) * 4];
        h[0] = if r.random_bool(0.03) {
            0x60 | ihl
        } else {
            0x40 | ihl
        };
        h[9] = proto;
        if r.random_bool(0.1) {
            h[6] = r.random::<u8>() & 0x1f; // fragment offset
            h[7] = r.random();
        }
        let (IpAddr::V4(s), IpAddr::V4(d)) = (pick(r, &V4), pick(r, &V4)) else {
            unreachable!("v4 list")
        };
        h[12..16].copy_from_slice(&s.octets());
        h[16..20].copy_from_slice(&d.octets());
        f.extend_from_slice(&h);
    } else if ethertype == 0x86dd {
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        let (IpAddr::V6(s), IpAddr::V6(d)) = (pick(r, &V6), pick(r, &V6)) else {
            unreachable!("v6 list")
        };
        h[8..24].copy_from_slice(&s.octets());
        h[24..40].copy_from_slice(&d.octets());
        // A chain of 0-9 extension headers (9 is past the program's limit).
        let n_ext = [0, 0, 0, 1, 2, 3, 9][r.random_range(0..7)];
        let kinds: Vec<u8> = (0..n_ext)
            .map(|_| [0, 43, 44, 60, 51][r.random_range(0..5)])
            .collect();
        h[6] = kinds.first().copied().unwrap_or(proto);
        f.extend_from_slice(&h);
        for (i, kind) in kinds.iter().enumerate() {
            let next = kinds.get(i + 1).copied().unwrap_or(proto);
            match kind {
                44 => {
                    let off: u16 = if r.random_bool(0.3) { 8 } else { 0 };
                    f.extend_from_slice(&[next, 0]);
                    f.extend_from_slice(&(off | u16::from(r.random_bool(0.5))).to_be_bytes());
                    f.extend_from_slice(&[0, 0, 0, 1]);
                }
                51 => f.extend_from_slice(&[next, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                _ => f.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]),
            }
        }
    }
    let port =
        |r: &mut StdRng| PORTS[r.random_range(0..PORTS.len())].wrapping_add(r.random_range(0..2));
    let (sp, dp) = (port(r), port(r));
    f.extend_from_slice(&sp.to_be_bytes());
    f.extend_from_slice(&dp.to_be_bytes());
    f.extend_from_slice(&[0u8; 16]);
    // Sometimes cut the frame short (truncated headers), never below the Ethernet header.
    if r.random_bool(0.1) {
        let len = r.random_range(14..=f.len());
        f.truncate(len);
    }
    f
}

/// Length of the fixed IP header the kernel's test runner wants in full, if the frame is IP.
fn fixed_l3_end(frame: &[u8]) -> usize {
    let mut at = 12;
    while frame.get(at..at + 2).is_some_and(|t| t == [0x81, 0x00]) {
        at += 4;
    }
    match frame.get(at..at + 2) {
        Some([0x08, 0x00]) => at + 2 + 20,
        Some([0x86, 0xdd]) => at + 2 + 40,
        _ => 0,
    }
}

/// Runs the program on a frame. BPF_PROG_TEST_RUN refuses (EINVAL) frames whose fixed IP
/// header is cut short; those are skipped, any other refusal fails the test.
fn run(filter: &mut Filter, frame: &[u8]) -> Option<u32> {
    match filter.test_run(frame) {
        Ok(v) => Some(v),
        Err(_) if frame.len() < fixed_l3_end(frame) => None,
        Err(e) => panic!("test run of {frame:02x?}: {e:?}"),
    }
}

/// For random rule tables and random packets the in-kernel decision equals the reference
/// matcher's (RuleTable::matches over packet::fields).
#[test]
fn kernel_decision_equals_reference_on_random_rules_and_packets() {
    require_root();
    let seed = rand::random::<u64>();
    println!("seed {seed}");
    let mut r = StdRng::seed_from_u64(seed);
    let (mut kept, mut total) = (0, 0);
    for round in 0..80 {
        let table = random_table(&mut r);
        let snaplen = r.random_range(1..=262_144);
        let mut filter = Filter::load(&table, snaplen)
            .unwrap_or_else(|e| panic!("round {round}: load {table}: {e:?}"));
        for _ in 0..200 {
            let frame = random_frame(&mut r);
            let want = table.matches(&packet::fields(&frame, false));
            let Some(got) = run(&mut filter, &frame) else {
                continue;
            };
            assert_eq!(
                got,
                if want { snaplen } else { 0 },
                "seed {seed} round {round}: table {table} frame {frame:02x?} fields {:?}",
                packet::fields(&frame, false)
            );
            kept += usize::from(want);
            total += 1;
        }
    }
    // Both outcomes must be well represented, or the comparison says little.
    assert!(
        kept > total / 10 && kept < total * 9 / 10,
        "kept {kept} of {total}"
    );
}

/// Compiled expressions too (not only random tables), including every atom kind.
#[test]
fn kernel_decision_equals_reference_for_compiled_expressions() {
    require_root();
    let mut r = StdRng::seed_from_u64(7);
    let frames: Vec<Vec<u8>> = (0..3000).map(|_| random_frame(&mut r)).collect();
    for expr in [
        "udp port 53",
        "tcp and not dst portrange 80-443",
        "host 10.0.0.1 or net fd00::/8",
        "src net 10.0.0.0/8 and dst host 10.1.2.3 and sctp",
        "icmp or icmp6 or ip6 and not udp",
        "not (ip or ip6)",
        "src and dst port 53",
        "inbound and (tcp dst port 80 or 443)",
    ] {
        let table = compile_expression(expr).expect("valid expression");
        let mut filter = Filter::load(&table, 96).expect("load");
        for frame in &frames {
            let want = table.matches(&packet::fields(frame, false));
            let Some(got) = run(&mut filter, frame) else {
                continue;
            };
            assert_eq!(got, if want { 96 } else { 0 }, "{expr} on {frame:02x?}");
        }
    }
}

/// Real packets through a veth: the counters count them, only matching ones reach the ring,
/// each cut to the snap length, and the direction is right.
#[test]
fn real_traffic_is_filtered_counted_and_truncated() {
    require_root();
    let pod = NetnsPod::new();
    let table = compile_expression("udp dst port 5353").expect("filter");
    let mut filter = Filter::load(&table, 64).expect("load filter");
    let path = pod.netns_path();
    let mut ring = netns::run_in(Some(&path), || {
        PacketRing::open(
            "eth0",
            &mut filter,
            RingConfig {
                block_size: 1 << 16,
                block_count: 4,
                block_timeout_ms: 10,
            },
        )
    })
    .expect("open ring in the pod");
    let to = |port| SocketAddr::new(IpAddr::V4(pod.host_ipv4()), port);
    pod.send_udp(to(5353), 100, 200).expect("send matching");
    pod.send_udp(to(9999), 50, 200).expect("send other");
    pod.send_udp(SocketAddr::new(IpAddr::V6(pod.host_ipv6()), 5353), 20, 10)
        .expect("send matching v6");

    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 120 && Instant::now() < deadline {
        ring.drain(64, |p| got.push((p.data.len(), p.orig_len, p.outbound)));
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    ring.drain(64, |p| got.push((p.data.len(), p.orig_len, p.outbound)));
    assert_eq!(got.len(), 120, "exactly the 120 matching packets");
    let v4 = got.iter().filter(|g| g.1 == 14 + 20 + 8 + 200).count();
    assert_eq!(v4, 100);
    assert!(
        got.iter().all(|g| g.0 == 64.min(g.1 as usize) && g.2),
        "{got:?}"
    );
    let c = filter.counters().expect("counters");
    assert!(c.seen >= 170, "seen {c:?}");
    assert_eq!(c.matched, 120, "{c:?}");
    assert_eq!(ring.stats().expect("stats").drops, 0);
}

/// Loopback delivers every packet to packet sockets twice (sent and received); the filter keeps
/// one copy, like libpcap, so a capture on `lo` is not doubled.
#[test]
fn loopback_packets_are_captured_once() {
    require_root();
    let pod = NetnsPod::new();
    let table = compile_expression("udp port 7777").expect("filter");
    let mut filter = Filter::load(&table, 256).expect("load filter");
    let path = pod.netns_path();
    let mut ring = netns::run_in(Some(&path), || {
        PacketRing::open(
            "lo",
            &mut filter,
            RingConfig {
                block_size: 1 << 16,
                block_count: 4,
                block_timeout_ms: 10,
            },
        )
    })
    .expect("open ring on lo in the pod");
    pod.send_udp("127.0.0.1:7777".parse().expect("addr"), 5, 32)
        .expect("send on loopback");
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while got < 5 && Instant::now() < deadline {
        ring.drain(64, |_| got += 1);
        std::thread::sleep(Duration::from_millis(20));
    }
    // Give a duplicate, if any, the time to arrive before counting again.
    std::thread::sleep(Duration::from_millis(200));
    ring.drain(64, |_| got += 1);
    assert_eq!(got, 5, "each loopback packet exactly once");
    assert_eq!(filter.counters().expect("counters").matched, 5);
}
