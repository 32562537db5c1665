//! The hasher thread: checksums of each file's bytes (so the uploader reads the file once),
//! computed beside the writes rather than between them. It also finishes a file's live upload
//! and passes the close on to the syncer, in file order.

use std::sync::{atomic::Ordering, mpsc};

use nightcap_storage::SumsBuilder;

use super::{
    file::{CloseInfo, Open},
    pool::{Chunk, Shared, give_back},
    syncer::{Closing, Sync},
};
use crate::{Error, spooled::LiveResult};

/// Work for the hasher thread, in file order.
pub(super) enum Hash {
    /// A new file starts (whatever was hashed for a failed one is dropped); `hash`: its chunks
    /// will come to be hashed (a file uploaded while written is hashed by its upload).
    Open { hash: bool },
    /// A written chunk: hash its bytes, then give it back to the pool.
    Data(Chunk),
    /// Stop hashing the current file (it will have no sums).
    Abandon,
    /// The file is complete: its sums go to the syncer with the close.
    Close { open: Box<Open>, info: CloseInfo },
}

/// Runs the hasher thread until the writer thread is gone.
pub(super) fn hash_files(shared: &Shared, rx: mpsc::Receiver<Hash>, sync: mpsc::Sender<Sync>) {
    let mut sums = None;
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Hash::Open { hash } => sums = hash.then(SumsBuilder::default),
            Hash::Data(chunk) => {
                if let Some(s) = sums.as_mut()
                    && !shared.hash_skip.load(Ordering::SeqCst)
                {
                    #[cfg(test)]
                    let _gate = shared.hash_gate.lock();
                    s.update(chunk.used());
                }
                shared.hash_backlog.fetch_sub(1, Ordering::SeqCst);
                give_back(shared, chunk);
            }
            Hash::Abandon => sums = None,
            Hash::Close { mut open, info } => {
                let sums = sums.take().map(SumsBuilder::finish);
                // Uploaded while written: the spool's copy is not made durable (see
                // `Live::cache_window`).
                let durable = open.live.is_none();
                // Nothing from the first byte not pushed on was written back: the rest is read
                // through the page cache.
                let cached = open
                    .live
                    .as_ref()
                    .is_some_and(|l| !open.direct && open.kicked <= l.upload.pushed());
                let live = open.live.take().map(|l| {
                    let meta = info.meta.clone();
                    let done = if l.behind {
                        // Written completely (the writer handled the close after every chunk);
                        // opened before the syncer renames it.
                        l.upload
                            .finish_from_file(&open.partial, open.len, meta, cached)
                    } else {
                        l.upload.finish(open.len, meta)
                    };
                    LiveResult::new(done, l.slot)
                });
                let closing = Box::new(Closing {
                    open: *open,
                    info,
                    sums,
                    live,
                    sync: durable,
                });
                if sync.send(Sync::Close(closing)).is_err() {
                    shared.fail(Error::Invalid("the file syncer thread has stopped".into()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{super::testing::*, *};
    use crate::writer::{
        Writer,
        pool::{CHUNK, CHUNKS},
    };

    #[test]
    fn a_stalled_hasher_never_blocks_the_capture_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let w = Writer::start(tx, false, None).expect("writer");
        let shared = w.shared.clone();
        let gate = shared.hash_gate.lock().expect("gate");
        let (done_tx, done_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let data = pattern(4 * CHUNKS * CHUNK + 777);
        let sizes = [data.len(), 3 * CHUNK + 5];
        let writing = std::thread::spawn({
            let dir = dir.path().to_path_buf();
            move || {
                for (seq, &size) in sizes.iter().enumerate() {
                    if seq > 0 {
                        // The next file starts once the hasher runs again.
                        let _ = go_rx.recv();
                    }
                    // The first: many more chunks than the pool holds, the hasher stalled.
                    write_one(&w, &dir, seq, size);
                    let _ = done_tx.send(seq);
                }
                w.finish().expect("no write error");
            }
        });
        let first = done_rx.recv_timeout(Duration::from_secs(20));
        assert_eq!(
            first.ok(),
            Some(0),
            "the capture side was blocked by the hasher"
        );
        drop(gate);
        // The hasher skips what is left of the first file before the second starts.
        let deadline = Instant::now() + Duration::from_secs(20);
        while shared.hash_backlog.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = go_tx.send(());
        writing.join().expect("writer thread");
        let mut closed = Vec::new();
        while let Ok(f) = rx.try_recv() {
            closed.push(f);
        }
        assert_eq!(closed.len(), 2);
        let stalled = &closed[0];
        assert_eq!(
            std::fs::read(&stalled.path).expect("file"),
            data,
            "complete"
        );
        assert_eq!(stalled.sums, None, "no sums: the uploader hashes it itself");
        // The next file is hashed again.
        let next = std::fs::read(&closed[1].path).expect("file");
        let mut sums = SumsBuilder::default();
        sums.update(&next);
        assert_eq!(closed[1].sums, Some(sums.finish()));
    }
}
