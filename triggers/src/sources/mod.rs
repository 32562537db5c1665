//! Event sources, one module each: [`webhook`] (Alertmanager and generic JSON over HTTP),
//! [`nats`] (core subscriptions and JetStream durable consumers) and [`cron`]
//! (CaptureSchedules). Each has a `config.rs` (what the configuration file says), the source,
//! and its tests.

pub mod cron;
pub mod nats;
pub mod webhook;
