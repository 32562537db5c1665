//! Create, update and delete with the real server's metadata semantics: generateName, uid,
//! creationTimestamp, generation, resourceVersion preconditions, finalizers and
//! deletionTimestamp, owner-reference propagation policies.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

use crate::{
    kinds, managed,
    resources::{Builtin, ResourceType},
    status::{ApiError, ApiResult, Cause},
    store::{State, meta_str},
    time::timestamp,
    validate,
};

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sub {
    Main,
    Status,
}

impl Sub {
    pub fn name(self) -> Option<&'static str> {
        match self {
            Sub::Main => None,
            Sub::Status => Some("status"),
        }
    }
}

/// Per-request write options.
#[derive(Debug, Clone)]
pub(crate) struct WriteCtx {
    pub manager: String,
    pub dry_run: bool,
    /// `fieldValidation=Strict`: unknown fields are an error instead of a warning.
    pub strict: bool,
    pub warnings: Vec<String>,
    pub now: Timestamp,
    /// managedFields computed by server-side apply (used instead of recording an update).
    pub managed_override: Option<Value>,
}

impl WriteCtx {
    pub fn new(manager: impl Into<String>) -> Self {
        Self {
            manager: manager.into(),
            dry_run: false,
            strict: false,
            warnings: vec![],
            now: Timestamp::now(),
            managed_override: None,
        }
    }
    pub fn now_str(&self) -> String {
        timestamp(self.now)
    }
}

/// Ensure `apiVersion`/`kind` match the endpoint (filling them in when absent).
pub(crate) fn check_type(rt: &ResourceType, obj: &mut Value) -> ApiResult<()> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let av = rt.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(x) if x != av => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({x}) does not match the expected API version ({av})"
            )));
        }
        _ => {
            map.insert("apiVersion".into(), Value::String(av));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k != rt.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
        _ => {
            map.insert("kind".into(), Value::String(rt.kind.clone()));
        }
    }
    if !map.get("metadata").is_some_and(Value::is_object) {
        map.insert("metadata".into(), json!({}));
    }
    Ok(())
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4();
    bytes.as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Fail unless the namespace exists and is not terminating.
pub(crate) fn check_namespace(st: &State, ns: &str, creating: bool) -> ApiResult<()> {
    let Some(nsobj) = st.get("/namespaces", "", ns) else {
        return Err(ApiError::namespace_not_found(ns));
    };
    if creating && !nsobj["metadata"]["deletionTimestamp"].is_null() {
        return Err(ApiError::forbidden(
            format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
            json!({"name": ns, "kind": "namespaces"}),
        ));
    }
    Ok(())
}

/// Create an object.
pub(crate) fn create(
    st: &mut State,
    rt: &Arc<ResourceType>,
    ns: &str,
    mut obj: Value,
    ctx: &mut WriteCtx,
) -> ApiResult<Value> {
    check_type(rt, &mut obj)?;
    let meta = obj["metadata"]
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
    if rt.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(x) if !x.is_empty() && x != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".into(), Value::String(ns.to_string()));
            }
        }
    } else {
        meta.remove("namespace");
    }
    let generate = meta
        .get("generateName")
        .and_then(Value::as_str)
        .map(str::to_string);
    let name = match meta.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => match &generate {
            Some(g) if !g.is_empty() => {
                let base: String = g.chars().take(58).collect();
                format!("{base}{}", random_suffix())
            }
            _ => {
                return Err(ApiError::invalid(
                    rt,
                    "",
                    vec![
                        Cause::required("metadata.name")
                            .with_detail("name or generateName is required"),
                    ],
                ));
            }
        },
    };
    meta.insert("name".into(), Value::String(name.clone()));
    for f in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "managedFields",
    ] {
        meta.remove(f);
    }
    meta.insert(
        "uid".into(),
        Value::String(uuid::Uuid::new_v4().to_string()),
    );
    meta.insert("creationTimestamp".into(), Value::String(ctx.now_str()));
    if rt.tracks_generation() {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    if rt.namespaced {
        check_namespace(st, ns, true)?;
    }
    kinds::prepare_create(st, rt, &mut obj, ctx)?;
    validate::validate_object(rt, &mut obj, None, ctx)?;
    managed::record_update(rt, None, &mut obj, Sub::Main, ctx);
    let key = rt.key();
    if st.get(&key, ns_of(rt, ns), &name).is_some() {
        return Err(ApiError::already_exists(rt, &name));
    }
    if ctx.dry_run {
        return Ok(obj);
    }
    kinds::before_store_create(st, rt, &mut obj)?;
    let stored = st.put(&key, obj);
    Ok(present(rt, &stored))
}

fn ns_of<'a>(rt: &ResourceType, ns: &'a str) -> &'a str {
    if rt.namespaced { ns } else { "" }
}

/// The stored object as served at `rt`'s version.
pub(crate) fn present(rt: &ResourceType, obj: &Value) -> Value {
    let mut o = obj.clone();
    o["apiVersion"] = Value::String(rt.api_version());
    o
}

/// Replace an object (PUT).
pub(crate) fn update(
    st: &mut State,
    rt: &Arc<ResourceType>,
    ns: &str,
    name: &str,
    mut new: Value,
    sub: Sub,
    ctx: &mut WriteCtx,
) -> ApiResult<Value> {
    let old = st
        .get(&rt.key(), ns_of(rt, ns), name)
        .ok_or_else(|| ApiError::not_found(rt, name))?;
    check_type(rt, &mut new)?;
    match new["metadata"]["name"].as_str() {
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        _ => {}
    }
    if let Some(rv) = new["metadata"]["resourceVersion"].as_str()
        && !rv.is_empty()
        && rv != meta_str(&old, "resourceVersion")
    {
        return Err(ApiError::conflict(rt, name));
    }
    write_update(st, rt, &old, new, sub, ctx, true)
}

/// Whether the parts of an object other than metadata and status differ.
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
        m
    };
    strip(old) != strip(new)
}

fn without_volatile(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    v
}

/// Apply a fully computed new state of an existing object: subresource split, immutable
/// metadata, validation, generation, finalizer completion, managed fields, storage.
pub(crate) fn write_update(
    st: &mut State,
    rt: &Arc<ResourceType>,
    old: &Arc<Value>,
    mut new: Value,
    sub: Sub,
    ctx: &mut WriteCtx,
    track_fields: bool,
) -> ApiResult<Value> {
    match sub {
        Sub::Main if rt.status_subresource => match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        },
        Sub::Main => {}
        Sub::Status => {
            let status = new.get("status").cloned();
            let managed = new["metadata"].get("managedFields").cloned();
            new = (**old).clone();
            match status {
                Some(s) => new["status"] = s,
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            if let Some(mf) = managed {
                new["metadata"]["managedFields"] = mf;
            }
        }
    }
    check_type(rt, &mut new)?;
    let meta = new["metadata"]
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "name",
        "generation",
        "resourceVersion",
    ] {
        match old["metadata"].get(f) {
            Some(v) => meta.insert(f.into(), v.clone()),
            None => meta.remove(f),
        };
    }
    if !old["metadata"]["deletionTimestamp"].is_null() {
        let old_f = old["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let new_f = new["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if new_f.iter().any(|f| !old_f.contains(f)) {
            return Err(ApiError::invalid(
                rt,
                meta_str(old, "name"),
                vec![Cause::forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted",
                )],
            ));
        }
    }
    kinds::prepare_update(st, rt, old, &mut new, sub, ctx)?;
    validate::validate_object(rt, &mut new, Some(old), ctx)?;
    if rt.tracks_generation() && spec_changed(old, &new) {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        new["metadata"]["generation"] = json!(g);
    }
    if track_fields {
        managed::record_update(rt, Some(old), &mut new, sub, ctx);
    }
    if without_volatile(old) == without_volatile(&new) {
        return Ok(present(rt, old));
    }
    if ctx.dry_run {
        return Ok(present(rt, &new));
    }
    if rt.builtin == Some(Builtin::Crd) {
        kinds::after_crd_update(st, &new)?;
    }
    let (ns, name) = (
        meta_str(old, "namespace").to_string(),
        meta_str(old, "name").to_string(),
    );
    let deleting = !new["metadata"]["deletionTimestamp"].is_null();
    let no_finalizers = new["metadata"]["finalizers"]
        .as_array()
        .is_none_or(Vec::is_empty);
    if deleting && no_finalizers && kinds::may_remove(st, rt, &new) {
        let last = remove_now(st, rt, &ns, &name);
        return Ok(present(rt, &last.unwrap_or_else(|| Arc::new(new))));
    }
    Ok(present(rt, &st.put(&rt.key(), new)))
}

/// Deletion propagation policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Propagation {
    Orphan,
    Background,
    Foreground,
}

/// Options of one DELETE.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteOpts {
    pub grace: Option<i64>,
    pub propagation: Option<Propagation>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// The outcome of a DELETE: the object, and whether it is gone already.
pub(crate) struct Deleted {
    pub object: Value,
    pub gone: bool,
}

/// Remove from storage now, with kind-specific clean-up.
pub(crate) fn remove_now(
    st: &mut State,
    rt: &ResourceType,
    ns: &str,
    name: &str,
) -> Option<Arc<Value>> {
    let last = st.remove(&rt.key(), ns, name)?;
    kinds::after_remove(st, rt, &last);
    Some(last)
}

/// Delete an object.
pub(crate) fn delete(
    st: &mut State,
    rt: &Arc<ResourceType>,
    ns: &str,
    name: &str,
    opts: &DeleteOpts,
    ctx: &mut WriteCtx,
) -> ApiResult<Deleted> {
    let ns = ns_of(rt, ns);
    let old = st
        .get(&rt.key(), ns, name)
        .ok_or_else(|| ApiError::not_found(rt, name))?;
    if let Some(uid) = &opts.uid
        && uid != meta_str(&old, "uid")
    {
        return Err(ApiError::conflict_msg(
            rt,
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(&old, "uid")
            ),
        ));
    }
    if let Some(rv) = &opts.resource_version
        && rv != meta_str(&old, "resourceVersion")
    {
        return Err(ApiError::conflict_msg(
            rt,
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                meta_str(&old, "resourceVersion")
            ),
        ));
    }
    let propagation = match opts.propagation {
        Some(p) => p,
        None if rt.builtin == Some(Builtin::Job) => {
            ctx.warnings.push(
                "child pods are preserved by default when jobs are deleted; set propagationPolicy=Background \
                 to remove them or set propagationPolicy=Orphan to suppress this warning"
                    .into(),
            );
            Propagation::Orphan
        }
        None => Propagation::Background,
    };
    if ctx.dry_run {
        return Ok(Deleted {
            object: present(rt, &old),
            gone: false,
        });
    }
    let mut obj = (*old).clone();
    let mut finalizers: Vec<Value> = obj["metadata"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if propagation == Propagation::Foreground && !finalizers.contains(&json!("foregroundDeletion"))
    {
        finalizers.push(json!("foregroundDeletion"));
    }
    if propagation == Propagation::Orphan {
        orphan_dependents(st, meta_str(&old, "uid"));
    }
    let graceful = kinds::grace_period(st, rt, &old, opts.grace);
    let already_deleting = !old["metadata"]["deletionTimestamp"].is_null();
    if let Some(grace) = graceful {
        // Graceful deletion (pods on a node): the kubelet stops the containers and then
        // deletes again with a grace period of 0.
        let shorter = old["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .is_none_or(|g| grace < g);
        if !already_deleting || shorter {
            obj["metadata"]["deletionTimestamp"] =
                Value::String(timestamp(ctx.now + SignedDuration::from_secs(grace)));
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            if !finalizers.is_empty() {
                obj["metadata"]["finalizers"] = Value::Array(finalizers);
            }
            let stored = st.put(&rt.key(), obj);
            return Ok(Deleted {
                object: present(rt, &stored),
                gone: false,
            });
        }
        return Ok(Deleted {
            object: present(rt, &old),
            gone: false,
        });
    }
    if !finalizers.is_empty() || !kinds::may_remove(st, rt, &obj) {
        if already_deleting && obj["metadata"]["finalizers"] == Value::Array(finalizers.clone()) {
            return Ok(Deleted {
                object: present(rt, &old),
                gone: false,
            });
        }
        if !already_deleting {
            obj["metadata"]["deletionTimestamp"] = Value::String(ctx.now_str());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        }
        if !finalizers.is_empty() {
            obj["metadata"]["finalizers"] = Value::Array(finalizers);
        }
        kinds::on_deletion_started(rt, &mut obj);
        let stored = st.put(&rt.key(), obj);
        return Ok(Deleted {
            object: present(rt, &stored),
            gone: false,
        });
    }
    let last = remove_now(st, rt, ns, name).ok_or_else(|| ApiError::not_found(rt, name))?;
    Ok(Deleted {
        object: present(rt, &last),
        gone: true,
    })
}

/// Remove owner references to `uid` from every dependent (the orphan policy).
pub(crate) fn orphan_dependents(st: &mut State, uid: &str) {
    for (key, obj) in st.all_objects() {
        let Some(refs) = obj["metadata"]["ownerReferences"].as_array() else {
            continue;
        };
        if !refs.iter().any(|r| r["uid"].as_str() == Some(uid)) {
            continue;
        }
        let kept: Vec<Value> = refs
            .iter()
            .filter(|r| r["uid"].as_str() != Some(uid))
            .cloned()
            .collect();
        let mut o = (*obj).clone();
        if kept.is_empty() {
            if let Some(m) = o["metadata"].as_object_mut() {
                m.remove("ownerReferences");
            }
        } else {
            o["metadata"]["ownerReferences"] = Value::Array(kept);
        }
        st.put(&key, o);
    }
}

impl Cause {
    pub(crate) fn with_detail(mut self, detail: &str) -> Self {
        self.message = format!("{}: {detail}", self.message);
        self
    }
}
