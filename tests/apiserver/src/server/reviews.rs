//! TokenReview and (Self/Local)SubjectAccessReview, answered from the test policy. Reviews are
//! never stored; the response echoes the spec with a filled-in status, like the real server.

use axum::response::Response;
use serde_json::{Value, json};

use super::http::{Req, Target, json_response};
use crate::{
    policy::{Attributes, Policy},
    resources::Builtin,
    status::{ApiError, ApiResult},
};

fn attributes(spec: &Value) -> Attributes {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    if let Some(nr) = spec.get("nonResourceAttributes").filter(|v| v.is_object()) {
        return Attributes {
            verb: s(&nr["verb"]),
            non_resource_path: Some(s(&nr["path"])),
            ..Attributes::default()
        };
    }
    let ra = &spec["resourceAttributes"];
    Attributes {
        verb: s(&ra["verb"]),
        group: s(&ra["group"]),
        resource: s(&ra["resource"]),
        subresource: s(&ra["subresource"]),
        namespace: s(&ra["namespace"]),
        name: s(&ra["name"]),
        non_resource_path: None,
    }
}

fn decide(policy: &Policy, user: &str, groups: &[String], a: &Attributes) -> Value {
    match policy.authorize(user, groups, a) {
        Ok(reason) => json!({"allowed": true, "reason": reason}),
        Err(reason) => json!({"allowed": false, "reason": reason}),
    }
}

/// Answer a review.
pub(crate) fn create(policy: &Policy, t: &Target, req: &Req) -> ApiResult<Response> {
    let mut body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("the review body is not valid JSON: {e}")))?;
    body["apiVersion"] = json!(t.rt.api_version());
    body["kind"] = json!(t.rt.kind);
    if !body["metadata"].is_object() {
        body["metadata"] = json!({});
    }
    let spec = body["spec"].clone();
    let status = match t.rt.builtin {
        Some(Builtin::TokenReview) => {
            let token = spec["token"].as_str().unwrap_or_default();
            match policy.authenticate(token) {
                Some(u) => json!({
                    "authenticated": true,
                    "user": {"username": u.name, "uid": u.uid, "groups": u.groups},
                    "audiences": spec["audiences"].as_array().cloned().unwrap_or_default(),
                }),
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            }
        }
        Some(Builtin::SubjectAccessReview) => {
            let user = spec["user"].as_str().unwrap_or_default();
            let groups: Vec<String> = spec["groups"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|g| g.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if user.is_empty() && groups.is_empty() {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    "SubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.user: Invalid value: \"\": at \
                     least one of user or group must be specified",
                ));
            }
            decide(policy, user, &groups, &attributes(&spec))
        }
        Some(Builtin::SelfSubjectAccessReview) => {
            decide(policy, &req.user.name, &req.user.groups, &attributes(&spec))
        }
        Some(Builtin::LocalSubjectAccessReview) => {
            let a = attributes(&spec);
            let ns = t.ns.clone().unwrap_or_default();
            if a.namespace != ns {
                return Err(ApiError::bad_request(format!(
                    "spec.resourceAttributes.namespace must match metadata.namespace: {:?} != {ns:?}",
                    a.namespace
                )));
            }
            let user = spec["user"].as_str().unwrap_or_default();
            let groups: Vec<String> = spec["groups"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|g| g.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            decide(policy, user, &groups, &a)
        }
        _ => return Err(ApiError::internal("not a review kind")),
    };
    body["status"] = status;
    Ok(json_response(201, &body, &[]))
}
