use super::*;

#[test]
fn valid_and_invalid() {
    let cases = [
        ("*/5 * * * *", true),
        ("0 2 * * 1-5", true),
        ("30 3 1,15 * *", true),
        ("0 0 * jan-mar sun", true),
        ("0 0 ? * MON", true),
        ("5/15 * * * *", true),
        ("0 0 * * 7", true),
        ("@hourly", true),
        ("@Daily", true),
        ("@every 5m", false),
        ("* * * *", false),
        ("* * * * * *", false),
        ("60 * * * *", false),
        ("* 24 * * *", false),
        ("* * 0 * *", false),
        ("* * * 13 *", false),
        ("* * * * 8", false),
        ("*/0 * * * *", false),
        ("5-1 * * * *", false),
        ("? * * * *", false),
        ("x * * * *", false),
        ("", false),
    ];
    for (expr, valid) in cases {
        assert_eq!(CronSchedule::parse(expr).is_ok(), valid, "{expr:?}");
    }
}

#[test]
fn fields_and_names() {
    let s = CronSchedule::parse("0 0 * feb,dec sat").expect("valid");
    assert_eq!(s.months, (1 << 2) | (1 << 12));
    assert_eq!(s.days_of_week, 1 << 6);
    let s = CronSchedule::parse("0 0 * * 7").expect("valid");
    assert_eq!(s.days_of_week, 1, "7 is Sunday");
    let s = CronSchedule::parse("5/20 * * * *").expect("valid");
    assert_eq!(s.minutes, (1 << 5) | (1 << 25) | (1 << 45));
}

#[test]
fn day_fields_or_when_both_restricted() {
    // 13th of the month OR Friday.
    let s = CronSchedule::parse("0 0 13 * 5").expect("valid");
    assert!(s.matches(1, 13, 2, 0, 0));
    assert!(s.matches(1, 10, 5, 0, 0));
    assert!(!s.matches(1, 10, 4, 0, 0));
    // Only day of week restricted: AND with '*'.
    let s = CronSchedule::parse("0 0 * * 5").expect("valid");
    assert!(!s.matches(1, 13, 2, 0, 0));
    assert!(s.matches(1, 10, 5, 0, 0));
}

#[test]
fn errors_say_which_field() {
    let err = CronSchedule::parse("0 25 * * *").expect_err("hour 25");
    assert!(
        err.to_string().contains("hour: 25 is out of range 0-23"),
        "{err}"
    );
}

fn ts(s: &str) -> Timestamp {
    s.parse().expect("test timestamp")
}

fn tz(name: &str) -> TimeZone {
    parse_time_zone(Some(name)).expect("test zone")
}

/// `after`, then the next fire times expected one after another (UTC).
fn assert_sequence(expr: &str, zone: &str, after: &str, want: &[&str]) {
    let s = CronSchedule::parse(expr).expect("valid");
    let mut t = ts(after);
    for w in want {
        let next = s
            .next_after(t, &tz(zone))
            .unwrap_or_else(|| panic!("{expr} in {zone}: no fire time after {t}"));
        assert_eq!(next, ts(w), "{expr} in {zone} after {t}");
        t = next;
    }
}

#[test]
fn next_after_plain_utc() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "*/15 * * * *",
            "2026-05-01T10:07:30Z",
            &["2026-05-01T10:15:00Z", "2026-05-01T10:30:00Z"],
        ),
        // Strictly after: a fire time itself is not returned again.
        (
            "0 * * * *",
            "2026-05-01T10:00:00Z",
            &["2026-05-01T11:00:00Z"],
        ),
        // Sub-second remainders do not matter (robfig starts at the next full second).
        (
            "0 * * * *",
            "2026-05-01T10:59:59.999Z",
            &["2026-05-01T11:00:00Z"],
        ),
        ("@yearly", "2026-06-01T00:00:00Z", &["2027-01-01T00:00:00Z"]),
        // 13th of the month OR Friday (February 2026 starts on a Sunday).
        (
            "0 0 13 * 5",
            "2026-02-01T00:00:00Z",
            &[
                "2026-02-06T00:00:00Z",
                "2026-02-13T00:00:00Z",
                "2026-02-20T00:00:00Z",
            ],
        ),
        // 7 is Sunday.
        (
            "0 9 * * 7",
            "2026-02-01T12:00:00Z",
            &["2026-02-08T09:00:00Z"],
        ),
        // Leap day: the next one is in 2028.
        (
            "0 0 29 2 *",
            "2026-01-01T00:00:00Z",
            &["2028-02-29T00:00:00Z"],
        ),
        // Month and year wrap.
        (
            "30 6 1 jan,jul *",
            "2026-07-01T06:30:00Z",
            &["2027-01-01T06:30:00Z"],
        ),
    ];
    for (expr, after, want) in cases {
        assert_sequence(expr, "UTC", after, want);
    }
}

#[test]
fn never_firing_schedule_has_no_next_time() {
    let s = CronSchedule::parse("0 0 30 2 *").expect("valid syntax");
    assert_eq!(
        s.next_after(ts("2026-01-01T00:00:00Z"), &TimeZone::UTC),
        None
    );
    let s = CronSchedule::parse("0 0 31 4,6,9,11 *").expect("valid syntax");
    assert_eq!(
        s.next_after(ts("2026-01-01T00:00:00Z"), &tz("Europe/Berlin")),
        None
    );
}

// Europe/Berlin 2026: 02:00 CET -> 03:00 CEST on 29 March (01:00 UTC);
// 03:00 CEST -> 02:00 CET on 25 October (01:00 UTC).
#[test]
fn berlin_spring_gap_skips_the_missing_wall_time() {
    // 02:30 does not exist on 29 March: robfig (and so CronJob) skips that day.
    assert_sequence(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-03-28T01:30:00Z",
        &["2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"],
    );
    // Hourly: 01:00 CET, then 03:00 CEST (the 02:00 hour does not exist).
    assert_sequence(
        "0 * * * *",
        "Europe/Berlin",
        "2026-03-28T23:30:00Z",
        &[
            "2026-03-29T00:00:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-29T02:00:00Z",
        ],
    );
    // 03:00 exists; it is the instant right after the gap.
    assert_sequence(
        "0 3 * * *",
        "Europe/Berlin",
        "2026-03-28T03:00:00Z",
        &["2026-03-29T01:00:00Z", "2026-03-30T01:00:00Z"],
    );
}

#[test]
fn berlin_autumn_overlap_fires_twice() {
    assert_sequence(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-10-24T00:30:00Z",
        &[
            "2026-10-25T00:30:00Z", // 02:30 CEST
            "2026-10-25T01:30:00Z", // 02:30 CET
            "2026-10-26T01:30:00Z",
        ],
    );
    assert_sequence(
        "0 * * * *",
        "Europe/Berlin",
        "2026-10-24T23:30:00Z",
        &[
            "2026-10-25T00:00:00Z", // 02:00 CEST
            "2026-10-25T01:00:00Z", // 02:00 CET
            "2026-10-25T02:00:00Z", // 03:00 CET
        ],
    );
    // Once a day at 03:00 stays once a day.
    assert_sequence(
        "0 3 * * *",
        "Europe/Berlin",
        "2026-10-24T01:00:00Z",
        &["2026-10-25T02:00:00Z", "2026-10-26T02:00:00Z"],
    );
}

// America/New_York 2026: 02:00 EST -> 03:00 EDT on 8 March (07:00 UTC);
// 02:00 EDT -> 01:00 EST on 1 November (06:00 UTC).
#[test]
fn new_york_gap_and_overlap() {
    assert_sequence(
        "30 2 * * *",
        "America/New_York",
        "2026-03-07T07:30:00Z",
        &["2026-03-09T06:30:00Z"],
    );
    assert_sequence(
        "*/15 * * * *",
        "America/New_York",
        "2026-03-08T06:40:00Z",
        &[
            "2026-03-08T06:45:00Z",
            "2026-03-08T07:00:00Z",
            "2026-03-08T07:15:00Z",
        ],
    );
    assert_sequence(
        "30 1 * * *",
        "America/New_York",
        "2026-10-31T05:30:00Z",
        &[
            "2026-11-01T05:30:00Z", // 01:30 EDT
            "2026-11-01T06:30:00Z", // 01:30 EST
            "2026-11-02T06:30:00Z",
        ],
    );
    // Weekday schedules count days on the local calendar: 23:30 Friday in New York is
    // Saturday in UTC.
    assert_sequence(
        "30 23 * * fri",
        "America/New_York",
        "2026-11-01T00:00:00Z",
        &["2026-11-07T04:30:00Z", "2026-11-14T04:30:00Z"],
    );
}

/// The instant-by-instant definition: the first whole minute after `after` whose wall clock in
/// `zone` matches. Slow; used to cross-check `next_after` around both transitions.
fn brute_force(
    s: &CronSchedule,
    after: Timestamp,
    zone: &TimeZone,
    limit_minutes: i64,
) -> Option<Timestamp> {
    let mut t = (after.as_second().div_euclid(60) + 1) * 60;
    for _ in 0..limit_minutes {
        let w = local(t, zone).expect("in range");
        if s.matches(w.month(), w.day(), w.dow(), w.hour(), w.minute()) {
            return Timestamp::from_second(t).ok();
        }
        t += 60;
    }
    None
}

#[test]
fn next_after_agrees_with_minute_by_minute_search_around_transitions() {
    let exprs = [
        "* * * * *",
        "*/7 * * * *",
        "0 * * * *",
        "30 2 * * *",
        "59 1 * * *",
        "0 0,2,3 * * *",
        "15 1-3 * * 0",
        "45 23 * * *",
        "0 0 * * 1-5",
        "5/20 2 25-31 3,10,11 *",
        "0 12 1 * 0",
    ];
    let zones = [
        "Europe/Berlin",
        "America/New_York",
        "UTC",
        "Australia/Lord_Howe",
    ];
    let starts = [
        "2026-03-27T21:17:00Z",
        "2026-03-07T20:00:00Z",
        "2026-10-24T19:43:10Z",
        "2026-10-31T22:05:00Z",
        "2026-04-04T12:00:00Z",
    ];
    for expr in exprs {
        let s = CronSchedule::parse(expr).expect("valid");
        for zone in zones {
            for start in starts {
                // Walk 3 days of fire times minute by minute and compare each.
                let mut t = ts(start);
                let end = t.as_second() + 3 * 86_400;
                while t.as_second() < end {
                    let limit = 40 * 24 * 60;
                    let got = s.next_after(t, &tz(zone));
                    match brute_force(&s, t, &tz(zone), limit) {
                        Some(want) => {
                            assert_eq!(got, Some(want), "{expr} in {zone} after {t}");
                            t = want;
                        }
                        None => {
                            // Beyond the brute-force window (e.g. next March): only check it is.
                            let beyond =
                                got.is_none_or(|g| g.as_second() > t.as_second() + limit * 60);
                            assert!(beyond, "{expr} in {zone} after {t}: got {got:?}");
                            break;
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn time_zone_names() {
    assert_eq!(parse_time_zone(None), Ok(TimeZone::UTC));
    assert!(parse_time_zone(Some("Europe/Berlin")).is_ok());
    let err = parse_time_zone(Some("Mars/Olympus")).expect_err("unknown zone");
    assert!(err.contains("not an IANA time zone"), "{err}");
}

#[test]
fn time_zone_names_are_iana_names_spelled_exactly() {
    for name in [
        "UTC",
        "Etc/UTC",
        "Etc/GMT+5",
        "EST",
        "US/Eastern",
        "Australia/Lord_Howe",
        "America/Argentina/Buenos_Aires",
    ] {
        assert!(parse_time_zone(Some(name)).is_ok(), "{name:?}");
    }
    // Other spellings, files of a zoneinfo directory that are not zones, paths.
    for name in [
        "",
        "utc",
        "europe/berlin",
        "EUROPE/BERLIN",
        "Europe/Berlin ",
        "Etc/Unknown",
        "Local",
        "localtime",
        "posixrules",
        "Factory",
        "posix/Europe/Berlin",
        "right/Europe/Berlin",
        "/usr/share/zoneinfo/UTC",
        "../zoneinfo/UTC",
        "Europe/../UTC",
        "zone.tab",
        "leap-seconds.list",
    ] {
        let err = parse_time_zone(Some(name)).expect_err(name);
        assert!(err.contains("not an IANA time zone"), "{name:?}: {err}");
    }
}
