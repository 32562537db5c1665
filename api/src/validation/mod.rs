//! Validation of nightcap resources: every problem, each with its field path.
//!
//! The CRD schema catches types and simple ranges; these functions catch the rest (name syntax,
//! selector syntax, CIDRs, windows, cron) and are run by the scheduler, the triggers (before
//! creating anything) and the CLI (before sending anything).

mod filters;
mod names;
mod spec;

use std::fmt;

pub use filters::{validate_cidr, validate_filters};
pub use names::{
    validate_dns1123_label, validate_dns1123_subdomain, validate_label_key,
    validate_label_selector, validate_label_value, validate_labels,
};
pub use spec::{
    DEFAULT_DURATION, DEFAULT_MAX_WINDOW, ValidationOptions, validate_packet_capture,
    validate_schedule, validate_snap_len, validate_trigger, validate_window,
};

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.filters[1].ports[0]`.
    pub path: String,
    /// What is wrong and, where it helps, what is accepted.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in an object (never just the first).
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.len() {
            0 => write!(f, "valid"),
            1 => write!(f, "{}", self.0[0]),
            n => {
                write!(f, "{n} problems: ")?;
                for (i, e) in self.0.iter().enumerate() {
                    if i > 0 {
                        write!(f, "; ")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

impl ValidationErrors {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Whether no problem was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The paths with problems (handy in tests and messages).
    pub fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.path.as_str()).collect()
    }

    /// `Ok(())` when empty, else `Err(self)`.
    pub fn into_result(self) -> Result<(), Self> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}
