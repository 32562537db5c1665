//! Server-side printing (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), which
//! `kubectl get` asks for: built-in columns for the kinds we serve, `additionalPrinterColumns`
//! (simple JSONPath) for custom resources.

use std::sync::Arc;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::{
    resources::{Builtin, ResourceType},
    server::resource::partial_metadata,
    time::parse_date_time,
};

fn age(ts: &Value) -> String {
    let Some(t) = ts.as_str().and_then(parse_date_time) else {
        return "<unknown>".into();
    };
    let secs = Timestamp::now().duration_since(t).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 3 => format!("{}m", s / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for part in path
        .trim_start_matches('.')
        .split('.')
        .filter(|p| !p.is_empty())
    {
        let (field, index) = match part.split_once('[') {
            Some((f, rest)) => (f, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if !field.is_empty() {
            cur = cur.get(field)?;
        }
        if let Some(i) = index {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

fn cell(v: Option<&Value>) -> Value {
    match v {
        None | Some(Value::Null) => json!("<none>"),
        Some(Value::String(s)) => json!(s),
        Some(other) => other.clone(),
    }
}

fn col(name: &str, ty: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": name, "priority": 0})
}

fn columns(rt: &ResourceType) -> Vec<Value> {
    let c = |names: &[&str]| names.iter().map(|n| col(n, "string")).collect::<Vec<_>>();
    match rt.builtin {
        Some(Builtin::Pod) => c(&["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node"]),
        Some(Builtin::Node) => c(&["Name", "Status", "Roles", "Age", "Version"]),
        Some(Builtin::Job) => c(&["Name", "Status", "Completions", "Duration", "Age"]),
        Some(Builtin::Namespace) => c(&["Name", "Status", "Age"]),
        Some(Builtin::Secret) => c(&["Name", "Type", "Data", "Age"]),
        Some(Builtin::CoreEvent) => c(&["Last Seen", "Type", "Reason", "Object", "Message"]),
        Some(_) => c(&["Name", "Age"]),
        None if rt.printer_columns.is_empty() => c(&["Name", "Age"]),
        None => {
            let mut cols = vec![col("Name", "string")];
            for pc in &rt.printer_columns {
                cols.push(json!({
                    "name": pc["name"], "type": pc["type"].as_str().unwrap_or("string"),
                    "format": pc["format"].as_str().unwrap_or(""), "description": pc["description"].as_str().unwrap_or(""),
                    "priority": pc["priority"].as_i64().unwrap_or(0),
                }));
            }
            cols
        }
    }
}

fn job_status(o: &Value) -> &'static str {
    let conds = o["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let has = |t: &str| {
        conds
            .iter()
            .any(|c| c["type"] == t && c["status"] == "True")
    };
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if !o["metadata"]["deletionTimestamp"].is_null() {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else {
        "Running"
    }
}

fn job_duration(o: &Value) -> String {
    let t = |k: &str| o["status"][k].as_str().and_then(parse_date_time);
    match (t("startTime"), t("completionTime")) {
        (Some(a), Some(b)) => format!("{}s", b.duration_since(a).as_secs()),
        (Some(_), None) => age(&o["status"]["startTime"]),
        _ => String::new(),
    }
}

fn cells(rt: &ResourceType, o: &Value) -> Vec<Value> {
    let m = &o["metadata"];
    let name = json!(m["name"]);
    let created = age(&m["creationTimestamp"]);
    match rt.builtin {
        Some(Builtin::Pod) => {
            let cs = o["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = cs.iter().filter(|c| c["ready"] == true).count();
            let restarts: i64 = cs.iter().filter_map(|c| c["restartCount"].as_i64()).sum();
            // Like the real printer: the container's reason (Completed, Error, CrashLoopBackOff)
            // wins over the phase.
            let reason = cs.iter().find_map(|c| {
                c["state"]["terminated"]["reason"]
                    .as_str()
                    .or(c["state"]["waiting"]["reason"].as_str())
            });
            let status = if !m["deletionTimestamp"].is_null() {
                "Terminating".to_string()
            } else {
                reason
                    .or(o["status"]["phase"].as_str())
                    .unwrap_or("Pending")
                    .to_string()
            };
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(status),
                json!(restarts),
                json!(created),
                cell(o["status"].get("podIP")),
                cell(o["spec"].get("nodeName")),
            ]
        }
        Some(Builtin::Node) => {
            let ready = o["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .map(|c| {
                    if c["status"] == "True" {
                        "Ready"
                    } else {
                        "NotReady"
                    }
                })
                .unwrap_or("Unknown");
            vec![
                name,
                json!(ready),
                json!("<none>"),
                json!(created),
                cell(o["status"]["nodeInfo"].get("kubeletVersion")),
            ]
        }
        Some(Builtin::Job) => {
            let done = o["status"]["succeeded"].as_i64().unwrap_or(0);
            let want = o["spec"]["completions"].as_i64().unwrap_or(1);
            vec![
                name,
                json!(job_status(o)),
                json!(format!("{done}/{want}")),
                json!(job_duration(o)),
                json!(created),
            ]
        }
        Some(Builtin::Namespace) => vec![name, cell(o["status"].get("phase")), json!(created)],
        Some(Builtin::Secret) => {
            let n = o["data"].as_object().map_or(0, |d| d.len());
            vec![name, cell(o.get("type")), json!(n), json!(created)]
        }
        Some(Builtin::CoreEvent) => {
            let io = &o["involvedObject"];
            vec![
                json!(age(o
                    .get("lastTimestamp")
                    .unwrap_or(&m["creationTimestamp"]))),
                cell(o.get("type")),
                cell(o.get("reason")),
                json!(format!(
                    "{}/{}",
                    io["kind"].as_str().unwrap_or("").to_lowercase(),
                    io["name"].as_str().unwrap_or("")
                )),
                cell(o.get("message")),
            ]
        }
        Some(_) => vec![name, json!(created)],
        None if rt.printer_columns.is_empty() => vec![name, json!(created)],
        None => {
            let mut out = vec![name];
            for pc in &rt.printer_columns {
                let v = json_path(o, pc["jsonPath"].as_str().unwrap_or(""));
                out.push(if pc["type"] == "date" {
                    v.map_or(json!("<none>"), |v| json!(age(v)))
                } else {
                    cell(v)
                });
            }
            out
        }
    }
}

/// A `meta.k8s.io/v1` Table of `items`.
pub(crate) fn table(
    rt: &ResourceType,
    items: &[Arc<Value>],
    rv: &str,
    cont: Option<&str>,
    include: &str,
) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let object = match include {
                "None" => Value::Null,
                "Object" => (**o).clone(),
                _ => partial_metadata(o),
            };
            json!({"cells": cells(rt, o), "object": object})
        })
        .collect();
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": columns(rt), "rows": rows})
}
