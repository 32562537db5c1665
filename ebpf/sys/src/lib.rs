//! The system calls nightcap makes outside the packet path, in one place.
//!
//! `nightcap-ebpf` owns the packet path (AF_PACKET ring, eBPF programs, network namespaces);
//! this crate owns everything else the capture job and storage ask of the kernel: host
//! identity, thread priorities, waiting for descriptors, `O_DIRECT` opens and the buffers
//! they need, and page-cache hints. Wrappers use `nix` where it has the call and `libc` where
//! it does not; each is safe to call and states what it does when the kernel or file system
//! refuses.
//!
//! Never: policy. Callers decide when to call; this crate only makes the call safe to use.

mod aligned;
pub mod direct;
mod host;
pub mod page_cache;
mod thread;
mod wait;

pub use aligned::{ALIGN, AlignedBuf};
pub use host::host_name;
pub use thread::{IoClass, set_thread_io_idle, set_thread_nice, thread_io_class, thread_nice};
pub use wait::{PollSet, Wakeup};
