//! The capture window: when capturing starts and ends.

use std::time::Duration;

use jiff::Timestamp;
use nightcap_api::{PacketCaptureSpec, quantity::parse_duration, validation::DEFAULT_DURATION};

/// The requested start (`spec.startTime`), if any.
pub(crate) fn requested_start(spec: &PacketCaptureSpec) -> Option<Timestamp> {
    spec.start_time.as_ref().map(|t| t.0)
}

/// The end of the window: `endTime`, or the start plus `duration` (default 5 minutes). The start
/// is `startTime` when set, else when the scheduler started the capture (`started`).
pub(crate) fn window_end(spec: &PacketCaptureSpec, started: Timestamp) -> Timestamp {
    if let Some(end) = &spec.end_time {
        return end.0;
    }
    let basis = requested_start(spec).unwrap_or(started);
    let length = spec
        .duration
        .as_deref()
        .and_then(|d| parse_duration(d).ok())
        .unwrap_or(DEFAULT_DURATION);
    add(basis, length)
}

/// `t + d`, saturating at jiff's range.
pub(crate) fn add(t: Timestamp, d: Duration) -> Timestamp {
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_millisecond(t.as_millisecond().saturating_add(ms)).unwrap_or(Timestamp::MAX)
}

/// `later - earlier`, zero when `later` is not after `earlier`.
pub(crate) fn until(earlier: Timestamp, later: Timestamp) -> Duration {
    let ms = later.as_millisecond() - earlier.as_millisecond();
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Whole seconds from `now` to `end`, rounded up, at least 1 (a Job's `activeDeadlineSeconds`
/// must be positive).
pub(crate) fn deadline_seconds(now: Timestamp, end: Timestamp) -> i64 {
    let ms = end.as_millisecond() - now.as_millisecond();
    ((ms + 999) / 1000).max(1)
}
