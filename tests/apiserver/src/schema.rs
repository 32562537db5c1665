//! Structural-schema handling for custom resources, in the order the real server applies it:
//! prune unknown fields, drop nulls of non-nullable fields, apply defaults, then validate
//! (types, required, enum, minimum/maximum, lengths, item counts, patterns, formats,
//! allOf/anyOf/oneOf/not, list-type set/map uniqueness, int-or-string).

use serde_json::{Map, Value};

use crate::{
    status::{Cause, show_value},
    time::is_date_time,
};

/// What schema processing found.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Validation errors (422).
    pub errors: Vec<Cause>,
    /// Pruned unknown fields (warnings, or 400 with `fieldValidation=Strict`).
    pub unknown: Vec<String>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(want: &str, v: &Value) -> bool {
    match want {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    }
}

fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "date-time" => is_date_time(s),
        "date" => jiff::civil::Date::strptime("%Y-%m-%d", s).is_ok(),
        "uuid" => uuid::Uuid::parse_str(s).is_ok(),
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        _ => true,
    }
}

/// Process `value` (the whole object) against a CRD version's `openAPIV3Schema`.
pub(crate) fn process_root(value: &mut Value, schema: &Value) -> Outcome {
    let mut out = Outcome::default();
    let Some(obj) = value.as_object_mut() else {
        out.errors
            .push(Cause::new("FieldValueTypeInvalid", "", "must be an object"));
        return out;
    };
    let props = schema["properties"].as_object();
    let keys: Vec<String> = obj.keys().cloned().collect();
    for k in keys {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match props.and_then(|p| p.get(&k)) {
            Some(s) => {
                let mut child = obj.remove(&k).unwrap_or(Value::Null);
                if child.is_null() && s["nullable"].as_bool() != Some(true) {
                    continue;
                }
                process(&mut child, s, &k, &mut out);
                obj.insert(k, child);
            }
            None if schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true) => {}
            None => {
                obj.remove(&k);
                out.unknown.push(k);
            }
        }
    }
    apply_defaults_and_required(obj, schema, "", &mut out);
    out
}

fn apply_defaults_and_required(
    obj: &mut Map<String, Value>,
    schema: &Value,
    path: &str,
    out: &mut Outcome,
) {
    if let Some(props) = schema["properties"].as_object() {
        for (k, s) in props {
            if !obj.contains_key(k)
                && let Some(d) = s.get("default")
            {
                let mut d = d.clone();
                process(&mut d, s, &join(path, k), out);
                obj.insert(k.clone(), d);
            }
        }
    }
    if let Some(req) = schema["required"].as_array() {
        for r in req.iter().filter_map(Value::as_str) {
            if !obj.contains_key(r) {
                out.errors.push(Cause::required(join(path, r)));
            }
        }
    }
}

fn process(v: &mut Value, s: &Value, path: &str, out: &mut Outcome) {
    if v.is_null() {
        if s["nullable"].as_bool() != Some(true) {
            out.errors
                .push(type_error(path, v, s["type"].as_str().unwrap_or("object")));
        }
        return;
    }
    let int_or_string = s["x-kubernetes-int-or-string"].as_bool() == Some(true);
    if int_or_string {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            out.errors.push(type_error(path, v, "integer-or-string"));
            return;
        }
    } else if let Some(t) = s["type"].as_str()
        && !type_ok(t, v)
    {
        out.errors.push(type_error(path, v, t));
        return;
    }
    match v {
        Value::Object(obj) => process_object(obj, s, path, out),
        Value::Array(items) => process_array(items, s, path, out),
        Value::String(st) => check_string(st, s, path, out),
        Value::Number(_) => check_number(v, s, path, out),
        _ => {}
    }
    if let Some(e) = s["enum"].as_array()
        && !e.contains(v)
    {
        let allowed: Vec<String> = e.iter().map(show_value).collect();
        out.errors.push(Cause::new(
            "FieldValueNotSupported",
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                show_value(v),
                allowed.join(", ")
            ),
        ));
    }
    check_combinators(v, s, path, out);
}

fn type_error(path: &str, v: &Value, want: &str) -> Cause {
    let shown = if v.is_string() {
        show_value(v)
    } else {
        format!("{:?}", type_name(v))
    };
    Cause::new(
        "FieldValueTypeInvalid",
        path,
        format!(
            "Invalid value: {shown}: {path} in body must be of type {want}: {:?}",
            type_name(v)
        ),
    )
}

fn process_object(obj: &mut Map<String, Value>, s: &Value, path: &str, out: &mut Outcome) {
    let preserve = s["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true);
    let embedded = s["x-kubernetes-embedded-resource"].as_bool() == Some(true);
    let props = s["properties"].as_object();
    let additional = s.get("additionalProperties");
    let keys: Vec<String> = obj.keys().cloned().collect();
    for k in keys {
        let child_path = join(path, &k);
        let child_schema = props.and_then(|p| p.get(&k)).or(match additional {
            Some(a) if a.is_object() => Some(a),
            _ => None,
        });
        match child_schema {
            Some(cs) => {
                let mut child = obj.remove(&k).unwrap_or(Value::Null);
                if child.is_null() && cs["nullable"].as_bool() != Some(true) {
                    continue;
                }
                process(&mut child, cs, &child_path, out);
                obj.insert(k, child);
            }
            None if preserve || additional == Some(&Value::Bool(true)) => {}
            None if embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") => {}
            None => {
                obj.remove(&k);
                out.unknown.push(child_path);
            }
        }
    }
    apply_defaults_and_required(obj, s, path, out);
    let n = obj.len() as u64;
    if let Some(max) = s["maxProperties"].as_u64().filter(|m| n > *m) {
        out.errors.push(Cause::new(
            "FieldValueTooMany",
            path,
            format!("Too many: {n}: must have at most {max} items"),
        ));
    }
    if let Some(min) = s["minProperties"].as_u64().filter(|m| n < *m) {
        out.errors.push(Cause::invalid(
            path,
            &Value::from(n),
            format!("{path} in body should have at least {min} properties"),
        ));
    }
}

fn process_array(items: &mut [Value], s: &Value, path: &str, out: &mut Outcome) {
    if let Some(is) = s.get("items").filter(|i| i.is_object()) {
        for (i, item) in items.iter_mut().enumerate() {
            process(item, is, &format!("{path}[{i}]"), out);
        }
    }
    let n = items.len() as u64;
    if let Some(max) = s["maxItems"].as_u64().filter(|m| n > *m) {
        out.errors.push(Cause::new(
            "FieldValueTooMany",
            path,
            format!("Too many: {n}: must have at most {max} items"),
        ));
    }
    if let Some(min) = s["minItems"].as_u64().filter(|m| n < *m) {
        out.errors.push(Cause::invalid(
            path,
            &Value::from(n),
            format!("{path} in body should have at least {min} items"),
        ));
    }
    let list_type = s["x-kubernetes-list-type"].as_str();
    if list_type == Some("set") || s["uniqueItems"].as_bool() == Some(true) {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                out.errors.push(Cause::new(
                    "FieldValueDuplicate",
                    format!("{path}[{i}]"),
                    format!("Duplicate value: {}", show_value(item)),
                ));
            }
        }
    }
    if list_type == Some("map") {
        let keys: Vec<&str> = s["x-kubernetes-list-map-keys"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let key_of = |v: &Value| -> Vec<Value> { keys.iter().map(|k| v[*k].clone()).collect() };
        for (i, item) in items.iter().enumerate() {
            let k = key_of(item);
            if items[..i].iter().any(|o| key_of(o) == k) {
                let shown: Map<String, Value> = keys
                    .iter()
                    .zip(k.iter())
                    .map(|(a, b)| (a.to_string(), b.clone()))
                    .collect();
                out.errors.push(Cause::new(
                    "FieldValueDuplicate",
                    format!("{path}[{i}]"),
                    format!("Duplicate value: {}", Value::Object(shown)),
                ));
            }
        }
    }
}

fn check_string(st: &str, s: &Value, path: &str, out: &mut Outcome) {
    let v = Value::String(st.to_string());
    let len = st.chars().count() as u64;
    if let Some(max) = s["maxLength"].as_u64().filter(|m| len > *m) {
        out.errors.push(Cause::new(
            "FieldValueTooLong",
            path,
            format!("Too long: may not be more than {max} bytes"),
        ));
    }
    if let Some(min) = s["minLength"].as_u64().filter(|m| len < *m) {
        out.errors.push(Cause::invalid(
            path,
            &v,
            format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some(p) = s["pattern"].as_str() {
        match regex::Regex::new(p) {
            Ok(re) if !re.is_match(st) => {
                out.errors.push(Cause::invalid(
                    path,
                    &v,
                    format!("{path} in body should match '{p}'"),
                ));
            }
            Ok(_) => {}
            Err(e) => out.errors.push(Cause::invalid(
                path,
                &v,
                format!("the schema pattern '{p}' does not compile: {e}"),
            )),
        }
    }
    if let Some(f) = s["format"].as_str()
        && !format_ok(f, st)
    {
        out.errors.push(Cause::invalid(
            path,
            &v,
            format!("{path} in body must be of type {f}: {}", show_value(&v)),
        ));
    }
}

/// A schema bound as Go prints it (`65535`, not `65535.0`).
fn bound(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => v.to_string(),
    }
}

fn check_number(v: &Value, s: &Value, path: &str, out: &mut Outcome) {
    let Some(x) = v.as_f64() else { return };
    if let Some(min) = s["minimum"].as_f64() {
        let excl = s["exclusiveMinimum"].as_bool() == Some(true);
        if x < min || (excl && x == min) {
            let rel = if excl {
                "greater than"
            } else {
                "greater than or equal to"
            };
            out.errors.push(Cause::invalid(
                path,
                v,
                format!("{path} in body should be {rel} {}", bound(&s["minimum"])),
            ));
        }
    }
    if let Some(max) = s["maximum"].as_f64() {
        let excl = s["exclusiveMaximum"].as_bool() == Some(true);
        if x > max || (excl && x == max) {
            let rel = if excl {
                "less than"
            } else {
                "less than or equal to"
            };
            out.errors.push(Cause::invalid(
                path,
                v,
                format!("{path} in body should be {rel} {}", bound(&s["maximum"])),
            ));
        }
    }
    if let Some(m) = s["multipleOf"].as_f64().filter(|m| *m != 0.0)
        && (x / m).fract() != 0.0
    {
        out.errors.push(Cause::invalid(
            path,
            v,
            format!(
                "{path} in body should be a multiple of {}",
                bound(&s["multipleOf"])
            ),
        ));
    }
}

/// Validate without pruning or defaulting (for allOf/anyOf/oneOf/not branches).
fn passes(v: &Value, s: &Value, path: &str) -> bool {
    let mut copy = v.clone();
    let mut out = Outcome::default();
    process(&mut copy, s, path, &mut out);
    out.errors.is_empty()
}

fn check_combinators(v: &Value, s: &Value, path: &str, out: &mut Outcome) {
    if let Some(all) = s["allOf"].as_array() {
        for sub in all {
            let mut copy = v.clone();
            let mut o = Outcome::default();
            process(&mut copy, sub, path, &mut o);
            out.errors.extend(o.errors);
        }
    }
    if let Some(any) = s["anyOf"].as_array()
        && !any.iter().any(|sub| passes(v, sub, path))
    {
        out.errors.push(Cause::invalid(
            path,
            v,
            "must validate at least one schema (anyOf)",
        ));
    }
    if let Some(one) = s["oneOf"].as_array()
        && one.iter().filter(|sub| passes(v, sub, path)).count() != 1
    {
        out.errors.push(Cause::invalid(
            path,
            v,
            "must validate one and only one schema (oneOf)",
        ));
    }
    if let Some(not) = s.get("not").filter(|n| n.is_object())
        && passes(v, not, path)
    {
        out.errors.push(Cause::invalid(
            path,
            v,
            "must not validate the schema (not)",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["protocol"], "properties": {
                "protocol": {"type": "string", "enum": ["TCP", "UDP"]},
                "snapLen": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 1500},
                "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                "port": {"x-kubernetes-int-or-string": true},
                "note": {"type": "string", "nullable": true},
                "when": {"type": "string", "format": "date-time"},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2, "x-kubernetes-list-type": "set"},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            }},
            "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
        }})
    }

    fn run(v: Value) -> (Value, Outcome) {
        let mut v = v;
        let out = process_root(&mut v, &schema());
        (v, out)
    }

    #[test]
    fn valid_object_is_defaulted_and_pruned() {
        let (v, out) = run(
            json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"protocol": "TCP", "port": "http", "note": null, "bogus": 1,
                     "extra": {"any": {"thing": 1}}, "labels": {"a": "b"}, "when": "2026-01-01T00:00:00Z"}}),
        );
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.unknown, vec!["spec.bogus".to_string()]);
        assert_eq!(v["spec"]["snapLen"], 1500);
        assert!(v["spec"]["note"].is_null() && v["spec"].get("note").is_some());
        assert_eq!(v["spec"]["extra"]["any"]["thing"], 1);
    }

    #[test]
    fn errors_carry_field_paths() {
        let cases = [
            (json!({"spec": {}}), "spec.protocol", "Required value"),
            (
                json!({"spec": {"protocol": "XYZ"}}),
                "spec.protocol",
                "Unsupported value: \"XYZ\": supported values: \"TCP\", \"UDP\"",
            ),
            (
                json!({"spec": {"protocol": "TCP", "snapLen": 0}}),
                "spec.snapLen",
                "should be greater than or equal to 1",
            ),
            (
                json!({"spec": {"protocol": "TCP", "snapLen": 70000}}),
                "spec.snapLen",
                "should be less than or equal to 65535",
            ),
            (
                json!({"spec": {"protocol": "TCP", "snapLen": "x"}}),
                "spec.snapLen",
                "must be of type integer",
            ),
            (
                json!({"spec": {"protocol": "TCP", "name": "AB"}}),
                "spec.name",
                "should match '^[a-z]+$'",
            ),
            (
                json!({"spec": {"protocol": "TCP", "name": "abcdefg"}}),
                "spec.name",
                "Too long",
            ),
            (
                json!({"spec": {"protocol": "TCP", "port": 1.5}}),
                "spec.port",
                "integer-or-string",
            ),
            (
                json!({"spec": {"protocol": "TCP", "when": "yesterday"}}),
                "spec.when",
                "must be of type date-time",
            ),
            (
                json!({"spec": {"protocol": "TCP", "tags": ["a", "a"]}}),
                "spec.tags[1]",
                "Duplicate value",
            ),
            (
                json!({"spec": {"protocol": "TCP", "tags": ["a", "b", "c"]}}),
                "spec.tags",
                "Too many: 3",
            ),
            (
                json!({"spec": {"protocol": "TCP", "labels": {"a": 1}}}),
                "spec.labels.a",
                "must be of type string",
            ),
        ];
        for (obj, field, msg) in cases {
            let (_, out) = run(obj.clone());
            assert!(
                out.errors
                    .iter()
                    .any(|c| c.field == field && c.message.contains(msg)),
                "{obj}: want {field}: {msg}, got {:?}",
                out.errors
            );
        }
    }
}
