//! util: port reservation and names.

use nightcap_testsupport::util::{self, RESERVED_PORT_RANGE};
use std::{collections::HashSet, net::TcpListener};

#[test]
fn reserved_ports_are_distinct_bindable_and_in_range() {
    let ports: Vec<util::ReservedPort> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| s.spawn(|| util::reserve_tcp_port().expect("reserve")))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let numbers: HashSet<u16> = ports.iter().map(util::ReservedPort::port).collect();
    assert_eq!(
        numbers.len(),
        ports.len(),
        "duplicate reservations: {numbers:?}"
    );
    for port in &numbers {
        assert!(RESERVED_PORT_RANGE.contains(port), "{port}");
        TcpListener::bind(("127.0.0.1", *port)).expect("a reserved port is bindable");
    }
}

#[test]
fn a_held_port_is_not_handed_out_again() {
    // Hold many ports; none of the later reservations may repeat one that is still held.
    let held: Vec<util::ReservedPort> = (0..64)
        .map(|_| util::reserve_tcp_port().expect("reserve"))
        .collect();
    let held_numbers: HashSet<u16> = held.iter().map(util::ReservedPort::port).collect();
    for _ in 0..64 {
        let next = util::reserve_tcp_port().expect("reserve");
        assert!(
            !held_numbers.contains(&next.port()),
            "{} handed out twice",
            next.port()
        );
    }
}
