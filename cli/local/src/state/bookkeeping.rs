//! Bookkeeping beside the captures: configured captures that ran and are gone, and file
//! deletions still to do.

use rusqlite::{OptionalExtension, params};

use super::State;
use crate::Result;

impl State {
    /// Remembers that the configured capture `namespace/name` ran with `spec` and is gone.
    pub fn config_done(&self, namespace: &str, name: &str, spec: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO config_done VALUES (?1, ?2, ?3)
             ON CONFLICT DO UPDATE SET spec = excluded.spec",
            params![namespace, name, spec],
        )?;
        Ok(())
    }

    /// The spec a configured capture that is gone ran with.
    pub fn config_done_spec(&self, namespace: &str, name: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT spec FROM config_done WHERE namespace = ?1 AND name = ?2",
                params![namespace, name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Forgets the configured captures that are gone and no longer in the file.
    pub fn config_done_retain(&self, keep: &[(String, String)]) -> Result<()> {
        self.retain_keys(super::Keyed::ConfigDone, keep)
    }
}

impl State {
    /// Remembers that the files of capture incarnation `uid` are to be deleted.
    pub fn queue_file_deletion(&self, namespace: &str, name: &str, uid: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO file_deletions VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            params![namespace, name, uid],
        )?;
        Ok(())
    }

    /// The queued file deletions.
    pub fn file_deletions(&self) -> Result<Vec<(String, String, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT namespace, name, uid FROM file_deletions")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A queued deletion is done.
    pub fn file_deletion_done(&self, namespace: &str, name: &str, uid: &str) -> Result<()> {
        self.conn().execute(
            "DELETE FROM file_deletions WHERE namespace = ?1 AND name = ?2 AND uid = ?3",
            params![namespace, name, uid],
        )?;
        Ok(())
    }
}
