//! Background controllers of the API server itself: the garbage collector (owner references,
//! background and foreground propagation, dangling references) and namespace termination.

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};

use crate::{
    ops::{self, DeleteOpts, Propagation, Sub, WriteCtx},
    server::Shared,
    store::{State, meta_str},
};

/// Run until the server stops.
pub(crate) async fn run(sh: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = sh.store.gc.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        // Passing over every object after every write made writes O(objects) each (10k pods
        // took minutes to load); only changes that can matter to the collector trigger a pass.
        sh.store.write(|st| {
            if st.take_gc_due() {
                pass(st);
            }
        });
    }
}

fn deleting(o: &Value) -> bool {
    !o["metadata"]["deletionTimestamp"].is_null()
}

fn delete(st: &mut State, key: &str, o: &Value, ctx: &mut WriteCtx) {
    let Some(rt) = st.registry.storage_type(key) else {
        return;
    };
    let opts = DeleteOpts {
        propagation: Some(Propagation::Background),
        ..DeleteOpts::default()
    };
    if let Err(e) = ops::delete(
        st,
        &rt,
        meta_str(o, "namespace"),
        meta_str(o, "name"),
        &opts,
        ctx,
    ) && e.code != 404
    {
        tracing::warn!(key, name = meta_str(o, "name"), error = %e, "Garbage collection could not delete an object.");
    }
}

/// One collection pass over everything.
pub(crate) fn pass(st: &mut State) {
    let mut ctx = WriteCtx::new("generic-garbage-collector");
    // Dependents whose owners are gone.
    for (key, obj) in st.gc_objects() {
        let Some(refs) = obj["metadata"]["ownerReferences"].as_array() else {
            continue;
        };
        if refs.is_empty() || deleting(&obj) {
            continue;
        }
        let alive: Vec<Value> = refs
            .iter()
            .filter(|r| r["uid"].as_str().is_some_and(|u| st.uid_exists(u)))
            .cloned()
            .collect();
        if alive.is_empty() {
            delete(st, &key, &obj, &mut ctx);
        } else if alive.len() < refs.len() {
            let mut o = (*obj).clone();
            o["metadata"]["ownerReferences"] = Value::Array(alive);
            st.put(&key, o);
        }
    }
    // Foreground deletion: delete dependents, then drop the finalizer.
    for (key, obj) in st.gc_objects() {
        let fg = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("foregroundDeletion")));
        if !fg || !deleting(&obj) {
            continue;
        }
        let uid = meta_str(&obj, "uid").to_string();
        let dependents: Vec<(String, Arc<Value>)> = st
            .gc_objects()
            .into_iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|rs| rs.iter().any(|r| r["uid"] == uid.as_str()))
            })
            .collect();
        for (dk, d) in &dependents {
            if !deleting(d) {
                delete(st, dk, d, &mut ctx);
            }
        }
        if dependents.is_empty() {
            let Some(rt) = st.registry.storage_type(&key) else {
                continue;
            };
            let mut o = (*obj).clone();
            if let Some(f) = o["metadata"]["finalizers"].as_array_mut() {
                f.retain(|x| x != "foregroundDeletion");
            }
            if let Err(e) = ops::write_update(st, &rt, &obj, o, Sub::Main, &mut ctx, false) {
                tracing::warn!(error = %e, "Could not finish a foreground deletion.");
            }
        }
    }
    // Terminating namespaces: delete their contents, then the namespace.
    let Some(ns_rt) = st.registry.find("", "v1", "namespaces") else {
        return;
    };
    for ns in st.list("/namespaces", None) {
        if !deleting(&ns) {
            continue;
        }
        let name = meta_str(&ns, "name").to_string();
        let contents: Vec<(String, Arc<Value>)> = st
            .all_objects()
            .into_iter()
            .filter(|(_, o)| meta_str(o, "namespace") == name)
            .collect();
        for (k, o) in &contents {
            if !deleting(o) {
                delete(st, k, o, &mut ctx);
            }
        }
        let no_finalizers = ns["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty);
        if contents.is_empty() && no_finalizers {
            ops::remove_now(st, &ns_rt, "", &name);
        }
    }
}
