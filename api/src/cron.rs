//! Cron expressions with Kubernetes CronJob semantics (the robfig/cron standard parser).
//!
//! Five fields `minute hour day-of-month month day-of-week`, or a macro (`@yearly`/`@annually`,
//! `@monthly`, `@weekly`, `@daily`/`@midnight`, `@hourly`). Fields take `*`, `?` (day fields),
//! numbers, names (`jan`–`dec`, `sun`–`sat`), ranges `a-b`, steps `*/n`, `a-b/n`, `a/n` (from `a`
//! to the field's maximum) and lists. Day of week is 0–7 with both 0 and 7 meaning Sunday. When
//! both day fields are restricted a time matches if EITHER matches (classic cron; the `cron` crate
//! ANDs them and numbers Sunday 1, which is why nightcap parses schedules itself).

use std::fmt;

use jiff::{
    SignedDuration, Timestamp,
    civil::{Date, DateTime, Time},
    tz::{AmbiguousOffset, TimeZone, TimeZoneDatabase},
};

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    /// Allowed minutes, bits 0–59.
    pub minutes: u64,
    /// Allowed hours, bits 0–23.
    pub hours: u64,
    /// Allowed days of month, bits 1–31.
    pub days_of_month: u64,
    /// Allowed months, bits 1–12.
    pub months: u64,
    /// Allowed days of week, bits 0–6 (Sunday = 0).
    pub days_of_week: u64,
    /// Day of month was `*` or `?`.
    pub dom_star: bool,
    /// Day of week was `*` or `?`.
    pub dow_star: bool,
    source: String,
}

/// Why a cron expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron schedule {source_text:?}: {message}")]
pub struct CronError {
    source_text: String,
    /// What is wrong.
    pub message: String,
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Field = Field {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DOW: Field = Field {
    name: "day of week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl CronSchedule {
    /// Parses a 5-field expression or a macro.
    pub fn parse(expr: &str) -> Result<Self, CronError> {
        let err = |message: String| CronError {
            source_text: expr.to_owned(),
            message,
        };
        let trimmed = expr.trim();
        let expanded = match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_owned(),
            "@monthly" => "0 0 1 * *".to_owned(),
            "@weekly" => "0 0 * * 0".to_owned(),
            "@daily" | "@midnight" => "0 0 * * *".to_owned(),
            "@hourly" => "0 * * * *".to_owned(),
            s if s.starts_with('@') => {
                return Err(err(format!(
                    "unknown macro {s:?} (use @yearly, @monthly, @weekly, @daily or @hourly)"
                )));
            }
            _ => trimmed.to_owned(),
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            )));
        }
        let minutes = parse_field(fields[0], &MINUTE).map_err(err)?;
        let hours = parse_field(fields[1], &HOUR).map_err(err)?;
        let days_of_month = parse_field(fields[2], &DOM).map_err(err)?;
        let months = parse_field(fields[3], &MONTH).map_err(err)?;
        let mut days_of_week = parse_field(fields[4], &DOW).map_err(err)?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week & !(1 << 7)) | 1;
        }
        // Like robfig/cron: `*`, `?` (and a step of 1 over them) leave the day field unrestricted.
        let star = |f: &str| matches!(f, "*" | "?" | "*/1" | "?/1");
        Ok(Self {
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            dom_star: star(fields[2]),
            dow_star: star(fields[4]),
            source: trimmed.to_owned(),
        })
    }

    /// Whether the schedule fires at this local wall-clock minute.
    /// `dow` is 0–6 with Sunday = 0.
    pub fn matches(&self, month: u32, day: u32, dow: u32, hour: u32, minute: u32) -> bool {
        bit(self.minutes, minute)
            && bit(self.hours, hour)
            && bit(self.months, month)
            && self.day_matches(day, dow)
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first instant strictly after `after` at which the schedule fires, read in `tz`, or
    /// `None` when it never fires within [`SEARCH_YEARS`] (for example `0 0 30 2 *`).
    ///
    /// This is what robfig/cron v3 (the library Kubernetes CronJob uses) computes: time advances
    /// in absolute steps and the wall clock in `tz` is matched field by field. So on a
    /// daylight-saving gap a wall time that does not exist is skipped (`30 2 * * *` does not fire
    /// on the day Europe/Berlin jumps from 02:00 to 03:00), and in an overlap a wall time that
    /// exists twice fires twice (`30 2 * * *` fires at 02:30 CEST and 02:30 CET).
    /// Fire times are whole minutes; `after` is compared to the second.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let after_s = after.as_second();
        // The first whole minute strictly after `after` (sub-second parts are ignored, as in
        // robfig: it starts at the next full second).
        let mut t = (after_s.div_euclid(60) + 1) * 60;
        let start_year = local(t, tz)?.year();
        loop {
            let wall = local(t, tz)?;
            if wall.year() > start_year + SEARCH_YEARS {
                return None;
            }
            let (month, day) = (wall.month(), wall.day());
            if !bit(self.months, month) {
                let (y, m) = if month == 12 {
                    (wall.year() + 1, 1)
                } else {
                    (wall.year(), month + 1)
                };
                let first = Date::new(i16::try_from(y).ok()?, i8::try_from(m).ok()?, 1).ok()?;
                t = first_instant_at_or_after(first, tz)?.max(t + 60);
                continue;
            }
            if !self.day_matches(day, wall.dow()) {
                t = first_instant_at_or_after(wall.date().tomorrow().ok()?, tz)?.max(t + 60);
                continue;
            }
            let (hour, minute) = (wall.hour(), wall.minute());
            let to_next_hour = i64::from(60 - minute) * 60;
            if !bit(self.hours, hour) {
                t += to_next_hour;
                continue;
            }
            if !bit(self.minutes, minute) {
                // The next allowed minute of this hour, else the top of the next hour. Steps
                // never cross an hour boundary, where every current zone changes its offset.
                t += (minute + 1..60)
                    .find(|m| bit(self.minutes, *m))
                    .map_or(to_next_hour, |m| i64::from(m - minute) * 60);
                continue;
            }
            return Timestamp::from_second(t).ok();
        }
    }

    fn day_matches(&self, day: u32, dow: u32) -> bool {
        let dom = bit(self.days_of_month, day);
        let dw = bit(self.days_of_week, dow);
        if self.dom_star || self.dow_star {
            dom && dw
        } else {
            dom || dw
        }
    }
}

/// How far [`CronSchedule::next_after`] looks ahead, like robfig/cron.
pub const SEARCH_YEARS: i32 = 5;

/// Parses an IANA time zone name; `None` is UTC (what a CronJob without `timeZone` uses in
/// kube-controller-manager's default configuration).
///
/// Names are spelled exactly as in the IANA database (`Europe/Berlin`, not `europe/berlin`) and
/// resolved in the copy of the database compiled into the binary (jiff's `tzdb-bundle-always`),
/// so a schedule fires at the same instants on every host, with or without
/// `/usr/share/zoneinfo`. `Factory`, the database's placeholder for "no zone configured", is not
/// a time zone.
pub fn parse_time_zone(name: Option<&str>) -> Result<TimeZone, String> {
    let Some(n) = name else {
        return Ok(TimeZone::UTC);
    };
    match TimeZoneDatabase::bundled().get(n) {
        Ok(tz) if tz.iana_name() == Some(n) && n != "Factory" => Ok(tz),
        _ => Err(format!(
            "{n:?} is not an IANA time zone (e.g. Europe/Berlin, America/New_York, UTC)"
        )),
    }
}

fn bit(set: u64, v: u32) -> bool {
    v < 64 && set & (1u64 << v) != 0
}

/// The wall clock of an instant in some zone, its fields as the cron fields count them.
struct Wall(DateTime);

impl Wall {
    fn date(&self) -> Date {
        self.0.date()
    }
    fn year(&self) -> i32 {
        i32::from(self.0.year())
    }
    fn month(&self) -> u32 {
        field(self.0.month())
    }
    fn day(&self) -> u32 {
        field(self.0.day())
    }
    /// 0–6 with Sunday = 0.
    fn dow(&self) -> u32 {
        field(self.0.weekday().to_sunday_zero_offset())
    }
    fn hour(&self) -> u32 {
        field(self.0.hour())
    }
    fn minute(&self) -> u32 {
        field(self.0.minute())
    }
}

/// A civil field (never negative) as a cron value.
fn field(v: i8) -> u32 {
    u32::from(v.unsigned_abs())
}

fn local(unix_seconds: i64, tz: &TimeZone) -> Option<Wall> {
    Some(Wall(
        tz.to_datetime(Timestamp::from_second(unix_seconds).ok()?),
    ))
}

/// The first instant whose wall clock in `tz` reads `date` 00:00 or later (midnight itself when
/// it exists, the earlier one when it exists twice; the end of the gap when a zone skips
/// midnight).
fn first_instant_at_or_after(date: Date, tz: &TimeZone) -> Option<i64> {
    let mut wall = date.to_datetime(Time::midnight());
    for _ in 0..=24 * 60 {
        let ambiguous = tz.to_ambiguous_timestamp(wall);
        let offset = match ambiguous.offset() {
            AmbiguousOffset::Unambiguous { offset } => offset,
            // In a fold the offset before the transition is the larger one: the earlier instant.
            AmbiguousOffset::Fold { before, .. } => before,
            AmbiguousOffset::Gap { .. } => {
                wall = wall.checked_add(SignedDuration::from_mins(1)).ok()?;
                continue;
            }
        };
        return Some(offset.to_timestamp(wall).ok()?.as_second());
    }
    None
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn parse_field(text: &str, field: &Field) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        bits |= parse_part(part, field)?;
    }
    Ok(bits)
}

fn parse_part(part: &str, field: &Field) -> Result<u64, String> {
    let (range, step) = match part.split_once('/') {
        Some((r, s)) => {
            let step: u32 = s
                .parse()
                .map_err(|_| format!("{}: step {s:?} is not a number", field.name))?;
            if step == 0 || step > field.max {
                return Err(format!(
                    "{}: step {step} must be 1-{}",
                    field.name, field.max
                ));
            }
            (r, Some(step))
        }
        None => (part, None),
    };
    let (lo, hi) = if range == "*" || range == "?" {
        if range == "?" && !matches!(field.name, "day of month" | "day of week") {
            return Err(format!("{}: '?' is only allowed in day fields", field.name));
        }
        (field.min, field.max)
    } else if let Some((a, b)) = range.split_once('-') {
        (value(a, field)?, value(b, field)?)
    } else {
        let v = value(range, field)?;
        // `a/n` runs from a to the maximum, like robfig/cron.
        (v, if step.is_some() { field.max } else { v })
    };
    if lo > hi {
        return Err(format!("{}: range {lo}-{hi} is empty", field.name));
    }
    let step = step.unwrap_or(1);
    let mut bits = 0u64;
    let mut v = lo;
    while v <= hi {
        bits |= 1 << v;
        v += step;
    }
    Ok(bits)
}

fn value(text: &str, field: &Field) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = field.names.iter().position(|n| *n == lower) {
        // Months are named from 1 (jan = 1), days of week from 0 (sun = 0).
        let base = if field.names.len() == 12 { 1 } else { 0 };
        return Ok(i as u32 + base);
    }
    let v: u32 = text.parse().map_err(|_| {
        if field.names.is_empty() {
            format!("{}: {text:?} is not a number", field.name)
        } else {
            format!(
                "{}: {text:?} is not a number or a name ({})",
                field.name,
                field.names.join(", ")
            )
        }
    })?;
    if v < field.min || v > field.max {
        return Err(format!(
            "{}: {v} is out of range {}-{}",
            field.name, field.min, field.max
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests;
