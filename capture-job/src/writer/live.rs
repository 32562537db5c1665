//! The live-upload policy: which files are uploaded while they are written, how many chunks
//! their uploads may hold, and what happens to an upload that falls behind the capture.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use nightcap_storage::{CaptureKey, FileMeta, LiveUpload, Uploader};
use tracing::info;

use super::pool::{CHUNK, CHUNKS, Chunk, Shared, give_back, lend};
use crate::spooled::LiveSlot;

/// Buffered mode, a file uploaded while written: its last bytes up to this many are not written
/// back (see [`Live::cache_window`]).
pub(crate) const LIVE_CACHE_WINDOW: u64 = 128 << 20;

/// Most live uploads at once: the file being written and the previous one finishing.
const MAX_LIVE: usize = 2;

/// Uploading files while they are written ([`LiveUpload`]): once the writer thread has written
/// a chunk, it lends the chunk itself to the file's upload (no copy, nothing read back), which
/// hashes and sends each part as soon as it is complete, so a closed file is in storage once its
/// last part is. A lent chunk comes back to the pool when the store has its part; the capture
/// keeps its own [`CHUNKS`] whatever the uploads hold (the pool grows by what is lent). Once the
/// uploads hold [`Live::max_lent`] chunks, an upload is behind the capture: no more chunks are
/// lent to it, and once the file is closed it reads the rest from the spool file (the parts
/// already stored stay; an upload that has not sent a part yet is dropped instead and the file
/// uploaded from the spool).
#[derive(Clone)]
pub(crate) struct Live {
    pub(crate) uploader: Arc<Uploader>,
    /// The runtime the parts are sent from.
    pub(crate) runtime: tokio::runtime::Handle,
    /// Set by the spool's uploader when an upload failed (live or from the spool), cleared when
    /// one succeeds. While set, storage is down or refusing: new files are not uploaded live
    /// (their uploads would only hold memory until they failed too) but from the spool once
    /// closed. Files waiting in the spool for any other reason (a live upload that could not
    /// start or was dropped, leftovers of an earlier run) do not stop new files from going
    /// live: a live upload is the cheapest way into storage (each byte hashed once and sent
    /// from memory), and sending files through the spool because others are there made a node
    /// short of CPU fall further behind with every file.
    pub(crate) storage_failing: Arc<AtomicBool>,
    /// Live uploads not finished yet. A file starts one only while fewer than
    /// [`MAX_LIVE`] are (the previous file's may still be sending its last part): a store
    /// slower than the capture then sends later files through the spool, and memory stays
    /// bounded.
    pub(crate) active: Arc<AtomicUsize>,
    /// Buffered mode: the last this many bytes of a file uploaded while written are not written
    /// back ([`LIVE_CACHE_WINDOW`]), and the file is not synced when closed: its copy in the
    /// spool is only needed if the upload fails, and it is deleted once the upload is complete,
    /// so its dirty pages mostly never reach the disk (no writeback I/O and no CPU for it). A file
    /// that outgrows the window is written back behind it. An upload that fell behind reads the
    /// rest through the page cache when none of it was written back (a copy, instead of waiting
    /// for writeback and reading the disk).
    pub(crate) cache_window: u64,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("storage_failing", &self.storage_failing)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl Live {
    /// A live upload for a new file, unless storage is failing or enough live uploads run.
    pub(super) fn start(&self, key: &CaptureKey) -> Option<LiveFile> {
        if self.storage_failing.load(Ordering::SeqCst)
            || self.active.load(Ordering::SeqCst) >= MAX_LIVE
        {
            return None;
        }
        let meta = FileMeta {
            start: Some(key.start),
            ..FileMeta::default()
        };
        let slot = LiveSlot::take(&self.active);
        let upload = self.uploader.live(&self.runtime, key, meta);
        Some(LiveFile {
            upload,
            slot,
            behind: false,
        })
    }

    /// Most chunks all live uploads may hold at once: a part being gathered, one being
    /// hashed, as many being stored as an upload sends at once, and a pool's worth of chunks
    /// more (the file being finished while the next one starts). An upload that would need
    /// more is behind.
    pub(super) fn max_lent(&self) -> usize {
        let o = self.uploader.options();
        (o.max_concurrent_parts.max(1) + 1) * o.part_size.div_ceil(CHUNK) + CHUNKS
    }
}

/// The live upload of the open file.
#[derive(Debug)]
pub(super) struct LiveFile {
    pub(super) upload: LiveUpload,
    pub(super) slot: LiveSlot,
    /// The upload fell behind: no more chunks are lent, the rest is read from the file once
    /// it is closed ([`LiveUpload::finish_from_file`]).
    pub(super) behind: bool,
}

/// What became of a written chunk offered to a file's live upload.
pub(super) enum Offered {
    /// The upload holds it.
    Lent,
    /// Not lent: it goes to the hasher or the pool.
    Kept(Chunk),
    /// The upload stopped (the chunk is back in the pool): the file is uploaded from the spool
    /// once closed.
    Stopped,
}

impl LiveFile {
    /// Lends the chunk just written to this upload. When too many chunks are lent, an upload
    /// that has sent parts is marked behind (it reads the rest from the file once closed); one
    /// that has not, or that has stopped, is to be dropped. `file` names the file in logs.
    pub(super) fn offer(
        &mut self,
        live: &Live,
        shared: &Arc<Shared>,
        chunk: Chunk,
        file: &Path,
    ) -> Offered {
        if self.behind {
            return Offered::Kept(chunk);
        }
        let why = match lend(shared, chunk, live.max_lent()) {
            Ok(bytes) => match self.upload.push(bytes) {
                Ok(()) => return Offered::Lent,
                Err(why) => why.to_string(),
            },
            Err(chunk) if self.upload.parts() > 0 => {
                // Parts are stored already: they stay, and the upload reads the rest from the
                // file once it is closed (this chunk and the following ones are not lent).
                self.behind = true;
                info!(file = %file.display(), "The upload of a file fell behind the capture; the rest is read from the spool file once it is closed.");
                return Offered::Kept(chunk);
            }
            Err(chunk) => {
                give_back(shared, chunk);
                "the upload fell behind the capture".to_owned()
            }
        };
        info!(reason = %why, "Stopped uploading a file while it is written; it is uploaded once closed.");
        Offered::Stopped
    }
}

#[cfg(test)]
mod tests;
