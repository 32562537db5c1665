//! nightcap's resource model: `PacketCapture`, `CaptureSchedule` and `CaptureTrigger`
//! (API group `nightcap.dev/v1alpha1`), their validation, and small pure helpers shared by every
//! component (durations, sizes).
//!
//! This crate must never do I/O: no network, no files, no clocks. Callers pass `now` in.

pub mod capture;
pub mod crd;
pub mod cron;
pub mod filter;
pub mod local;
pub mod quantity;
pub mod schedule;
pub mod selector;
pub mod template;
pub mod trigger;
pub mod validation;

pub use capture::{
    CaptureFile, CaptureFilter, Direction, NodeCaptureState, NodeCaptureStatus, PacketCapture,
    PacketCaptureSpec, PacketCaptureStatus, PacketCaptureTemplate, Phase, PortRange, Protocol,
    Rotation, TemplateMetadata, TriggerRef,
};
pub use crd::{crds, crds_yaml};
pub use schedule::{
    CaptureSchedule, CaptureScheduleSpec, CaptureScheduleStatus, ConcurrencyPolicy,
};
pub use trigger::{
    CaptureTrigger, CaptureTriggerSpec, CaptureTriggerStatus, Dedup, EventMatch, TriggerSources,
};
pub use validation::{FieldError, ValidationErrors};

/// API group of every nightcap resource.
pub const GROUP: &str = "nightcap.dev";
/// API version of every nightcap resource.
pub const VERSION: &str = "v1alpha1";
/// The subresource that grants downloading a capture's files (checked by the gateway).
pub const FILES_SUBRESOURCE: &str = "files";
