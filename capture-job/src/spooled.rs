//! A capture file in the spool, as the writer hands it to the spool's uploader: the closed
//! file, its `{name}.json` sidecar, and its upload made while it was written.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use chrono::{DateTime, Utc};
use nightcap_storage::{CaptureKey, FileMeta, FileSums, LiveDone};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A closed file waiting for upload.
#[derive(Debug)]
pub struct ClosedFile {
    /// Local path in the spool.
    pub path: PathBuf,
    /// Where it goes.
    pub key: CaptureKey,
    /// Metadata recorded with the object.
    pub meta: FileMeta,
    /// Size in bytes.
    pub bytes: u64,
    /// When the capture thread finished the file (None: a leftover of an earlier run).
    pub rotated: Option<Instant>,
    /// Checksums computed while the file was written (None: a leftover, read twice to upload).
    pub sums: Option<FileSums>,
    /// Its upload made while it was written, still completing (None: upload it from disk).
    pub live: Option<LiveResult>,
}

/// The live upload of a closed file, completing.
#[derive(Debug)]
pub struct LiveResult {
    done: LiveDone,
    _slot: LiveSlot,
}

impl LiveResult {
    /// The upload `done`, holding `slot` until it is complete.
    pub(crate) fn new(done: LiveDone, slot: LiveSlot) -> Self {
        Self { done, _slot: slot }
    }

    /// Waits for the last part and the completion.
    pub async fn wait(self) -> nightcap_storage::Result<nightcap_storage::UploadedFile> {
        self.done.wait().await
    }
}

/// One of the live uploads running (a count shared by the writer), given back when dropped.
#[derive(Debug)]
pub(crate) struct LiveSlot(Arc<AtomicUsize>);

impl LiveSlot {
    /// Takes one of `running`.
    pub(crate) fn take(running: &Arc<AtomicUsize>) -> Self {
        running.fetch_add(1, Ordering::SeqCst);
        Self(running.clone())
    }
}

impl Drop for LiveSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The `{name}.json` next to a spooled file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sidecar {
    /// Key relative to the store prefix (`namespace/capture/uid/node/file`).
    pub key: String,
    /// Packets (once closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// Open time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<DateTime<Utc>>,
    /// Close time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<DateTime<Utc>>,
}

impl Sidecar {
    /// The sidecar of a file just opened.
    pub fn for_key(key: &CaptureKey) -> Self {
        Self {
            key: key.relative(),
            packets: None,
            start: Some(key.start),
            end: None,
        }
    }

    /// The sidecar of a closed file.
    pub fn new(key: &CaptureKey, meta: &FileMeta) -> Self {
        Self {
            key: key.relative(),
            packets: meta.packets,
            start: meta.start,
            end: meta.end,
        }
    }

    /// Writes it (atomically: a temporary file in the same directory, renamed over `path`).
    pub fn write(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let text = serde_json::to_vec(self).map_err(|e| Error::io(path, "encoding", e.into()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(path, "writing", e))?;
        tmp.write_all(&text)
            .map_err(|e| Error::io(tmp.path(), "writing", e))?;
        tmp.persist(path)
            .map_err(|e| Error::io(path, "renaming", e.error))?;
        Ok(())
    }

    /// The sidecar at `path`, if it is there and readable.
    pub(crate) fn read(path: &Path) -> Option<Self> {
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Where the sidecar of the spool file `file` (open or closed) is.
    pub(crate) fn path_of(file: &Path) -> PathBuf {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = name.strip_suffix(".partial").unwrap_or(&name).to_owned();
        file.with_file_name(format!("{name}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecars_are_replaced_whole_and_sit_beside_their_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = CaptureKey::new(
            "team-a",
            "cap",
            "00000000-0000-4000-8000-000000000003",
            "node-1",
            Utc::now(),
            4,
        )
        .expect("key");
        let file = dir.path().join(format!("{}.partial", key.file_name()));
        let side = Sidecar::path_of(&file);
        assert_eq!(side, dir.path().join(format!("{}.json", key.file_name())));
        assert_eq!(Sidecar::path_of(&dir.path().join(key.file_name())), side);
        Sidecar::for_key(&key)
            .write(&side)
            .expect("opening sidecar");
        let meta = FileMeta {
            packets: Some(9),
            ..FileMeta::default()
        };
        Sidecar::new(&key, &meta)
            .write(&side)
            .expect("closing sidecar");
        let got = Sidecar::read(&side).expect("readable");
        assert_eq!((got.key, got.packets), (key.relative(), Some(9)));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
    }
}
