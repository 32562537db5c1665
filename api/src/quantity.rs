//! Durations (`90s`, `1h30m`) and byte sizes (`10MB`, `64KiB`) as users type them.
//!
//! This is the one grammar of every duration and size nightcap reads, in flags and in resource
//! fields. Durations follow Go's `time.ParseDuration` (what Kubernetes users know), restricted
//! to non-negative values, plus `d` for days (`7d`, the longest pre-signed URL). Sizes accept
//! plain bytes, SI (`kB`, `MB`, `GB`, `TB`; powers of 1000) and binary (`KiB`, `MiB`, `GiB`,
//! `TiB`; powers of 1024) suffixes, and Kubernetes-style `Ki`/`Mi`/`Gi`. Flags take them through
//! clap with `value_parser = parse_duration` / `parse_size`.

use std::time::Duration;

/// Why a duration or size could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Empty input.
    #[error("empty value")]
    Empty,
    /// A number was expected at a position.
    #[error("expected a number at position {pos} in {input:?}")]
    ExpectedNumber {
        /// The whole input.
        input: String,
        /// Byte offset.
        pos: usize,
    },
    /// The unit is not known.
    #[error("unknown unit {unit:?} in {input:?} (use {hint})")]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The unit found.
        unit: String,
        /// Accepted units.
        hint: &'static str,
    },
    /// The value does not fit.
    #[error("{input:?} is too large")]
    Overflow {
        /// The whole input.
        input: String,
    },
}

const DURATION_UNITS: &str = "ns, us, ms, s, m, h or d, e.g. 90s, 1h30m or 7d";
const SIZE_UNITS: &str = "B, kB, MB, GB, TB, KiB, MiB, GiB, TiB, e.g. 10MB or 64KiB";

/// Parses a duration: one or more `<number><unit>` pairs (`1h30m`, `1.5s`, `250ms`, `7d`).
/// A bare `0` is accepted.
pub fn parse_duration(input: &str) -> Result<Duration, QuantityError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_ns: u128 = 0;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let number = &s[start..i];
        if number.is_empty() || number == "." {
            return Err(QuantityError::ExpectedNumber {
                input: input.to_owned(),
                pos: start,
            });
        }
        let unit_start = i;
        while i < bytes.len() && !(bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let unit = &s[unit_start..i];
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            _ => {
                return Err(QuantityError::UnknownUnit {
                    input: input.to_owned(),
                    unit: unit.to_owned(),
                    hint: DURATION_UNITS,
                });
            }
        };
        total_ns = total_ns
            .checked_add(scaled(number, scale, input)?)
            .ok_or_else(|| QuantityError::Overflow {
                input: input.to_owned(),
            })?;
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| QuantityError::Overflow {
        input: input.to_owned(),
    })?;
    // The remainder is below one second, so it fits in u32.
    let nanos = (total_ns % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// `number` (digits with an optional fraction) times `scale`, rounded down.
fn scaled(number: &str, scale: u128, input: &str) -> Result<u128, QuantityError> {
    let overflow = || QuantityError::Overflow {
        input: input.to_owned(),
    };
    let bad = || QuantityError::ExpectedNumber {
        input: input.to_owned(),
        pos: 0,
    };
    let (int, frac) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if frac.contains('.') {
        return Err(bad());
    }
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| overflow())?
    };
    let mut value = int.checked_mul(scale).ok_or_else(overflow)?;
    let mut div = 1u128;
    for d in frac.bytes().take(18) {
        div *= 10;
        value = value
            .checked_add(u128::from(d - b'0') * scale / div)
            .ok_or_else(overflow)?;
    }
    Ok(value)
}

/// Formats a duration the way [`parse_duration`] reads it (`1h30m`, `90s` → `1m30s`).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 && d.subsec_nanos() == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let h = secs / 3600;
    secs %= 3600;
    let m = secs / 60;
    secs %= 60;
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    let ms = d.subsec_millis();
    if secs > 0 || ms > 0 {
        if ms > 0 {
            out.push_str(&format!("{secs}.{ms:03}s"));
        } else {
            out.push_str(&format!("{secs}s"));
        }
    }
    out
}

/// Parses a byte size: `1048576`, `10MB`, `64KiB`, `1Gi`.
pub fn parse_size(input: &str) -> Result<u64, QuantityError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if number.is_empty() {
        return Err(QuantityError::ExpectedNumber {
            input: input.to_owned(),
            pos: 0,
        });
    }
    let scale: u128 = match unit.trim() {
        "" | "B" | "b" => 1,
        "k" | "kB" | "KB" | "K" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "T" | "TB" => 1_000_000_000_000,
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        "Ti" | "TiB" => 1 << 40,
        other => {
            return Err(QuantityError::UnknownUnit {
                input: input.to_owned(),
                unit: other.to_owned(),
                hint: SIZE_UNITS,
            });
        }
    };
    let value = scaled(number, scale, input)?;
    u64::try_from(value).map_err(|_| QuantityError::Overflow {
        input: input.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("0", Some(Duration::ZERO)),
            ("90s", Some(Duration::from_secs(90))),
            ("1h30m", Some(Duration::from_secs(5400))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("250ms", Some(Duration::from_millis(250))),
            (
                "2h45m30s",
                Some(Duration::from_secs(2 * 3600 + 45 * 60 + 30)),
            ),
            ("10us", Some(Duration::from_micros(10))),
            ("7ns", Some(Duration::from_nanos(7))),
            ("", None),
            ("5", None),
            ("7d", Some(Duration::from_secs(7 * 86_400))),
            ("1d12h", Some(Duration::from_secs(36 * 3600))),
            ("5w", None),
            ("m", None),
            ("-5s", None),
            ("1..5s", None),
            ("99999999999999999999999h", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input).ok(), *want, "input {input:?}");
        }
    }

    #[test]
    fn duration_round_trip() {
        for secs in [0u64, 1, 59, 60, 61, 3599, 3600, 5400, 86_400] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse_duration(&format_duration(d)).ok(), Some(d), "{secs}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1048576", Some(1_048_576)),
            ("10MB", Some(10_000_000)),
            ("10M", Some(10_000_000)),
            ("64KiB", Some(65_536)),
            ("64Ki", Some(65_536)),
            ("1.5GiB", Some(1_610_612_736)),
            ("2GB", Some(2_000_000_000)),
            ("100 MB", Some(100_000_000)),
            ("", None),
            ("MB", None),
            ("10XB", None),
            ("-1", None),
            ("99999999999TiB", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input).ok(), *want, "input {input:?}");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let err = parse_duration("5w").expect_err("weeks are no unit");
        assert!(err.to_string().contains("unknown unit \"w\""), "{err}");
        assert!(err.to_string().contains("7d"), "{err}");
        let err = parse_size("10XB").expect_err("XB is no unit");
        assert!(err.to_string().contains("MiB"), "{err}");
    }
}
