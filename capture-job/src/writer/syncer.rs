//! The syncer thread: everything that may wait for the disk other than `write` — starting
//! writeback and dropping written pages behind the write position, and closing files (cut
//! back, `fdatasync`, sidecar, rename, hand to the uploader).

use std::{
    fs::File,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use nightcap_storage::FileSums;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

use super::{
    file::{CloseInfo, Open},
    pool::Shared,
};
use crate::spooled::{ClosedFile, LiveResult, Sidecar};

/// Buffered mode: clean pages further than this behind the write position are dropped.
const WRITE_BEHIND: u64 = 32 << 20;
/// Buffered mode: bytes written between two passes dropping clean pages.
const DROP_EVERY: u64 = 8 << 20;

/// Work for the syncer thread.
pub(super) enum Sync {
    /// Start writeback of `[start, end)` and drop clean pages far behind it.
    Written {
        file: Arc<File>,
        start: u64,
        end: u64,
        kicks: Arc<AtomicUsize>,
    },
    /// Cut the padding, fdatasync, complete the sidecar, rename, hand to the uploader.
    Close(Box<Closing>),
}

/// A file to close, with the checksums of its bytes (None when hashing fell behind) and its
/// live upload, if it had one to the end.
pub(super) struct Closing {
    pub(super) open: Open,
    pub(super) info: CloseInfo,
    pub(super) sums: Option<FileSums>,
    pub(super) live: Option<LiveResult>,
    /// Sync it to disk before it is renamed (not a file uploaded while written).
    pub(super) sync: bool,
}

/// The syncer thread's state.
pub(super) struct Syncer {
    shared: Arc<Shared>,
    closed: UnboundedSender<ClosedFile>,
    /// The file of the last writeback request and where its last dropping pass ended.
    current: Option<(Arc<File>, u64)>,
}

impl Syncer {
    /// Hands closed files to `closed`.
    pub(super) fn new(shared: Arc<Shared>, closed: UnboundedSender<ClosedFile>) -> Self {
        Self {
            shared,
            closed,
            current: None,
        }
    }

    pub(super) fn handle(&mut self, cmd: Sync) {
        match cmd {
            Sync::Written {
                file,
                start,
                end,
                kicks,
            } => {
                kicks.fetch_sub(1, Ordering::SeqCst);
                let dropped = match &self.current {
                    Some((f, d)) if Arc::ptr_eq(f, &file) => *d,
                    _ => 0,
                };
                let upto = end.saturating_sub(WRITE_BEHIND);
                // Failures only cost the optimisation (the data is written either way).
                let _ = nightcap_sys::page_cache::start_writeback(&*file, start, end - start);
                let dropped = if upto >= dropped + DROP_EVERY {
                    let _ = nightcap_sys::page_cache::drop_cached(&*file, 0, upto);
                    upto
                } else {
                    dropped
                };
                self.current = Some((file, dropped));
            }
            Sync::Close(closing) => {
                let Closing {
                    open,
                    info,
                    sums,
                    live,
                    sync,
                } = *closing;
                self.current = None;
                let meta = info.meta;
                #[cfg(test)]
                self.shared
                    .synced
                    .fetch_add(usize::from(sync), Ordering::SeqCst);
                match open.finish(&Sidecar::new(&info.key, &meta), sync) {
                    Ok(done) => {
                        let name = info.key.file_name();
                        info!(file = %name, packets = meta.packets.unwrap_or(0), bytes = info.bytes, "Closed capture file.");
                        // The receiver is gone only when the uploader died; the file stays in
                        // the spool.
                        let _ = self.closed.send(ClosedFile {
                            path: done,
                            key: info.key,
                            meta,
                            bytes: info.bytes,
                            rotated: Some(info.rotated),
                            sums,
                            live,
                        });
                    }
                    Err(e) => {
                        warn!(error = %e, "Closing a capture file failed.");
                        self.shared.fail(e);
                    }
                }
            }
        }
    }
}
