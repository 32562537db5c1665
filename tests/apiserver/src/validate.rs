//! Object validation: metadata (names, labels), built-in kinds (decoded through the
//! k8s-openapi types, which also drops unknown fields like the real decoder) and custom
//! resources (the CRD's structural schema).

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::{
    ops::WriteCtx,
    resources::{Builtin, ResourceType},
    schema,
    status::{ApiError, ApiResult, Cause},
    store::meta_str,
};

const DNS1123_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const DNS1123_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
const LABEL_VALUE: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
const QUALIFIED_NAME: &str = r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$";

fn matches(re: &str, s: &str) -> bool {
    regex::Regex::new(re)
        .map(|r| r.is_match(s))
        .unwrap_or(false)
}

/// A DNS-1123 subdomain (most object names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && matches(DNS1123_SUBDOMAIN, s)
}

/// A DNS-1123 label (namespace names).
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && matches(DNS1123_LABEL, s)
}

fn label_key_ok(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(is_dns1123_subdomain) && name.len() <= 63 && matches(QUALIFIED_NAME, name)
}

fn validate_metadata(rt: &ResourceType, obj: &Value, causes: &mut Vec<Cause>) {
    let name = meta_str(obj, "name");
    let name_v = Value::String(name.to_string());
    if rt.builtin == Some(Builtin::Namespace) {
        if !is_dns1123_label(name) {
            causes.push(Cause::invalid("metadata.name", &name_v,
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must \
                 start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for \
                 validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"));
        }
    } else if !is_dns1123_subdomain(name) {
        causes.push(Cause::invalid("metadata.name", &name_v,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and \
             must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"));
    }
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            if !label_key_ok(k) {
                causes.push(Cause::invalid("metadata.labels", &Value::String(k.clone()),
                    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end \
                     with an alphanumeric character"));
            }
            match v.as_str() {
                Some(s) if s.len() <= 63 && matches(LABEL_VALUE, s) => {}
                _ => causes.push(Cause::invalid("metadata.labels", v,
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or \
                     '.', and must start and end with an alphanumeric character")),
            }
        }
    }
    if let Some(ann) = obj["metadata"]["annotations"].as_object() {
        let total: usize = ann
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        if total > 256 * 1024 {
            causes.push(Cause::new(
                "FieldValueTooLong",
                "metadata.annotations",
                "Too long: must have at most 262144 bytes",
            ));
        }
        for (k, v) in ann {
            if !label_key_ok(k) || !v.is_string() {
                causes.push(Cause::invalid(
                    "metadata.annotations",
                    &Value::String(k.clone()),
                    "annotation keys must be qualified names and values strings",
                ));
            }
        }
    }
}

fn roundtrip<T: DeserializeOwned + Serialize>(rt: &ResourceType, obj: &Value) -> ApiResult<Value> {
    let typed: T = serde_json::from_value(obj.clone()).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: {e}",
            rt.kind, rt.version, rt.kind
        ))
    })?;
    serde_json::to_value(typed)
        .map_err(|e| ApiError::internal(format!("re-encoding {}: {e}", rt.kind)))
}

/// Paths present (non-null) in `input` but absent from `output`.
fn dropped_fields(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(w) => dropped_fields(v, w, &p, out),
                    None if !v.is_null() && k != "status" => out.push(p),
                    None => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b.iter()).enumerate() {
                dropped_fields(v, w, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn normalize_builtin(rt: &ResourceType, b: Builtin, obj: &Value) -> ApiResult<Value> {
    use k8s_openapi::api::{batch, coordination, core::v1 as core, events};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
    match b {
        Builtin::Namespace => roundtrip::<core::Namespace>(rt, obj),
        Builtin::Pod => roundtrip::<core::Pod>(rt, obj),
        Builtin::Node => roundtrip::<core::Node>(rt, obj),
        Builtin::CoreEvent => roundtrip::<core::Event>(rt, obj),
        Builtin::Event => roundtrip::<events::v1::Event>(rt, obj),
        Builtin::Job => roundtrip::<batch::v1::Job>(rt, obj),
        Builtin::Lease => roundtrip::<coordination::v1::Lease>(rt, obj),
        Builtin::Secret => roundtrip::<core::Secret>(rt, obj),
        Builtin::ConfigMap => roundtrip::<core::ConfigMap>(rt, obj),
        Builtin::ServiceAccount => roundtrip::<core::ServiceAccount>(rt, obj),
        Builtin::Crd => roundtrip::<apiext::CustomResourceDefinition>(rt, obj),
        _ => Ok(obj.clone()),
    }
}

fn pod_spec_causes(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let containers = spec["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if containers.is_empty() {
        causes.push(Cause::required(format!("{path}.containers")));
    }
    for (i, c) in containers.iter().enumerate() {
        let name = c["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            causes.push(Cause::required(format!("{path}.containers[{i}].name")));
        } else if !is_dns1123_label(name) {
            causes.push(Cause::invalid(format!("{path}.containers[{i}].name"), &c["name"],
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"));
        }
        if c["image"].as_str().unwrap_or_default().is_empty() {
            causes.push(Cause::required(format!("{path}.containers[{i}].image")));
        }
    }
}

fn builtin_causes(b: Builtin, obj: &Value, causes: &mut Vec<Cause>) {
    match b {
        Builtin::Pod => pod_spec_causes(&obj["spec"], "spec", causes),
        Builtin::Job => {
            let tmpl = &obj["spec"]["template"]["spec"];
            pod_spec_causes(tmpl, "spec.template.spec", causes);
            let rp = tmpl["restartPolicy"].as_str().unwrap_or_default();
            if rp != "Never" && rp != "OnFailure" {
                causes.push(Cause::new(
                    "FieldValueNotSupported",
                    "spec.template.spec.restartPolicy",
                    format!(
                        "Unsupported value: {rp:?}: supported values: \"OnFailure\", \"Never\""
                    ),
                ));
            }
            for f in [
                "parallelism",
                "completions",
                "backoffLimit",
                "activeDeadlineSeconds",
                "ttlSecondsAfterFinished",
            ] {
                if obj["spec"][f]
                    .as_i64()
                    .is_some_and(|n| n < 0 || (f == "activeDeadlineSeconds" && n == 0))
                {
                    causes.push(Cause::invalid(
                        format!("spec.{f}"),
                        &obj["spec"][f],
                        "must be greater than or equal to 0",
                    ));
                }
            }
        }
        _ => {}
    }
}

/// Validate and normalise an object about to be stored; `old` is set for updates.
pub(crate) fn validate_object(
    rt: &ResourceType,
    obj: &mut Value,
    _old: Option<&Value>,
    ctx: &mut WriteCtx,
) -> ApiResult<()> {
    let name = meta_str(obj, "name").to_string();
    let mut causes = Vec::new();
    validate_metadata(rt, obj, &mut causes);
    let mut unknown = Vec::new();
    if let Some(b) = rt.builtin {
        let normalized = normalize_builtin(rt, b, obj)?;
        dropped_fields(obj, &normalized, "", &mut unknown);
        *obj = normalized;
        builtin_causes(b, obj, &mut causes);
    } else if let Some(s) = &rt.schema {
        let out = schema::process_root(obj, s);
        causes.extend(out.errors);
        unknown.extend(out.unknown);
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(rt, &name, causes));
    }
    if !unknown.is_empty() {
        if ctx.strict {
            let list: Vec<String> = unknown
                .iter()
                .map(|u| format!("unknown field {u:?}"))
                .collect();
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                list.join(", ")
            )));
        }
        ctx.warnings
            .extend(unknown.iter().map(|u| format!("unknown field {u:?}")));
    }
    Ok(())
}
