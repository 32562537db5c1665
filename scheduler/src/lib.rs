//! nightcap scheduler: turns each PacketCapture into short-lived capture Jobs on exactly the
//! nodes where its pods run, and keeps following the pods while the capture window is open.
//!
//! - [`plan`]: the pure planner, `plan(capture, pods, nodes, jobs, now) -> Vec<Action>`.
//! - [`job`]: the capture Job (deterministic name, least privilege).
//!
//! This crate must never decide inside I/O code (every decision is in [`plan`], executors only
//! apply [`plan::Action`]s), never read the clock inside a decision, never capture packets or
//! touch object storage itself, and never build a privileged pod.

pub mod error;
pub mod job;
pub mod labels;
pub mod plan;

pub use error::{Error, Result};
pub use plan::{Action, PlanConfig, Planner};
