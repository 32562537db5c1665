//! Pod addresses and their cross-process allocation.
//!
//! The pool is 16384 "slots". Slot `n` owns the point-to-point IPv4 subnet
//! `10.200.0.0/16 + 4n` as a /30 (host side `.1`, pod side `.2` within it) and the IPv6 ULA
//! subnet `fd00:6e63:7470:n::/64` (host `::1`, pod `::2`). A slot is claimed by an exclusive
//! `flock` on `/run/nightcap-testsupport/slots/n.lock` held for the pod's lifetime, so parallel
//! test processes never get the same slot, and a killed process frees its slot automatically.
//! A claimed slot is still skipped when `ip addr` shows its subnets in use (a leftover interface
//! from a killed process), so allocation is claim-then-check.

use crate::{
    error::{Error, Result},
    util,
};
use nix::fcntl::Flock;
use std::{
    fs::File,
    net::{Ipv4Addr, Ipv6Addr},
};

/// Number of address slots in the pool.
pub const SLOTS: u32 = 16384;
const V4_BASE: u32 = u32::from_be_bytes([10, 200, 0, 0]);
const V6_PREFIX: [u16; 3] = [0xfd00, 0x6e63, 0x7470];

/// The addresses of one pod: a point-to-point IPv4 subnet and an IPv6 subnet shared by the pod
/// side (`eth0` in the namespace) and the host side of its veth pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PodAddresses {
    /// IPv4 address of the pod's `eth0`.
    pub pod_ipv4: Ipv4Addr,
    /// IPv4 address of the host-side veth (the pod's default gateway).
    pub host_ipv4: Ipv4Addr,
    /// IPv4 prefix length of the shared subnet (1–30).
    pub ipv4_prefix_len: u8,
    /// IPv6 address of the pod's `eth0`.
    pub pod_ipv6: Ipv6Addr,
    /// IPv6 address of the host-side veth (the pod's default gateway).
    pub host_ipv6: Ipv6Addr,
    /// IPv6 prefix length of the shared subnet (1–126).
    pub ipv6_prefix_len: u8,
}

impl PodAddresses {
    /// The addresses of pool slot `slot` (`slot < SLOTS`), see the module docs.
    pub fn for_slot(slot: u32) -> Self {
        let v4 = V4_BASE + 4 * (slot % SLOTS);
        let [a, b, c] = V6_PREFIX;
        // `slot % SLOTS` < 2^14, so it fits a hextet.
        let hextet = u16::try_from(slot % SLOTS).unwrap_or(0);
        Self {
            pod_ipv4: Ipv4Addr::from(v4 + 2),
            host_ipv4: Ipv4Addr::from(v4 + 1),
            ipv4_prefix_len: 30,
            pod_ipv6: Ipv6Addr::new(a, b, c, hextet, 0, 0, 0, 2),
            host_ipv6: Ipv6Addr::new(a, b, c, hextet, 0, 0, 0, 1),
            ipv6_prefix_len: 64,
        }
    }

    /// The pool slot these addresses belong to, if the pod IPv4 address lies in the pool.
    pub fn slot(&self) -> Option<u32> {
        let offset = u32::from(self.pod_ipv4).checked_sub(V4_BASE)?;
        let slot = offset / 4;
        (slot < SLOTS).then_some(slot)
    }

    /// Checks that the addresses describe one subnet per family with two distinct hosts in it.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidArgument(msg));
        if !(1..=30).contains(&self.ipv4_prefix_len) {
            return bad(format!(
                "ipv4_prefix_len {} not in 1..=30",
                self.ipv4_prefix_len
            ));
        }
        if !(1..=126).contains(&self.ipv6_prefix_len) {
            return bad(format!(
                "ipv6_prefix_len {} not in 1..=126",
                self.ipv6_prefix_len
            ));
        }
        let m4 = u32::MAX << (32 - u32::from(self.ipv4_prefix_len));
        if u32::from(self.pod_ipv4) & m4 != u32::from(self.host_ipv4) & m4
            || self.pod_ipv4 == self.host_ipv4
        {
            return bad(format!(
                "pod {} and host {} must be distinct addresses in one /{} subnet",
                self.pod_ipv4, self.host_ipv4, self.ipv4_prefix_len
            ));
        }
        let m6 = u128::MAX << (128 - u32::from(self.ipv6_prefix_len));
        if u128::from(self.pod_ipv6) & m6 != u128::from(self.host_ipv6) & m6
            || self.pod_ipv6 == self.host_ipv6
        {
            return bad(format!(
                "pod {} and host {} must be distinct addresses in one /{} subnet",
                self.pod_ipv6, self.host_ipv6, self.ipv6_prefix_len
            ));
        }
        Ok(())
    }

    /// `None` when no interface in the root namespace has an address in either subnet, else a
    /// description of what uses it.
    pub(crate) fn in_use(&self) -> Result<Option<(String, String)>> {
        let v4 = format!("{}/{}", self.pod_ipv4, self.ipv4_prefix_len);
        let v6 = format!("{}/{}", self.pod_ipv6, self.ipv6_prefix_len);
        for (family, subnet) in [("-4", &v4), ("-6", &v6)] {
            let found = util::ip(&["-o", family, "addr", "show", "to", subnet])?;
            let found = found.trim();
            if !found.is_empty() {
                return Ok(Some((subnet.clone(), found.to_owned())));
            }
        }
        Ok(None)
    }
}

/// A claim on a set of pod addresses. While it lives, no other pod on this host (in any process
/// using the harness) gets these addresses from the pool. Obtain one from
/// [`NetnsPod::delete_keeping_addresses`](crate::NetnsPod::delete_keeping_addresses) and pass it
/// to [`NetnsPodBuilder::reuse_addresses`](crate::NetnsPodBuilder::reuse_addresses) to "reschedule"
/// a pod with the same IPs.
#[derive(Debug)]
pub struct AddressLease {
    addresses: PodAddresses,
    _lock: Option<Flock<File>>,
}

impl AddressLease {
    /// The claimed addresses.
    pub fn addresses(&self) -> PodAddresses {
        self.addresses
    }

    /// Claims the next free pool slot (claim-then-check, see the module docs).
    pub(crate) fn allocate() -> Result<Self> {
        let dir = util::state_subdir("slots")?;
        let start = util::next_counter(&dir.join("next"), SLOTS)?;
        for i in 0..SLOTS {
            let slot = (start + i) % SLOTS;
            let Some(lock) = util::try_lock_file(&dir.join(format!("{slot}.lock")))? else {
                continue;
            };
            let addresses = PodAddresses::for_slot(slot);
            if addresses.in_use()?.is_none() {
                return Ok(Self {
                    addresses,
                    _lock: Some(lock),
                });
            }
        }
        Err(Error::NoFreeSlot { slots: SLOTS })
    }

    /// Claims explicit addresses: takes their pool slot lock when they lie in the pool and
    /// checks that no interface uses them.
    pub(crate) fn explicit(addresses: PodAddresses) -> Result<Self> {
        addresses.validate()?;
        let lock = match addresses.slot() {
            Some(slot) => {
                let dir = util::state_subdir("slots")?;
                let lock = util::try_lock_file(&dir.join(format!("{slot}.lock")))?;
                Some(lock.ok_or_else(|| Error::AddressInUse {
                    address: addresses.pod_ipv4.to_string(),
                    found: format!("pool slot {slot} is claimed by another live pod or lease"),
                })?)
            }
            None => None,
        };
        Self::checked(addresses, lock)
    }

    /// Re-checks a lease handed back by a deleted pod.
    pub(crate) fn reuse(self) -> Result<Self> {
        Self::checked(self.addresses, self._lock)
    }

    fn checked(addresses: PodAddresses, lock: Option<Flock<File>>) -> Result<Self> {
        if let Some((address, found)) = addresses.in_use()? {
            return Err(Error::AddressInUse { address, found });
        }
        Ok(Self {
            addresses,
            _lock: lock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_map_to_disjoint_subnets() {
        let first = PodAddresses::for_slot(0);
        assert_eq!(first.host_ipv4, Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(first.pod_ipv4, Ipv4Addr::new(10, 200, 0, 2));
        assert_eq!(first.pod_ipv6.to_string(), "fd00:6e63:7470::2");
        let last = PodAddresses::for_slot(SLOTS - 1);
        assert_eq!(last.pod_ipv4, Ipv4Addr::new(10, 200, 255, 254));
        assert_eq!(last.host_ipv6.to_string(), "fd00:6e63:7470:3fff::1");
        for slot in [0, 1, 77, SLOTS - 1] {
            let a = PodAddresses::for_slot(slot);
            assert_eq!(a.slot(), Some(slot));
            a.validate().expect("pool addresses are valid");
        }
    }

    #[test]
    fn validate_rejects_mismatched_subnets() {
        let mut a = PodAddresses::for_slot(3);
        a.host_ipv4 = Ipv4Addr::new(10, 200, 0, 1);
        assert!(a.validate().is_err());
        let mut b = PodAddresses::for_slot(3);
        b.pod_ipv6 = b.host_ipv6;
        assert!(b.validate().is_err());
        let mut c = PodAddresses::for_slot(3);
        c.ipv4_prefix_len = 31;
        assert!(c.validate().is_err());
    }

    #[test]
    fn addresses_outside_the_pool_have_no_slot() {
        let mut a = PodAddresses::for_slot(0);
        a.pod_ipv4 = Ipv4Addr::new(192, 168, 7, 2);
        assert_eq!(a.slot(), None);
    }
}
