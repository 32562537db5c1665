//! JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch for the
//! built-in kinds (merge keys of the lists we use; `$patch`, `$retainKeys`,
//! `$deleteFromPrimitiveList` directives). Server-side apply lives in `managed`.

use serde_json::Value;

use crate::{
    resources::ResourceType,
    status::{ApiError, ApiResult},
};

/// The PATCH content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchKind {
    /// From the request's Content-Type.
    pub fn from_content_type(ct: &str) -> ApiResult<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(Self::Apply),
            other => Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml \
                 (got {other:?})"
            ))),
        }
    }
}

/// Apply a non-apply patch to `target`.
pub(crate) fn apply_patch(
    kind: PatchKind,
    rt: &ResourceType,
    target: &Value,
    body: &[u8],
) -> ApiResult<Value> {
    let mut doc = target.clone();
    match kind {
        PatchKind::Merge => {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
            json_patch::merge(&mut doc, &p);
        }
        PatchKind::Json => {
            let p: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut doc, &p).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the JSON patch could not be applied: {e}"),
                )
            })?;
        }
        PatchKind::Strategic => {
            if rt.builtin.is_none() {
                return Err(ApiError::unsupported_media_type(
                    "strategic merge patch is not supported for custom resources; use a JSON merge patch or \
                     server-side apply",
                ));
            }
            let p: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("invalid strategic merge patch: {e}"))
            })?;
            strategic(&mut doc, &p, "");
        }
        PatchKind::Apply => {
            return Err(ApiError::internal(
                "apply patches are handled by server-side apply",
            ));
        }
    }
    Ok(doc)
}

fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "containerStatuses"
        | "initContainerStatuses" => "name",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "taints" => "key",
        "addresses" => "type",
        _ => return None,
    })
}

fn is_primitive_merge_list(field: &str) -> bool {
    field == "finalizers"
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn strategic(target: &mut Value, patch: &Value, _field: &str) {
    let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) else {
        *target = strip_directives(patch);
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        t.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k)));
    }
    for (k, pv) in p {
        if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(arr), Some(del)) =
                (t.get_mut(list).and_then(Value::as_array_mut), pv.as_array())
            {
                arr.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            t.remove(k);
            continue;
        }
        match (t.get_mut(k), pv) {
            (Some(tv @ Value::Object(_)), Value::Object(_)) => strategic(tv, pv, k),
            (Some(Value::Array(ta)), Value::Array(pa)) => merge_list(ta, pa, k),
            _ => {
                t.insert(k.clone(), strip_directives(pv));
            }
        }
    }
}

fn merge_list(target: &mut Vec<Value>, patch: &[Value], field: &str) {
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *target = patch
            .iter()
            .filter(|p| p.get("$patch").is_none())
            .map(strip_directives)
            .collect();
        return;
    }
    if is_primitive_merge_list(field) {
        for p in patch {
            if !target.contains(p) {
                target.push(p.clone());
            }
        }
        return;
    }
    let Some(key) = merge_key(field) else {
        *target = patch.iter().map(strip_directives).collect();
        return;
    };
    for p in patch {
        let k = p.get(key);
        let pos = target.iter().position(|t| k.is_some() && t.get(key) == k);
        let delete = p.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                target.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic(&mut target[i], p, ""),
            (None, false) => target.push(strip_directives(p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_table() {
        let reg = crate::resources::Registry::default();
        let pods = reg.find("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"finalizers": ["a"], "labels": {"x": "1", "y": "2"}},
            "spec": {"containers": [{"name": "c1", "image": "i1"}, {"name": "c2", "image": "i2"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        let cases = [
            (
                json!({"metadata": {"finalizers": ["b"]}}),
                "/metadata/finalizers",
                json!(["a", "b"]),
            ),
            (
                json!({"metadata": {"labels": {"x": null}}}),
                "/metadata/labels",
                json!({"y": "2"}),
            ),
            (
                json!({"spec": {"containers": [{"name": "c2", "image": "new"}]}}),
                "/spec/containers/1/image",
                json!("new"),
            ),
            (
                json!({"spec": {"containers": [{"name": "c1", "$patch": "delete"}]}}),
                "/spec/containers/0/name",
                json!("c2"),
            ),
            (
                json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
                "/status/conditions",
                json!([{"type": "Ready", "status": "True"}]),
            ),
            (
                json!({"$deleteFromPrimitiveList/metadata": [], "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
                "/metadata/finalizers",
                json!([]),
            ),
        ];
        for (p, ptr, want) in cases {
            let out =
                apply_patch(PatchKind::Strategic, &pods, &pod, p.to_string().as_bytes()).unwrap();
            assert_eq!(out.pointer(ptr), Some(&want), "{p}");
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchKind::from_content_type("application/apply-patch+yaml").unwrap(),
            PatchKind::Apply
        );
        assert_eq!(
            PatchKind::from_content_type("application/merge-patch+json; charset=utf-8").unwrap(),
            PatchKind::Merge
        );
        assert_eq!(
            PatchKind::from_content_type("text/plain").unwrap_err().code,
            415
        );
    }
}
