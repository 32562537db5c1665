//! Shared helpers of the storage integration tests.
#![allow(dead_code)]

pub mod conformance;
pub mod objects;
