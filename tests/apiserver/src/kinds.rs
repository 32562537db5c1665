//! Kind-specific behaviour of built-in resources: defaults, status reset on create, immutable
//! fields, pod graceful deletion, namespace termination, CRD registration.

use serde_json::{Value, json};

use crate::{
    ops::{Sub, WriteCtx, remove_now},
    resources::{Builtin, ResourceType},
    status::{ApiError, ApiResult, Cause},
    store::{State, meta_str},
};

fn set_default(obj: &mut Value, path: &[&str], value: Value) {
    let mut cur = obj;
    for (i, p) in path.iter().enumerate() {
        if !cur.is_object() {
            return;
        }
        if i == path.len() - 1 {
            if cur.get(*p).is_none_or(Value::is_null) {
                cur[*p] = value;
            }
            return;
        }
        if cur.get(*p).is_none_or(Value::is_null) {
            cur[*p] = json!({});
        }
        cur = &mut cur[*p];
    }
}

fn pod_spec_defaults(spec: &mut Value, default_restart: &str) {
    set_default(spec, &["restartPolicy"], json!(default_restart));
    set_default(spec, &["terminationGracePeriodSeconds"], json!(30));
    set_default(spec, &["dnsPolicy"], json!("ClusterFirst"));
    set_default(spec, &["schedulerName"], json!("default-scheduler"));
    set_default(spec, &["securityContext"], json!({}));
    if let Some(cs) = spec["containers"].as_array_mut() {
        for c in cs {
            set_default(
                c,
                &["terminationMessagePath"],
                json!("/dev/termination-log"),
            );
            set_default(c, &["terminationMessagePolicy"], json!("File"));
            set_default(c, &["imagePullPolicy"], json!("IfNotPresent"));
            set_default(c, &["resources"], json!({}));
        }
    }
}

fn set_labels(obj: &mut Value, labels: &[(&str, &str)]) {
    if !obj["metadata"]["labels"].is_object() {
        obj["metadata"]["labels"] = json!({});
    }
    for (k, v) in labels {
        obj["metadata"]["labels"][*k] = json!(v);
    }
}

/// Defaults and status handling on create.
pub(crate) fn prepare_create(
    st: &State,
    rt: &ResourceType,
    obj: &mut Value,
    ctx: &WriteCtx,
) -> ApiResult<()> {
    if rt.builtin.is_none()
        && rt.status_subresource
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    match rt.builtin {
        Some(Builtin::Pod) => {
            pod_spec_defaults(&mut obj["spec"], "Always");
            set_default(obj, &["spec", "serviceAccountName"], json!("default"));
            let mut status = json!({"phase": "Pending", "qosClass": "BestEffort"});
            if !obj["spec"]["nodeName"].is_null() {
                status["conditions"] = json!([{"type": "PodScheduled", "status": "True",
                    "lastProbeTime": null, "lastTransitionTime": ctx.now_str()}]);
            }
            obj["status"] = status;
        }
        Some(Builtin::Job) => {
            let uid = meta_str(obj, "uid").to_string();
            let name = meta_str(obj, "name").to_string();
            for (f, v) in [
                ("completions", json!(1)),
                ("parallelism", json!(1)),
                ("backoffLimit", json!(6)),
                ("completionMode", json!("NonIndexed")),
                ("suspend", json!(false)),
                ("podReplacementPolicy", json!("TerminatingOrFailed")),
                ("manualSelector", Value::Null),
            ] {
                if !v.is_null() {
                    set_default(obj, &["spec", f], v);
                }
            }
            if obj["spec"]["manualSelector"].as_bool() != Some(true) {
                obj["spec"]["selector"] =
                    json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
                let tmpl = &mut obj["spec"]["template"];
                if tmpl.is_object() {
                    if !tmpl["metadata"].is_object() {
                        tmpl["metadata"] = json!({});
                    }
                    set_labels(
                        tmpl,
                        &[
                            ("batch.kubernetes.io/controller-uid", &uid),
                            ("batch.kubernetes.io/job-name", &name),
                            ("controller-uid", &uid),
                            ("job-name", &name),
                        ],
                    );
                }
            }
            pod_spec_defaults(&mut obj["spec"]["template"]["spec"], "Never");
            obj["status"] = json!({});
        }
        Some(Builtin::Namespace) => {
            let name = meta_str(obj, "name").to_string();
            set_labels(obj, &[("kubernetes.io/metadata.name", &name)]);
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        Some(Builtin::Secret) => {
            set_default(obj, &["type"], json!("Opaque"));
            merge_string_data(obj);
        }
        Some(Builtin::Crd) => prepare_crd(st, obj, ctx)?,
        _ => {}
    }
    Ok(())
}

fn merge_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    if let Some(sd) = sd.as_object() {
        for (k, v) in sd {
            let enc =
                base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default());
            set_default(obj, &["data"], json!({}));
            obj["data"][k] = json!(enc);
        }
    }
}

fn prepare_crd(st: &State, obj: &mut Value, ctx: &WriteCtx) -> ApiResult<()> {
    let spec = &obj["spec"];
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    let plural = spec["names"]["plural"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let want = format!("{plural}.{group}");
    if meta_str(obj, "name") != want {
        let rt = st
            .registry
            .find("apiextensions.k8s.io", "v1", "customresourcedefinitions");
        let name = meta_str(obj, "name").to_string();
        return Err(match rt {
            Some(rt) => ApiError::invalid(
                &rt,
                &name,
                vec![Cause::invalid(
                    "metadata.name",
                    &json!(name),
                    "must be spec.names.plural+\".\"+spec.group",
                )],
            ),
            None => ApiError::bad_request("invalid CRD name"),
        });
    }
    let stored: Vec<Value> = spec["versions"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter(|v| v["storage"].as_bool() == Some(true))
                .map(|v| v["name"].clone())
                .collect()
        })
        .unwrap_or_default();
    let now = ctx.now_str();
    obj["status"] = json!({
        "acceptedNames": spec["names"].clone(),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
        "storedVersions": stored,
    });
    Ok(())
}

/// Immutability checks and defaults on update.
pub(crate) fn prepare_update(
    st: &State,
    rt: &ResourceType,
    old: &Value,
    new: &mut Value,
    sub: Sub,
    _ctx: &WriteCtx,
) -> ApiResult<()> {
    let name = meta_str(old, "name").to_string();
    let immutable = |path: &str, a: &Value, b: &Value| -> ApiResult<()> {
        if a != b {
            return Err(ApiError::invalid(
                rt,
                &name,
                vec![Cause::invalid(path, b, "field is immutable")],
            ));
        }
        Ok(())
    };
    match (rt.builtin, sub) {
        (Some(Builtin::Job), Sub::Main) => {
            pod_spec_defaults(&mut new["spec"]["template"]["spec"], "Never");
            if new["spec"]["template"]["metadata"].is_null() {
                new["spec"]["template"]["metadata"] = old["spec"]["template"]["metadata"].clone();
            }
            immutable(
                "spec.template",
                &old["spec"]["template"],
                &new["spec"]["template"],
            )?;
            if new["spec"]["selector"].is_null() {
                new["spec"]["selector"] = old["spec"]["selector"].clone();
            }
            immutable(
                "spec.selector",
                &old["spec"]["selector"],
                &new["spec"]["selector"],
            )?;
            if new["spec"]["completions"].is_null() {
                new["spec"]["completions"] = old["spec"]["completions"].clone();
            }
        }
        (Some(Builtin::Pod), Sub::Main) => {
            pod_spec_defaults(&mut new["spec"], "Always");
            set_default(new, &["spec", "serviceAccountName"], json!("default"));
            for f in [
                "containers",
                "nodeName",
                "restartPolicy",
                "volumes",
                "hostNetwork",
                "serviceAccountName",
            ] {
                let path = format!("spec.{f}");
                // Container images may change; nodeName may be set once (binding).
                let without_images = |v: &Value| -> Value {
                    let mut v = v.clone();
                    if let Some(cs) = v.as_array_mut() {
                        cs.iter_mut()
                            .filter_map(Value::as_object_mut)
                            .for_each(|c| {
                                c.remove("image");
                            });
                    }
                    v
                };
                let (a, b) = (
                    without_images(&old["spec"][f]),
                    without_images(&new["spec"][f]),
                );
                if a != b && !(f == "nodeName" && a.is_null()) {
                    return Err(ApiError::invalid(
                        rt,
                        &name,
                        vec![Cause::forbidden(
                            path,
                            "pod updates may not change fields other than `spec.containers[*].image`, \
                         `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` \
                         (only additions to existing tolerations), `spec.terminationGracePeriodSeconds` \
                         (allow it to be set to 1 if it was previously negative)",
                        )],
                    ));
                }
            }
        }
        (Some(Builtin::Namespace), Sub::Main) => {
            new["spec"] = old["spec"].clone();
            set_labels(new, &[("kubernetes.io/metadata.name", &name)]);
        }
        (Some(Builtin::Secret), _) => merge_string_data(new),
        (Some(Builtin::Crd), Sub::Main) => {
            prepare_crd(st, new, _ctx)?;
            new["status"] = old["status"].clone();
        }
        _ => {}
    }
    Ok(())
}

/// Side effects of storing a newly created object (CRDs start being served).
pub(crate) fn before_store_create(
    st: &mut State,
    rt: &ResourceType,
    obj: &mut Value,
) -> ApiResult<()> {
    if rt.builtin == Some(Builtin::Crd) {
        st.registry.register_crd(obj)?;
    }
    Ok(())
}

/// Re-register a CRD after an update.
pub(crate) fn after_crd_update(st: &mut State, obj: &Value) -> ApiResult<()> {
    st.registry.register_crd(obj).map(|_| ())
}

/// Clean-up after an object left storage.
pub(crate) fn after_remove(st: &mut State, rt: &ResourceType, last: &Value) {
    if rt.builtin == Some(Builtin::Crd) {
        let group = last["spec"]["group"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let plural = last["spec"]["names"]["plural"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let key = format!("{group}/{plural}");
        if let Some(crt) = st.registry.storage_type(&key) {
            for o in st.list(&key, None) {
                remove_now(st, &crt, meta_str(&o, "namespace"), meta_str(&o, "name"));
            }
        }
        st.registry.unregister_crd(&group, &plural);
    }
}

/// For graceful deletion, the grace period in seconds (pods bound to an existing node).
pub(crate) fn grace_period(
    st: &State,
    rt: &ResourceType,
    obj: &Value,
    requested: Option<i64>,
) -> Option<i64> {
    if rt.builtin != Some(Builtin::Pod) {
        return None;
    }
    let node = obj["spec"]["nodeName"].as_str()?;
    let phase = obj["status"]["phase"].as_str().unwrap_or("");
    if phase == "Succeeded" || phase == "Failed" || st.get("/nodes", "", node).is_none() {
        return None;
    }
    let grace = requested
        .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    (grace > 0).then_some(grace)
}

/// Whether an object whose finalizers are done may leave storage now (namespaces wait for
/// their contents).
pub(crate) fn may_remove(st: &State, rt: &ResourceType, obj: &Value) -> bool {
    if rt.builtin != Some(Builtin::Namespace) {
        return true;
    }
    let ns = meta_str(obj, "name");
    !st.all_objects()
        .iter()
        .any(|(_, o)| meta_str(o, "namespace") == ns)
}

/// Status changes when deletion starts (namespaces go Terminating).
pub(crate) fn on_deletion_started(rt: &ResourceType, obj: &mut Value) {
    if rt.builtin == Some(Builtin::Namespace) {
        obj["status"]["phase"] = json!("Terminating");
    }
}

/// The namespaces and objects present when the server starts.
pub(crate) fn bootstrap(st: &mut State, ctx: &mut WriteCtx) {
    let Some(ns_rt) = st.registry.find("", "v1", "namespaces") else {
        return;
    };
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({"metadata": {"name": ns}});
        if let Err(e) = crate::ops::create(st, &ns_rt, "", obj, ctx) {
            tracing::warn!(namespace = ns, error = %e, "Could not create a bootstrap namespace.");
        }
    }
}
