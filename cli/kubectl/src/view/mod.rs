//! Pure views: objects (and `now`) in, text out. No I/O here.

pub mod describe;
pub mod table;

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use nightcap_api::{PacketCaptureSpec, TriggerRef};

/// kubectl's age: `45s`, `3m12s`, `25m`, `5h3m`, `20h`, `3d4h`, `30d`, `2y`.
pub fn age(t: Option<&Time>, now: Timestamp) -> String {
    let Some(t) = t else {
        return "<unknown>".into();
    };
    let secs = now.duration_since(t.0).as_secs().max(0) as u64;
    human_duration(Duration::from_secs(secs))
}

/// kubectl's `HumanDuration`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (m, h, day) = (s / 60, s / 3600, s / 86400);
    match s {
        0..120 => format!("{s}s"),
        120..600 if !s.is_multiple_of(60) => format!("{m}m{}s", s % 60),
        120..10800 => format!("{m}m"),
        10800..28800 if !m.is_multiple_of(60) => format!("{h}h{}m", m % 60),
        10800..172800 => format!("{h}h"),
        172800..691200 if !h.is_multiple_of(24) => format!("{day}d{}h", h % 24),
        _ if day < 730 => format!("{day}d"),
        _ => format!("{}y", day / 365),
    }
}

/// Bytes in binary units: `512B`, `1.5KiB`, `20.0MiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b}B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1}{}", UNITS[unit])
}

/// What a capture targets: its pod selector, or its nodes.
pub fn target(spec: &PacketCaptureSpec) -> String {
    if let Some(sel) = &spec.selector {
        let mut parts: Vec<String> = sel
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default().join(",");
            parts.push(match e.operator.as_str() {
                "Exists" => e.key.clone(),
                "DoesNotExist" => format!("!{}", e.key),
                op => format!("{} {} ({values})", e.key, op.to_lowercase()),
            });
        }
        return if parts.is_empty() {
            "pods: <all>".into()
        } else {
            format!("pods: {}", parts.join(","))
        };
    }
    if !spec.node_names.is_empty() {
        return format!("nodes: {}", spec.node_names.join(","));
    }
    if let Some(ns) = &spec.node_selector {
        let parts: Vec<String> = ns.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return format!("nodes: {}", parts.join(","));
    }
    "<none>".into()
}

/// `cron/nightly`, `webhook/latency-alert`, `manual`, or `<none>`.
pub fn trigger_of(t: Option<&TriggerRef>) -> String {
    match t {
        None => "<none>".into(),
        Some(t) => match &t.name {
            Some(n) => format!("{}/{n}", t.source),
            None => t.source.clone(),
        },
    }
}

/// The first 12 hex digits of a SHA-256 (like short image digests).
pub fn short_sha(sha: Option<&str>) -> String {
    sha.map_or("-".into(), |s| s.chars().take(12).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        for (secs, want) in [
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (192, "3m12s"),
            (300, "5m"),
            (1500, "25m"),
            (18180, "5h3m"),
            (72000, "20h"),
            (273600, "3d4h"),
            (2592000, "30d"),
            (63072000, "2y"),
        ] {
            assert_eq!(human_duration(Duration::from_secs(secs)), want, "{secs}s");
        }
    }

    #[test]
    fn sizes_in_binary_units() {
        for (b, want) in [
            (0, "0B"),
            (1023, "1023B"),
            (1536, "1.5KiB"),
            (20 << 20, "20.0MiB"),
            (3 << 30, "3.0GiB"),
        ] {
            assert_eq!(human_bytes(b), want);
        }
    }
}
