//! `create`: flags → a PacketCapture (pure), validated before anything is sent.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, Time,
};
use nightcap_api::{
    CaptureFilter, PacketCapture, PacketCaptureSpec, PortRange, Protocol, Rotation,
    ValidationErrors,
    quantity::format_duration,
    validation::{ValidationOptions, validate_packet_capture},
};

use crate::{
    args::CreateArgs,
    error::{Error, Result},
};

/// Label set on captures made by the plugin (who created it, for `get -l`).
pub const CREATED_BY_LABEL: &str = "nightcap.dev/created-by";

/// Builds the capture `args` describe in `namespace`, and validates it with the scheduler's
/// rules; `now` checks that an `--end` is in the future.
pub fn build(args: &CreateArgs, namespace: &str, now: Timestamp) -> Result<PacketCapture> {
    let mut errs = ValidationErrors::default();
    let mut spec = PacketCaptureSpec {
        expression: args.filter.clone(),
        snap_len: args.snaplen,
        duration: args.duration.map(format_duration),
        max_bytes: args.max_bytes,
        max_packets: args.max_packets,
        storage: args.storage.clone(),
        node_names: args.nodes.clone(),
        ttl_seconds_after_finished: args.ttl.map(|d| d.as_secs() as i64),
        ..PacketCaptureSpec::default()
    };
    if let Some(sel) = &args.selector {
        match parse_selector(sel) {
            Ok(s) => spec.selector = Some(s),
            Err(e) => errs.push("spec.selector", e),
        }
    }
    if let Some(ns) = &args.node_selector {
        match parse_equality_labels(ns) {
            Ok(m) => spec.node_selector = Some(m),
            Err(e) => errs.push("spec.nodeSelector", e),
        }
    }
    if spec.selector.is_none() && spec.node_names.is_empty() && spec.node_selector.is_none() {
        errs.push(
            "spec.selector",
            "say what to capture: -l/--selector for pods, or --node/--node-selector",
        );
    }
    if args.protocol.is_some() || !args.ports.is_empty() {
        spec.filters.push(filter(args, &mut errs));
    }
    for (flag, value, field) in [
        ("--start", &args.start, "spec.startTime"),
        ("--end", &args.end, "spec.endTime"),
    ] {
        let Some(v) = value else { continue };
        match v.parse::<Timestamp>() {
            Ok(t) if field == "spec.startTime" => spec.start_time = Some(Time(t)),
            Ok(t) => spec.end_time = Some(Time(t)),
            Err(e) => errs.push(field, format!("{flag} {v:?} is not an RFC 3339 time: {e}")),
        }
    }
    if args.rotate_size.is_some() || args.rotate_every.is_some() || args.max_files.is_some() {
        spec.rotation = Some(Rotation {
            max_file_bytes: args.rotate_size,
            max_file_seconds: args
                .rotate_every
                .map(|d| u32::try_from(d.as_secs().max(1)).unwrap_or(u32::MAX)),
            max_files: args.max_files,
        });
    }
    let mut pc = PacketCapture::new(&args.name, spec);
    pc.metadata.namespace = Some(namespace.to_string());
    pc.metadata.labels = Some(BTreeMap::from([(
        CREATED_BY_LABEL.to_string(),
        "kubectl-nightcap".to_string(),
    )]));
    let opts = ValidationOptions {
        now: Some(now),
        ..ValidationOptions::default()
    };
    if let Err(more) = validate_packet_capture(&pc, &opts) {
        errs.0.extend(more.0);
    }
    if errs.is_empty() {
        Ok(pc)
    } else {
        Err(Error::Invalid {
            name: args.name.clone(),
            errors: errs,
        })
    }
}

fn filter(args: &CreateArgs, errs: &mut ValidationErrors) -> CaptureFilter {
    let protocol = match args
        .protocol
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("any") => Protocol::Any,
        Some("tcp") => Protocol::Tcp,
        Some("udp") => Protocol::Udp,
        Some("icmp") => Protocol::Icmp,
        Some("icmpv6") => Protocol::Icmpv6,
        Some("sctp") => Protocol::Sctp,
        Some(_) => {
            errs.push(
                "spec.filters[0].protocol",
                "use TCP, UDP, ICMP, ICMPv6, SCTP or any",
            );
            Protocol::Any
        }
    };
    let mut f = CaptureFilter {
        protocol,
        ..CaptureFilter::default()
    };
    for (i, p) in args.ports.iter().enumerate() {
        let parsed = match p.split_once('-') {
            None => p.trim().parse::<u16>().map(|n| f.ports.push(n)),
            Some((a, b)) => a.trim().parse::<u16>().and_then(|from| {
                b.trim()
                    .parse::<u16>()
                    .map(|to| f.port_ranges.push(PortRange { from, to }))
            }),
        };
        if parsed.is_err() {
            errs.push(
                format!("spec.filters[0].ports[{i}]"),
                format!("{p:?} is not a port (1–65535) or a range like 8000-8080"),
            );
        }
    }
    f
}

/// `k=v,k2=v2` (node selectors take equality only).
pub fn parse_equality_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected key=value"))?;
        out.insert(
            k.trim().to_string(),
            v.trim_start_matches('=').trim().to_string(),
        );
    }
    Ok(out)
}

/// A label selector in kubectl syntax: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`,
/// `k`, `!k`, joined by commas.
pub fn parse_selector(s: &str) -> Result<LabelSelector, String> {
    let mut labels = BTreeMap::new();
    let mut exprs = Vec::new();
    let req = |key: &str, op: &str, values: Option<Vec<String>>| LabelSelectorRequirement {
        key: key.trim().to_string(),
        operator: op.to_string(),
        values,
    };
    for term in split_terms(s) {
        let t = term.trim();
        if t.is_empty() {
            return Err(format!("{s:?}: empty requirement"));
        }
        if let Some((k, v)) = t.split_once("!=") {
            exprs.push(req(k, "NotIn", Some(vec![v.trim().to_string()])));
        } else if let Some((k, v)) = t.split_once('=') {
            labels.insert(
                k.trim().to_string(),
                v.trim_start_matches('=').trim().to_string(),
            );
        } else if let Some(k) = t.strip_prefix('!') {
            exprs.push(req(k, "DoesNotExist", None));
        } else if let Some((k, op, rest)) = set_term(t) {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("{t:?}: expected a list like (a,b)"))?;
            let values = inner.split(',').map(|v| v.trim().to_string()).collect();
            exprs.push(req(k, op, Some(values)));
        } else if t.contains(char::is_whitespace) || t.contains(['(', ')']) {
            return Err(format!("{t:?}: not a label requirement"));
        } else {
            exprs.push(req(t, "Exists", None));
        }
    }
    Ok(LabelSelector {
        match_labels: (!labels.is_empty()).then_some(labels),
        match_expressions: (!exprs.is_empty()).then_some(exprs),
    })
}

fn set_term(t: &str) -> Option<(&str, &'static str, &str)> {
    for (word, op) in [(" notin ", "NotIn"), (" in ", "In")] {
        if let Some(i) = t.find(word) {
            return Some((&t[..i], op, &t[i + word.len()..]));
        }
    }
    None
}

/// Splits on commas outside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

#[cfg(test)]
mod tests;
