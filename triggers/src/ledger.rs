//! The ledger: what nightcap knows about the PacketCaptures it created (fed by a watch on
//! captures labelled `nightcap.dev/created-by`), plus creations in flight. Dedup, cooldown and
//! concurrency quotas are answered here without a round trip to the API server; the API
//! server's AlreadyExists stays the durable guarantee behind it.
//!
//! Pure state: no I/O. [`SharedLedger`] wraps it for the async parts.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use nightcap_api::{PacketCapture, Phase, capture::STOP_ANNOTATION};
use tokio::sync::watch;

use crate::labels;

/// `namespace/name` of a capture.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjKey {
    /// A key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// What created a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A CaptureTrigger (label value of its name) and the hash of the dedup key.
    Trigger {
        /// `nightcap.dev/trigger` label.
        trigger: String,
        /// `nightcap.dev/dedup-hash` label.
        key_hash: Option<String>,
    },
    /// A CaptureSchedule.
    Schedule {
        /// `nightcap.dev/schedule` label.
        schedule: String,
        /// UID of the controlling owner reference.
        owner_uid: Option<String>,
    },
}

/// One known capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// Who created it.
    pub origin: Origin,
    /// `status.phase`.
    pub phase: Option<Phase>,
    /// `metadata.creationTimestamp`.
    pub created: Option<Timestamp>,
    /// `status.completionTime`.
    pub completed: Option<Timestamp>,
    /// The schedule run it belongs to (annotation).
    pub scheduled: Option<Timestamp>,
    /// The stop annotation is set.
    pub stop_requested: bool,
}

impl Tracked {
    /// Reads a capture created by nightcap; `None` for captures without our labels.
    pub fn from_capture(pc: &PacketCapture) -> Option<Self> {
        let l = pc.labels();
        let origin = match l.get(labels::CREATED_BY).map(String::as_str) {
            Some(labels::CREATED_BY_TRIGGER) => Origin::Trigger {
                trigger: l.get(labels::TRIGGER)?.clone(),
                key_hash: l.get(labels::DEDUP_HASH).cloned(),
            },
            Some(labels::CREATED_BY_SCHEDULE) => Origin::Schedule {
                schedule: l.get(labels::SCHEDULE)?.clone(),
                owner_uid: pc
                    .owner_references()
                    .iter()
                    .find(|o| o.controller == Some(true))
                    .map(|o| o.uid.clone()),
            },
            _ => return None,
        };
        let status = pc.status.as_ref();
        Some(Self {
            origin,
            phase: status.and_then(|s| s.phase),
            created: pc.metadata.creation_timestamp.as_ref().map(|t| t.0),
            completed: status.and_then(|s| s.completion_time.as_ref()).map(|t| t.0),
            scheduled: pc
                .annotations()
                .get(labels::SCHEDULED_TIME)
                .and_then(|t| t.parse().ok()),
            stop_requested: pc.annotations().contains_key(STOP_ANNOTATION),
        })
    }

    /// Not finished yet (counts against concurrency limits).
    pub fn running(&self) -> bool {
        !self.phase.is_some_and(Phase::is_finished)
    }

    fn trigger_slot(&self, ns: &str) -> Option<(String, String)> {
        match &self.origin {
            Origin::Trigger { trigger, .. } => Some((ns.to_owned(), trigger.clone())),
            Origin::Schedule { .. } => None,
        }
    }
}

/// Limits checked before a trigger creates a capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// The trigger's `maxConcurrent`.
    pub per_trigger: Option<u32>,
    /// Running triggered captures per namespace.
    pub per_namespace: Option<u32>,
    /// Running triggered captures in the cluster.
    pub cluster: Option<u32>,
    /// The trigger's `dedup.cooldownSeconds`.
    pub cooldown: Option<SignedDuration>,
}

/// The answer to "may this trigger create capture X now?".
#[derive(Debug)]
pub enum Admission {
    /// Go ahead; the slot is reserved until [`Ledger::created`], [`Ledger::exists`] or
    /// [`Ledger::release`].
    Admitted,
    /// A capture with this name exists.
    Exists,
    /// Another event is creating it; the receiver gets `Some(true)` once it exists, `Some(false)`
    /// if that attempt failed.
    InFlight(watch::Receiver<Option<bool>>),
    /// The key fired at `last`; wait until `until`.
    Cooldown {
        /// When it last created a capture.
        last: Timestamp,
        /// When the cooldown ends.
        until: Timestamp,
    },
    /// The trigger's limit is reached.
    TriggerFull(u32),
    /// The namespace's limit is reached.
    NamespaceFull(u32),
    /// The cluster's limit is reached.
    ClusterFull(u32),
}

#[derive(Debug)]
struct Pending {
    slot: (String, String),
    done: watch::Sender<Option<bool>>,
}

/// Known captures, counters and creations in flight.
#[derive(Debug, Default)]
pub struct Ledger {
    captures: HashMap<ObjKey, Tracked>,
    relist: Option<HashMap<ObjKey, Tracked>>,
    running_by_trigger: HashMap<(String, String), u32>,
    running_by_namespace: HashMap<String, u32>,
    running_total: u32,
    last_created: HashMap<(String, String, String), Timestamp>,
    pending: HashMap<ObjKey, Pending>,
}

impl Ledger {
    /// The capture, if known.
    pub fn get(&self, key: &ObjKey) -> Option<&Tracked> {
        self.captures.get(key)
    }

    /// Every known capture created by the schedule `namespace`/`schedule` (label value).
    pub fn owned_by_schedule(&self, namespace: &str, schedule: &str) -> Vec<(String, Tracked)> {
        let mut out: Vec<_> = self
            .captures
            .iter()
            .filter(|(k, t)| {
                k.namespace == namespace
                    && matches!(&t.origin, Origin::Schedule { schedule: s, .. } if s == schedule)
            })
            .map(|(k, t)| (k.name.clone(), t.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Running triggered captures (including creations in flight) of a trigger.
    pub fn running_for_trigger(&self, namespace: &str, trigger: &str) -> u32 {
        self.running_by_trigger
            .get(&(namespace.to_owned(), trigger.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Running triggered captures in a namespace.
    pub fn running_in_namespace(&self, namespace: &str) -> u32 {
        self.running_by_namespace
            .get(namespace)
            .copied()
            .unwrap_or(0)
    }

    /// Running triggered captures in the cluster.
    pub fn running_total(&self) -> u32 {
        self.running_total
    }

    fn count(&mut self, slot: &(String, String), delta: i64) {
        let apply = |v: &mut u32| *v = (i64::from(*v) + delta).max(0) as u32;
        apply(self.running_by_trigger.entry(slot.clone()).or_default());
        apply(self.running_by_namespace.entry(slot.0.clone()).or_default());
        apply(&mut self.running_total);
    }

    /// Inserts or updates a capture.
    pub fn upsert(&mut self, key: ObjKey, t: Tracked) {
        if let Some(relist) = &mut self.relist {
            relist.insert(key.clone(), t.clone());
        }
        self.note_created(&key, &t);
        let new_slot = t
            .running()
            .then(|| t.trigger_slot(&key.namespace))
            .flatten();
        let old = self.captures.insert(key.clone(), t);
        let old_slot = old
            .filter(Tracked::running)
            .and_then(|o| o.trigger_slot(&key.namespace));
        if let Some(s) = old_slot {
            self.count(&s, -1);
        }
        if let Some(s) = new_slot {
            self.count(&s, 1);
        }
    }

    fn note_created(&mut self, key: &ObjKey, t: &Tracked) {
        if let (
            Origin::Trigger {
                trigger,
                key_hash: Some(hash),
            },
            Some(created),
        ) = (&t.origin, t.created)
        {
            let slot = (key.namespace.clone(), trigger.clone(), hash.clone());
            let last = self.last_created.entry(slot).or_insert(created);
            *last = (*last).max(created);
        }
    }

    /// Forgets a deleted capture (its cooldown stays).
    pub fn remove(&mut self, key: &ObjKey) {
        if let Some(relist) = &mut self.relist {
            relist.remove(key);
        }
        if let Some(old) = self.captures.remove(key)
            && old.running()
            && let Some(s) = old.trigger_slot(&key.namespace)
        {
            self.count(&s, -1);
        }
    }

    /// A full relist starts (watcher `Init`).
    pub fn relist_start(&mut self) {
        self.relist = Some(HashMap::new());
    }

    /// A full relist ended (watcher `InitDone`): the relisted set replaces what was known.
    pub fn relist_done(&mut self) {
        let Some(relist) = self.relist.take() else {
            return;
        };
        self.captures.clear();
        self.running_by_trigger.clear();
        self.running_by_namespace.clear();
        self.running_total = 0;
        for (k, t) in relist {
            self.upsert(k, t);
        }
        for p in self
            .pending
            .values()
            .map(|p| p.slot.clone())
            .collect::<Vec<_>>()
        {
            self.count(&p, 1);
        }
    }

    /// Checks dedup, cooldown and limits for a trigger's capture and, when admitted, reserves it.
    pub fn admit(
        &mut self,
        key: &ObjKey,
        trigger: &str,
        key_hash: &str,
        limits: &Limits,
        now: Timestamp,
    ) -> Admission {
        if self.captures.contains_key(key) {
            return Admission::Exists;
        }
        if let Some(p) = self.pending.get(key) {
            return Admission::InFlight(p.done.subscribe());
        }
        if let Some(cooldown) = limits.cooldown {
            let slot = (
                key.namespace.clone(),
                trigger.to_owned(),
                key_hash.to_owned(),
            );
            if let Some(&last) = self.last_created.get(&slot) {
                let until = last + cooldown;
                if now < until {
                    return Admission::Cooldown { last, until };
                }
            }
        }
        if let Some(max) = limits.per_trigger
            && self.running_for_trigger(&key.namespace, trigger) >= max
        {
            return Admission::TriggerFull(max);
        }
        if let Some(max) = limits.per_namespace
            && self.running_in_namespace(&key.namespace) >= max
        {
            return Admission::NamespaceFull(max);
        }
        if let Some(max) = limits.cluster
            && self.running_total >= max
        {
            return Admission::ClusterFull(max);
        }
        let slot = (key.namespace.clone(), trigger.to_owned());
        self.count(&slot, 1);
        let (done, _) = watch::channel(None);
        self.pending.insert(key.clone(), Pending { slot, done });
        Admission::Admitted
    }

    fn finish(&mut self, key: &ObjKey, ok: bool) {
        if let Some(p) = self.pending.remove(key) {
            self.count(&p.slot, -1);
            p.done.send_replace(Some(ok));
        }
    }

    /// The reserved capture was created.
    pub fn created(&mut self, key: ObjKey, t: Tracked) {
        self.finish(&key, true);
        self.upsert(key, t);
    }

    /// The reserved capture turned out to exist already (AlreadyExists).
    pub fn exists(&mut self, key: ObjKey, t: Tracked) {
        self.finish(&key, true);
        if !self.captures.contains_key(&key) {
            self.upsert(key, t);
        }
    }

    /// The reservation is given up (the create failed).
    pub fn release(&mut self, key: &ObjKey) {
        self.finish(key, false);
    }

    /// Drops cooldown entries older than `keep` (bounded memory).
    pub fn prune_cooldowns(&mut self, now: Timestamp, keep: SignedDuration) {
        self.last_created.retain(|_, t| *t + keep > now);
    }
}

/// The ledger shared by the engine, the cron controller and the capture watch.
#[derive(Debug)]
pub struct SharedLedger {
    inner: Mutex<Ledger>,
    ready: watch::Sender<bool>,
    schedule_changes: watch::Sender<u64>,
}

impl Default for SharedLedger {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            ready: watch::channel(false).0,
            schedule_changes: watch::channel(0).0,
        }
    }
}

impl SharedLedger {
    /// Locks the ledger (never held across an await).
    pub fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the initial list as loaded.
    pub fn set_ready(&self) {
        self.ready.send_replace(true);
    }

    /// Whether the initial list is loaded.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the initial list is loaded.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        // The sender lives as long as `self`.
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Tells the cron controller that a schedule's capture changed.
    pub fn schedule_changed(&self) {
        self.schedule_changes.send_modify(|n| *n += 1);
    }

    /// Notified on every [`schedule_changed`](Self::schedule_changed).
    pub fn schedule_changes(&self) -> watch::Receiver<u64> {
        self.schedule_changes.subscribe()
    }
}

#[cfg(test)]
mod tests;
