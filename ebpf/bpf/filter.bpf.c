// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// nightcap's in-kernel packet filter: a BPF_PROG_TYPE_SOCKET_FILTER program attached to
// AF_PACKET sockets. It decides which packets reach user space and how many bytes of each
// (the snap length), from a rule table fixed at load time in `cfg` (.rodata, frozen, so the
// verifier sees the table as constants and removes every branch the table does not use).
//
// The table is a disjunctive normal form: up to NC_MAX_ATOMS atoms are evaluated into a bit
// set `truth`; rule r holds when (truth & rule_mask[r]) == rule_want[r] (a clear bit in
// rule_want under a set bit in rule_mask is a negated atom). A packet is kept when any rule
// holds. The user-space compiler (nightcap-api `filter`) guarantees the table represents the
// user's expression exactly; the pure-Rust reference matcher in nightcap-ebpf `packet` mirrors
// the parsing below and is checked against this program with BPF_PROG_TEST_RUN.
//
// Parsing (see docs/ARCHITECTURE.md "Capture engine"):
// - the ethertype is skb->protocol; in-band 802.1Q/802.1ad tags (one or two) are skipped,
//   reading from the MAC header; accelerated (out-of-band) tags never reach the data;
// - IPv4: version 4 and IHL >= 5 required, else the packet counts as non-IP; ports exist only
//   for TCP/UDP/SCTP in an unfragmented packet or the first fragment;
// - IPv6: up to NC_MAX_EXT extension headers (hop-by-hop, routing, fragment, destination
//   options, AH) are followed; a longer chain leaves the protocol unknown (no protocol or port
//   atom holds); a non-first fragment has no ports;
// - a header that cannot be read (truncated packet) makes the fields it would carry unknown.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define NC_MAX_ATOMS 64
#define NC_MAX_RULES 64
#define NC_MAX_EXT 8

// Atom kinds (must match nightcap-ebpf src/program.rs).
#define NC_ATOM_PROTO 1   // l4 protocol == proto (family: 0 any, 4 or 6)
#define NC_ATOM_FAMILY 2  // address family == family
#define NC_ATOM_NET 3     // address on `side` within addr/mask (family 4 or 6)
#define NC_ATOM_PORT 4    // port on `side` within [lo, hi] (TCP/UDP/SCTP with ports only)
#define NC_ATOM_OUTBOUND 5 // packet sent by the captured interface (see NC_CFG_PEER)

// The socket is on the peer of the captured interface (the host side of a pod's veth, a
// bridge port): what it receives, the pod sent, so `outbound` is inverted.
#define NC_CFG_PEER 1

#define NC_SIDE_SRC 1
#define NC_SIDE_DST 2
#define NC_SIDE_EITHER 3

#define NC_PROTO_UNKNOWN 0xffff
#define NC_TCP 6
#define NC_UDP 17
#define NC_SCTP 132

struct nc_atom {
	__u8 kind;
	__u8 side;
	__u8 family;
	__u8 pad;
	__u16 proto;
	__u16 lo;
	__u16 hi;
	__u16 pad2;
	__u32 addr[4]; // network byte order, already masked
	__u32 mask[4]; // network byte order
};

struct nc_config {
	__u32 snaplen;
	__u32 n_atoms;
	__u32 n_rules;
	__u32 flags; // NC_CFG_*
	struct nc_atom atoms[NC_MAX_ATOMS];
	__u64 rule_mask[NC_MAX_RULES];
	__u64 rule_want[NC_MAX_RULES];
};

// Overwritten by the loader before the program is loaded.
const volatile struct nc_config cfg = {};

// Index 0: packets seen, 1: packets kept.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} nc_counters SEC(".maps");

struct nc_pkt {
	__u32 src[4];
	__u32 dst[4];
	__u16 proto;  // NC_PROTO_UNKNOWN when not known
	__u16 sport;
	__u16 dport;
	__u8 family;  // 0 (not IP), 4 or 6
	__u8 has_ports;
	__u8 outbound;
};

// Per-CPU scratch: the parsed packet and the atom truth set. The verifier does not track map
// memory, so every parsing path and every atom outcome leaves the same verifier state behind
// and the paths merge; kept on the stack or in registers, the combinations of parse outcomes
// and 64 atom results would exceed the verifier's budget.
struct nc_scratch {
	struct nc_pkt p;
	__u64 truth;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nc_scratch);
} nc_scratch SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&nc_counters, &idx);
	if (v)
		*v += 1;
}

static __always_inline int proto_has_ports(__u16 proto)
{
	return proto == NC_TCP || proto == NC_UDP || proto == NC_SCTP;
}

static __always_inline void load_ports(struct __sk_buff *skb, __u32 off, __u32 base,
				       struct nc_pkt *p)
{
	__u16 ports[2];
	if (!proto_has_ports(p->proto))
		return;
	if (bpf_skb_load_bytes_relative(skb, off, ports, sizeof(ports), base) < 0)
		return;
	p->sport = bpf_ntohs(ports[0]);
	p->dport = bpf_ntohs(ports[1]);
	p->has_ports = 1;
}

static __always_inline void parse_ipv4(struct __sk_buff *skb, __u32 off, __u32 base,
				       struct nc_pkt *p)
{
	__u8 h[20];
	if (bpf_skb_load_bytes_relative(skb, off, h, sizeof(h), base) < 0)
		return;
	__u32 ihl = h[0] & 0x0f;
	if ((h[0] >> 4) != 4 || ihl < 5)
		return;
	p->family = 4;
	p->proto = h[9];
	__builtin_memcpy(&p->src[0], &h[12], 4);
	__builtin_memcpy(&p->dst[0], &h[16], 4);
	__u16 frag = ((__u16)h[6] << 8 | h[7]) & 0x1fff;
	if (frag == 0)
		load_ports(skb, off + ihl * 4, base, p);
}

static __always_inline void parse_ipv6(struct __sk_buff *skb, __u32 off, __u32 base,
				       struct nc_pkt *p)
{
	__u8 h[40];
	if (bpf_skb_load_bytes_relative(skb, off, h, sizeof(h), base) < 0)
		return;
	if ((h[0] >> 4) != 6)
		return;
	p->family = 6;
	__builtin_memcpy(p->src, &h[8], 16);
	__builtin_memcpy(p->dst, &h[24], 16);
	__u32 next = h[6];
	__u32 pos = off + 40;
	int first_fragment = 1;
	for (int i = 0; i < NC_MAX_EXT + 1; i++) {
		if (next != 0 && next != 43 && next != 44 && next != 60 && next != 51) {
			p->proto = next;
			if (first_fragment)
				load_ports(skb, pos, base, p);
			return;
		}
		if (i == NC_MAX_EXT)
			break;
		__u8 e[4];
		if (bpf_skb_load_bytes_relative(skb, pos, e, sizeof(e), base) < 0)
			return;
		if (next == 44) {
			__u16 frag = ((__u16)e[2] << 8 | e[3]) & 0xfff8;
			if (frag != 0)
				first_fragment = 0;
			pos += 8;
		} else if (next == 51) {
			pos += ((__u32)e[1] + 2) * 4;
		} else {
			pos += ((__u32)e[1] + 1) * 8;
		}
		next = e[0];
	}
	// Chain longer than NC_MAX_EXT: protocol stays unknown.
}

static __always_inline int net_in(const __u32 *a, const volatile struct nc_atom *at)
{
	return (a[0] & at->mask[0]) == at->addr[0] && (a[1] & at->mask[1]) == at->addr[1] &&
	       (a[2] & at->mask[2]) == at->addr[2] && (a[3] & at->mask[3]) == at->addr[3];
}

static __always_inline int port_in(__u16 port, const volatile struct nc_atom *at)
{
	return port >= at->lo && port <= at->hi;
}

static __always_inline int eval_atom(const volatile struct nc_atom *at, const struct nc_pkt *p)
{
	__u8 side = at->side;
	switch (at->kind) {
	case NC_ATOM_PROTO:
		return p->proto == at->proto && (at->family == 0 || at->family == p->family);
	case NC_ATOM_FAMILY:
		return p->family == at->family;
	case NC_ATOM_NET:
		if (p->family != at->family)
			return 0;
		return ((side & NC_SIDE_SRC) && net_in(p->src, at)) ||
		       ((side & NC_SIDE_DST) && net_in(p->dst, at));
	case NC_ATOM_PORT:
		if (!p->has_ports)
			return 0;
		return ((side & NC_SIDE_SRC) && port_in(p->sport, at)) ||
		       ((side & NC_SIDE_DST) && port_in(p->dport, at));
	case NC_ATOM_OUTBOUND:
		return p->outbound;
	}
	return 0;
}

// The loopback device has this index in every network namespace.
#define NC_LOOPBACK_IFINDEX 1

SEC("socket")
int nightcap_filter(struct __sk_buff *skb)
{
	// Loopback hands each packet to packet sockets twice (as sent, then as received); keep the
	// received copy only, as libpcap does, so `lo` captures and counters are not doubled.
	if (skb->pkt_type == PACKET_OUTGOING && skb->ifindex == NC_LOOPBACK_IFINDEX)
		return 0;
	__u32 zero = 0;
	struct nc_scratch *sc = bpf_map_lookup_elem(&nc_scratch, &zero);
	if (!sc)
		return 0;
	struct nc_pkt *p = &sc->p;
	__builtin_memset(p, 0, sizeof(*p));
	p->proto = NC_PROTO_UNKNOWN;
	p->outbound = (skb->pkt_type == PACKET_OUTGOING) != ((cfg.flags & NC_CFG_PEER) != 0);
	count(0);

	__u32 ethertype = bpf_ntohs(skb->protocol);
	__u32 base = BPF_HDR_START_NET;
	__u32 off = 0;
	if (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD) {
		// In-band tag(s): read the inner ethertype behind the Ethernet header.
		__u16 t;
		base = BPF_HDR_START_MAC;
		off = ETH_HLEN + 4;
		if (bpf_skb_load_bytes_relative(skb, off - 2, &t, 2, base) < 0)
			goto decide;
		ethertype = bpf_ntohs(t);
		if (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD) {
			off += 4;
			if (bpf_skb_load_bytes_relative(skb, off - 2, &t, 2, base) < 0)
				goto decide;
			ethertype = bpf_ntohs(t);
		}
	}
	if (ethertype == ETH_P_IP)
		parse_ipv4(skb, off, base, p);
	else if (ethertype == ETH_P_IPV6)
		parse_ipv6(skb, off, base, p);

decide:;
	volatile __u64 *tv = &sc->truth;
	*tv = 0;
	for (__u32 i = 0; i < NC_MAX_ATOMS; i++) {
		if (i >= cfg.n_atoms)
			break;
		if (eval_atom(&cfg.atoms[i], p))
			*tv |= 1ULL << i;
	}
	__u64 truth = *tv;
	for (__u32 r = 0; r < NC_MAX_RULES; r++) {
		if (r >= cfg.n_rules)
			break;
		if ((truth & cfg.rule_mask[r]) == cfg.rule_want[r]) {
			count(1);
			return cfg.snaplen;
		}
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
