//! Handlers for the resource verbs: get, list (selectors, pagination), create, update, patch,
//! delete, deletecollection. Watch lives in `watch`.

use std::sync::Arc;

use axum::response::Response;
use base64::Engine;
use http::header;
use serde_json::{Value, json};

use super::{
    Shared,
    http::{Req, Target, json_response},
    table,
};
use crate::{
    managed,
    ops::{self, DeleteOpts, Propagation, Sub, WriteCtx},
    patch::{self, PatchKind},
    resources::{Builtin, ResourceType},
    selectors::{FieldSelector, LabelSelector},
    status::{ApiError, ApiResult, success_status},
    store::meta_str,
};

fn ns(t: &Target) -> &str {
    t.ns.as_deref().unwrap_or("")
}

fn sub(t: &Target) -> Sub {
    if t.sub.as_deref() == Some("status") {
        Sub::Status
    } else {
        Sub::Main
    }
}

fn name(t: &Target) -> ApiResult<&str> {
    t.name
        .as_deref()
        .ok_or_else(|| ApiError::method_not_allowed("a resource name is required"))
}

/// Presentation requested by the Accept header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum As {
    Full,
    Table,
    Metadata,
}

pub(crate) fn presentation(req: &Req) -> As {
    let a = req.accept();
    let first_supported = a
        .split(',')
        .map(str::trim)
        .find(|m| m.starts_with("application/json") || m.starts_with("*/*") || m.is_empty());
    match first_supported {
        Some(m) if m.contains("as=Table") => As::Table,
        Some(m) if m.contains("as=PartialObjectMetadata") => As::Metadata,
        _ => As::Full,
    }
}

pub(crate) fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

fn decode_body(req: &Req) -> ApiResult<Value> {
    if req.body.is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty; send the object as JSON",
        ));
    }
    let ct = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if ct.contains("yaml") {
        serde_yaml::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid YAML: {e}")))
    } else {
        serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
    }
}

fn write_ctx(req: &Req) -> ApiResult<WriteCtx> {
    let mut ctx = WriteCtx::new(req.manager());
    match req.q("dryRun") {
        None => {}
        Some("All") => ctx.dry_run = true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unsupported dryRun value {other:?}; use All"
            )));
        }
    }
    ctx.strict = req.q("fieldValidation") == Some("Strict");
    Ok(ctx)
}

fn single(obj: &Value, rt: &ResourceType, req: &Req, code: u16, warnings: &[String]) -> Response {
    let body = match presentation(req) {
        As::Full => obj.clone(),
        As::Metadata => partial_metadata(obj),
        As::Table => table::table(
            rt,
            &[Arc::new(obj.clone())],
            meta_str(obj, "resourceVersion"),
            None,
            req.q("includeObject").unwrap_or("Metadata"),
        ),
    };
    json_response(code, &body, warnings)
}

pub(crate) fn get(sh: &Shared, t: &Target, req: &Req) -> ApiResult<Response> {
    let name = name(t)?;
    let ns = if t.rt.namespaced { ns(t) } else { "" };
    let obj = sh
        .store
        .read()
        .get(&t.rt.key(), ns, name)
        .ok_or_else(|| ApiError::not_found(&t.rt, name))?;
    Ok(single(&ops::present(&t.rt, &obj), &t.rt, req, 200, &[]))
}

pub(crate) fn selectors(t: &Target, req: &Req) -> ApiResult<(LabelSelector, FieldSelector)> {
    let l = LabelSelector::parse(req.q("labelSelector").unwrap_or(""))?;
    let f = FieldSelector::parse(req.q("fieldSelector").unwrap_or(""), &t.rt)?;
    Ok((l, f))
}

fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"rv": rv, "ns": ns, "name": name}).to_string())
}

fn decode_continue(token: &str) -> ApiResult<(u64, String, String)> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v["rv"].as_u64().ok_or_else(bad)?,
        v["ns"].as_str().unwrap_or("").into(),
        v["name"].as_str().unwrap_or("").into(),
    ))
}

pub(crate) fn list(sh: &Shared, t: &Target, req: &Req) -> ApiResult<Response> {
    let (ls, fs) = selectors(t, req)?;
    let st = sh.store.read();
    if let (Some(rv), Some("Exact")) = (req.q("resourceVersion"), req.q("resourceVersionMatch")) {
        let rv: u64 = rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
        if rv != st.rv {
            return Err(ApiError::gone(format!(
                "too old resource version: {rv} ({}); this test server only serves the newest state",
                st.rv
            )));
        }
    }
    let mut list_rv = st.rv;
    let mut start: Option<(String, String)> = None;
    if let Some(c) = req.q("continue") {
        let (rv, cns, cname) = decode_continue(c)?;
        if rv < st.compacted {
            return Err(ApiError::gone(
                "The provided continue parameter is too old to display a consistent list result. You can start a \
                 new list without the continue parameter.",
            ));
        }
        list_rv = rv;
        start = Some((cns, cname));
    }
    let ns_filter = if t.rt.namespaced {
        t.ns.as_deref()
    } else {
        None
    };
    let items: Vec<Arc<Value>> = st
        .list(&t.rt.key(), ns_filter)
        .into_iter()
        .filter(|o| {
            start.as_ref().is_none_or(|(sn, sname)| {
                (meta_str(o, "namespace"), meta_str(o, "name")) > (sn.as_str(), sname.as_str())
            })
        })
        .filter(|o| ls.matches(o) && fs.matches(o))
        .collect();
    drop(st);
    let limit = req
        .q("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let (page, more) = match limit {
        Some(l) if items.len() > l => (&items[..l], items.len() - l),
        _ => (&items[..], 0),
    };
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    if more > 0
        && let Some(last) = page.last()
    {
        meta["continue"] = json!(encode_continue(
            list_rv,
            meta_str(last, "namespace"),
            meta_str(last, "name")
        ));
        meta["remainingItemCount"] = json!(more);
    }
    let body = match presentation(req) {
        As::Table => table::table(
            &t.rt,
            page,
            &list_rv.to_string(),
            meta.get("continue").and_then(Value::as_str),
            req.q("includeObject").unwrap_or("Metadata"),
        ),
        As::Metadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
            "items": page.iter().map(|o| partial_metadata(o)).collect::<Vec<_>>(),
        }),
        As::Full => json!({
            "kind": t.rt.list_kind(),
            "apiVersion": t.rt.api_version(),
            "metadata": meta,
            "items": page.iter().map(|o| ops::present(&t.rt, o)).collect::<Vec<_>>(),
        }),
    };
    Ok(json_response(200, &body, &[]))
}

pub(crate) fn watch(sh: &Arc<Shared>, t: &Target, req: &Req) -> ApiResult<Response> {
    super::watch::start(sh, t, req)
}

fn namespace_for_write(t: &Target) -> ApiResult<&str> {
    if t.rt.namespaced && t.ns.is_none() {
        return Err(ApiError::bad_request(format!(
            "{} are namespaced: send the request to .../namespaces/{{namespace}}/{}",
            t.rt.plural, t.rt.plural
        )));
    }
    Ok(ns(t))
}

pub(crate) fn create(sh: &Shared, t: &Target, req: &Req) -> ApiResult<Response> {
    let ns = namespace_for_write(t)?;
    let body = decode_body(req)?;
    let mut ctx = write_ctx(req)?;
    let obj = sh
        .store
        .write(|st| ops::create(st, &t.rt, ns, body, &mut ctx))?;
    Ok(single(&obj, &t.rt, req, 201, &ctx.warnings))
}

pub(crate) fn update(sh: &Shared, t: &Target, req: &Req) -> ApiResult<Response> {
    let ns = namespace_for_write(t)?;
    let name = name(t)?;
    let body = decode_body(req)?;
    let mut ctx = write_ctx(req)?;
    let obj = sh
        .store
        .write(|st| ops::update(st, &t.rt, ns, name, body, sub(t), &mut ctx))?;
    Ok(single(&obj, &t.rt, req, 200, &ctx.warnings))
}

pub(crate) fn patch(sh: &Shared, t: &Target, req: &Req) -> ApiResult<Response> {
    let ns = namespace_for_write(t)?;
    let name = name(t)?;
    let ct = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let kind = PatchKind::from_content_type(ct)?;
    let mut ctx = write_ctx(req)?;
    let rt = &t.rt;
    let sub = sub(t);
    let (obj, code) = sh.store.write(|st| -> ApiResult<(Value, u16)> {
        let live = st.get(&rt.key(), if rt.namespaced { ns } else { "" }, name);
        if kind != PatchKind::Apply {
            let old = live.ok_or_else(|| ApiError::not_found(rt, name))?;
            let new = patch::apply_patch(kind, rt, &old, &req.body)?;
            if new["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"] {
                return Err(ApiError::conflict(rt, name));
            }
            return Ok((ops::write_update(st, rt, &old, new, sub, &mut ctx, true)?, 200));
        }
        if req.q("fieldManager").is_none() {
            return Err(ApiError::new(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        let mut applied: Value = serde_yaml::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("the apply patch is not valid YAML or JSON: {e}")))?;
        if applied["apiVersion"].as_str().is_none() || applied["kind"].as_str().is_none() {
            return Err(ApiError::bad_request("apiVersion and kind must be set in an apply patch"));
        }
        ops::check_type(rt, &mut applied)?;
        if applied["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                applied["metadata"]["name"].as_str().unwrap_or_default()
            )));
        }
        let mut merged = managed::apply(rt, live.as_deref(), &applied, sub, req.flag("force"), &ctx)?;
        ctx.managed_override = Some(merged["metadata"]["managedFields"].clone());
        match live {
            Some(old) => Ok((ops::write_update(st, rt, &old, merged, sub, &mut ctx, true)?, 200)),
            None if sub == Sub::Status => Err(ApiError::not_found(rt, name)),
            None => {
                merged["apiVersion"] = applied["apiVersion"].clone();
                merged["kind"] = applied["kind"].clone();
                merged["metadata"]["name"] = json!(name);
                Ok((ops::create(st, rt, ns, merged, &mut ctx)?, 201))
            }
        }
    })?;
    Ok(single(&obj, rt, req, code, &ctx.warnings))
}

fn delete_opts(req: &Req) -> ApiResult<DeleteOpts> {
    let body: Value = if req.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let prop = body["propagationPolicy"]
        .as_str()
        .or(req.q("propagationPolicy"))
        .map(str::to_string);
    let propagation = match prop.as_deref() {
        None => match body["orphanDependents"].as_bool() {
            Some(true) => Some(Propagation::Orphan),
            Some(false) => Some(Propagation::Background),
            None => None,
        },
        Some("Orphan") => Some(Propagation::Orphan),
        Some("Background") => Some(Propagation::Background),
        Some("Foreground") => Some(Propagation::Foreground),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy {other:?} is not supported; use Orphan, Background or Foreground"
            )));
        }
    };
    let grace = body["gracePeriodSeconds"]
        .as_i64()
        .or_else(|| req.q("gracePeriodSeconds").and_then(|g| g.parse().ok()));
    Ok(DeleteOpts {
        grace,
        propagation,
        uid: body["preconditions"]["uid"].as_str().map(str::to_string),
        resource_version: body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
    })
}

fn dry_run_in_body(req: &Req) -> bool {
    serde_json::from_slice::<Value>(&req.body)
        .ok()
        .and_then(|b| b["dryRun"].as_array().map(|a| a.iter().any(|x| x == "All")))
        .unwrap_or(false)
}

pub(crate) fn delete(sh: &Shared, t: &Target, req: &Req) -> ApiResult<Response> {
    let name = name(t)?;
    let ns = ns(t);
    let opts = delete_opts(req)?;
    let mut ctx = write_ctx(req)?;
    ctx.dry_run |= dry_run_in_body(req);
    let d = sh
        .store
        .write(|st| ops::delete(st, &t.rt, ns, name, &opts, &mut ctx))?;
    let body = if d.gone && !matches!(t.rt.builtin, Some(Builtin::Pod) | None) {
        success_status(&t.rt, name, meta_str(&d.object, "uid"))
    } else {
        d.object
    };
    Ok(json_response(200, &body, &ctx.warnings))
}

pub(crate) fn delete_collection(sh: &Shared, t: &Target, req: &Req) -> ApiResult<Response> {
    let (ls, fs) = selectors(t, req)?;
    let opts = delete_opts(req)?;
    let mut ctx = write_ctx(req)?;
    ctx.dry_run |= dry_run_in_body(req);
    let ns_filter = if t.rt.namespaced { t.ns.clone() } else { None };
    let items = sh.store.write(|st| {
        let victims: Vec<Arc<Value>> = st
            .list(&t.rt.key(), ns_filter.as_deref())
            .into_iter()
            .filter(|o| ls.matches(o) && fs.matches(o))
            .collect();
        let mut out = Vec::new();
        for v in victims {
            if let Ok(d) = ops::delete(
                st,
                &t.rt,
                meta_str(&v, "namespace"),
                meta_str(&v, "name"),
                &opts,
                &mut ctx,
            ) {
                out.push(d.object);
            }
        }
        (out, st.rv)
    });
    let body = json!({
        "kind": t.rt.list_kind(),
        "apiVersion": t.rt.api_version(),
        "metadata": {"resourceVersion": items.1.to_string()},
        "items": items.0,
    });
    Ok(json_response(200, &body, &ctx.warnings))
}
