//! Field ownership (`metadata.managedFields`, FieldsV1) and server-side apply.
//!
//! Paths are lists of FieldsV1 elements: `f:name` (map field), `k:{"name":"c"}` (item of an
//! associative list), `v:"x"` (item of a set list). Lists are associative or sets only where
//! Kubernetes declares them so (built-in table below, `x-kubernetes-list-type` for CRDs);
//! every other list is atomic.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::{
    ops::{Sub, WriteCtx},
    resources::ResourceType,
    status::{ApiError, ApiResult},
};

type Path = Vec<String>;
type FieldSet = BTreeSet<Path>;

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    set: FieldSet,
}

#[derive(Debug, Clone, PartialEq)]
enum ListKind {
    Map(Vec<String>),
    Set,
    Atomic,
}

fn builtin_list_kind(field: &str) -> ListKind {
    let keys = |k: &[&str]| ListKind::Map(k.iter().map(|s| s.to_string()).collect());
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "containerStatuses"
        | "initContainerStatuses" => keys(&["name"]),
        "ports" => keys(&["containerPort", "protocol"]),
        "volumeMounts" => keys(&["mountPath"]),
        "conditions" => keys(&["type"]),
        "ownerReferences" => keys(&["uid"]),
        "taints" => keys(&["key", "effect"]),
        "finalizers" => ListKind::Set,
        _ => ListKind::Atomic,
    }
}

fn list_kind(field: &str, schema: Option<&Value>, crd: bool) -> ListKind {
    if !crd || field == "finalizers" || field == "ownerReferences" {
        return builtin_list_kind(field);
    }
    match schema.and_then(|s| s["x-kubernetes-list-type"].as_str()) {
        Some("map") => ListKind::Map(
            schema
                .and_then(|s| s["x-kubernetes-list-map-keys"].as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        ),
        Some("set") => ListKind::Set,
        _ => ListKind::Atomic,
    }
}

fn item_key(item: &Value, keys: &[String]) -> String {
    let m: Map<String, Value> = keys
        .iter()
        .filter_map(|k| item.get(k).map(|v| (k.clone(), v.clone())))
        .collect();
    format!("k:{}", Value::Object(m))
}

fn child_schema<'a>(schema: Option<&'a Value>, key: &str) -> Option<&'a Value> {
    let s = schema?;
    s["properties"]
        .get(key)
        .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
}

fn walk(
    v: &Value,
    schema: Option<&Value>,
    field: &str,
    crd: bool,
    path: &mut Path,
    out: &mut FieldSet,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                path.push(format!("f:{k}"));
                walk(c, child_schema(schema, k), k, crd, path, out);
                path.pop();
            }
        }
        Value::Array(items) => match list_kind(field, schema, crd) {
            ListKind::Map(keys) if items.iter().all(Value::is_object) && !keys.is_empty() => {
                let item_schema = schema.and_then(|s| s.get("items"));
                for item in items {
                    path.push(item_key(item, &keys));
                    out.insert(path.clone());
                    if let Some(m) = item.as_object() {
                        for (k, c) in m {
                            path.push(format!("f:{k}"));
                            walk(c, child_schema(item_schema, k), k, crd, path, out);
                            path.pop();
                        }
                    }
                    path.pop();
                }
            }
            ListKind::Set => {
                for item in items {
                    path.push(format!("v:{item}"));
                    out.insert(path.clone());
                    path.pop();
                }
            }
            _ => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The fields an object sets, as FieldsV1 paths, for the main resource or the status.
fn fields_of(rt: &ResourceType, obj: &Value, sub: Sub) -> FieldSet {
    let mut out = FieldSet::new();
    let crd = rt.builtin.is_none();
    let Some(m) = obj.as_object() else { return out };
    let schema = rt.schema.as_ref();
    let mut path = Path::new();
    for (k, v) in m {
        let include = match (k.as_str(), sub) {
            ("apiVersion" | "kind", _) => false,
            ("metadata", Sub::Main) => true,
            ("status", Sub::Status) => true,
            ("status", Sub::Main) => !rt.status_subresource,
            (_, Sub::Main) => true,
            (_, Sub::Status) => false,
        };
        if !include {
            continue;
        }
        if k == "metadata" {
            for mk in ["labels", "annotations", "finalizers", "ownerReferences"] {
                if let Some(mv) = v.get(mk) {
                    path.extend(["f:metadata".to_string(), format!("f:{mk}")]);
                    walk(mv, None, mk, crd, &mut path, &mut out);
                    path.clear();
                }
            }
            continue;
        }
        path.push(format!("f:{k}"));
        walk(v, child_schema(schema, k), k, crd, &mut path, &mut out);
        path.clear();
    }
    out
}

fn find_item(arr: &[Value], elem: &str) -> Option<usize> {
    if let Some(k) = elem.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        arr.iter()
            .position(|it| key.iter().all(|(kk, kv)| it.get(kk) == Some(kv)))
    } else if let Some(v) = elem.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        arr.iter().position(|it| *it == want)
    } else {
        None
    }
}

fn get_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for e in path {
        cur = match e.strip_prefix("f:") {
            Some(f) => cur.get(f)?,
            None => {
                let arr = cur.as_array()?;
                &arr[find_item(arr, e)?]
            }
        };
    }
    Some(cur)
}

fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for e in parent {
        cur = match e.strip_prefix("f:") {
            Some(f) => match cur.get_mut(f) {
                Some(c) => c,
                None => return,
            },
            None => {
                let Some(i) = cur.as_array().and_then(|a| find_item(a, e)) else {
                    return;
                };
                &mut cur[i]
            }
        };
    }
    match last.strip_prefix("f:") {
        Some(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        None => {
            if let Some(i) = cur.as_array().and_then(|a| find_item(a, last))
                && let Some(a) = cur.as_array_mut()
            {
                a.remove(i);
            }
        }
    }
}

fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for p in set {
        let mut cur = &mut root;
        for (i, e) in p.iter().enumerate() {
            let node = cur.entry(e.clone()).or_insert_with(|| json!({}));
            let Some(m) = node.as_object_mut() else { break };
            if i == p.len() - 1 && e.starts_with("k:") {
                m.insert(".".into(), json!({}));
            }
            cur = m;
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, path: &mut Path, out: &mut FieldSet) {
    let Some(m) = v.as_object() else { return };
    if (m.is_empty() || m.contains_key(".")) && !path.is_empty() {
        out.insert(path.clone());
    }
    for (k, c) in m {
        if k == "." {
            continue;
        }
        path.push(k.clone());
        from_fields_v1(c, path, out);
        path.pop();
    }
}

fn parse_entries(obj: Option<&Value>) -> Vec<Entry> {
    let Some(list) = obj.and_then(|o| o["metadata"]["managedFields"].as_array()) else {
        return vec![];
    };
    list.iter()
        .map(|e| {
            let mut set = FieldSet::new();
            from_fields_v1(&e["fieldsV1"], &mut Path::new(), &mut set);
            Entry {
                manager: e["manager"].as_str().unwrap_or_default().to_string(),
                operation: e["operation"].as_str().unwrap_or("Update").to_string(),
                api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
                time: e["time"].as_str().unwrap_or_default().to_string(),
                subresource: e["subresource"].as_str().map(str::to_string),
                set,
            }
        })
        .collect()
}

fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.set)});
            if let Some(s) = &e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    obj["metadata"]["managedFields"] = Value::Array(list);
}

fn is_item(p: &Path) -> bool {
    p.last()
        .is_some_and(|e| e.starts_with("k:") || e.starts_with("v:"))
}

/// Record a non-apply write (create, update, non-apply patch) by `ctx.manager`.
pub(crate) fn record_update(
    rt: &ResourceType,
    old: Option<&Value>,
    new: &mut Value,
    sub: Sub,
    ctx: &WriteCtx,
) {
    if let Some(mf) = &ctx.managed_override {
        new["metadata"]["managedFields"] = mf.clone();
        return;
    }
    let mut entries = parse_entries(old);
    let f_new = fields_of(rt, new, sub);
    let f_old = old.map(|o| fields_of(rt, o, sub)).unwrap_or_default();
    let changed: FieldSet = f_new
        .iter()
        .filter(|p| {
            !f_old.contains(*p) || (!is_item(p) && old.and_then(|o| get_at(o, p)) != get_at(new, p))
        })
        .cloned()
        .collect();
    let subresource = sub.name().map(str::to_string);
    for e in entries.iter_mut().filter(|e| e.subresource == subresource) {
        let mine = e.manager == ctx.manager && e.operation == "Update";
        e.set
            .retain(|p| f_new.contains(p) && (mine || !changed.contains(p)));
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| {
            e.manager == ctx.manager && e.operation == "Update" && e.subresource == subresource
        }) {
            Some(e) => {
                e.set.extend(changed);
                e.time = ctx.now_str();
                e.api_version = rt.api_version();
            }
            None => entries.push(Entry {
                manager: ctx.manager.clone(),
                operation: "Update".into(),
                api_version: rt.api_version(),
                time: ctx.now_str(),
                subresource,
                set: changed,
            }),
        }
    }
    write_entries(new, &entries);
}

fn display_path(p: &Path) -> String {
    let mut s = String::new();
    for e in p {
        if let Some(f) = e.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = e.strip_prefix("k:") {
            let m: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = m.iter().map(|(a, b)| format!("{a}={b}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = e.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

fn merge(live: &mut Value, applied: &Value, field: &str, schema: Option<&Value>, crd: bool) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, av) in a {
                let cs = child_schema(schema, k);
                match l.get_mut(k) {
                    Some(lv) if lv.is_object() || lv.is_array() => merge(lv, av, k, cs, crd),
                    _ => {
                        l.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) => match list_kind(field, schema, crd) {
            ListKind::Map(keys) if !keys.is_empty() => {
                let item_schema = schema.and_then(|s| s.get("items"));
                for ai in a {
                    let key = item_key(ai, &keys);
                    match find_item(l, &key) {
                        Some(i) => merge(&mut l[i], ai, "", item_schema, crd),
                        None => l.push(ai.clone()),
                    }
                }
            }
            ListKind::Set => {
                for ai in a {
                    if !l.contains(ai) {
                        l.push(ai.clone());
                    }
                }
            }
            _ => *l = a.clone(),
        },
        (l, a) => *l = a.clone(),
    }
}

/// Server-side apply of `applied` over `live` (None when creating) by `manager`; returns the new
/// object with its managedFields (the caller stores it without recording another update).
pub(crate) fn apply(
    rt: &ResourceType,
    live: Option<&Value>,
    applied: &Value,
    sub: Sub,
    force: bool,
    ctx: &WriteCtx,
) -> ApiResult<Value> {
    let crd = rt.builtin.is_none();
    let mut entries = parse_entries(live);
    let subresource = sub.name().map(str::to_string);
    let a_set = fields_of(rt, applied, sub);
    let base = live.cloned().unwrap_or_else(|| json!({"metadata": {}}));
    // Conflicts: fields another manager owns whose value this apply would change.
    let mut conflicts: Vec<(String, Path)> = Vec::new();
    for e in entries
        .iter()
        .filter(|e| e.subresource == subresource && e.manager != ctx.manager)
    {
        for p in a_set.iter().filter(|p| !is_item(p) && e.set.contains(*p)) {
            if let Some(lv) = get_at(&base, p)
                && Some(lv) != get_at(applied, p)
            {
                conflicts.push((e.manager.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let n = conflicts.len();
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(m, p)| format!("conflict with {m:?}: {}", display_path(p)))
            .collect();
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, p)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m:?}"),
                "field": display_path(p)})
            })
            .collect();
        let plural = if n == 1 { "conflict" } else { "conflicts" };
        return Err(ApiError::new(
            409,
            "Conflict",
            format!("Apply failed with {n} {plural}: {}", lines.join("\n")),
        )
        .with_details(
            json!({"name": applied["metadata"]["name"], "group": rt.group, "kind": rt.plural,
                "causes": causes}),
        ));
    }
    for (m, p) in &conflicts {
        for e in entries
            .iter_mut()
            .filter(|e| e.manager == *m && e.subresource == subresource)
        {
            e.set.remove(p);
        }
    }
    let mut merged = base.clone();
    let mut applied_part = applied.clone();
    if let Some(m) = applied_part.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        let meta = m.remove("metadata").unwrap_or_default();
        let kept: Map<String, Value> = ["labels", "annotations", "finalizers", "ownerReferences"]
            .iter()
            .filter_map(|k| meta.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect();
        m.insert("metadata".into(), Value::Object(kept));
        if sub == Sub::Status {
            m.retain(|k, _| k == "status" || k == "metadata");
            m.insert("metadata".into(), json!({}));
        }
    }
    merge(&mut merged, &applied_part, "", rt.schema.as_ref(), crd);
    // Fields this manager applied before but no longer does, and nobody else owns, go away.
    let mine_before = entries
        .iter()
        .find(|e| {
            e.manager == ctx.manager && e.operation == "Apply" && e.subresource == subresource
        })
        .map(|e| e.set.clone())
        .unwrap_or_default();
    for p in mine_before.difference(&a_set) {
        let owned_elsewhere = entries.iter().any(|e| {
            !(e.manager == ctx.manager && e.operation == "Apply")
                && e.subresource == subresource
                && e.set.contains(p)
        });
        if !owned_elsewhere {
            remove_at(&mut merged, p);
        }
    }
    match entries.iter_mut().find(|e| {
        e.manager == ctx.manager && e.operation == "Apply" && e.subresource == subresource
    }) {
        Some(e) => {
            e.set = a_set;
            e.time = ctx.now_str();
            e.api_version = rt.api_version();
        }
        None => entries.push(Entry {
            manager: ctx.manager.clone(),
            operation: "Apply".into(),
            api_version: rt.api_version(),
            time: ctx.now_str(),
            subresource,
            set: a_set,
        }),
    }
    write_entries(&mut merged, &entries);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    fn ctx(manager: &str) -> WriteCtx {
        WriteCtx::new(manager)
    }

    #[test]
    fn fields_v1_round_trip() {
        let reg = Registry::default();
        let pods = reg.find("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"labels": {"a": "b"}, "finalizers": ["x"]},
            "spec": {"containers": [{"name": "c", "image": "i", "env": [{"name": "E", "value": "1"}]}]}});
        let set = fields_of(&pods, &pod, Sub::Main);
        let v1 = to_fields_v1(&set);
        assert!(
            v1["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]
                .get(".")
                .is_some(),
            "{v1}"
        );
        assert!(
            v1["f:metadata"]["f:finalizers"].get("v:\"x\"").is_some(),
            "{v1}"
        );
        let mut back = FieldSet::new();
        from_fields_v1(&v1, &mut Path::new(), &mut back);
        assert_eq!(back, set);
    }

    #[test]
    fn apply_conflicts_unless_forced() {
        let reg = Registry::default();
        let cms = reg.find("", "v1", "configmaps").unwrap();
        let live = apply(
            &cms,
            None,
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}),
            Sub::Main,
            false,
            &ctx("one"),
        )
        .unwrap();
        let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "9"}});
        let err = apply(&cms, Some(&live), &other, Sub::Main, false, &ctx("two")).unwrap_err();
        assert_eq!(err.code, 409);
        assert!(
            err.message.contains("conflict with \"one\": .data.a"),
            "{}",
            err.message
        );
        let forced = apply(&cms, Some(&live), &other, Sub::Main, true, &ctx("two")).unwrap();
        assert_eq!(forced["data"]["a"], "9");
        // "one" re-applies without b: b is removed, a stays owned by "two".
        let again = apply(
            &cms,
            Some(&forced),
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c"}, "data": {}}),
            Sub::Main,
            false,
            &ctx("one"),
        )
        .unwrap();
        assert_eq!(again["data"], json!({"a": "9"}));
    }
}
