//! Events about captures, triggers and schedules, as Kubernetes Events: a repeat of the same
//! (object, type, reason, message) bumps the count and the last time of the newest row instead
//! of adding one; at most [`KEEP_PER_OBJECT`] rows per object are kept.

use jiff::Timestamp;
use rusqlite::params;
use serde::Serialize;

use super::State;
use crate::Result;

/// Events kept per object (the oldest go first).
pub const KEEP_PER_OBJECT: i64 = 50;

/// One stored Event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredEvent {
    /// Namespace of the object.
    pub namespace: String,
    /// Its kind (`PacketCapture`, `CaptureTrigger`, `CaptureSchedule`).
    pub kind: String,
    /// Its name.
    pub name: String,
    /// `Normal` or `Warning`.
    pub event_type: String,
    /// PascalCase reason.
    pub reason: String,
    /// What happened.
    pub message: String,
    /// A second object (`Kind/name`), if any.
    pub related: Option<String>,
    /// How many times it happened.
    pub count: i64,
    /// First time.
    pub first: Timestamp,
    /// Last time.
    pub last: Timestamp,
}

impl State {
    /// Records an Event (coalesced with the newest identical one of the object).
    pub fn record_event(&self, e: &StoredEvent) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let bumped = tx.execute(
            "UPDATE events SET count = count + ?8, last = ?9 WHERE id = (
                 SELECT max(id) FROM events WHERE namespace = ?1 AND kind = ?2 AND name = ?3)
             AND type = ?4 AND reason = ?5 AND message = ?6 AND related IS ?7",
            params![
                e.namespace,
                e.kind,
                e.name,
                e.event_type,
                e.reason,
                e.message,
                e.related,
                e.count,
                e.last.to_string()
            ],
        )?;
        if bumped == 0 {
            tx.execute(
                "INSERT INTO events (namespace, kind, name, type, reason, message, related,
                                     count, first, last)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    e.namespace,
                    e.kind,
                    e.name,
                    e.event_type,
                    e.reason,
                    e.message,
                    e.related,
                    e.count,
                    e.first.to_string(),
                    e.last.to_string()
                ],
            )?;
            tx.execute(
                "DELETE FROM events WHERE namespace = ?1 AND kind = ?2 AND name = ?3 AND id <= (
                     SELECT id FROM events WHERE namespace = ?1 AND kind = ?2 AND name = ?3
                     ORDER BY id DESC LIMIT 1 OFFSET ?4)",
                params![e.namespace, e.kind, e.name, KEEP_PER_OBJECT],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The Events of an object, oldest first; with `kind` `PacketCapture`, also the Events of
    /// triggers and schedules whose related object is that capture.
    pub fn events(&self, namespace: &str, kind: &str, name: &str) -> Result<Vec<StoredEvent>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT namespace, kind, name, type, reason, message, related, count, first, last
             FROM events WHERE namespace = ?1 AND ((kind = ?2 AND name = ?3) OR related = ?4)
             ORDER BY id",
        )?;
        let rows = stmt.query_map(
            params![namespace, kind, name, format!("{kind}/{name}")],
            |r| {
                Ok((
                    StoredEvent {
                        namespace: r.get(0)?,
                        kind: r.get(1)?,
                        name: r.get(2)?,
                        event_type: r.get(3)?,
                        reason: r.get(4)?,
                        message: r.get(5)?,
                        related: r.get(6)?,
                        count: r.get(7)?,
                        first: Timestamp::UNIX_EPOCH,
                        last: Timestamp::UNIX_EPOCH,
                    },
                    r.get::<_, String>(8)?,
                    r.get::<_, String>(9)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (mut e, first, last) = row?;
            e.first = first.parse().unwrap_or(Timestamp::UNIX_EPOCH);
            e.last = last.parse().unwrap_or(Timestamp::UNIX_EPOCH);
            out.push(e);
        }
        Ok(out)
    }
}
