//! The system calls nightcap makes outside the packet path, in one place.
//!
//! `nightcap-ebpf` owns the packet path (AF_PACKET ring, eBPF programs, network namespaces);
//! this crate owns everything else the capture job and storage ask of the kernel: host
//! identity, and (added with their callers) file I/O hints and aligned buffers. Wrappers use
//! `nix` where it has the call and `libc` where it does not; each states what it does when the
//! kernel or file system refuses.
//!
//! Never: policy. Callers decide when to call; this crate only makes the call safe to use.

mod host;

pub use host::host_name;
