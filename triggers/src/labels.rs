//! Labels and annotations the triggers component puts on the PacketCaptures it creates, and the
//! deterministic names that make creation idempotent.

use sha2::{Digest, Sha256};

/// Label: what created the capture, [`CREATED_BY_TRIGGER`] or [`CREATED_BY_SCHEDULE`].
pub const CREATED_BY: &str = "nightcap.dev/created-by";
/// Value of [`CREATED_BY`] for captures created by a CaptureTrigger.
pub const CREATED_BY_TRIGGER: &str = "trigger";
/// Value of [`CREATED_BY`] for captures created by a CaptureSchedule.
pub const CREATED_BY_SCHEDULE: &str = "schedule";
/// Label: the CaptureTrigger (name, shortened by [`label_value`] when longer than 63).
pub const TRIGGER: &str = "nightcap.dev/trigger";
/// Label: the CaptureSchedule (name, shortened by [`label_value`]).
pub const SCHEDULE: &str = "nightcap.dev/schedule";
/// Label: hash of the dedup key (per-key cooldown survives restarts through it).
pub const DEDUP_HASH: &str = "nightcap.dev/dedup-hash";
/// Standard label `app.kubernetes.io/managed-by`.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY`].
pub const MANAGED_BY_TRIGGERS: &str = "nightcap-triggers";

/// Annotation: full name of the CaptureTrigger.
pub const TRIGGER_NAME: &str = "nightcap.dev/trigger-name";
/// Annotation: the dedup key (at most [`MAX_KEY_ANNOTATION`] bytes).
pub const DEDUP_KEY: &str = "nightcap.dev/dedup-key";
/// Annotation: the event id (alert fingerprint@startsAt, request id).
pub const EVENT_ID: &str = "nightcap.dev/event-id";
/// Annotation: the source kind (`webhook`, `nats`, `jetstream`, `cron`).
pub const SOURCE: &str = "nightcap.dev/source";
/// Annotation: the scheduled time of a schedule's run (RFC 3339), like CronJob's
/// `batch.kubernetes.io/cronjob-scheduled-timestamp`.
pub const SCHEDULED_TIME: &str = "nightcap.dev/scheduled-time";

/// Longest dedup key kept in the [`DEDUP_KEY`] annotation.
pub const MAX_KEY_ANNOTATION: usize = 1024;

/// Longest generated capture name: names stay valid label values, so the scheduler can put them
/// on Jobs.
pub const MAX_NAME: usize = 63;

/// Hex SHA-256 of the parts joined with NUL bytes, cut to `len` hex digits.
pub fn hash_parts(parts: &[&str], len: usize) -> String {
    let mut h = Sha256::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update([0u8]);
        }
        h.update(p.as_bytes());
    }
    let mut hex = hex::encode(h.finalize());
    hex.truncate(len);
    hex
}

/// `name` when it is a valid label value (≤ 63 characters), else a 52-character prefix and a
/// hash of the whole name.
pub fn label_value(name: &str) -> String {
    if name.len() <= MAX_NAME {
        return name.to_owned();
    }
    format!("{}-{}", prefix(name, 52), hash_parts(&[name], 10))
}

/// `base` cut to at most `max` bytes, dots turned into dashes, ending on a letter or digit.
fn prefix(base: &str, max: usize) -> String {
    let mut p: String = base
        .chars()
        .take(max)
        .map(|c| if c == '.' { '-' } else { c })
        .collect();
    while p.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        p.pop();
    }
    p
}

/// Name of the capture a trigger creates for a dedup key and episode: `{trigger}-{hash}`,
/// where the hash covers namespace, trigger, key and episode. Deterministic, so a retry, a
/// redelivery or a second replica computes the same name and the API server's AlreadyExists is
/// the dedup.
pub fn trigger_capture_name(namespace: &str, trigger: &str, key: &str, episode: &str) -> String {
    let hash = hash_parts(&[namespace, trigger, key, episode], 10);
    let p = prefix(trigger, MAX_NAME - 11);
    if p.is_empty() {
        format!("capture-{hash}")
    } else {
        format!("{p}-{hash}")
    }
}

/// Name of the capture a schedule creates for the run at `unix_seconds`: `{schedule}-{minutes}`
/// like CronJob's Job names (Unix time in minutes). Long schedule names are shortened with a
/// hash so two schedules never share a name.
pub fn schedule_capture_name(schedule: &str, unix_seconds: i64) -> String {
    let minutes = unix_seconds.div_euclid(60);
    let base = if schedule.len() <= 52 && !schedule.contains('.') {
        schedule.to_owned()
    } else {
        format!("{}-{}", prefix(schedule, 41), hash_parts(&[schedule], 10))
    };
    format!("{base}-{minutes}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_names_are_deterministic_valid_and_distinct() {
        let a = trigger_capture_name("shop", "latency", "fp:1", "2026-11-21T02:03:04Z");
        assert_eq!(
            a,
            trigger_capture_name("shop", "latency", "fp:1", "2026-11-21T02:03:04Z")
        );
        assert!(
            a.starts_with("latency-") && a.len() == "latency-".len() + 10,
            "{a}"
        );
        for other in [
            trigger_capture_name("dev", "latency", "fp:1", "2026-11-21T02:03:04Z"),
            trigger_capture_name("shop", "latency", "fp:2", "2026-11-21T02:03:04Z"),
            trigger_capture_name("shop", "latency", "fp:1", "2026-11-22T02:03:04Z"),
            trigger_capture_name("shop", "latency2", "fp:1", "2026-11-21T02:03:04Z"),
        ] {
            assert_ne!(a, other);
        }
        let long = "a".repeat(200) + ".example";
        let n = trigger_capture_name("shop", &long, "k", "");
        assert!(n.len() <= MAX_NAME, "{n}");
        let n = trigger_capture_name("shop", "x.y-", "k", "");
        assert!(n.starts_with("x-y-"), "{n}");
        let mut errs = nightcap_api::ValidationErrors::default();
        nightcap_api::validation::validate_label_value(&n, "name", &mut errs);
        assert!(errs.is_empty(), "{errs}");
    }

    #[test]
    fn schedule_names_follow_cronjob_minutes() {
        assert_eq!(
            schedule_capture_name("nightly", 1_774_746_000),
            "nightly-29579100"
        );
        let long = "s".repeat(60);
        let a = schedule_capture_name(&long, 60);
        let b = schedule_capture_name(&(long.clone() + "x"), 60);
        assert_ne!(a, b);
        assert!(a.len() <= MAX_NAME, "{a}");
    }

    #[test]
    fn label_values_fit() {
        assert_eq!(label_value("short"), "short");
        let v = label_value(&"n".repeat(100));
        assert!(v.len() <= 63, "{v}");
    }
}
