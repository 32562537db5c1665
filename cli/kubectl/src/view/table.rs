//! `get` tables: pure functions from objects (and `now`) to rows, and kubectl-style rendering
//! (upper-case headers, columns three spaces apart, no borders).

use comfy_table::{CellAlignment, ColumnConstraint, ContentArrangement, Table, presets::NOTHING};
use jiff::Timestamp;
use kube::ResourceExt;
use nightcap_api::{CaptureSchedule, CaptureTrigger, PacketCapture};

use super::{age, human_bytes, target, trigger_of};

/// Rows with their headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rows {
    /// Column names, upper case.
    pub headers: Vec<&'static str>,
    /// One row per object.
    pub rows: Vec<Vec<String>>,
}

/// Rows of `kubectl nightcap get`: NAME, PHASE, NODES, PACKETS, BYTES, FILES, AGE; `wide` adds
/// TARGET, FILTER and TRIGGER; `namespaces` puts NAMESPACE first (for `-A`).
pub fn capture_rows(items: &[PacketCapture], wide: bool, namespaces: bool, now: Timestamp) -> Rows {
    let mut headers = vec!["NAME", "PHASE", "NODES", "PACKETS", "BYTES", "FILES", "AGE"];
    if wide {
        headers.extend(["TARGET", "FILTER", "TRIGGER"]);
    }
    let rows = items
        .iter()
        .map(|pc| {
            let st = pc.status.clone().unwrap_or_default();
            let files: usize = st.nodes.values().map(|n| n.files.len()).sum();
            let packets = st
                .packets
                .unwrap_or_else(|| st.nodes.values().map(|n| n.packets).sum());
            let bytes = st
                .bytes
                .unwrap_or_else(|| st.nodes.values().map(|n| n.bytes).sum());
            let nodes = st.node_count.map_or(st.nodes.len(), |n| n as usize);
            let mut row = vec![
                pc.name_any(),
                st.phase.map_or("Pending".into(), |p| format!("{p:?}")),
                nodes.to_string(),
                packets.to_string(),
                human_bytes(bytes),
                files.to_string(),
                age(pc.metadata.creation_timestamp.as_ref(), now),
            ];
            if wide {
                row.push(target(&pc.spec));
                row.push(filter_text(pc));
                row.push(trigger_of(st.trigger.as_ref()));
            }
            row
        })
        .collect();
    with_namespace(
        Rows { headers, rows },
        items.iter().map(|o| o.namespace()),
        namespaces,
    )
}

fn filter_text(pc: &PacketCapture) -> String {
    let mut parts = Vec::new();
    for f in &pc.spec.filters {
        let mut s = format!("{:?}", f.protocol).to_lowercase();
        let ports: Vec<String> = f
            .ports
            .iter()
            .map(u16::to_string)
            .chain(f.port_ranges.iter().map(|r| format!("{}-{}", r.from, r.to)))
            .collect();
        if !ports.is_empty() {
            s.push_str(&format!(" port {}", ports.join(",")));
        }
        parts.push(s);
    }
    if let Some(e) = &pc.spec.expression {
        parts.push(e.clone());
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(" and ")
    }
}

/// Rows of `get triggers`: NAME, SOURCES, CREATED, DEDUPLICATED, LAST, AGE.
pub fn trigger_rows(items: &[CaptureTrigger], namespaces: bool, now: Timestamp) -> Rows {
    let headers = vec!["NAME", "SOURCES", "CREATED", "DEDUPLICATED", "LAST", "AGE"];
    let rows = items
        .iter()
        .map(|t| {
            let st = t.status.clone().unwrap_or_default();
            let sources: Vec<String> = t
                .spec
                .sources
                .nats_subjects
                .iter()
                .map(|s| format!("nats:{s}"))
                .chain(
                    t.spec
                        .sources
                        .webhook_paths
                        .iter()
                        .map(|p| format!("webhook:{p}")),
                )
                .collect();
            vec![
                t.name_any(),
                if sources.is_empty() {
                    "<none>".into()
                } else {
                    sources.join(",")
                },
                st.created.to_string(),
                st.deduplicated.to_string(),
                st.last_triggered_time
                    .as_ref()
                    .map_or("<never>".into(), |t| age(Some(t), now)),
                age(t.metadata.creation_timestamp.as_ref(), now),
            ]
        })
        .collect();
    with_namespace(
        Rows { headers, rows },
        items.iter().map(|o| o.namespace()),
        namespaces,
    )
}

/// Rows of `get schedules`: NAME, SCHEDULE, SUSPEND, ACTIVE, LAST SCHEDULE, AGE (CronJob's).
pub fn schedule_rows(items: &[CaptureSchedule], namespaces: bool, now: Timestamp) -> Rows {
    let headers = vec![
        "NAME",
        "SCHEDULE",
        "SUSPEND",
        "ACTIVE",
        "LAST SCHEDULE",
        "AGE",
    ];
    let rows = items
        .iter()
        .map(|s| {
            let st = s.status.clone().unwrap_or_default();
            vec![
                s.name_any(),
                s.spec.schedule.clone(),
                if s.spec.suspend { "True" } else { "False" }.into(),
                st.active.len().to_string(),
                st.last_schedule_time
                    .as_ref()
                    .map_or("<none>".into(), |t| age(Some(t), now)),
                age(s.metadata.creation_timestamp.as_ref(), now),
            ]
        })
        .collect();
    with_namespace(
        Rows { headers, rows },
        items.iter().map(|o| o.namespace()),
        namespaces,
    )
}

fn with_namespace(
    mut rows: Rows,
    namespaces_of: impl Iterator<Item = Option<String>>,
    on: bool,
) -> Rows {
    if on {
        rows.headers.insert(0, "NAMESPACE");
        for (row, ns) in rows.rows.iter_mut().zip(namespaces_of) {
            row.insert(0, ns.unwrap_or_default());
        }
    }
    rows
}

/// Renders rows like `kubectl get`. No rows: kubectl's "No resources found" goes to stderr,
/// so this returns an empty string.
pub fn render(rows: &Rows) -> String {
    if rows.rows.is_empty() {
        return String::new();
    }
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(rows.headers.clone());
    for r in &rows.rows {
        table.add_row(r.clone());
    }
    let last = rows.headers.len().saturating_sub(1);
    for (i, col) in table.column_iter_mut().enumerate() {
        col.set_padding((0, if i == last { 0 } else { 3 }));
        col.set_cell_alignment(CellAlignment::Left);
        col.set_constraint(ColumnConstraint::ContentWidth);
    }
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
