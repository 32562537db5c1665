//! Kubernetes time formats: `metav1.Time` (RFC 3339, whole seconds, `Z`), `metav1.MicroTime`
//! (six fraction digits) and the OpenAPI `date-time` format that CRD schemas check.

use jiff::{
    Timestamp,
    civil::{Date, DateTime},
    tz::{Offset, TimeZone},
};

/// `metav1.Time`: RFC 3339 in UTC with whole seconds (`2026-12-02T00:27:15Z`); the fraction is
/// cut, not rounded.
pub(crate) fn timestamp(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `metav1.MicroTime`: RFC 3339 in UTC with six fraction digits (`2026-12-02T00:27:15.123456Z`).
pub(crate) fn micro_timestamp(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// An RFC 3339 `date-time` (section 5.6): `YYYY-MM-DD`, `T` (or `t`, or a space), `hh:mm:ss`, an
/// optional fraction of any length (nanoseconds kept), then `Z`, `z` or `±hh:mm` (hh ≤ 23; `−`
/// U+2212 counts as minus). Second 60, a leap second, is read as second 59. `None` also for
/// the valid times past the last instant a [`Timestamp`] holds (9999-12-30T22:00:00Z).
pub(crate) fn parse_date_time(s: &str) -> Option<Timestamp> {
    let (wall, offset) = parse(s)?;
    wall.to_zoned(TimeZone::fixed(offset))
        .ok()
        .map(|z| z.timestamp())
}

/// Whether `s` is an RFC 3339 `date-time` as [`parse_date_time`] reads it, up to
/// 9999-12-31T23:59:59.999999999 in any offset.
pub(crate) fn is_date_time(s: &str) -> bool {
    parse(s).is_some()
}

/// The wall-clock time and offset of an RFC 3339 `date-time`.
fn parse(s: &str) -> Option<(DateTime, Offset)> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        b[from..from + len].iter().try_fold(0i64, |v, c| {
            c.is_ascii_digit().then(|| v * 10 + i64::from(c - b'0'))
        })
    };
    let separators = b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't' | b' ')
        && b[13] == b':'
        && b[16] == b':';
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !separators || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let date = Date::new(
        i16::try_from(num(0, 4)?).ok()?,
        i8::try_from(num(5, 2)?).ok()?,
        i8::try_from(num(8, 2)?).ok()?,
    )
    .ok()?;
    let mut rest = &b[19..];
    let mut nanos = 0i64;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let kept = digits.min(9);
        nanos = num(20, kept)? * 10i64.pow(u32::try_from(9 - kept).ok()?);
        rest = &fraction[digits..];
    }
    let (negative, numeric) = match rest {
        [b'Z' | b'z'] => (false, None),
        [b'+', o @ ..] => (false, Some(o)),
        [b'-', o @ ..] | [0xE2, 0x88, 0x92, o @ ..] => (true, Some(o)),
        _ => return None,
    };
    let offset_seconds = match numeric {
        None => 0,
        Some(&[h1, h2, b':', m1, m2]) => {
            let digit = |c: u8| c.is_ascii_digit().then(|| i32::from(c - b'0'));
            let (h, m) = (digit(h1)? * 10 + digit(h2)?, digit(m1)? * 10 + digit(m2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let seconds = h * 3600 + m * 60;
            if negative { -seconds } else { seconds }
        }
        Some(_) => return None,
    };
    let wall = DateTime::new(
        date.year(),
        date.month(),
        date.day(),
        i8::try_from(hour).ok()?,
        i8::try_from(minute).ok()?,
        i8::try_from(second.min(59)).ok()?,
        i32::try_from(nanos).ok()?,
    )
    .ok()?;
    Some((wall, Offset::from_seconds(offset_seconds).ok()?))
}

#[cfg(test)]
mod tests;
