//! The writer thread: creates each file, writes the chunks the capture thread fills, lends them
//! to the file's live upload or passes them to the hasher, and asks the syncer for writeback.
//! It starts the hasher and syncer threads and ends after them.

use std::{
    io,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread::JoinHandle,
};

use nightcap_storage::CaptureKey;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

use super::{
    file::{CloseInfo, Open},
    hasher::{Hash, hash_files},
    live::{Live, Offered},
    pool::{Chunk, Shared, give_back, lock},
    syncer::{Sync, Syncer},
};
use crate::{
    Error, Result,
    spooled::{ClosedFile, Sidecar},
};

/// Buffered mode: writeback requests queued for the syncer at most.
const MAX_KICKS: usize = 4;

/// Work for the writer thread, from the capture thread.
pub(super) enum Cmd {
    Open {
        partial: PathBuf,
        sidecar: PathBuf,
        key: CaptureKey,
    },
    Data(Chunk),
    Close(CloseInfo),
}

/// Runs the writer thread until the capture thread's end is gone: closed files go to
/// `closed`, uploaded while written with `live`.
pub(super) fn run(
    rx: mpsc::Receiver<Cmd>,
    shared: Arc<Shared>,
    closed: UnboundedSender<ClosedFile>,
    direct: bool,
    live: Option<Live>,
) {
    // Same priority as the capture thread (see `crate::runtime`).
    let _ = nightcap_sys::set_thread_nice(0);
    let (sync_tx, sync_rx) = mpsc::channel();
    let (hash_tx, hash_rx) = mpsc::channel();
    let syncer_shared = shared.clone();
    let syncer = spawn_nice0("nightcap-syncer", move || {
        let mut s = Syncer::new(syncer_shared, closed);
        while let Ok(cmd) = sync_rx.recv() {
            s.handle(cmd);
        }
    });
    let hasher_shared = shared.clone();
    let hasher_sync = sync_tx.clone();
    let hasher = syncer.and_then(|syncer| {
        spawn_nice0("nightcap-hasher", move || {
            hash_files(&hasher_shared, hash_rx, hasher_sync)
        })
        .map(|hasher| (syncer, hasher))
    });
    let (syncer, hasher) = match hasher {
        Ok(t) => t,
        Err(e) => {
            shared.fail(Error::Invalid(format!(
                "cannot start the file writer's threads: {e}"
            )));
            shared.gone();
            return;
        }
    };
    let mut w = Thread {
        live,
        shared: shared.clone(),
        sync: sync_tx,
        hash: hash_tx,
        kicks: Arc::new(AtomicUsize::new(0)),
        direct,
        file: None,
    };
    while let Ok(cmd) = rx.recv() {
        if let Err(e) = w.handle(cmd) {
            w.fail(e);
        }
    }
    // Files queued for the hasher and the syncer are closed and handed on before anyone hears
    // "done" (each ends when the thread before it is gone).
    drop(w);
    let _ = hasher.join();
    let _ = syncer.join();
    // A file still open here belongs to a capture that failed; its `.partial` stays for the
    // next run's recovery.
    shared.gone();
}

/// Starts a helper thread at the capture's priority (see `crate::runtime`).
fn spawn_nice0(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = nightcap_sys::set_thread_nice(0);
            f()
        })
}

struct Thread {
    /// Uploads while writing, when on.
    live: Option<Live>,
    shared: Arc<Shared>,
    /// Writeback requests, for the syncer thread.
    sync: mpsc::Sender<Sync>,
    /// Written chunks and closes, for the hasher thread (which passes closes to the syncer).
    hash: mpsc::Sender<Hash>,
    /// Writeback requests queued and not yet handled (bounded by [`MAX_KICKS`]).
    kicks: Arc<AtomicUsize>,
    direct: bool,
    file: Option<Open>,
}

impl Thread {
    /// Lends the chunk just written (`written`) to the open file's live upload, if it has one
    /// (None), or returns it for the hasher or the pool. An upload that stops is dropped and
    /// the file counted for the spool.
    fn lend_to_live(&mut self, chunk: Chunk, written: bool) -> Option<Chunk> {
        let Some(f) = self.file.as_mut() else {
            return Some(chunk);
        };
        let (Some(l), Some(live)) = (f.live.as_mut(), self.live.as_ref()) else {
            return Some(chunk);
        };
        if !written {
            return Some(chunk);
        }
        match l.offer(live, &self.shared, chunk, &f.partial) {
            Offered::Lent => None,
            Offered::Kept(chunk) => Some(chunk),
            Offered::Stopped => {
                // Its chunks come back now; the file has no sums (it was not hashed): the
                // spool's uploader hashes it.
                f.live = None;
                None
            }
        }
    }

    /// Whether the open file's chunks still go to the hasher. Capture first: when the hasher
    /// holds chunks the capture thread is waiting for (none free, two or more queued for
    /// hashing), the file is no longer hashed and its upload reads it twice instead.
    fn keep_hashing(&mut self) -> bool {
        let Some(f) = self.file.as_mut() else {
            return false;
        };
        if f.hashing
            && self.shared.hash_backlog.load(Ordering::SeqCst) >= 2
            && lock(&self.shared.free).chunks.is_empty()
        {
            f.hashing = false;
            self.shared.hash_skip.store(true, Ordering::SeqCst);
            let _ = self.hash.send(Hash::Abandon);
            info!(file = %f.partial.display(), "Hashing fell behind the capture; this file's upload reads it twice.");
        }
        f.hashing
    }

    fn fail(&mut self, e: Error) {
        warn!(error = %e, "Writing a capture file failed.");
        self.shared.fail(e);
        // Nothing more goes into this file; later chunks are only returned.
        self.file = None;
    }

    fn handle(&mut self, cmd: Cmd) -> Result<()> {
        match cmd {
            Cmd::Open {
                partial,
                sidecar,
                key,
            } => {
                Sidecar::for_key(&key).write(&sidecar)?;
                let mut open = Open::create(partial, sidecar, self.direct)?;
                open.live = self.live.as_ref().and_then(|l| l.start(&key));
                // A file uploaded while written is hashed by its upload, off this path.
                open.hashing = open.live.is_none();
                // Unsent only when the hasher is gone, and then no file reaches the uploader.
                self.shared.hash_skip.store(false, Ordering::SeqCst);
                let _ = self.hash.send(Hash::Open { hash: open.hashing });
                self.file = Some(open);
                Ok(())
            }
            Cmd::Data(mut chunk) => {
                let written = match self.file.as_mut() {
                    Some(f) => f.write(&mut chunk).map(|()| true),
                    // The file failed earlier: the error is already reported.
                    None => Ok(false),
                };
                // Lent to the file's live upload, or hashed, or straight back to the pool.
                if let Some(chunk) = self.lend_to_live(chunk, matches!(written, Ok(true))) {
                    let hashing = matches!(written, Ok(true)) && self.keep_hashing();
                    if hashing {
                        // The hasher gives it back once it has hashed it.
                        self.shared.hash_backlog.fetch_add(1, Ordering::SeqCst);
                        if let Err(mpsc::SendError(Hash::Data(chunk))) =
                            self.hash.send(Hash::Data(chunk))
                        {
                            give_back(&self.shared, chunk);
                            return Err(Error::Invalid(
                                "the file hasher thread has stopped".into(),
                            ));
                        }
                    } else {
                        give_back(&self.shared, chunk);
                    }
                }
                self.request_writeback();
                written.map(drop)
            }
            Cmd::Close(info) => {
                let Some(open) = self.file.take() else {
                    return Ok(());
                };
                self.hash
                    .send(Hash::Close {
                        open: Box::new(open),
                        info,
                    })
                    .map_err(|_| Error::Invalid("the file hasher thread has stopped".into()))
            }
        }
    }

    /// Buffered mode: asks the syncer to start writeback of what was written since the last
    /// request (the last bytes of a file uploaded while written stay out of writeback).
    fn request_writeback(&mut self) {
        let Some(f) = self.file.as_mut().filter(|f| !f.direct) else {
            return;
        };
        let upto = match (&f.live, &self.live) {
            (Some(_), Some(live)) => f.len.saturating_sub(live.cache_window),
            _ => f.len,
        };
        if upto > f.kicked && self.kicks.load(Ordering::SeqCst) < MAX_KICKS {
            // A busy syncer gets the next, longer range instead of a queue.
            self.kicks.fetch_add(1, Ordering::SeqCst);
            let sent = self.sync.send(Sync::Written {
                file: f.file.clone(),
                start: f.kicked,
                end: upto,
                kicks: self.kicks.clone(),
            });
            if sent.is_ok() {
                #[cfg(test)]
                self.shared
                    .written_back
                    .fetch_add(upto - f.kicked, Ordering::SeqCst);
                f.kicked = upto;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Write, time::Instant};

    use nightcap_storage::FileMeta;

    use super::{super::testing::*, *};
    use crate::writer::{
        Writer,
        pool::{CHUNK, CHUNKS},
    };

    #[test]
    fn a_failed_file_is_reported_and_never_blocks_the_capture_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let w = Writer::start(tx, true, None).expect("writer");
        let k = key(0);
        // The directory does not exist: creating the file fails on the writer thread.
        let missing = dir.path().join("gone");
        let mut sink = w
            .open(missing.join("x.partial"), missing.join("x.json"), k.clone())
            .expect("open is queued");
        // Many more chunks than the pool holds: each is handed back unwritten.
        let data = pattern(CHUNK);
        for _ in 0..(4 * CHUNKS) {
            sink.write_all(&data).expect("write keeps going");
        }
        w.close(
            sink,
            CloseInfo {
                key: k,
                meta: FileMeta::default(),
                bytes: 0,
                rotated: Instant::now(),
            },
        )
        .expect("close is queued");
        let err = w.finish().expect_err("the failure is reported");
        let text = err.to_string();
        assert!(text.contains("gone"), "{text}");
    }
}
