//! `describe`: a capture, its trigger, conditions, per-node jobs and files, and recent Events,
//! laid out like `kubectl describe`.

use std::fmt::Write as _;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use nightcap_api::PacketCapture;

use super::{
    age, human_bytes, human_duration, short_sha,
    table::{Rows, render},
    target, trigger_of,
};
use crate::backend::EventView;

/// The whole description.
pub fn describe(pc: &PacketCapture, events: &[EventView], now: Timestamp) -> String {
    let mut out = String::new();
    let st = pc.status.clone().unwrap_or_default();
    let spec = st.accepted_spec.as_ref().unwrap_or(&pc.spec);
    let field = |out: &mut String, k: &str, v: &str| {
        let _ = writeln!(out, "{:<14}{v}", format!("{k}:"));
    };
    field(&mut out, "Name", &pc.name_any());
    field(&mut out, "Namespace", &pc.namespace().unwrap_or_default());
    let labels: Vec<String> = pc
        .labels()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    field(
        &mut out,
        "Labels",
        &if labels.is_empty() {
            "<none>".into()
        } else {
            labels.join(",")
        },
    );
    field(
        &mut out,
        "Created",
        &time_and_age(pc.metadata.creation_timestamp.as_ref(), now),
    );
    field(&mut out, "Trigger", &trigger_line(&st.trigger));
    field(&mut out, "Target", &target(spec));
    field(&mut out, "Filter", &filter_line(pc));
    field(&mut out, "Window", &window(spec));
    field(
        &mut out,
        "Phase",
        &st.phase.map_or("Pending".into(), |p| format!("{p:?}")),
    );
    if let Some(m) = &st.message {
        field(&mut out, "Message", m);
    }
    field(
        &mut out,
        "Started",
        &time_and_age(st.start_time.as_ref(), now),
    );
    if st.completion_time.is_some() {
        field(
            &mut out,
            "Completed",
            &time_and_age(st.completion_time.as_ref(), now),
        );
    }
    let _ = writeln!(out, "Conditions:");
    if st.conditions.is_empty() {
        let _ = writeln!(out, "  <none>");
    } else {
        let rows = Rows {
            headers: vec!["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"],
            rows: st
                .conditions
                .iter()
                .map(|c| {
                    vec![
                        c.type_.clone(),
                        c.status.clone(),
                        c.reason.clone(),
                        age(Some(&c.last_transition_time), now),
                        c.message.clone(),
                    ]
                })
                .collect(),
        };
        indent(&mut out, &render(&rows), 2);
    }
    let _ = writeln!(out, "Nodes:");
    if st.nodes.is_empty() {
        let _ = writeln!(out, "  <none>");
    }
    for (node, n) in &st.nodes {
        let _ = writeln!(out, "  {node}:");
        let sub = |out: &mut String, k: &str, v: &str| {
            let _ = writeln!(out, "    {:<10}{v}", format!("{k}:"));
        };
        sub(&mut out, "Job", n.job.as_deref().unwrap_or("<none>"));
        sub(
            &mut out,
            "State",
            &n.state.map_or("<unknown>".into(), |s| format!("{s:?}")),
        );
        sub(
            &mut out,
            "Pods",
            &if n.pods.is_empty() {
                "<none>".into()
            } else {
                n.pods.join(", ")
            },
        );
        sub(
            &mut out,
            "Captured",
            &format!(
                "{} packets, {}, {} drops",
                n.packets,
                human_bytes(n.bytes),
                n.drops
            ),
        );
        if let Some(m) = &n.message {
            sub(&mut out, "Message", m);
        }
        if n.files.is_empty() {
            sub(&mut out, "Files", "<none>");
            continue;
        }
        let _ = writeln!(out, "    Files:");
        let rows = Rows {
            headers: vec!["FILE", "START", "END", "PACKETS", "SIZE", "SHA256"],
            rows: n
                .files
                .iter()
                .map(|f| {
                    vec![
                        f.key.rsplit('/').next().unwrap_or(&f.key).to_string(),
                        stamp(f.start.as_ref()),
                        stamp(f.end.as_ref()),
                        f.packets.to_string(),
                        human_bytes(f.bytes),
                        short_sha(f.sha256.as_deref()),
                    ]
                })
                .collect(),
        };
        indent(&mut out, &render(&rows), 6);
    }
    let _ = writeln!(out, "Events:");
    if events.is_empty() {
        let _ = writeln!(out, "  <none>");
    } else {
        let rows = Rows {
            headers: vec!["TYPE", "REASON", "AGE", "COUNT", "MESSAGE"],
            rows: events
                .iter()
                .rev()
                .take(10)
                .rev()
                .map(|e| {
                    vec![
                        e.type_.clone(),
                        e.reason.clone(),
                        e.last
                            .map_or("<unknown>".into(), |t| age(Some(&Time(t)), now)),
                        e.count.to_string(),
                        e.message.clone(),
                    ]
                })
                .collect(),
        };
        indent(&mut out, &render(&rows), 2);
    }
    out
}

fn indent(out: &mut String, text: &str, by: usize) {
    for line in text.lines() {
        let _ = writeln!(out, "{:by$}{line}", "");
    }
}

fn stamp(t: Option<&Time>) -> String {
    t.map_or("-".into(), |t| t.0.strftime("%H:%M:%S").to_string())
}

fn time_and_age(t: Option<&Time>, now: Timestamp) -> String {
    match t {
        None => "<not yet>".into(),
        Some(t) => format!("{} ({} ago)", t.0, age(Some(t), now)),
    }
}

fn trigger_line(t: &Option<nightcap_api::TriggerRef>) -> String {
    let Some(tr) = t else {
        return "<none> (created by hand)".into();
    };
    let mut s = trigger_of(Some(tr));
    if let Some(id) = &tr.event_id {
        let _ = write!(s, ", event {id}");
    }
    if let Some(k) = &tr.dedup_key {
        let _ = write!(s, ", dedup key {k}");
    }
    s
}

fn filter_line(pc: &PacketCapture) -> String {
    let rows =
        super::table::capture_rows(std::slice::from_ref(pc), true, false, Timestamp::UNIX_EPOCH);
    let filter = rows
        .rows
        .first()
        .and_then(|r| r.get(8))
        .cloned()
        .unwrap_or_default();
    match pc.spec.snap_len {
        Some(s) => format!("{filter} (snaplen {s})"),
        None => filter,
    }
}

fn window(spec: &nightcap_api::PacketCaptureSpec) -> String {
    let mut parts = Vec::new();
    if let Some(s) = &spec.start_time {
        parts.push(format!("from {}", s.0));
    }
    if let Some(e) = &spec.end_time {
        parts.push(format!("until {}", e.0));
    }
    if let Some(d) = &spec.duration {
        parts.push(format!("for {d}"));
    }
    if parts.is_empty() {
        parts.push(format!(
            "for {} (default)",
            human_duration(nightcap_api::validation::DEFAULT_DURATION)
        ));
    }
    if let Some(b) = spec.max_bytes {
        parts.push(format!("at most {}", human_bytes(b)));
    }
    if let Some(p) = spec.max_packets {
        parts.push(format!("at most {p} packets"));
    }
    parts.join(", ")
}
