//! [`NetnsPod`]: a network namespace that looks like a Kubernetes pod sandbox from the node.
//!
//! Layout of one pod (names are unique per pod, addresses per [`addr`] slot):
//!
//! ```text
//!  root netns                                  netns "{prefix}-{pid}-{n}{rand}"
//!  ncv<12 hex> 10.200.x.1/30 fd00:6e63:7470:s::1/64  <-veth->  eth0 10.200.x.2/30 …::2/64, lo up
//!  forwarding on (per interface)                       default routes via the host side
//!  ```
//!
//! Two pods on one host reach each other through the host (per-interface IPv4 forwarding and
//! IPv6 `force_forwarding`, falling back to global IPv6 forwarding on kernels before 6.17).
//! Everything is removed on drop, also while a test panics; pods of killed test processes are
//! collected by the next pod created (see [`registry`]).

pub mod addr;
mod registry;
mod traffic;

pub use registry::collect_stale_pods;

use crate::{
    error::{Error, Result},
    util,
};
use addr::{AddressLease, PodAddresses};
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::{Child, Command, Stdio},
};

/// Interface name of the pod side of the veth pair, inside the namespace.
pub const POD_IFNAME: &str = "eth0";

/// A named network namespace with a veth pair, addresses, routes and an optional pause process.
/// Removed (namespace, veth, pause and any process left in the namespace) on drop.
#[derive(Debug)]
pub struct NetnsPod {
    name: String,
    host_veth: String,
    lease: Option<AddressLease>,
    addresses: PodAddresses,
    pause: Option<Child>,
    torn_down: bool,
}

/// Options for [`NetnsPod`]; see [`NetnsPod::builder`].
#[derive(Debug, Default)]
pub struct NetnsPodBuilder {
    prefix: Option<String>,
    pause: bool,
    addresses: Option<PodAddresses>,
    lease: Option<AddressLease>,
}

impl NetnsPodBuilder {
    /// Prefix of the namespace name (`[a-z0-9-]`, at most 32 characters; default `ncpod`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Starts a "pause" process (`sleep infinity`) inside the namespace, like a pod sandbox.
    /// Its pid is [`NetnsPod::pause_pid`]; it is killed on drop.
    pub fn with_pause(mut self) -> Self {
        self.pause = true;
        self
    }

    /// Uses these addresses instead of allocating a pool slot. Creation fails with
    /// [`Error::AddressInUse`] if an interface on the host already has them or another live pod
    /// holds their pool slot.
    pub fn addresses(mut self, addresses: PodAddresses) -> Self {
        self.addresses = Some(addresses);
        self
    }

    /// Uses the addresses of a deleted pod (from [`NetnsPod::delete_keeping_addresses`]); the
    /// claim was never released in between, so no other pod can have taken them.
    pub fn reuse_addresses(mut self, lease: AddressLease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Creates the pod.
    pub fn build(self) -> Result<NetnsPod> {
        if !util::is_root() {
            return Err(Error::NotRoot {
                what: "creating a network namespace".into(),
            });
        }
        let prefix = self.prefix.unwrap_or_else(|| "ncpod".into());
        if prefix.is_empty()
            || prefix.len() > 32
            || !prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(Error::InvalidArgument(format!(
                "pod name prefix {prefix:?} must be 1-32 characters of [a-z0-9-]"
            )));
        }
        registry::collect_stale_once();
        let lease = match (self.lease, self.addresses) {
            (Some(lease), _) => lease.reuse()?,
            (None, Some(addresses)) => AddressLease::explicit(addresses)?,
            (None, None) => AddressLease::allocate()?,
        };
        let name = util::unique_name(&prefix);
        let host_veth = format!("ncv{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        registry::register(&name, &host_veth)?;
        let mut pod = NetnsPod {
            name,
            host_veth,
            addresses: lease.addresses(),
            lease: Some(lease),
            pause: None,
            torn_down: false,
        };
        // From here on, `pod`'s Drop removes whatever part was created if a step fails.
        pod.setup()?;
        if self.pause {
            pod.start_pause()?;
        }
        Ok(pod)
    }
}

impl NetnsPod {
    /// A pod with default options. Panics with the reason if it cannot be created (not root,
    /// `ip` missing, pool exhausted).
    pub fn new() -> Self {
        Self::builder()
            .build()
            .unwrap_or_else(|e| panic!("NetnsPod::new: {e}"))
    }

    /// Options: name prefix, pause process, explicit or reused addresses.
    pub fn builder() -> NetnsPodBuilder {
        NetnsPodBuilder::default()
    }

    /// Name of the network namespace (as in `ip netns list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the namespace's bind mount: `/var/run/netns/NAME`.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// Inode of the namespace (what `/proc/PID/ns/net` of processes inside points to).
    pub fn netns_inode(&self) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let path = self.netns_path();
        std::fs::metadata(&path)
            .map(|m| m.ino())
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))
    }

    /// Name of the host side of the veth pair (in the root namespace).
    pub fn host_veth(&self) -> &str {
        &self.host_veth
    }

    /// Name of the pod side of the veth pair inside the namespace: always `eth0`.
    pub fn pod_ifname(&self) -> &str {
        POD_IFNAME
    }

    /// All addresses of the pod.
    pub fn addresses(&self) -> PodAddresses {
        self.addresses
    }

    /// The pod's IPv4 address (on `eth0`).
    pub fn ipv4(&self) -> Ipv4Addr {
        self.addresses.pod_ipv4
    }

    /// The pod's IPv6 address (on `eth0`).
    pub fn ipv6(&self) -> Ipv6Addr {
        self.addresses.pod_ipv6
    }

    /// IPv4 address of the host-side veth (the pod's default gateway).
    pub fn host_ipv4(&self) -> Ipv4Addr {
        self.addresses.host_ipv4
    }

    /// IPv6 address of the host-side veth (the pod's default gateway).
    pub fn host_ipv6(&self) -> Ipv6Addr {
        self.addresses.host_ipv6
    }

    /// Pid of the pause process, if the pod was built [`with_pause`](NetnsPodBuilder::with_pause).
    pub fn pause_pid(&self) -> Option<u32> {
        self.pause.as_ref().map(Child::id)
    }

    /// Removes the pod now, reporting the first failure (drop does the same but can only print).
    pub fn delete(mut self) -> Result<()> {
        let result = self.teardown();
        self.lease = None;
        result
    }

    /// Removes the pod but keeps its addresses claimed, for a new pod with the same IPs
    /// ("rescheduled" pod): pass the lease to [`NetnsPodBuilder::reuse_addresses`].
    pub fn delete_keeping_addresses(mut self) -> Result<AddressLease> {
        self.teardown()?;
        self.lease.take().ok_or_else(|| {
            Error::InvalidArgument("the pod's address lease was already taken".into())
        })
    }

    fn setup(&mut self) -> Result<()> {
        let name = self.name.clone();
        let host = self.host_veth.clone();
        let a = self.addresses;
        let host_v4 = format!("{}/{}", a.host_ipv4, a.ipv4_prefix_len);
        let host_v6 = format!("{}/{}", a.host_ipv6, a.ipv6_prefix_len);
        let pod_v4 = format!("{}/{}", a.pod_ipv4, a.ipv4_prefix_len);
        let pod_v6 = format!("{}/{}", a.pod_ipv6, a.ipv6_prefix_len);
        let (gw4, gw6) = (a.host_ipv4.to_string(), a.host_ipv6.to_string());

        util::ip(&["netns", "add", &name])?;
        util::ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", POD_IFNAME, "netns", &name,
        ])?;
        // Host side.
        util::ip(&["addr", "add", &host_v4, "dev", &host])?;
        util::ip(&["-6", "addr", "add", &host_v6, "dev", &host, "nodad"])?;
        host_sysctls(&host)?;
        util::ip(&["link", "set", &host, "up"])?;
        // Pod side.
        let n = ["-n", name.as_str()];
        let ipn = |args: &[&str]| util::ip(&[&n[..], args].concat());
        // Link-local addresses skip DAD too: until DAD finishes, the kernel will not send
        // neighbour solicitations for forwarded packets and the first ones wait ~1 s.
        let dad = format!("/proc/sys/net/ipv6/conf/{POD_IFNAME}/accept_dad");
        self.enter(|| std::fs::write(&dad, "0"))?
            .map_err(|e| Error::io(format!("writing 0 to {dad} in pod {name}"), e))?;
        ipn(&["link", "set", "lo", "up"])?;
        ipn(&["addr", "add", &pod_v4, "dev", POD_IFNAME])?;
        ipn(&["-6", "addr", "add", &pod_v6, "dev", POD_IFNAME, "nodad"])?;
        ipn(&["link", "set", POD_IFNAME, "up"])?;
        ipn(&["route", "add", "default", "via", &gw4, "dev", POD_IFNAME])?;
        ipn(&[
            "-6", "route", "add", "default", "via", &gw6, "dev", POD_IFNAME,
        ])?;
        Ok(())
    }

    fn start_pause(&mut self) -> Result<()> {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, "sleep", "infinity"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn {
                program: "ip netns exec … sleep infinity".into(),
                hint: "install iproute2 and coreutils",
                source,
            })?;
        self.pause = Some(child);
        Ok(())
    }

    /// Kills the pause process and every process left inside, deletes the veth pair and the
    /// namespace and unregisters the pod. Idempotent; keeps going after a failure and returns
    /// the first one.
    fn teardown(&mut self) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut first: Option<Error> = None;
        if let Some(mut pause) = self.pause.take() {
            // Already-exited is fine; wait reaps it either way.
            let _ = pause.kill();
            let _ = pause.wait();
        }
        registry::kill_processes_in(&self.name);
        if let Err(e) = delete_link(&self.host_veth) {
            first.get_or_insert(e);
        }
        if let Err(e) = delete_netns(&self.name) {
            first.get_or_insert(e);
        }
        registry::unregister(&self.name);
        first.map_or(Ok(()), Err)
    }
}

impl Default for NetnsPod {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetnsPod {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("nightcap-testsupport: cleaning up pod {}: {e}", self.name);
        }
    }
}

/// Turns on forwarding for packets arriving on `host_veth` (IPv4 per interface; IPv6 with
/// `force_forwarding` on Linux ≥ 6.17, else the global switch) and turns off IPv6 DAD on it.
fn host_sysctls(host_veth: &str) -> Result<()> {
    let write = |path: String| {
        std::fs::write(&path, "1").map_err(|e| Error::io(format!("writing 1 to {path}"), e))
    };
    write(format!("/proc/sys/net/ipv4/conf/{host_veth}/forwarding"))?;
    // 0: no DAD for the link-local address either (see `setup`).
    std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{host_veth}/accept_dad"),
        "0",
    )
    .map_err(|e| Error::io(format!("disabling DAD on {host_veth}"), e))?;
    let force = format!("/proc/sys/net/ipv6/conf/{host_veth}/force_forwarding");
    if std::path::Path::new(&force).exists() {
        write(force)
    } else {
        write("/proc/sys/net/ipv6/conf/all/forwarding".into())
    }
}

/// Deletes a link; a link that is already gone is success.
pub(crate) fn delete_link(name: &str) -> Result<()> {
    if !std::path::Path::new("/sys/class/net").join(name).exists() {
        return Ok(());
    }
    match util::ip(&["link", "del", name]) {
        Err(Error::Command { stderr, .. }) if stderr.contains("Cannot find device") => Ok(()),
        other => other.map(drop),
    }
}

/// Deletes a named namespace; one that is already gone is success.
pub(crate) fn delete_netns(name: &str) -> Result<()> {
    if !std::path::Path::new("/var/run/netns").join(name).exists() {
        return Ok(());
    }
    util::ip(&["netns", "del", name]).map(drop)
}
