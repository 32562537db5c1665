//! nightcap's test harness: real parts behind RAII guards, for integration tests of every crate.
//!
//! - [`NetnsPod`] — a network namespace with a veth pair, IPv4/IPv6 addresses, routes and an
//!   optional pause process: what a pod sandbox looks like from the node. Needs root.
//! - [`NatsServer`] — a real `nats-server` 2.15 with JetStream on a reserved port and a temp store;
//!   stop/restart keep port and store.
//! - [`S3Server`] — s3s-fs in-process with SigV4 verification, a temp root and a bucket.
//! - [`OciImage`] — the nightcap image built by `cli/image/build.sh` from a given binary: an OCI
//!   layout and its unpacked runtime bundle. Needs root, `umoci` and `runc`.
//! - [`util`] — free/reserved ports, unique names, [`util::require_root`].
//!
//! Every guard cleans up on drop, also when the test panics, and is safe to use from tests
//! running in parallel processes (see `docs/TESTING.md` for the uniqueness scheme).
//!
//! This crate must never be a dependency of production code (only `[dev-dependencies]`), never
//! touch interfaces, namespaces or processes it did not create, and never send traffic anywhere
//! but loopback and the namespaces it creates.

mod error;
pub mod image;
pub mod nats;
pub mod netns;
pub mod s3;
pub mod util;

pub use error::{Error, Result};
pub use image::OciImage;
pub use nats::{NatsServer, NatsServerBuilder};
pub use netns::{
    NetnsPod, NetnsPodBuilder,
    addr::{AddressLease, PodAddresses},
};
pub use s3::S3Server;
pub use util::{require_root, terminate};

#[cfg(test)]
mod tests {
    /// Guards are held in shared test fixtures and moved into threads/tasks.
    #[test]
    fn guards_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::NetnsPod>();
        check::<crate::AddressLease>();
        check::<crate::NatsServer>();
        check::<crate::S3Server>();
        check::<crate::util::ReservedPort>();
        check::<crate::Error>();
    }
}
