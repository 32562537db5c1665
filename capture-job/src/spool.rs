//! The spool: a bounded local directory holding capture files until storage confirms them.
//!
//! Layout: `{name}.partial` is the open file, `{name}` a closed one, `{name}.json` its sidecar
//! (object key and metadata; written when the file is opened, completed when it is closed). A
//! file is deleted only after its upload succeeded. On start, files left by an earlier run are
//! uploaded first, each cut back to its last complete block: a `.partial` left by a crash, and
//! a closed file a node crash shortened (one uploaded while written is not synced when closed).

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use nightcap_storage::{CaptureKey, FileMeta, KeyPrefix, Uploader};
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, info, warn};

use crate::{
    Error, Result, pcapng,
    spooled::{ClosedFile, Sidecar},
};

/// Files an earlier run left in `dir`, ready to upload (recovering `.partial` ones). Files
/// without a readable sidecar cannot be named and are reported, not touched.
pub fn leftovers(dir: &Path) -> Result<Vec<ClosedFile>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(dir, "reading", e)),
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    let root = KeyPrefix::new("").map_err(Error::Storage)?;
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let partial = name.ends_with(".pcapng.partial");
        if !partial && !name.ends_with(".pcapng") {
            continue;
        }
        let side = Sidecar::path_of(&path);
        let Some(sc) = Sidecar::read(&side) else {
            warn!(file = %path.display(), "Spool file without a sidecar; leaving it alone.");
            continue;
        };
        let Ok(key) = CaptureKey::parse(&root, &sc.key) else {
            warn!(file = %path.display(), key = %sc.key, "Spool sidecar names an invalid key; leaving it alone.");
            continue;
        };
        let mut file_path = path.clone();
        // A crash can cut a `.partial` anywhere, and a closed file too: one uploaded while it
        // was written is not synced when closed (`writer::live::Live::cache_window`). Either keeps
        // its whole blocks.
        let (len, keep) = std::fs::File::open(&path)
            .and_then(|f| {
                let len = f.metadata()?.len();
                Ok((len, pcapng::complete_prefix_in(f, len)?))
            })
            .map_err(|e| Error::io(&path, "reading", e))?;
        // A section header alone has no packets: nothing worth uploading.
        if keep <= 32 {
            warn!(file = %path.display(), bytes = len, "Spool file without a whole packet block; deleting it.");
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(&side);
            continue;
        }
        if keep < len {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(keep))
                .map_err(|e| Error::io(&path, "truncating", e))?;
            warn!(file = %path.display(), bytes = keep, cut = len - keep, "Cut a spool file back to its last whole block (an earlier run ended mid-write).");
        }
        if partial {
            file_path = path.with_file_name(name.trim_end_matches(".partial"));
            std::fs::rename(&path, &file_path).map_err(|e| Error::io(&file_path, "renaming", e))?;
            info!(file = %file_path.display(), bytes = keep, "Recovered an interrupted capture file.");
        }
        let bytes = std::fs::metadata(&file_path).map(|m| m.len()).unwrap_or(0);
        out.push(ClosedFile {
            path: file_path,
            key,
            meta: FileMeta {
                pods: Vec::new(),
                start: sc.start,
                end: sc.end,
                packets: sc.packets,
            },
            rotated: None,
            sums: None,
            live: None,
            bytes,
        });
    }
    Ok(out)
}

/// What the uploader did.
#[derive(Debug, Clone, Default)]
pub struct UploadReport {
    /// Keys uploaded and still in storage.
    pub keys: Vec<String>,
    /// Keys deleted again by the max-files ring.
    pub deleted: Vec<String>,
    /// Files still in the spool (storage unreachable until the grace period ended).
    pub left: Vec<PathBuf>,
    /// Longest time from a file's rotation (the capture thread finishing it) to its upload
    /// being confirmed, over this run's files; None when none was uploaded.
    pub max_upload_latency: Option<Duration>,
    /// Files uploaded while they were written (the others were read back from the spool).
    pub uploaded_live: u64,
    /// Files published by hard link into a local store.
    pub linked: u64,
}

/// Counters the uploader shares with the capture.
#[derive(Debug, Clone, Default)]
pub struct SpoolCounters {
    /// Bytes in the spool (closed files waiting plus the open file).
    pub used: Arc<AtomicU64>,
    /// The last upload failed (the writer then uploads new files from the spool, not live).
    pub storage_failing: Arc<AtomicBool>,
}

/// Upload settings.
#[derive(Debug, Clone)]
pub struct UploaderConfig {
    /// Keep at most this many files in storage (oldest deleted first).
    pub max_files: Option<u32>,
    /// After the capture ended, keep retrying for this long.
    pub grace: Duration,
    /// Longest pause between attempts while storage is down.
    pub max_backoff: Duration,
    /// Upload files while they are written (parts sent from memory as they fill); a file whose
    /// live upload stops or fails is uploaded from the spool once closed.
    pub live: bool,
}

/// Uploads every file it receives (and `initial` leftovers first), one at a time in order,
/// retrying while storage is unreachable; deletes each local file after its upload succeeded.
/// Returns when the sender is gone and the queue is empty, or the grace period after that ran
/// out.
pub async fn run_uploader(
    initial: Vec<ClosedFile>,
    mut rx: UnboundedReceiver<ClosedFile>,
    uploader: Arc<Uploader>,
    store: Arc<dyn ObjectStore>,
    prefix: KeyPrefix,
    counters: SpoolCounters,
    cfg: UploaderConfig,
) -> UploadReport {
    let SpoolCounters {
        used,
        storage_failing,
    } = counters;
    let mut queue: VecDeque<ClosedFile> = initial.into();
    let mut report = UploadReport::default();
    let mut ring: VecDeque<CaptureKey> = VecDeque::new();
    let mut closed = false;
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut backoff = Duration::from_millis(250);
    loop {
        while let Ok(f) = rx.try_recv() {
            queue.push_back(f);
        }
        let Some(mut file) = queue.pop_front() else {
            if closed {
                break;
            }
            match rx.recv().await {
                Some(f) => queue.push_back(f),
                None => closed = true,
            }
            continue;
        };
        if closed && deadline.is_none() {
            deadline = Some(tokio::time::Instant::now() + cfg.grace);
        }
        let live = match file.live.take() {
            Some(done) => match done.wait().await {
                Ok(up) => Some(up),
                Err(e) => {
                    warn!(key = %file.key, error = %e, "Uploading while writing failed; uploading the closed file.");
                    storage_failing.store(true, Ordering::SeqCst);
                    None
                }
            },
            None => None,
        };
        let was_live = live.is_some();
        let result = match live {
            Some(up) => Ok(up),
            None => {
                uploader
                    .upload_file_with_sums(&file.path, &file.key, &file.meta, file.sums.as_ref())
                    .await
            }
        };
        match result {
            Ok(up) => {
                backoff = Duration::from_millis(250);
                report.uploaded_live += u64::from(was_live);
                report.linked += u64::from(up.linked);
                storage_failing.store(false, Ordering::SeqCst);
                if let Err(e) = std::fs::remove_file(&file.path) {
                    warn!(file = %file.path.display(), error = %e, "Uploaded but could not delete the local copy.");
                }
                let _ = std::fs::remove_file(Sidecar::path_of(&file.path));
                used.fetch_sub(
                    file.bytes.min(used.load(Ordering::SeqCst)),
                    Ordering::SeqCst,
                );
                if let Some(rotated) = file.rotated {
                    let latency = rotated.elapsed();
                    debug!(key = %up.key, latency_ms = latency.as_millis() as u64, "In storage.");
                    report.max_upload_latency = report.max_upload_latency.max(Some(latency));
                }
                report.keys.push(up.key);
                ring.push_back(file.key);
                if let Some(max) = cfg.max_files {
                    while ring.len() > max as usize {
                        let Some(old) = ring.pop_front() else { break };
                        let path = old.to_path(&prefix);
                        match store.delete(&path).await {
                            Ok(()) => {
                                let k = path.to_string();
                                report.keys.retain(|x| *x != k);
                                info!(key = %k, "Deleted the oldest file (max-files ring).");
                                report.deleted.push(k);
                            }
                            Err(e) => {
                                warn!(key = %path, error = %e, "Could not delete an old file for the max-files ring.")
                            }
                        }
                    }
                }
            }
            Err(e) => {
                storage_failing.store(true, Ordering::SeqCst);
                queue.push_front(file);
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    warn!(error = %e, left = queue.len(), "Storage still failing after the grace period; files stay in the spool.");
                    report.left = queue.into_iter().map(|f| f.path).collect();
                    while let Ok(f) = rx.try_recv() {
                        report.left.push(f.path);
                    }
                    return report;
                }
                if matches!(e, nightcap_storage::Error::FileChanged { .. })
                    && let Some(front) = queue.front_mut()
                    && front.sums.take().is_some()
                {
                    // The bytes on disk are not those written (a disk or file system fault):
                    // upload them as they are, with their own checksums, rather than never.
                    warn!(file = %front.path.display(), "The spool file differs from what was written; uploading it as it is now.");
                }
                let key = queue.front().map(|f| f.key.to_string()).unwrap_or_default();
                warn!(key = %key, error = %e, retry_in_ms = backoff.as_millis() as u64, "Upload failed; the file stays in the spool and is retried.");
                // Wait, but keep accepting newly closed files meanwhile.
                let sleep = tokio::time::sleep(backoff);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        f = rx.recv(), if !closed => match f {
                            Some(f) => queue.push_back(f),
                            None => closed = true,
                        },
                    }
                }
                backoff = (backoff * 2).min(cfg.max_backoff);
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    use chrono::Utc;
    use nightcap_storage::{SumsBuilder, UploadOptions};
    use object_store::local::LocalFileSystem;

    #[tokio::test]
    async fn a_file_that_differs_from_its_sums_is_still_uploaded_as_it_is() {
        let spool = tempfile::tempdir().expect("spool");
        let out = tempfile::tempdir().expect("store");
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(out.path()).expect("store"));
        let prefix = KeyPrefix::new("").expect("prefix");
        let key = CaptureKey::new(
            "team-a",
            "cap",
            "00000000-0000-4000-8000-000000000002",
            "node-1",
            Utc::now(),
            0,
        )
        .expect("key");
        let on_disk: Vec<u8> = (0..20_000u32).map(|i| (i % 241) as u8).collect();
        let path = spool.path().join(key.file_name());
        std::fs::write(&path, &on_disk).expect("spool file");
        // What the writer hashed: the same length, one byte different.
        let mut written = on_disk.clone();
        written[10_000] ^= 1;
        let mut sums = SumsBuilder::default();
        sums.update(&written);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(ClosedFile {
            path: path.clone(),
            key: key.clone(),
            meta: FileMeta::default(),
            bytes: on_disk.len() as u64,
            rotated: Some(Instant::now()),
            sums: Some(sums.finish()),
            live: None,
        })
        .expect("queued");
        drop(tx);
        let uploader = Arc::new(Uploader::new(
            store.clone(),
            prefix.clone(),
            UploadOptions::default(),
        ));
        let report = run_uploader(
            Vec::new(),
            rx,
            uploader,
            store.clone(),
            prefix.clone(),
            SpoolCounters {
                used: Arc::new(AtomicU64::new(on_disk.len() as u64)),
                ..SpoolCounters::default()
            },
            UploaderConfig {
                max_files: None,
                grace: Duration::from_secs(10),
                max_backoff: Duration::from_millis(500),
                live: false,
            },
        )
        .await;
        assert_eq!(report.keys, vec![key.to_key(&prefix)], "uploaded once");
        assert!(report.left.is_empty());
        let got = store
            .get(&key.to_path(&prefix))
            .await
            .expect("in storage")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(got.as_ref(), &on_disk[..], "the bytes on disk, as they are");
        assert!(!path.exists(), "the local copy is deleted after the upload");
    }
}
