//! Whole-object validation of PacketCapture, CaptureSchedule and CaptureTrigger specs.

use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;

use super::{
    ValidationErrors, validate_dns1123_label, validate_dns1123_subdomain, validate_filters,
    validate_label_selector, validate_labels,
};
use crate::{
    CaptureSchedule, CaptureTrigger, PacketCapture, PacketCaptureSpec, PacketCaptureTemplate,
    capture::{MAX_SNAP_LEN, MIN_FILE_BYTES, MIN_SNAP_LEN},
    cron::{CronSchedule, parse_time_zone},
    quantity::parse_duration,
    template::{self, StandIn},
};

/// Default capture window when neither `endTime` nor `duration` is set.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(5 * 60);
/// Longest capture window unless the cluster configuration raises it.
pub const DEFAULT_MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Cluster-level settings validation depends on.
#[derive(Debug, Clone, Copy)]
pub struct ValidationOptions {
    /// Longest accepted capture window (default 24 h).
    pub max_window: Duration,
    /// The current time, when known: `endTime` must then be in the future. The scheduler passes
    /// `None` for captures that already run.
    pub now: Option<Timestamp>,
}

impl Default for ValidationOptions {
    fn default() -> Self {
        Self {
            max_window: DEFAULT_MAX_WINDOW,
            now: None,
        }
    }
}

/// A PacketCapture: metadata names that reach object keys, and the spec.
pub fn validate_packet_capture(
    pc: &PacketCapture,
    opts: &ValidationOptions,
) -> Result<(), ValidationErrors> {
    let mut errs = ValidationErrors::default();
    validate_object_names(
        &pc.name_any(),
        pc.namespace().as_deref(),
        pc.metadata.generate_name.is_some(),
        &mut errs,
    );
    validate_spec(&pc.spec, "spec", opts, false, &mut errs);
    errs.into_result()
}

fn validate_object_names(
    name: &str,
    namespace: Option<&str>,
    generated: bool,
    errs: &mut ValidationErrors,
) {
    if !(generated && name.is_empty()) {
        validate_dns1123_subdomain(name, "metadata.name", errs);
    }
    if let Some(ns) = namespace {
        validate_dns1123_label(ns, "metadata.namespace", errs);
    }
}

fn validate_spec(
    spec: &PacketCaptureSpec,
    path: &str,
    opts: &ValidationOptions,
    in_template: bool,
    errs: &mut ValidationErrors,
) {
    let node_level = !spec.node_names.is_empty() || spec.node_selector.is_some();
    match (&spec.selector, node_level) {
        (Some(_), true) => errs.push(
            format!("{path}.selector"),
            "selector (pods) and nodeNames/nodeSelector (nodes) are mutually exclusive; set one",
        ),
        (None, false) => errs.push(
            format!("{path}.selector"),
            "set selector to capture pods ({} selects all pods of the namespace) or \
             nodeNames/nodeSelector for a node-level capture",
        ),
        _ => {}
    }
    if let Some(sel) = &spec.selector {
        validate_label_selector(sel, &format!("{path}.selector"), errs);
    }
    for (i, node) in spec.node_names.iter().enumerate() {
        validate_dns1123_subdomain(node, &format!("{path}.nodeNames[{i}]"), errs);
    }
    if let Some(ns) = &spec.node_selector {
        validate_labels(ns, &format!("{path}.nodeSelector"), errs);
    }
    validate_filters(&spec.filters, &format!("{path}.filters"), errs);
    if let Some(expr) = &spec.expression
        && expr.trim().is_empty()
    {
        errs.push(
            format!("{path}.expression"),
            "must not be empty; remove the field to capture everything the filters allow",
        );
    } else if let Some(expr) = &spec.expression
        && let Err(e) = crate::filter::compile_expression(expr)
    {
        errs.push(format!("{path}.expression"), e.to_string());
    }
    if let Some(snap) = spec.snap_len {
        validate_snap_len(snap, &format!("{path}.snapLen"), errs);
    }
    validate_window(spec, path, opts, in_template, errs);
    if spec.max_bytes == Some(0) {
        errs.push(format!("{path}.maxBytes"), "must be at least 1 when set");
    }
    if spec.max_packets == Some(0) {
        errs.push(format!("{path}.maxPackets"), "must be at least 1 when set");
    }
    if let Some(rot) = &spec.rotation {
        let p = format!("{path}.rotation");
        if let Some(bytes) = rot.max_file_bytes
            && bytes < MIN_FILE_BYTES
        {
            errs.push(
                format!("{p}.maxFileBytes"),
                format!("must be at least {MIN_FILE_BYTES} (64 KiB), is {bytes}"),
            );
        }
        if rot.max_file_seconds == Some(0) {
            errs.push(format!("{p}.maxFileSeconds"), "must be at least 1");
        }
        if rot.max_files == Some(0) {
            errs.push(format!("{p}.maxFiles"), "must be at least 1");
        }
    }
    if let Some(storage) = &spec.storage {
        validate_dns1123_subdomain(storage, &format!("{path}.storage"), errs);
    }
    if let Some(ttl) = spec.ttl_seconds_after_finished
        && ttl < 0
    {
        errs.push(
            format!("{path}.ttlSecondsAfterFinished"),
            "must not be negative",
        );
    }
}

/// snapLen within 64–262144.
pub fn validate_snap_len(snap: u32, path: &str, errs: &mut ValidationErrors) {
    if !(MIN_SNAP_LEN..=MAX_SNAP_LEN).contains(&snap) {
        errs.push(
            path,
            format!("must be {MIN_SNAP_LEN}-{MAX_SNAP_LEN} bytes, is {snap}"),
        );
    }
}

/// The capture window: `duration` xor `endTime`, end after start, at most `max_window`.
/// Templates (schedules, triggers) must not use absolute times.
pub fn validate_window(
    spec: &PacketCaptureSpec,
    path: &str,
    opts: &ValidationOptions,
    in_template: bool,
    errs: &mut ValidationErrors,
) {
    if in_template {
        for (field, set) in [
            ("startTime", spec.start_time.is_some()),
            ("endTime", spec.end_time.is_some()),
        ] {
            if set {
                errs.push(
                    format!("{path}.{field}"),
                    "a template creates captures repeatedly; use duration instead of absolute times",
                );
            }
        }
    }
    if spec.end_time.is_some() && spec.duration.is_some() {
        errs.push(
            format!("{path}.duration"),
            "duration and endTime are mutually exclusive; set one",
        );
    }
    let max = opts.max_window;
    let too_long = |d: Duration| {
        format!(
            "the window is {}, longer than the maximum {} (a cluster setting)",
            crate::quantity::format_duration(d),
            crate::quantity::format_duration(max)
        )
    };
    if let Some(text) = &spec.duration {
        match parse_duration(text) {
            Ok(d) if d.is_zero() => {
                errs.push(format!("{path}.duration"), "must be longer than 0s");
            }
            Ok(d) if d > max => errs.push(format!("{path}.duration"), too_long(d)),
            Ok(_) => {}
            Err(e) => errs.push(format!("{path}.duration"), e.to_string()),
        }
    }
    if let Some(end) = &spec.end_time {
        let start = spec.start_time.as_ref().map(|t| t.0).or(opts.now);
        if let Some(start) = start {
            let secs = end.0.as_second() - start.as_second();
            if end.0 <= start {
                let what = if spec.start_time.is_some() {
                    "must be after startTime"
                } else {
                    "is in the past"
                };
                errs.push(format!("{path}.endTime"), what);
            } else if secs as u64 > max.as_secs() {
                errs.push(
                    format!("{path}.endTime"),
                    too_long(Duration::from_secs(secs as u64)),
                );
            }
        }
    }
}

/// A CaptureSchedule: cron syntax, time zone, and the template (without absolute times).
pub fn validate_schedule(
    s: &CaptureSchedule,
    opts: &ValidationOptions,
) -> Result<(), ValidationErrors> {
    let mut errs = ValidationErrors::default();
    validate_object_names(
        &s.name_any(),
        s.namespace().as_deref(),
        s.metadata.generate_name.is_some(),
        &mut errs,
    );
    if let Err(e) = CronSchedule::parse(&s.spec.schedule) {
        errs.push("spec.schedule", e.message);
    }
    if let Err(message) = parse_time_zone(s.spec.time_zone.as_deref()) {
        errs.push("spec.timeZone", message);
    }
    if s.spec.schedule.contains("TZ=") || s.spec.schedule.contains("CRON_TZ=") {
        errs.push(
            "spec.schedule",
            "TZ= in the schedule is not supported; use spec.timeZone",
        );
    }
    validate_template(&s.spec.template, "spec.template", opts, &mut errs);
    errs.into_result()
}

fn validate_template(
    t: &PacketCaptureTemplate,
    path: &str,
    opts: &ValidationOptions,
    errs: &mut ValidationErrors,
) {
    if let Some(meta) = &t.metadata {
        validate_labels(&meta.labels, &format!("{path}.metadata.labels"), errs);
    }
    validate_spec(&t.spec, &format!("{path}.spec"), opts, true, errs);
}

/// A CaptureTrigger: label match syntax, regexes, and the template rendered with stand-in
/// values (so placeholders are checked for syntax and the rest of the spec for validity).
pub fn validate_trigger(
    t: &CaptureTrigger,
    opts: &ValidationOptions,
) -> Result<(), ValidationErrors> {
    let mut errs = ValidationErrors::default();
    validate_object_names(
        &t.name_any(),
        t.namespace().as_deref(),
        t.metadata.generate_name.is_some(),
        &mut errs,
    );
    for (name, pattern) in &t.spec.match_.label_regex {
        if let Err(e) = regex::Regex::new(&format!("^(?:{pattern})$")) {
            errs.push(
                format!("spec.match.labelRegex[{name}]"),
                format!("invalid regular expression: {e}"),
            );
        }
    }
    for (i, subject) in t.spec.sources.nats_subjects.iter().enumerate() {
        if subject.is_empty() || subject.contains(char::is_whitespace) || subject.contains("..") {
            errs.push(
                format!("spec.sources.natsSubjects[{i}]"),
                format!("{subject:?} is not a NATS subject (e.g. alerts.> or alerts.prod.*)"),
            );
        }
    }
    for (i, path) in t.spec.sources.webhook_paths.iter().enumerate() {
        if !path.starts_with("/hooks/") {
            errs.push(
                format!("spec.sources.webhookPaths[{i}]"),
                format!("{path:?} must start with /hooks/ (e.g. /hooks/alertmanager)"),
            );
        }
    }
    if let Some(key) = t.spec.dedup.as_ref().and_then(|d| d.key.as_deref())
        && let Err(e) = template::render(key, &StandIn("x"))
    {
        errs.push("spec.dedup.key", e.to_string());
    }
    match serde_json::to_value(&t.spec.template) {
        Ok(json) => match template::render_json(&json, &StandIn("x")) {
            Ok(rendered) => match serde_json::from_value::<PacketCaptureTemplate>(rendered) {
                Ok(rendered) => validate_template(&rendered, "spec.template", opts, &mut errs),
                Err(e) => errs.push("spec.template", format!("renders to an invalid spec: {e}")),
            },
            Err(e) => errs.push("spec.template", e.to_string()),
        },
        Err(e) => errs.push("spec.template", format!("cannot be serialised: {e}")),
    }
    errs.into_result()
}

#[cfg(test)]
mod tests;
