//! The durable state of `nightcap local`: one SQLite database (`STATE_DIR/state.db`, the
//! library compiled in through rusqlite) holding what a cluster keeps in its API server.
//!
//! | table | rows |
//! |---|---|
//! | `captures` | every PacketCapture (spec, status with the per-node file manifest), its origin and resource version |
//! | `schedules` | per CaptureSchedule: its uid, when it was first seen, its status (last run, active runs) |
//! | `events` | Events about captures, triggers and schedules (coalesced, the newest kept) |
//! | `config_done` | captures of the configuration file that ran and are gone (expired, deleted), with the spec they ran: not created again unless the spec changes or the file drops and re-adds them |
//! | `file_deletions` | captures deleted without `keepFiles` whose files are still to be deleted |
//!
//! The trigger ledger is the `captures` table itself, as in a cluster: a capture's name is
//! derived from its dedup key, so creating it is the dedup, and its labels and creation time
//! give the cooldowns and the running counts. A create is one `INSERT … ON CONFLICT DO
//! NOTHING`: created-if-absent is atomic and durable before the caller hears of it.
//!
//! Every write is a transaction with `synchronous=FULL` in WAL mode, so a SIGKILL (or a power
//! loss) never leaves half a write. One process owns a state directory at a time (an exclusive
//! `flock` on `STATE_DIR/lock`); a database that is not ours or fails its integrity check is
//! refused before anything is written.

mod bookkeeping;
mod events;
mod schedules;
#[cfg(test)]
mod tests;

use std::{
    fs::File,
    io::{Read, Seek, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use nightcap_api::PacketCapture;
use nix::fcntl::{Flock, FlockArg};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::watch;

pub use events::StoredEvent;
pub use schedules::ScheduleRecord;

use crate::{Error, Result};

/// The schema this build reads and writes.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE captures (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    uid TEXT NOT NULL,
    origin TEXT NOT NULL,
    rv INTEGER NOT NULL,
    object TEXT NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE schedules (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    uid TEXT NOT NULL,
    created TEXT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    related TEXT,
    count INTEGER NOT NULL,
    first TEXT NOT NULL,
    last TEXT NOT NULL
);
CREATE INDEX events_by_object ON events (namespace, kind, name);
CREATE TABLE config_done (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE file_deletions (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    uid TEXT NOT NULL,
    PRIMARY KEY (namespace, name, uid)
);
";

/// Who made a capture (kept with it; only `config` captures follow the configuration file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureOrigin {
    /// Listed in the configuration file.
    Config,
    /// Created through the API (`POST /v1/namespaces/NS/packetcaptures`).
    Api,
    /// Created by a CaptureTrigger.
    Trigger,
    /// Created by a CaptureSchedule.
    Schedule,
}

impl CaptureOrigin {
    fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Api => "api",
            Self::Trigger => "trigger",
            Self::Schedule => "schedule",
        }
    }
}

/// The result of [`State::create_capture`].
#[derive(Debug, Clone)]
pub enum Created {
    /// Stored, as stored (uid, creation time, generation and finalizer set).
    Created(Box<PacketCapture>),
    /// A capture with that namespace and name exists; nothing was written.
    AlreadyExists,
}

/// A capture's namespace, name and resource version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Bumped on every write of the row.
    pub rv: i64,
}

/// The state database, shared by every component of the process.
#[derive(Debug)]
pub struct State {
    conn: Mutex<Connection>,
    path: PathBuf,
    changed: watch::Sender<u64>,
    _lock: Flock<File>,
}

impl State {
    /// Opens (or creates) the state under `dir`, taking it for this process.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::State(format!("cannot create {}: {e}", dir.display())))?;
        let lock = lock(dir)?;
        let path = dir.join("state.db");
        let conn = open_db(&path).map_err(|e| {
            Error::State(format!(
                "{} is not a usable nightcap state database ({e}); nothing was changed. Move it \
                 aside to start with an empty state",
                path.display()
            ))
        })?;
        let (changed, _) = watch::channel(0);
        Ok(Self {
            conn: Mutex::new(conn),
            path,
            changed,
            _lock: lock,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ticks after every write of a capture.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Stores `pc` unless a capture of that namespace and name exists. Sets what an API server
    /// sets on create: uid, creation time, generation 1, the scheduler's finalizer. The status
    /// is stored as given (a trigger's capture carries its origin in `status.trigger`).
    pub fn create_capture(
        &self,
        mut pc: PacketCapture,
        origin: CaptureOrigin,
        now: Timestamp,
    ) -> Result<Created> {
        let namespace = pc.namespace().unwrap_or_default();
        let name = pc.name_any();
        let uid = uuid::Uuid::new_v4().to_string();
        pc.metadata.uid = Some(uid.clone());
        pc.metadata.generation = Some(1);
        pc.metadata.creation_timestamp = Some(Time(now));
        pc.metadata.resource_version = Some("1".into());
        pc.metadata.deletion_timestamp = None;
        pc.metadata.finalizers = Some(vec![nightcap_scheduler::labels::FINALIZER.to_string()]);
        let object = serde_json::to_string(&pc)?;
        let n = self.conn().execute(
            "INSERT INTO captures (namespace, name, uid, origin, rv, object)
             VALUES (?1, ?2, ?3, ?4, 1, ?5) ON CONFLICT DO NOTHING",
            params![namespace, name, uid, origin.as_str(), object],
        )?;
        if n == 0 {
            return Ok(Created::AlreadyExists);
        }
        self.notify();
        Ok(Created::Created(Box::new(pc)))
    }

    /// One capture.
    pub fn capture(&self, namespace: &str, name: &str) -> Result<Option<PacketCapture>> {
        let object: Option<String> = self
            .conn()
            .query_row(
                "SELECT object FROM captures WHERE namespace = ?1 AND name = ?2",
                params![namespace, name],
                |r| r.get(0),
            )
            .optional()?;
        object.map(|o| parse(&o)).transpose()
    }

    /// Every capture (of `namespace`, if given), ordered by namespace and name.
    pub fn captures(&self, namespace: Option<&str>) -> Result<Vec<PacketCapture>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT object FROM captures WHERE ?1 IS NULL OR namespace = ?1
             ORDER BY namespace, name",
        )?;
        let rows = stmt.query_map(params![namespace], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(parse(&row?)?);
        }
        Ok(out)
    }

    /// Every capture's resource version (cheap: no objects are read).
    pub fn versions(&self) -> Result<Vec<Version>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT namespace, name, rv FROM captures")?;
        let rows = stmt.query_map([], |r| {
            Ok(Version {
                namespace: r.get(0)?,
                name: r.get(1)?,
                rv: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The origin of a capture.
    pub fn origin(&self, namespace: &str, name: &str) -> Result<Option<CaptureOrigin>> {
        let origin: Option<String> = self
            .conn()
            .query_row(
                "SELECT origin FROM captures WHERE namespace = ?1 AND name = ?2",
                params![namespace, name],
                |r| r.get(0),
            )
            .optional()?;
        Ok(origin.map(|o| match o.as_str() {
            "config" => CaptureOrigin::Config,
            "trigger" => CaptureOrigin::Trigger,
            "schedule" => CaptureOrigin::Schedule,
            _ => CaptureOrigin::Api,
        }))
    }

    /// Reads, edits and writes back one capture in a transaction. `edit` returns whether it
    /// changed anything (nothing is written otherwise). Returns the capture after the edit, or
    /// `None` when it does not exist.
    pub fn update_capture(
        &self,
        namespace: &str,
        name: &str,
        edit: impl FnOnce(&mut PacketCapture) -> bool,
    ) -> Result<Option<PacketCapture>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let row: Option<(String, i64)> = tx
            .query_row(
                "SELECT object, rv FROM captures WHERE namespace = ?1 AND name = ?2",
                params![namespace, name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((object, rv)) = row else {
            return Ok(None);
        };
        let mut pc = parse(&object)?;
        if !edit(&mut pc) {
            return Ok(Some(pc));
        }
        let rv = rv + 1;
        pc.metadata.resource_version = Some(rv.to_string());
        tx.execute(
            "UPDATE captures SET object = ?3, rv = ?4 WHERE namespace = ?1 AND name = ?2",
            params![namespace, name, serde_json::to_string(&pc)?, rv],
        )?;
        tx.commit()?;
        drop(conn);
        self.notify();
        Ok(Some(pc))
    }

    /// Removes a capture for good (released after deletion, or past its retention).
    pub fn remove_capture(&self, namespace: &str, name: &str) -> Result<bool> {
        let conn = self.conn();
        let n = conn.execute(
            "DELETE FROM captures WHERE namespace = ?1 AND name = ?2",
            params![namespace, name],
        )?;
        drop(conn);
        if n > 0 {
            self.notify();
        }
        Ok(n > 0)
    }
}

impl State {
    /// Deletes the rows of `table` (keyed by namespace and name) whose key is not in `keep`.
    fn retain_keys(&self, table: Keyed, keep: &[(String, String)]) -> Result<()> {
        let table = table.name();
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT namespace, name FROM {table}"))?;
        let all: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (ns, name) in all {
            if !keep.iter().any(|(n, m)| *n == ns && *m == name) {
                conn.execute(
                    &format!("DELETE FROM {table} WHERE namespace = ?1 AND name = ?2"),
                    params![ns, name],
                )?;
            }
        }
        Ok(())
    }

    /// Asks a capture to stop (the stop annotation with `reason`, kept when set already).
    /// Returns the capture, `None` when it does not exist.
    pub fn request_stop(
        &self,
        namespace: &str,
        name: &str,
        reason: &str,
    ) -> Result<Option<PacketCapture>> {
        self.update_capture(namespace, name, |pc| {
            let a = pc.metadata.annotations.get_or_insert_with(Default::default);
            if a.contains_key(nightcap_api::capture::STOP_ANNOTATION) {
                return false;
            }
            a.insert(nightcap_api::capture::STOP_ANNOTATION.into(), reason.into());
            true
        })
    }

    /// Deletes a capture as the API server does with a finalizer: marks it, and the executor
    /// releases it once its processes are gone. `with_files`: its files go too
    /// ([`crate::retention::DELETE_FILES`]). Returns the capture, `None` when it does not
    /// exist.
    pub fn request_delete(
        &self,
        namespace: &str,
        name: &str,
        with_files: bool,
        now: Timestamp,
    ) -> Result<Option<PacketCapture>> {
        self.update_capture(namespace, name, |pc| {
            let mut changed = false;
            if pc.metadata.deletion_timestamp.is_none() {
                pc.metadata.deletion_timestamp = Some(Time(now));
                changed = true;
            }
            if with_files {
                let a = pc.metadata.annotations.get_or_insert_with(Default::default);
                changed |= a
                    .insert(crate::retention::DELETE_FILES.into(), "true".into())
                    .is_none();
            }
            changed
        })
    }
}

/// Tables keyed by (namespace, name) that [`State::retain_keys`] prunes.
#[derive(Debug, Clone, Copy)]
enum Keyed {
    Schedules,
    ConfigDone,
}

impl Keyed {
    fn name(self) -> &'static str {
        match self {
            Self::Schedules => "schedules",
            Self::ConfigDone => "config_done",
        }
    }
}

fn parse(object: &str) -> Result<PacketCapture> {
    serde_json::from_str(object).map_err(|e| Error::State(format!("a stored capture: {e}")))
}

/// Takes the state directory for this process, or says which process has it.
fn lock(dir: &Path) -> Result<Flock<File>> {
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::State(format!("cannot open {}: {e}", path.display())))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((mut file, _)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(Error::State(format!(
                "{} is in use by another nightcap local (pid {}); stop it or pass another \
                 --state-dir",
                dir.display(),
                pid.trim()
            )));
        }
    };
    let _ = lock.set_len(0);
    let _ = lock.rewind();
    let _ = write!(lock, "{}", std::process::id());
    Ok(lock)
}

/// Opens the database, checks it is ours and intact, and creates the schema when it is new.
fn open_db(path: &Path) -> Result<Connection, String> {
    open_checked(path).map_err(|e| e.to_string())?
}

fn open_checked(path: &Path) -> rusqlite::Result<Result<Connection, String>> {
    let conn = Connection::open(path)?;
    // Refuse a damaged or foreign file before anything writes to it (the journal mode change
    // below writes).
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Ok(Err(format!("integrity check: {check}")));
    }
    let tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
        [],
        |r| r.get(0),
    )?;
    if tables == 0 {
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA} INSERT INTO meta VALUES ('schema', '{SCHEMA_VERSION}'); COMMIT;"
        ))?;
    } else {
        let version: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .unwrap_or(None);
        if version.as_deref() != Some(&SCHEMA_VERSION.to_string()) {
            return Ok(Err(format!(
                "schema version {} (this nightcap reads {SCHEMA_VERSION})",
                version.as_deref().unwrap_or("none")
            )));
        }
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(Ok(conn))
}
