//! Discovery: `/version`, `/api`, `/apis`, `/apis/{group}`, `/api/v1`, `/apis/{group}/{version}`,
//! in the legacy format and, when the client asks for it, the aggregated `apidiscovery.k8s.io/v2`
//! format (what kubectl 1.30+ and `Discovery::run_aggregated` request).

use axum::response::Response;
use http::{HeaderValue, header};
use serde_json::{Value, json};

use super::{
    Shared,
    http::{Req, json_response},
};
use crate::{
    resources::{Registry, api_resource_list},
    status::{ApiError, ApiResult},
};

const AGGREGATED_CT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-nightcap-testcluster",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn wants_aggregated(req: &Req) -> bool {
    req.accept()
        .split(',')
        .map(str::trim)
        .next()
        .is_some_and(|first| first.contains("as=APIGroupDiscoveryList") && first.contains("v=v2"))
}

fn aggregated(reg: &Registry, core: bool) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = if core {
        vec![(String::new(), vec!["v1".into()])]
    } else {
        reg.groups()
    };
    groups.retain(|(g, _)| g.is_empty() == core);
    let items: Vec<Value> = groups
        .iter()
        .map(|(g, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = reg
                        .all()
                        .iter()
                        .filter(|t| t.group == *g && t.version == *v)
                        .map(|t| {
                            let kind = json!({"group": t.group, "version": t.version, "kind": t.kind});
                            let mut r = json!({
                                "resource": t.plural,
                                "responseKind": kind,
                                "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": t.singular,
                                "verbs": t.verbs,
                            });
                            if !t.short_names.is_empty() {
                                r["shortNames"] = json!(t.short_names);
                            }
                            if !t.categories.is_empty() {
                                r["categories"] = json!(t.categories);
                            }
                            if t.status_subresource {
                                r["subresources"] = json!([{"subresource": "status", "responseKind": kind,
                                    "verbs": ["get", "patch", "update"]}]);
                            }
                            r
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let meta = if g.is_empty() { json!({"creationTimestamp": null}) } else { json!({"name": g, "creationTimestamp": null}) };
            json!({"metadata": meta, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

fn aggregated_response(body: &Value) -> Response {
    let mut r = json_response(200, body, &[]);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(AGGREGATED_CT),
    );
    r
}

pub(crate) fn core_versions(sh: &Shared, req: &Req) -> Response {
    if wants_aggregated(req) {
        return aggregated_response(&aggregated(&sh.store.read().registry, true));
    }
    json_response(
        200,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        }),
        &[],
    )
}

fn group_json(g: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"name": g, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

pub(crate) fn groups(sh: &Shared, req: &Req) -> Response {
    let reg = sh.store.read().registry.clone();
    if wants_aggregated(req) {
        return aggregated_response(&aggregated(&reg, false));
    }
    let groups: Vec<Value> = reg
        .groups()
        .iter()
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    json_response(
        200,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
        &[],
    )
}

pub(crate) fn group(sh: &Shared, g: &str) -> ApiResult<Response> {
    let reg = sh.store.read().registry.clone();
    let (_, vs) = reg
        .groups()
        .into_iter()
        .find(|(name, _)| name == g)
        .ok_or_else(|| ApiError::path_not_found(&format!("/apis/{g}")))?;
    let mut body = group_json(g, &vs);
    body["kind"] = json!("APIGroup");
    body["apiVersion"] = json!("v1");
    Ok(json_response(200, &body, &[]))
}

pub(crate) fn group_version(sh: &Shared, g: &str, v: &str) -> ApiResult<Response> {
    let reg = sh.store.read().registry.clone();
    let body = api_resource_list(&reg, g, v).ok_or_else(|| {
        ApiError::path_not_found(&if g.is_empty() {
            format!("/api/{v}")
        } else {
            format!("/apis/{g}/{v}")
        })
    })?;
    Ok(json_response(200, &body, &[]))
}
