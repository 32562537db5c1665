//! Checks of the configuration file: names, duplicates, each manifest as the API server would
//! validate it, and fields the manifests' types do not know.

use std::collections::BTreeSet;

use kube::ResourceExt;
use nightcap_api::{
    ValidationErrors,
    quantity::parse_duration,
    validation::{
        ValidationOptions, validate_dns1123_label, validate_dns1123_subdomain, validate_labels,
        validate_packet_capture, validate_schedule, validate_trigger,
    },
};
use serde::Serialize;
use serde_json::Value;

use super::LocalConfig;

/// Every problem, one per line.
pub(super) fn describe(errs: &ValidationErrors) -> String {
    let mut out = match errs.0.len() {
        1 => "1 problem (nothing was started):".to_string(),
        n => format!("{n} problems (nothing was started):"),
    };
    for e in &errs.0 {
        out.push_str(&format!("\n  - {e}"));
    }
    out
}

/// Fields of the manifests that their types do not know (serde would drop them silently): the
/// parsed object serialized again must hold every key of the input.
pub(super) fn unknown_fields(raw: &Value, cfg: &LocalConfig) -> ValidationErrors {
    let mut errs = ValidationErrors::default();
    let mut section = |name: &str, typed: Vec<Value>| {
        let Some(items) = raw.get(name).and_then(Value::as_array) else {
            return;
        };
        for (i, (given, known)) in items.iter().zip(typed).enumerate() {
            diff(given, &known, &format!("{name}[{i}]"), &mut errs);
        }
    };
    section("captures", values(&cfg.captures));
    section("triggers", values(&cfg.triggers));
    section("schedules", values(&cfg.schedules));
    errs
}

fn values<T: Serialize>(items: &[T]) -> Vec<Value> {
    items
        .iter()
        .map(|i| serde_json::to_value(i).unwrap_or(Value::Null))
        .collect()
}

fn diff(given: &Value, known: &Value, path: &str, errs: &mut ValidationErrors) {
    match (given, known) {
        (Value::Object(g), Value::Object(k)) => {
            for (key, value) in g {
                let p = format!("{path}.{key}");
                match k.get(key) {
                    Some(kv) => diff(value, kv, &p, errs),
                    // Explicit nulls and empty values serialize to nothing; they are fine.
                    None if is_empty(value) => {}
                    None => errs.push(p, "unknown field"),
                }
            }
        }
        (Value::Array(g), Value::Array(k)) => {
            for (i, (gv, kv)) in g.iter().zip(k).enumerate() {
                diff(gv, kv, &format!("{path}[{i}]"), errs);
            }
        }
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Prefixes every path of `found` with `path.` and adds them to `errs`.
fn nest(found: Result<(), ValidationErrors>, path: &str, errs: &mut ValidationErrors) {
    if let Err(found) = found {
        for e in found.0 {
            errs.push(format!("{path}.{}", e.path), e.message);
        }
    }
}

fn names<'a>(
    section: &str,
    items: impl Iterator<Item = (String, String)> + 'a,
    errs: &mut ValidationErrors,
) {
    let mut seen = BTreeSet::new();
    for (i, (ns, name)) in items.enumerate() {
        let path = format!("{section}[{i}]");
        validate_dns1123_label(&ns, &format!("{path}.metadata.namespace"), errs);
        if !seen.insert((ns.clone(), name.clone())) {
            errs.push(
                format!("{path}.metadata.name"),
                format!("{ns}/{name} is listed twice"),
            );
        }
    }
}

impl LocalConfig {
    pub(super) fn check(&self) -> ValidationErrors {
        let mut errs = ValidationErrors::default();
        if self.output.trim().is_empty() {
            errs.push("output", "required: file:///dir or s3://bucket/prefix");
        }
        if let Some(node) = &self.node {
            validate_dns1123_subdomain(node, "node", &mut errs);
        }
        self.check_targets(&mut errs);
        let opts = ValidationOptions::default();
        for (i, pc) in self.captures.iter().enumerate() {
            nest(
                validate_packet_capture(pc, &opts),
                &format!("captures[{i}]"),
                &mut errs,
            );
        }
        for (i, t) in self.triggers.iter().enumerate() {
            nest(
                validate_trigger(t, &opts),
                &format!("triggers[{i}]"),
                &mut errs,
            );
        }
        for (i, s) in self.schedules.iter().enumerate() {
            nest(
                validate_schedule(s, &opts),
                &format!("schedules[{i}]"),
                &mut errs,
            );
        }
        let key = |ns: Option<String>, name: String| (ns.unwrap_or_default(), name);
        names(
            "captures",
            self.captures
                .iter()
                .map(|o| key(o.namespace(), o.name_any())),
            &mut errs,
        );
        names(
            "triggers",
            self.triggers
                .iter()
                .map(|o| key(o.namespace(), o.name_any())),
            &mut errs,
        );
        names(
            "schedules",
            self.schedules
                .iter()
                .map(|o| key(o.namespace(), o.name_any())),
            &mut errs,
        );
        if let Some(g) = &self.gateway {
            for (field, value) in [
                ("defaultExpiry", &g.default_expiry),
                ("maxExpiry", &g.max_expiry),
            ] {
                if let Some(v) = value
                    && parse_duration(v).is_err()
                {
                    errs.push(
                        format!("gateway.{field}"),
                        format!("{v:?} is not a duration (15m, 24h, 7d)"),
                    );
                }
            }
            if g.tokens.is_empty() && g.tokens_file.is_none() {
                errs.push(
                    "gateway.tokens",
                    "list at least one token (or tokensFile): every request needs one",
                );
            }
        }
        errs
    }

    fn check_targets(&self, errs: &mut ValidationErrors) {
        let mut seen = BTreeSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let path = format!("targets[{i}]");
            validate_dns1123_subdomain(&t.name, &format!("{path}.name"), errs);
            validate_dns1123_label(&t.namespace, &format!("{path}.namespace"), errs);
            validate_labels(&t.labels, &format!("{path}.labels"), errs);
            if let Some(node) = &t.node {
                validate_dns1123_subdomain(node, &format!("{path}.node"), errs);
            }
            if t.netns.is_none() && t.interface.is_none() {
                errs.push(
                    path.clone(),
                    "needs netns (a named network namespace) or interface (of the host)",
                );
            }
            for (field, value) in [("netns", &t.netns), ("interface", &t.interface)] {
                if let Some(v) = value
                    && (v.is_empty() || v.contains('/') || v.len() > 255)
                {
                    errs.push(format!("{path}.{field}"), "must be a plain name");
                }
            }
            if !seen.insert((t.namespace.as_str(), t.name.as_str())) {
                errs.push(
                    format!("{path}.name"),
                    format!("{}/{} is listed twice", t.namespace, t.name),
                );
            }
        }
    }
}
