//! Watches that keep in-memory state current: CaptureTriggers → [`TriggerSet`], PacketCaptures
//! created by nightcap → [`SharedLedger`]. Both use kube-rs watchers (list + watch, relist on
//! 410 Gone, backoff on errors).

use std::{collections::HashMap, sync::Arc};

use futures::StreamExt;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use nightcap_api::{CaptureTrigger, PacketCapture};
use tracing::{info, warn};

use crate::{
    labels,
    ledger::{ObjKey, Origin, SharedLedger, Tracked},
    report::{Note, Reporter},
    rules::{CompiledTrigger, TriggerSet},
};

fn key(pc: &PacketCapture) -> ObjKey {
    ObjKey::new(pc.namespace().unwrap_or_default(), pc.name_any())
}

/// Feeds the ledger from a watch on PacketCaptures labelled `nightcap.dev/created-by`.
/// Runs until the watch stream ends (it does not, normally).
pub async fn watch_captures(client: Client, ledger: Arc<SharedLedger>) {
    let api: Api<PacketCapture> = Api::all(client);
    let cfg = watcher::Config::default().labels(labels::CREATED_BY);
    let mut stream = watcher(api, cfg).default_backoff().boxed();
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(error) => {
                warn!(%error, "PacketCapture watch failed; retrying.");
                continue;
            }
        };
        let mut schedule_touched = false;
        {
            let mut l = ledger.lock();
            match ev {
                watcher::Event::Init => l.relist_start(),
                watcher::Event::InitApply(pc) | watcher::Event::Apply(pc) => {
                    if let Some(t) = Tracked::from_capture(&pc) {
                        schedule_touched = matches!(t.origin, Origin::Schedule { .. });
                        l.upsert(key(&pc), t);
                    }
                }
                watcher::Event::Delete(pc) => {
                    schedule_touched = Tracked::from_capture(&pc)
                        .is_some_and(|t| matches!(t.origin, Origin::Schedule { .. }));
                    l.remove(&key(&pc));
                }
                watcher::Event::InitDone => {
                    l.relist_done();
                    schedule_touched = true;
                    drop(l);
                    ledger.set_ready();
                }
            }
        }
        if schedule_touched {
            ledger.schedule_changed();
        }
    }
}

/// A trigger's resourceVersion and its compiled form (`None`: invalid).
type Compiled = (Option<String>, Option<Arc<CompiledTrigger>>);

/// Keeps the trigger set equal to the CaptureTriggers in the cluster. Invalid triggers are
/// left out, logged and reported as a Warning Event (once per resourceVersion).
pub async fn watch_triggers(client: Client, set: Arc<TriggerSet>, reporter: Reporter) {
    let api: Api<CaptureTrigger> = Api::all(client);
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut objects: HashMap<(String, String), Arc<CaptureTrigger>> = HashMap::new();
    let mut buffer: Option<HashMap<(String, String), Arc<CaptureTrigger>>> = None;
    let mut compiled: HashMap<(String, String), Compiled> = HashMap::new();
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(error) => {
                warn!(%error, "CaptureTrigger watch failed; retrying.");
                continue;
            }
        };
        let id = |t: &CaptureTrigger| (t.namespace().unwrap_or_default(), t.name_any());
        match ev {
            watcher::Event::Init => {
                buffer = Some(HashMap::new());
                continue;
            }
            watcher::Event::InitApply(t) => {
                if let Some(b) = &mut buffer {
                    b.insert(id(&t), Arc::new(t));
                }
                continue;
            }
            watcher::Event::InitDone => {
                objects = buffer.take().unwrap_or_default();
            }
            watcher::Event::Apply(t) => {
                objects.insert(id(&t), Arc::new(t));
            }
            watcher::Event::Delete(t) => {
                objects.remove(&id(&t));
            }
        }
        compiled.retain(|k, _| objects.contains_key(k));
        let mut current = Vec::new();
        for (k, obj) in &objects {
            let rv = obj.resource_version();
            let entry = compiled.entry(k.clone()).or_insert((None, None));
            if entry.0 != rv || entry.0.is_none() {
                entry.0 = rv;
                entry.1 = match CompiledTrigger::compile(obj.clone()) {
                    Ok(c) => Some(Arc::new(c)),
                    Err(errs) => {
                        warn!(trigger = %format!("{}/{}", k.0, k.1), error = %errs, "Ignoring an invalid CaptureTrigger.");
                        reporter.note(Note {
                            regarding: kube::Resource::object_ref(obj.as_ref(), &()),
                            related: None,
                            warning: true,
                            reason: "InvalidTrigger",
                            action: "Validate",
                            message: format!("ignored until fixed: {errs}"),
                            tally: None,
                            at: jiff::Timestamp::now(),
                        });
                        None
                    }
                };
            }
            if let Some(c) = &entry.1 {
                current.push(c.clone());
            }
        }
        current.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let first = !set.is_ready();
        set.replace(current);
        if first {
            info!(triggers = objects.len(), "CaptureTriggers loaded.");
            set.set_ready();
        }
    }
}
