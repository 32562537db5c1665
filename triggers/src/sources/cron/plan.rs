//! The pure CronJob planner: given a CaptureSchedule, the captures it owns and the time, what
//! to do. Mirrors kube-controller-manager's CronJob controller:
//!
//! - the anchor is `status.lastScheduleTime`, else `metadata.creationTimestamp`, moved forward
//!   to `now - startingDeadlineSeconds` when that is later;
//! - only the most recent missed run is started; more than 100 missed runs is reported
//!   (`TooManyMissedTimes`) and the most recent run still starts;
//! - a run later than `startingDeadlineSeconds` is skipped (`MissSchedule`);
//! - `Forbid` skips a run while a capture is active, `Replace` stops the active ones first;
//! - `suspend` stops new runs, history limits delete the oldest finished captures;
//! - fire times come from [`CronSchedule::next_after`] (robfig/cron semantics across DST).

use std::cmp::Reverse;

use jiff::{SignedDuration, Timestamp, tz::TimeZone};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use nightcap_api::{
    CaptureSchedule, CaptureScheduleStatus, ConcurrencyPolicy, Phase,
    cron::{CronSchedule, parse_time_zone},
    schedule::{DEFAULT_FAILED_HISTORY_LIMIT, DEFAULT_SUCCESSFUL_HISTORY_LIMIT},
};

use crate::{labels, ledger::Tracked};

/// More missed runs than this is reported, like CronJob.
pub const TOO_MANY_MISSED: u64 = 100;

/// Something to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CronAction {
    /// Create the run's capture.
    Create {
        /// Deterministic name (`{schedule}-{unix minutes}`).
        name: String,
        /// The scheduled time of the run.
        scheduled: Timestamp,
    },
    /// Stop an active capture (concurrencyPolicy Replace).
    Stop {
        /// Capture name.
        name: String,
    },
    /// Delete a finished capture beyond the history limits.
    Delete {
        /// Capture name.
        name: String,
    },
}

/// A Kubernetes Event to record on the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    /// Warning rather than Normal.
    pub warning: bool,
    /// Reason (CronJob's where one exists).
    pub reason: &'static str,
    /// Message.
    pub message: String,
}

/// The plan for one schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct CronPlan {
    /// Actions, in order.
    pub actions: Vec<CronAction>,
    /// Events.
    pub events: Vec<PlannedEvent>,
    /// The status to write (if it differs from the current one).
    pub status: CaptureScheduleStatus,
    /// When to look at the schedule again (the next fire time).
    pub requeue_at: Option<Timestamp>,
    /// Metric `nightcap_cron_runs_total{result}` when a run was due: `missed`,
    /// `already_active` (the `created` result is counted by the executor).
    pub skipped: Option<&'static str>,
    /// Runs left behind because they are more than `startingDeadlineSeconds` late: the most
    /// recent one and how many. (CronJob skips them silently; the executor records one
    /// `MissSchedule` Event per new miss.)
    pub missed: Option<(Timestamp, u64)>,
}

/// The most recent fire time in `(earliest, now]` and how many fire times that interval holds
/// (exact up to [`TOO_MANY_MISSED`] + 1). `None` when the schedule never fires.
pub fn most_recent(
    cron: &CronSchedule,
    tz: &TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> Option<(Option<Timestamp>, u64)> {
    let first = cron.next_after(earliest, tz)?;
    if first > now {
        return Some((None, 0));
    }
    let mut last = first;
    let mut count = 1;
    while count <= TOO_MANY_MISSED {
        match cron.next_after(last, tz) {
            Some(t) if t <= now => {
                last = t;
                count += 1;
            }
            _ => return Some((Some(last), count)),
        }
    }
    // Too many to walk: find the last fire time at or before now by looking back from now in
    // growing steps (like CronJob's estimate, but exact).
    let mut back = SignedDuration::from_hours(1);
    loop {
        let from = (now - back).max(last);
        let mut t = from;
        let mut found = None;
        while let Some(n) = cron.next_after(t, tz).filter(|n| *n <= now) {
            found = Some(n);
            t = n;
        }
        if found.is_some() || from == last {
            return Some((found.or(Some(last)), count));
        }
        back *= 4;
    }
}

fn condition(
    old: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    now: Timestamp,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: since,
        observed_generation: None,
    }
}

fn set_condition(status: &mut CaptureScheduleStatus, c: Condition) {
    status.conditions.retain(|x| x.type_ != c.type_);
    status.conditions.push(c);
    status.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// Plans one sync of `schedule` at `now`; `owned` are the captures it created.
pub fn plan(schedule: &CaptureSchedule, owned: &[(String, Tracked)], now: Timestamp) -> CronPlan {
    let spec = &schedule.spec;
    let old = schedule.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let mut out = CronPlan {
        actions: Vec::new(),
        events: Vec::new(),
        status: CaptureScheduleStatus::default(),
        requeue_at: None,
        skipped: None,
        missed: None,
    };
    status.active = owned
        .iter()
        .filter(|(_, t)| t.running())
        .map(|(n, _)| n.clone())
        .collect();
    let newest_success = owned
        .iter()
        .filter(|(_, t)| t.phase == Some(Phase::Succeeded))
        .filter_map(|(_, t)| t.completed.or(t.created))
        .max();
    if let Some(t) = newest_success
        && status
            .last_successful_time
            .as_ref()
            .is_none_or(|old| old.0 < t)
    {
        status.last_successful_time = Some(Time(t));
    }
    if schedule.metadata.deletion_timestamp.is_some() {
        out.status = status;
        return out;
    }
    out.actions.extend(history_cleanup(schedule, owned));

    let parsed = CronSchedule::parse(&spec.schedule)
        .map_err(|e| e.to_string())
        .and_then(|c| Ok((c, parse_time_zone(spec.time_zone.as_deref())?)));
    let (cron, tz) = match parsed {
        Ok(p) => p,
        Err(message) => {
            out.events.push(PlannedEvent {
                warning: true,
                reason: "InvalidSchedule",
                message: message.clone(),
            });
            set_condition(
                &mut status,
                condition(
                    &old.conditions,
                    "Valid",
                    false,
                    "InvalidSchedule",
                    message,
                    now,
                ),
            );
            out.status = status;
            return out;
        }
    };
    let valid = condition(&old.conditions, "Valid", true, "Valid", String::new(), now);
    set_condition(&mut status, valid);
    if spec.suspend {
        out.status = status;
        return out;
    }

    let created = schedule.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let mut earliest = status
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .or(created)
        .unwrap_or(now);
    if let Some(deadline) = spec.starting_deadline_seconds {
        let limit = now - SignedDuration::from_secs(deadline);
        if limit > earliest {
            if let Some((Some(last_missed), n)) = most_recent(&cron, &tz, earliest, limit) {
                out.missed = Some((last_missed, n));
                out.skipped = Some("missed");
            }
            earliest = limit;
        }
    }
    let next_after_now = cron.next_after(now, &tz);
    out.requeue_at = next_after_now;
    let (due, missed) = match most_recent(&cron, &tz, earliest, now) {
        Some(r) => r,
        None => {
            let message = format!(
                "{:?} has no fire time in the next {} years",
                spec.schedule,
                nightcap_api::cron::SEARCH_YEARS
            );
            out.events.push(PlannedEvent {
                warning: true,
                reason: "InvalidSchedule",
                message: message.clone(),
            });
            set_condition(
                &mut status,
                condition(&old.conditions, "Valid", false, "NeverFires", message, now),
            );
            out.status = status;
            return out;
        }
    };
    let too_many = missed > TOO_MANY_MISSED;
    if too_many {
        out.events.push(PlannedEvent {
            warning: true,
            reason: "TooManyMissedTimes",
            message: format!(
                "too many missed start times: more than {TOO_MANY_MISSED}. Set or decrease \
                 .spec.startingDeadlineSeconds or check clock skew"
            ),
        });
    }
    // Updated only when a run is due: it tells whether the last due run came after more than
    // the limit of missed ones.
    let had = old
        .conditions
        .iter()
        .any(|c| c.type_ == "TooManyMissedRuns");
    if due.is_some() && (too_many || had) {
        let c = condition(
            &old.conditions,
            "TooManyMissedRuns",
            too_many,
            if too_many {
                "TooManyMissedTimes"
            } else {
                "CaughtUp"
            },
            if too_many {
                format!(
                    "more than {TOO_MANY_MISSED} runs were missed; only the most recent one started"
                )
            } else {
                String::new()
            },
            now,
        );
        set_condition(&mut status, c);
    }
    let Some(scheduled) = due else {
        out.status = status;
        return out;
    };
    if let Some(deadline) = spec.starting_deadline_seconds
        && scheduled + SignedDuration::from_secs(deadline) < now
    {
        out.events.push(PlannedEvent {
            warning: true,
            reason: "MissSchedule",
            message: format!("missed scheduled time to start a capture: {scheduled}"),
        });
        out.skipped = Some("missed");
        out.status = status;
        return out;
    }
    let name = labels::schedule_capture_name(&schedule.name_any(), scheduled.as_second());
    let processed = owned.iter().any(|(n, _)| *n == name)
        || status
            .last_schedule_time
            .as_ref()
            .is_some_and(|t| t.0 == scheduled);
    if processed {
        out.status = status;
        return out;
    }
    match spec.concurrency_policy {
        ConcurrencyPolicy::Forbid if !status.active.is_empty() => {
            out.events.push(PlannedEvent {
                warning: false,
                reason: "CaptureAlreadyActive",
                message: format!(
                    "not starting the run of {scheduled}: capture {} is still running and \
                     concurrencyPolicy is Forbid",
                    status.active.join(", ")
                ),
            });
            out.skipped = Some("already_active");
            out.status = status;
            return out;
        }
        ConcurrencyPolicy::Replace => {
            for (n, t) in owned.iter().filter(|(_, t)| t.running()) {
                if !t.stop_requested {
                    out.actions.push(CronAction::Stop { name: n.clone() });
                }
            }
            status.active.clear();
        }
        _ => {}
    }
    out.actions.push(CronAction::Create {
        name: name.clone(),
        scheduled,
    });
    status.active.push(name);
    status.last_schedule_time = Some(Time(scheduled));
    out.status = status;
    out
}

/// Finished captures beyond `successfulHistoryLimit` (Succeeded, Stopped) and
/// `failedHistoryLimit` (Failed), oldest first.
fn history_cleanup(schedule: &CaptureSchedule, owned: &[(String, Tracked)]) -> Vec<CronAction> {
    let spec = &schedule.spec;
    let mut out = Vec::new();
    let groups: [(&[Phase], u32); 2] = [
        (
            &[Phase::Succeeded, Phase::Stopped],
            spec.successful_history_limit
                .unwrap_or(DEFAULT_SUCCESSFUL_HISTORY_LIMIT),
        ),
        (
            &[Phase::Failed],
            spec.failed_history_limit
                .unwrap_or(DEFAULT_FAILED_HISTORY_LIMIT),
        ),
    ];
    for (phases, keep) in groups {
        let mut finished: Vec<_> = owned
            .iter()
            .filter(|(_, t)| t.phase.is_some_and(|p| phases.contains(&p)))
            .collect();
        // Newest first: by scheduled time, then completion, then creation, then name.
        finished.sort_by_key(|(n, t)| Reverse((t.scheduled, t.completed, t.created, n.clone())));
        for (n, _) in finished.into_iter().skip(keep as usize) {
            out.push(CronAction::Delete { name: n.clone() });
        }
    }
    out
}

#[cfg(test)]
mod tests;
