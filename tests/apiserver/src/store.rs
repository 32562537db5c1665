//! In-memory object storage with one cluster-wide, monotonic resourceVersion and a bounded change
//! history that watches replay from (older versions get 410 Gone, like a compacted etcd).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use serde_json::Value;
use tokio::sync::{Notify, watch};

use crate::resources::Registry;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One entry of the change history.
#[derive(Debug)]
pub(crate) struct Change {
    pub rv: u64,
    pub key: String,
    pub kind: ChangeKind,
    pub object: Arc<Value>,
    pub old: Option<Arc<Value>>,
}

/// Everything the server knows, behind one lock.
#[derive(Debug)]
pub(crate) struct State {
    /// The newest resourceVersion handed out.
    pub rv: u64,
    /// Served types.
    pub registry: Registry,
    objects: HashMap<String, BTreeMap<(String, String), Arc<Value>>>,
    uids: HashMap<String, (String, String, String)>,
    history: VecDeque<Arc<Change>>,
    /// Changes with rv <= compacted are no longer replayable.
    pub compacted: u64,
    history_limit: usize,
    /// A change the garbage collector must look at happened since its last pass.
    gc_due: bool,
    /// (storage key, namespace, name) of every object the collector may act on or wait for
    /// (see [`gc_relevant`]), so a pass does not read every stored object.
    gc_keys: BTreeSet<(String, String, String)>,
}

pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or("")
}

/// Whether the garbage collector's outcome can depend on this object: it has owners, or it is
/// being deleted (foreground deletion, namespace termination).
fn gc_relevant(obj: &Value) -> bool {
    let meta = &obj["metadata"];
    meta["ownerReferences"]
        .as_array()
        .is_some_and(|r| !r.is_empty())
        || !meta["deletionTimestamp"].is_null()
}

impl State {
    fn new(history_limit: usize) -> Self {
        Self {
            rv: 1,
            registry: Registry::default(),
            objects: HashMap::new(),
            uids: HashMap::new(),
            history: VecDeque::new(),
            compacted: 0,
            history_limit,
            gc_due: false,
            gc_keys: BTreeSet::new(),
        }
    }

    /// One object.
    pub fn get(&self, key: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(key)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Objects of a resource, optionally in one namespace, ordered by namespace and name.
    pub fn list(&self, key: &str, ns: Option<&str>) -> Vec<Arc<Value>> {
        let Some(m) = self.objects.get(key) else {
            return vec![];
        };
        match ns {
            Some(ns) => m
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => m.values().cloned().collect(),
        }
    }

    /// Every stored object with its storage key.
    pub fn all_objects(&self) -> Vec<(String, Arc<Value>)> {
        self.objects
            .iter()
            .flat_map(|(k, m)| m.values().map(move |v| (k.clone(), v.clone())))
            .collect()
    }

    /// The stored objects that have owners or are being deleted, with their storage keys.
    pub fn gc_objects(&self) -> Vec<(String, Arc<Value>)> {
        self.gc_keys
            .iter()
            .filter_map(|(k, ns, name)| Some((k.clone(), self.get(k, ns, name)?)))
            .collect()
    }

    /// Whether an object with this uid exists.
    pub fn uid_exists(&self, uid: &str) -> bool {
        self.uids.contains_key(uid)
    }

    fn record(&mut self, change: Change) {
        self.history.push_back(Arc::new(change));
        while self.history.len() > self.history_limit {
            if let Some(c) = self.history.pop_front() {
                self.compacted = c.rv;
            }
        }
    }

    /// Store `obj` (created or replaced) with a fresh resourceVersion; returns the stored object.
    pub fn put(&mut self, key: &str, mut obj: Value) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let ns = meta_str(&obj, "namespace").to_string();
        let name = meta_str(&obj, "name").to_string();
        let uid = meta_str(&obj, "uid").to_string();
        let obj = Arc::new(obj);
        let old = self
            .objects
            .entry(key.to_string())
            .or_default()
            .insert((ns.clone(), name.clone()), obj.clone());
        let relevant = gc_relevant(&obj);
        self.gc_due |= relevant || old.as_deref().is_some_and(gc_relevant);
        let gc_key = (key.to_string(), ns.clone(), name.clone());
        if relevant {
            self.gc_keys.insert(gc_key);
        } else {
            self.gc_keys.remove(&gc_key);
        }
        self.uids.insert(uid, (key.to_string(), ns.clone(), name));
        let kind = if old.is_some() {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        self.record(Change {
            rv,
            key: key.to_string(),
            kind,
            object: obj.clone(),
            old,
        });
        obj
    }

    /// Remove an object; the DELETED event carries a fresh resourceVersion.
    pub fn remove(&mut self, key: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        let old = self
            .objects
            .get_mut(key)?
            .remove(&(ns.to_string(), name.to_string()))?;
        self.rv += 1;
        let rv = self.rv;
        let mut last = (*old).clone();
        last["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        self.uids.remove(meta_str(&old, "uid"));
        // Dependents of a removed object may have lost their last owner.
        self.gc_due = true;
        self.gc_keys
            .remove(&(key.to_string(), ns.to_string(), name.to_string()));
        let last = Arc::new(last);
        self.record(Change {
            rv,
            key: key.to_string(),
            kind: ChangeKind::Deleted,
            object: last.clone(),
            old: Some(old),
        });
        Some(last)
    }

    /// Changes after `rv`, or `Err(compacted)` when `rv` is older than the retained window.
    pub fn changes_since(&self, rv: u64) -> Result<Vec<Arc<Change>>, u64> {
        if rv < self.compacted {
            return Err(self.compacted);
        }
        let start = self.history.partition_point(|c| c.rv <= rv);
        Ok(self.history.range(start..).cloned().collect())
    }

    /// Whether the garbage collector must pass again; clears the mark. A pass is a function of
    /// the stored objects, so without a change to an object with owners, to one being deleted,
    /// or a removal since the last pass, another pass would find nothing to do.
    pub fn take_gc_due(&mut self) -> bool {
        std::mem::take(&mut self.gc_due)
    }

    /// Forget all history up to now: every watch from an older version gets 410 Gone.
    pub fn compact(&mut self) {
        // A write with no object (like etcd's compaction revision), so that even a watcher that
        // saw the newest object is now behind the compacted window.
        self.rv += 1;
        self.history.clear();
        self.compacted = self.rv;
    }
}

/// The shared store plus change notification.
#[derive(Debug)]
pub(crate) struct Store {
    state: Mutex<State>,
    rv_tx: watch::Sender<u64>,
    epoch_tx: watch::Sender<u64>,
    /// Woken after changes the garbage collector must look at (see [`State::take_gc_due`]).
    pub gc: Notify,
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        Self {
            state: Mutex::new(State::new(history_limit)),
            rv_tx: watch::channel(0).0,
            epoch_tx: watch::channel(0).0,
            gc: Notify::new(),
        }
    }

    /// Read-only access.
    pub fn read(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mutating access; watchers and the garbage collector are woken afterwards.
    pub fn write<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let (out, rv, gc_due) = {
            let mut st = self.read();
            let out = f(&mut st);
            (out, st.rv, st.gc_due)
        };
        if *self.rv_tx.borrow() != rv {
            self.rv_tx.send_replace(rv);
        }
        if gc_due {
            self.gc.notify_one();
        }
        out
    }

    /// Subscribe to "something changed" notifications.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.rv_tx.subscribe()
    }

    /// Subscribe to "close all watches" notifications.
    pub fn subscribe_epoch(&self) -> watch::Receiver<u64> {
        self.epoch_tx.subscribe()
    }

    /// Close every open watch stream (clients reconnect).
    pub fn close_watches(&self) {
        self.epoch_tx.send_modify(|e| *e += 1);
    }
}
