//! Shared helpers of the gateway integration tests.
#![allow(dead_code)]

pub mod fixture;
pub mod gateway;
pub mod matrix;
/// The storage tests' capture objects (uids, bytes, keys, seeding), one file for both crates.
#[path = "../../../tests/common/objects.rs"]
pub mod objects;
