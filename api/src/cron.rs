//! Cron expressions with Kubernetes CronJob semantics (the robfig/cron standard parser).
//!
//! Five fields `minute hour day-of-month month day-of-week`, or a macro (`@yearly`/`@annually`,
//! `@monthly`, `@weekly`, `@daily`/`@midnight`, `@hourly`). Fields take `*`, `?` (day fields),
//! numbers, names (`jan`–`dec`, `sun`–`sat`), ranges `a-b`, steps `*/n`, `a-b/n`, `a/n` (from `a`
//! to the field's maximum) and lists. Day of week is 0–7 with both 0 and 7 meaning Sunday. When
//! both day fields are restricted a time matches if EITHER matches (classic cron; the `cron` crate
//! ANDs them and numbers Sunday 1, which is why nightcap parses schedules itself).

use std::fmt;

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
        let bit = |set: u64, v: u32| v < 64 && set & (1u64 << v) != 0;
        if !bit(self.minutes, minute) || !bit(self.hours, hour) || !bit(self.months, month) {
            return false;
        }
        let dom = bit(self.days_of_month, day);
        let dw = bit(self.days_of_week, dow);
        if self.dom_star || self.dow_star {
            dom && dw
        } else {
            dom || dw
        }
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }
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
mod tests {
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
}
