//! nightcap scheduler: turns each PacketCapture into short-lived capture Jobs on exactly the
//! nodes where its pods run, and keeps following the pods while the capture window is open.
//!
//! - [`plan`]: the pure planner, `plan(capture, targets, nodes, jobs, now) -> Vec<Action>`,
//!   over plain facts ([`plan::facts`]) and the deterministic Job names.
//! - [`job`]: the capture Job (least privilege).
//! - [`controller`]: the kube-rs controller that reads Pods, Nodes and Jobs into facts, feeds
//!   the planner and applies its actions.
//! - [`leader`]: leader election on a Lease, so exactly one replica acts.
//! - [`own_image`]: the capture Jobs' default image, the scheduler's own (read from its Pod).
//! - [`cli`]: `nightcap scheduler` (flags, `/metrics`, `/healthz`).
//!
//! `nightcap local` (crate `nightcap-local`) runs the same planner over facts it builds itself,
//! driving capture processes without Kubernetes.
//!
//! This crate must never decide inside I/O code (every decision is in [`plan`], executors only
//! apply [`plan::Action`]s), never read the clock inside a decision, never capture packets or
//! touch object storage itself, and never build a privileged pod.

pub mod cli;
pub mod controller;
pub mod error;
pub mod job;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod own_image;
pub mod plan;

pub use cli::{SchedulerArgs, run_blocking};
pub use error::{Error, Result};
pub use plan::{Action, PlanConfig, Planner};
