//! Shared helpers of the storage integration tests.
#![allow(dead_code)]

pub mod conformance;
pub mod fixture;
pub mod gateway;
pub mod matrix;
