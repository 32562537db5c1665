use super::*;
use crate::ledger::Origin;

fn ts(s: &str) -> Timestamp {
    s.parse().expect("time")
}

/// A schedule created long ago that last ran at `last`.
fn schedule(extra_spec: &str, last: Option<&str>) -> CaptureSchedule {
    let status = last.map_or(String::new(), |l| {
        format!("status: {{lastScheduleTime: \"{l}\"}}")
    });
    let yaml = format!(
        r#"
metadata: {{name: nightly, namespace: shop, uid: 5c0b6a4e-0000-4000-8000-000000000001,
            creationTimestamp: "2026-01-01T00:00:00Z"}}
spec:
  {extra_spec}
  template: {{spec: {{selector: {{matchLabels: {{app: web}}}}, duration: 10m}}}}
{status}
"#
    );
    serde_yaml::from_str(&yaml).expect("test schedule")
}

fn owned(name: &str, phase: Option<Phase>, scheduled: &str) -> (String, Tracked) {
    (
        name.to_owned(),
        Tracked {
            origin: Origin::Schedule {
                schedule: "nightly".into(),
                owner_uid: None,
            },
            phase,
            created: Some(ts(scheduled)),
            completed: phase
                .filter(|p| p.is_finished())
                .map(|_| ts(scheduled) + SignedDuration::from_mins(10)),
            scheduled: Some(ts(scheduled)),
            stop_requested: false,
        },
    )
}

fn creates(p: &CronPlan) -> Vec<Timestamp> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            CronAction::Create { scheduled, .. } => Some(*scheduled),
            _ => None,
        })
        .collect()
}

fn reasons(p: &CronPlan) -> Vec<&'static str> {
    p.events.iter().map(|e| e.reason).collect()
}

#[test]
fn dst_in_berlin_and_new_york() {
    // (schedule, zone, last run, now, runs created, next wake-up)
    let cases = [
        // Berlin spring: 02:30 does not exist on 29 March; nothing runs that night.
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2026-03-28T01:30:00Z",
            "2026-03-29T01:30:30Z",
            None,
            "2026-03-30T00:30:00Z",
        ),
        // The next night runs at 02:30 CEST.
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2026-03-28T01:30:00Z",
            "2026-03-30T00:30:00Z",
            Some("2026-03-30T00:30:00Z"),
            "2026-03-31T00:30:00Z",
        ),
        // Berlin autumn: 02:30 happens twice and runs twice (CronJob does the same).
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-24T00:30:00Z",
            "2026-10-25T00:30:00.2Z",
            Some("2026-10-25T00:30:00Z"),
            "2026-10-25T01:30:00Z",
        ),
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:30:00Z",
            Some("2026-10-25T01:30:00Z"),
            "2026-10-26T01:30:00Z",
        ),
        // New York spring: hourly runs go from 01:00 EST straight to 03:00 EDT.
        (
            "0 * * * *",
            "America/New_York",
            "2026-03-08T06:00:00Z",
            "2026-03-08T07:00:01Z",
            Some("2026-03-08T07:00:00Z"),
            "2026-03-08T08:00:00Z",
        ),
        // New York autumn: 01:30 twice.
        (
            "30 1 * * *",
            "America/New_York",
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:30:00Z",
            Some("2026-11-01T06:30:00Z"),
            "2026-11-02T06:30:00Z",
        ),
        // A daily run at 09:00 local stays at 09:00 local across the change (UTC shifts).
        (
            "0 9 * * *",
            "America/New_York",
            "2026-03-07T14:00:00Z",
            "2026-03-08T13:00:00Z",
            Some("2026-03-08T13:00:00Z"),
            "2026-03-09T13:00:00Z",
        ),
    ];
    for (cron, zone, last, now, want, next) in cases {
        let s = schedule(
            &format!("schedule: \"{cron}\"\n  timeZone: {zone}"),
            Some(last),
        );
        let p = plan(&s, &[], ts(now));
        let got = creates(&p);
        assert_eq!(
            got,
            want.map(ts).into_iter().collect::<Vec<_>>(),
            "{cron} {zone} at {now}"
        );
        assert_eq!(
            p.requeue_at,
            Some(ts(next)),
            "{cron} {zone} at {now}: next wake-up"
        );
        if let Some(w) = want {
            assert_eq!(p.status.last_schedule_time, Some(Time(ts(w))));
            let name = labels::schedule_capture_name("nightly", ts(w).as_second());
            assert_eq!(p.status.active, vec![name]);
        }
    }
}

#[test]
fn concurrency_policies() {
    let last = "2026-11-21T01:00:00Z";
    let now = ts("2026-11-21T02:00:00Z");
    let running = [owned("nightly-29588460", Some(Phase::Capturing), last)];
    let cases = [
        ("Allow", vec![], 1, vec![]),
        ("Forbid", vec![], 0, vec!["CaptureAlreadyActive"]),
        ("Replace", vec!["nightly-29588460"], 1, vec![]),
    ];
    for (policy, stops, n_creates, events) in cases {
        let s = schedule(
            &format!("schedule: \"0 * * * *\"\n  concurrencyPolicy: {policy}"),
            Some(last),
        );
        let p = plan(&s, &running, now);
        let got_stops: Vec<_> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                CronAction::Stop { name } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(got_stops, stops, "{policy}");
        assert_eq!(creates(&p).len(), n_creates, "{policy}");
        assert_eq!(reasons(&p), events, "{policy}");
    }
    // Forbid with the previous run finished: runs.
    let done = [owned("nightly-29588460", Some(Phase::Succeeded), last)];
    let s = schedule(
        "schedule: \"0 * * * *\"\n  concurrencyPolicy: Forbid",
        Some(last),
    );
    assert_eq!(creates(&plan(&s, &done, now)).len(), 1);
}

#[test]
fn suspend_stops_new_runs() {
    let s = schedule(
        "schedule: \"0 * * * *\"\n  suspend: true",
        Some("2026-11-21T01:00:00Z"),
    );
    let p = plan(&s, &[], ts("2026-11-21T05:00:00Z"));
    assert!(p.actions.is_empty());
    assert_eq!(p.requeue_at, None);
}

#[test]
fn missed_runs_after_downtime() {
    let last = "2026-11-21T00:00:00Z";
    // 3 h down, every 5 minutes: 36 missed, only the most recent starts, no warning.
    let s = schedule("schedule: \"*/5 * * * *\"", Some(last));
    let p = plan(&s, &[], ts("2026-11-21T03:02:00Z"));
    assert_eq!(creates(&p), [ts("2026-11-21T03:00:00Z")]);
    assert!(reasons(&p).is_empty());
    // Every minute for 3 h: more than 100 missed → TooManyMissedTimes, still one run.
    let s = schedule("schedule: \"* * * * *\"", Some(last));
    let p = plan(&s, &[], ts("2026-11-21T03:00:30Z"));
    assert_eq!(creates(&p), [ts("2026-11-21T03:00:00Z")]);
    assert_eq!(reasons(&p), ["TooManyMissedTimes"]);
    let c = p
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "TooManyMissedRuns")
        .expect("condition");
    assert_eq!(c.status, "True");
    // A deadline shorter than the delay: the run is skipped.
    let s = schedule(
        "schedule: \"0 * * * *\"\n  startingDeadlineSeconds: 60",
        Some(last),
    );
    let p = plan(&s, &[], ts("2026-11-21T03:03:00Z"));
    assert!(creates(&p).is_empty());
    assert_eq!(p.missed, Some((ts("2026-11-21T03:00:00Z"), 3)));
    assert_eq!(p.skipped, Some("missed"));
    assert_eq!(p.requeue_at, Some(ts("2026-11-21T04:00:00Z")));
    // A deadline long enough: it runs, late.
    let s = schedule(
        "schedule: \"0 * * * *\"\n  startingDeadlineSeconds: 300",
        Some(last),
    );
    assert_eq!(
        creates(&plan(&s, &[], ts("2026-11-21T03:03:00Z"))),
        [ts("2026-11-21T03:00:00Z")]
    );
    // The deadline also bounds how far back missed runs are counted: no warning.
    let s = schedule(
        "schedule: \"* * * * *\"\n  startingDeadlineSeconds: 600",
        Some(last),
    );
    let p = plan(&s, &[], ts("2026-11-21T03:00:30Z"));
    assert_eq!(reasons(&p), Vec::<&str>::new());
}

#[test]
fn a_run_is_started_once() {
    let s = schedule("schedule: \"0 * * * *\"", Some("2026-11-21T02:00:00Z"));
    let p = plan(&s, &[], ts("2026-11-21T02:30:00Z"));
    assert!(creates(&p).is_empty(), "lastScheduleTime is the due run");
    let s = schedule("schedule: \"0 * * * *\"", Some("2026-11-21T01:00:00Z"));
    let existing = [owned(
        &labels::schedule_capture_name("nightly", ts("2026-11-21T02:00:00Z").as_second()),
        None,
        "2026-11-21T02:00:00Z",
    )];
    assert!(
        creates(&plan(&s, &existing, ts("2026-11-21T02:30:00Z"))).is_empty(),
        "capture exists"
    );
    // Never ran: the anchor is the creation time (2026-01-01).
    let s = schedule("schedule: \"0 0 1 * *\"", None);
    assert_eq!(
        creates(&plan(&s, &[], ts("2026-01-01T00:00:30Z"))),
        Vec::<Timestamp>::new()
    );
    assert_eq!(
        creates(&plan(&s, &[], ts("2026-02-01T00:00:30Z"))),
        [ts("2026-02-01T00:00:00Z")]
    );
}

#[test]
fn history_limits_and_last_success() {
    let s = schedule(
        "schedule: \"0 * * * *\"\n  successfulHistoryLimit: 2\n  failedHistoryLimit: 1",
        Some("2026-11-21T05:00:00Z"),
    );
    let captures = [
        owned("nightly-1", Some(Phase::Succeeded), "2026-11-21T01:00:00Z"),
        owned("nightly-2", Some(Phase::Stopped), "2026-11-21T02:00:00Z"),
        owned("nightly-3", Some(Phase::Succeeded), "2026-11-21T03:00:00Z"),
        owned("nightly-4", Some(Phase::Failed), "2026-11-21T04:00:00Z"),
        owned("nightly-5", Some(Phase::Failed), "2026-11-21T04:30:00Z"),
        owned("nightly-6", Some(Phase::Capturing), "2026-11-21T05:00:00Z"),
    ];
    let p = plan(&s, &captures, ts("2026-11-21T05:10:00Z"));
    let deletes: Vec<_> = p
        .actions
        .iter()
        .filter_map(|a| match a {
            CronAction::Delete { name } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deletes, ["nightly-1", "nightly-4"]);
    assert_eq!(p.status.active, ["nightly-6"]);
    assert_eq!(
        p.status.last_successful_time,
        Some(Time(ts("2026-11-21T03:10:00Z")))
    );
}

#[test]
fn invalid_schedules_are_reported() {
    let cases = [
        ("schedule: \"61 * * * *\"", "minute: 61 is out of range"),
        (
            "schedule: \"0 * * * *\"\n  timeZone: Mars/Base",
            "not an IANA time zone",
        ),
        ("schedule: \"0 0 30 2 *\"", "has no fire time"),
    ];
    for (spec, want) in cases {
        let p = plan(&schedule(spec, None), &[], ts("2026-11-21T05:10:00Z"));
        assert!(p.actions.is_empty(), "{spec}");
        assert_eq!(reasons(&p), ["InvalidSchedule"], "{spec}");
        assert!(
            p.events[0].message.contains(want),
            "{spec}: {}",
            p.events[0].message
        );
        let valid = p
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Valid")
            .expect("Valid");
        assert_eq!(valid.status, "False");
    }
}

#[test]
fn most_recent_counts_exactly_up_to_the_limit() {
    let every_minute = CronSchedule::parse("* * * * *").expect("valid");
    let t0 = ts("2026-11-21T00:00:00Z");
    let cases = [
        (30, Some(ts("2026-11-21T00:30:00Z")), 30),
        (101, Some(ts("2026-11-21T01:41:00Z")), 101),
        (24 * 60, Some(ts("2026-11-22T00:00:00Z")), 101),
    ];
    for (minutes, want, count) in cases {
        let now = t0 + SignedDuration::from_mins(minutes);
        let (got, n) = most_recent(&every_minute, &TimeZone::UTC, t0, now).expect("fires");
        assert_eq!(got, want, "{minutes}");
        assert_eq!(n.min(101), count, "{minutes}");
    }
}
