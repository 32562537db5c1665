//! nightcap triggers: captures that start by themselves when an alert fires or a schedule says
//! so.
//!
//! Sources (one module each under [`sources`]: NATS core and JetStream, Alertmanager and generic
//! webhooks, cron) turn what they receive into [`TriggerEvent`]s. The [`Engine`] matches events
//! against CaptureTrigger rules, renders the rule's template and creates a PacketCapture with a
//! deterministic name, so a retry, a redelivery or a second replica never creates a second
//! capture. CaptureSchedules are run by the cron source with Kubernetes CronJob semantics.
//!
//! This crate must never create a capture outside the namespace of the trigger or schedule that
//! asked for it, never create one that does not validate, and never acknowledge a JetStream
//! message before its capture exists or the event was refused for good.

pub mod admin;
mod cli;
pub mod clock;
pub mod config;
pub mod decision;
pub mod engine;
pub mod error;
pub mod event;
pub mod labels;
pub mod ledger;
pub mod metrics;
pub mod payload;
pub mod report;
pub mod rules;
pub mod runtime;
pub mod sink;
pub mod sources;
pub mod watch;

pub use cli::{TriggersArgs, run};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use config::Config;
pub use decision::{Decision, Outcome, Reason};
pub use engine::{Engine, EngineLimits};
pub use error::{Error, Result};
pub use event::{AlertStatus, EventSource, TriggerEvent};
pub use metrics::Metrics;
pub use sink::{CaptureSink, CreateResult, KubeSink};
