//! Shared helpers of the gateway integration tests.
#![allow(dead_code)]

pub mod fixture;
pub mod gateway;
pub mod matrix;
/// The storage tests' capture objects (uids, bytes, keys, seeding), one file for both crates.
#[path = "../../../tests/common/objects.rs"]
pub mod objects;

/// The process's peak resident set size (VmHWM), in bytes.
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb * 1024
}
