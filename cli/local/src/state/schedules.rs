//! Schedule runs: per CaptureSchedule its uid, when it was first seen (the CronJob anchor
//! before a first run) and its status (`lastScheduleTime`, `lastSuccessfulTime`, `active`).

use jiff::Timestamp;
use nightcap_api::CaptureScheduleStatus;
use rusqlite::{OptionalExtension, params};

use super::State;
use crate::{Error, Result};

/// What the state knows of a schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRecord {
    /// Stable across restarts (the owner of its captures).
    pub uid: String,
    /// When the schedule was first seen.
    pub created: Timestamp,
    /// Its status as last written.
    pub status: CaptureScheduleStatus,
}

impl State {
    /// The record of schedule `namespace/name`, created (new uid, created now) when absent.
    pub fn schedule(&self, namespace: &str, name: &str, now: Timestamp) -> Result<ScheduleRecord> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO schedules (namespace, name, uid, created, status)
             VALUES (?1, ?2, ?3, ?4, '{}') ON CONFLICT DO NOTHING",
            params![
                namespace,
                name,
                uuid::Uuid::new_v4().to_string(),
                now.to_string()
            ],
        )?;
        let (uid, created, status): (String, String, String) = conn.query_row(
            "SELECT uid, created, status FROM schedules WHERE namespace = ?1 AND name = ?2",
            params![namespace, name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        Ok(ScheduleRecord {
            uid,
            created: created
                .parse()
                .map_err(|e| Error::State(format!("schedule {namespace}/{name}: {e}")))?,
            status: serde_json::from_str(&status)
                .map_err(|e| Error::State(format!("schedule {namespace}/{name}: {e}")))?,
        })
    }

    /// Writes a schedule's status; false when the schedule has no record.
    pub fn write_schedule_status(
        &self,
        namespace: &str,
        name: &str,
        status: &CaptureScheduleStatus,
    ) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE schedules SET status = ?3 WHERE namespace = ?1 AND name = ?2",
            params![namespace, name, serde_json::to_string(status)?],
        )?;
        Ok(n > 0)
    }

    /// Forgets schedules no longer configured (their captures stay).
    pub fn retain_schedules(&self, keep: &[(String, String)]) -> Result<()> {
        self.retain_keys(super::Keyed::Schedules, keep)
    }

    /// Whether a record exists (tests and diagnostics).
    pub fn has_schedule(&self, namespace: &str, name: &str) -> Result<bool> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM schedules WHERE namespace = ?1 AND name = ?2",
                params![namespace, name],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }
}
