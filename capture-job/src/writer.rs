//! The file writer thread: all disk I/O of the capture files, off the capture thread.
//!
//! The capture thread encodes pcapng into fixed, page-aligned chunks ([`FileSink`]) and hands
//! each full chunk to this thread, which writes it and passes it to a **hasher thread**; the
//! hasher adds it to the file's [`FileSums`] (length, SHA-256, CRC-64) and gives the chunk back.
//! The sums travel with the closed file, so the uploader reads each file once and need not hash
//! it again (SHA-256 costs ~0.8 µs per 1400-byte packet here: as much as the whole capture path;
//! a separate thread keeps it beside the writes instead of between them). Capture first: when the
//! hasher holds chunks the capture thread is waiting for, the writer stops hashing that file; it
//! then has no sums and the uploader reads it twice. Opening a file,
//! writing its sidecar, flushing, `fdatasync`, renaming it to its closed name and handing it to
//! the uploader all happen off the capture thread too, so the capture thread never waits for the
//! disk — only, when the disk falls behind by more than the chunk pool, for a free chunk (the
//! ring then buffers, and past that the kernel counts drops).
//!
//! Files are written through the page cache with **write-behind** by default: writeback starts
//! as each chunk is written, and pages more than [`WRITE_BEHIND`] bytes behind the write position
//! that are already on disk are dropped from the cache — nothing waits for the disk, and a disk
//! stall is absorbed by dirty pages as for tcpdump. The cache holds about that window per file:
//! its pages are reused while they are warm (on the VMs we measured, copying into pages the guest
//! had not touched recently cost ~10× a normal copy) and the capture Job's memory cgroup is
//! charged for the window only. A file uploaded while written is not written back (its last
//! [`LIVE_CACHE_WINDOW`] bytes) nor synced: it is deleted once in storage, so its dirty pages
//! never need to reach the disk ([`Live::cache_window`]). With `direct`
//! (`--spool-direct-io=true`) files are written with
//! `O_DIRECT` instead: the least CPU and no page cache for other processes to take from under us,
//! but a disk stall longer than the chunk pool and the ring hold loses packets. Chunks are full and
//! aligned except a file's last one, which is zero-padded to the alignment, written, and cut back
//! with `ftruncate`. Where `O_DIRECT` is refused (`EINVAL`), write-behind is used.

use std::{
    fs::File,
    io::{self, Write},
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    path::PathBuf,
    ptr::NonNull,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Instant,
};

use nightcap_storage::{
    CaptureKey, FileMeta, FileSums, LiveDone, LiveUpload, SumsBuilder, Uploader,
};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

use crate::{
    Error, Result,
    spool::{ClosedFile, Sidecar},
};

/// Bytes per chunk (a multiple of [`ALIGN`]). O_DIRECT writes of 512 KiB ran as fast as 1 MiB
/// ones on the machines we measured (~1.6 GB/s).
pub(crate) const CHUNK: usize = 512 << 10;
/// Chunks per capture: one being filled, the rest queued for or being written or hashed. Two
/// keep the disk busy, one the hasher; the others absorb short write stalls before the ring has
/// to.
const CHUNKS: usize = 6;
/// Alignment of buffers, file offsets and lengths for `O_DIRECT` (the largest logical block
/// size in use; 512-byte devices accept it too).
const ALIGN: usize = 4096;
/// Buffered mode: clean pages further than this behind the write position are dropped.
const WRITE_BEHIND: u64 = 32 << 20;
/// Buffered mode: bytes written between two passes dropping clean pages.
const DROP_EVERY: u64 = 8 << 20;
/// Buffered mode: writeback requests queued for the syncer at most.
const MAX_KICKS: usize = 4;
/// Buffered mode, a file uploaded while written: its last bytes up to this many are not written
/// back (see [`Live::cache_window`]).
pub(crate) const LIVE_CACHE_WINDOW: u64 = 128 << 20;

/// A page-aligned buffer of [`CHUNK`] bytes and how many are used.
struct Chunk {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the allocation is owned by this value alone.
unsafe impl Send for Chunk {}

impl Chunk {
    fn layout() -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(CHUNK, ALIGN).expect("constant, valid layout")
    }

    fn new() -> Self {
        let layout = Self::layout();
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Self { ptr, len: 0 }
    }

    fn spare(&mut self) -> &mut [u8] {
        // SAFETY: len <= CHUNK; the range is inside our allocation and nothing else borrows it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(self.len), CHUNK - self.len) }
    }

    fn full(&self) -> bool {
        self.len == CHUNK
    }

    /// The bytes written into it.
    fn used(&self) -> &[u8] {
        // SAFETY: len <= CHUNK; initialised (alloc_zeroed, then only written).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The used bytes, zero-padded to `ALIGN` when `pad` (for the last write of a file).
    fn data(&mut self, pad: bool) -> &[u8] {
        let len = if pad {
            self.len.next_multiple_of(ALIGN)
        } else {
            self.len
        };
        if len > self.len {
            let used = self.len;
            self.spare()[..len - used].fill(0);
        }
        // SAFETY: len <= CHUNK (CHUNK is a multiple of ALIGN); initialised (alloc_zeroed, then
        // only written).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), len) }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout()) }
    }
}

/// What the writer thread needs to close a file.
pub(crate) struct CloseInfo {
    pub(crate) key: CaptureKey,
    pub(crate) meta: FileMeta,
    pub(crate) bytes: u64,
    /// When the capture thread finished the file.
    pub(crate) rotated: Instant,
}

enum Cmd {
    Open {
        partial: PathBuf,
        sidecar: PathBuf,
        key: CaptureKey,
    },
    Data(Chunk),
    Close(CloseInfo),
}

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

/// Most live uploads at once: the file being written and the previous one finishing.
const MAX_LIVE: usize = 2;

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
    fn start(&self, key: &CaptureKey) -> Option<LiveFile> {
        if self.storage_failing.load(Ordering::SeqCst)
            || self.active.load(Ordering::SeqCst) >= MAX_LIVE
        {
            return None;
        }
        let meta = FileMeta {
            start: Some(key.start),
            ..FileMeta::default()
        };
        self.active.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(self.active.clone());
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
    fn max_lent(&self) -> usize {
        let o = self.uploader.options();
        (o.max_concurrent_parts.max(1) + 1) * o.part_size.div_ceil(CHUNK) + CHUNKS
    }
}

/// One of [`Live::active`], given back when dropped.
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The live upload of the open file.
#[derive(Debug)]
struct LiveFile {
    upload: LiveUpload,
    slot: Slot,
    /// The upload fell behind: no more chunks are lent, the rest is read from the file once
    /// it is closed ([`LiveUpload::finish_from_file`]).
    behind: bool,
}

/// The live upload of a closed file, completing.
#[derive(Debug)]
pub struct LiveResult {
    done: LiveDone,
    _slot: Slot,
}

impl LiveResult {
    /// Waits for the last part and the completion.
    pub async fn wait(self) -> nightcap_storage::Result<nightcap_storage::UploadedFile> {
        self.done.wait().await
    }
}

/// State both ends share: the free chunks and the first error.
struct Shared {
    free: Mutex<Pool>,
    returned: Condvar,
    /// Chunks handed to the hasher and not yet given back.
    hash_backlog: AtomicUsize,
    /// Set when the writer gave up hashing the current file: queued chunks go straight back.
    hash_skip: AtomicBool,
    /// Held by a test to stall this writer's hasher.
    #[cfg(test)]
    hash_gate: std::sync::Mutex<()>,
    /// Bytes handed to the syncer for writeback, and files synced to disk when closed: what a
    /// test can see of the disk traffic.
    #[cfg(test)]
    written_back: std::sync::atomic::AtomicU64,
    #[cfg(test)]
    synced: AtomicUsize,
}

struct Pool {
    chunks: Vec<Chunk>,
    /// Chunks in existence: [`CHUNKS`] for the capture plus as many as are lent.
    allocated: usize,
    /// Chunks lent to live uploads (see [`Lent`]).
    lent: usize,
    /// The writer thread has ended: nobody returns chunks any more.
    gone: bool,
    error: Option<Error>,
}

/// The capture thread's end of the writer thread.
pub(crate) struct Writer {
    tx: Option<mpsc::SyncSender<Cmd>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread; closed files go to `closed`, uploaded while written with `live`.
    pub(crate) fn start(
        closed: UnboundedSender<ClosedFile>,
        direct: bool,
        live: Option<Live>,
    ) -> Result<Self> {
        let shared = Arc::new(Shared {
            free: Mutex::new(Pool {
                chunks: (0..CHUNKS).map(|_| Chunk::new()).collect(),
                allocated: CHUNKS,
                lent: 0,
                gone: false,
                error: None,
            }),
            returned: Condvar::new(),
            hash_backlog: AtomicUsize::new(0),
            hash_skip: AtomicBool::new(false),
            #[cfg(test)]
            hash_gate: std::sync::Mutex::new(()),
            #[cfg(test)]
            written_back: std::sync::atomic::AtomicU64::new(0),
            #[cfg(test)]
            synced: AtomicUsize::new(0),
        });
        // Every chunk plus an open and a close per file fit, so a send blocks only when the
        // thread is far behind (and then the pool has already run dry).
        let (tx, rx) = mpsc::sync_channel(CHUNKS + 8);
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("nightcap-writer".into())
            .spawn(move || {
                // Same priority as the capture thread (see `crate::runtime`).
                let _ = crate::set_nice(0);
                let (sync_tx, sync_rx) = mpsc::channel();
                let (hash_tx, hash_rx) = mpsc::channel();
                let syncer_shared = thread_shared.clone();
                let syncer = spawn_nice0("nightcap-syncer", move || {
                    let mut s = Syncer {
                        shared: syncer_shared,
                        closed,
                        current: None,
                    };
                    while let Ok(cmd) = sync_rx.recv() {
                        s.handle(cmd);
                    }
                });
                let hasher_shared = thread_shared.clone();
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
                        let mut pool = lock(&thread_shared.free);
                        pool.error.get_or_insert(Error::Invalid(format!(
                            "cannot start the file writer's threads: {e}"
                        )));
                        pool.gone = true;
                        thread_shared.returned.notify_all();
                        return;
                    }
                };
                let mut w = Thread {
                    live,
                    shared: thread_shared.clone(),
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
                // Files queued for the hasher and the syncer are closed and handed on before
                // anyone hears "done" (each ends when the thread before it is gone).
                drop(w);
                let _ = hasher.join();
                let _ = syncer.join();
                // A file still open here belongs to a capture that failed; its `.partial`
                // stays for the next run's recovery.
                let mut pool = lock(&thread_shared.free);
                pool.gone = true;
                thread_shared.returned.notify_all();
            })
            .map_err(|e| Error::Invalid(format!("cannot start the file writer thread: {e}")))?;
        Ok(Self {
            tx: Some(tx),
            shared,
            thread: Some(thread),
        })
    }

    fn send(&self, cmd: Cmd) -> io::Result<()> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(cmd).ok())
            .ok_or_else(|| io::Error::other("the file writer thread has stopped"))
    }

    /// Starts a file: the writer thread creates `partial` and writes its opening sidecar.
    pub(crate) fn open(
        &self,
        partial: PathBuf,
        sidecar: PathBuf,
        key: CaptureKey,
    ) -> io::Result<FileSink> {
        let chunk = take_free(&self.shared)?;
        self.send(Cmd::Open {
            partial,
            sidecar,
            key,
        })?;
        Ok(FileSink {
            chunk: Some(chunk),
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        })
    }

    /// Ends a file: its last chunk is written, the file synced, renamed to its closed name and
    /// handed to the uploader.
    pub(crate) fn close(&self, mut sink: FileSink, info: CloseInfo) -> io::Result<()> {
        if let Some(chunk) = sink.chunk.take() {
            if chunk.len > 0 {
                self.send(Cmd::Data(chunk))?;
            } else {
                give_back(&self.shared, chunk);
            }
        }
        self.send(Cmd::Close(info))
    }

    /// The first error the writer thread met, if any (taken: reported once).
    pub(crate) fn take_error(&self) -> Option<Error> {
        lock(&self.shared.free).error.take()
    }

    /// Waits until everything sent was written and handed on; returns the first error.
    pub(crate) fn finish(mut self) -> Result<()> {
        self.tx = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            return Err(Error::Invalid("the file writer thread panicked".into()));
        }
        match self.take_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Let the thread write what it was given (files closed before a failure still reach
        // the uploader); it ends when the channel is empty.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a helper thread at the capture's priority (see `crate::runtime`).
fn spawn_nice0(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = crate::set_nice(0);
            f()
        })
}

fn lock(m: &Mutex<Pool>) -> std::sync::MutexGuard<'_, Pool> {
    // The pool holds plain data; a panic elsewhere does not leave it inconsistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn take_free(shared: &Shared) -> io::Result<Chunk> {
    let mut pool = lock(&shared.free);
    loop {
        if let Some(mut c) = pool.chunks.pop() {
            c.len = 0;
            return Ok(c);
        }
        // The capture has its CHUNKS however many are lent to uploads.
        if pool.allocated < CHUNKS + pool.lent {
            pool.allocated += 1;
            return Ok(Chunk::new());
        }
        if pool.gone {
            return Err(io::Error::other("the file writer thread has stopped"));
        }
        pool = shared
            .returned
            .wait(pool)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
}

fn give_back(shared: &Shared, chunk: Chunk) {
    lock(&shared.free).chunks.push(chunk);
    shared.returned.notify_one();
}

/// A written chunk lent to a live upload as the bytes of the file it holds; back in the pool
/// when the upload lets go of it (the store has its part, or the upload was dropped).
struct Lent {
    chunk: Option<Chunk>,
    shared: Arc<Shared>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        self.chunk.as_ref().map_or(&[], Chunk::used)
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(c) = self.chunk.take() {
            let mut pool = lock(&self.shared.free);
            pool.lent -= 1;
            pool.chunks.push(c);
            drop(pool);
            self.shared.returned.notify_one();
        }
    }
}

/// Lends `chunk` to a live upload unless `max` are lent already (then it is handed back).
fn lend(shared: &Arc<Shared>, chunk: Chunk, max: usize) -> Result<bytes::Bytes, Chunk> {
    let mut pool = lock(&shared.free);
    if pool.lent >= max {
        return Err(chunk);
    }
    pool.lent += 1;
    drop(pool);
    // The capture may be waiting for a chunk: it can have one more now.
    shared.returned.notify_one();
    Ok(bytes::Bytes::from_owner(Lent {
        chunk: Some(chunk),
        shared: shared.clone(),
    }))
}

/// The `Write` end of one open file: fills chunks and queues the full ones.
pub(crate) struct FileSink {
    chunk: Option<Chunk>,
    tx: Option<mpsc::SyncSender<Cmd>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink").finish_non_exhaustive()
    }
}

impl FileSink {
    #[cold]
    fn rotate_chunk(&mut self) -> io::Result<()> {
        let full = self.chunk.take();
        if let Some(c) = full {
            self.tx
                .as_ref()
                .and_then(|tx| tx.send(Cmd::Data(c)).ok())
                .ok_or_else(|| io::Error::other("the file writer thread has stopped"))?;
        }
        self.chunk = Some(take_free(&self.shared)?);
        Ok(())
    }
}

impl Write for FileSink {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.chunk.as_ref().is_none_or(Chunk::full) {
            self.rotate_chunk()?;
        }
        let chunk = self.chunk.as_mut().expect("a chunk was just taken");
        let spare = chunk.spare();
        let n = buf.len().min(spare.len());
        spare[..n].copy_from_slice(&buf[..n]);
        chunk.len += n;
        Ok(n)
    }

    #[inline]
    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.write(buf)?;
            buf = &buf[n..];
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunks are written whole; the last one goes with `Writer::close`.
        Ok(())
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if let Some(c) = self.chunk.take() {
            give_back(&self.shared, c);
        }
    }
}

/// The open file on the writer thread's side.
struct Open {
    file: Arc<File>,
    partial: PathBuf,
    sidecar: PathBuf,
    /// Opened with O_DIRECT.
    direct: bool,
    /// Bytes of pcapng written.
    len: u64,
    /// The last write was padded (the file is longer than `len` until cut back).
    padded: bool,
    /// Buffered mode: writeback was requested up to here.
    kicked: u64,
    /// Its chunks still go to the hasher (false once hashing fell behind the capture).
    hashing: bool,
    /// Its upload while it is written, if it has one.
    live: Option<LiveFile>,
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

/// Work for the syncer thread: everything that may wait for the disk other than `write`.
enum Sync {
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
struct Closing {
    open: Open,
    info: CloseInfo,
    sums: Option<FileSums>,
    live: Option<LiveResult>,
    /// Sync it to disk before it is renamed (not a file uploaded while written).
    sync: bool,
}

/// Work for the hasher thread, in file order.
enum Hash {
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

/// The hasher thread: checksums of each file's bytes (so the uploader reads the file once),
/// computed beside the writes rather than between them.
fn hash_files(shared: &Shared, rx: mpsc::Receiver<Hash>, sync: mpsc::Sender<Sync>) {
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
                    LiveResult {
                        done,
                        _slot: l.slot,
                    }
                });
                let closing = Box::new(Closing {
                    open: *open,
                    info,
                    sums,
                    live,
                    sync: durable,
                });
                if sync.send(Sync::Close(closing)).is_err() {
                    lock(&shared.free)
                        .error
                        .get_or_insert(Error::Invalid("the file syncer thread has stopped".into()));
                }
            }
        }
    }
}

/// The syncer thread's state.
struct Syncer {
    shared: Arc<Shared>,
    closed: UnboundedSender<ClosedFile>,
    /// The file of the last writeback request and where its last dropping pass ended.
    current: Option<(Arc<File>, u64)>,
}

impl Syncer {
    fn handle(&mut self, cmd: Sync) {
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
                let fd = file.as_raw_fd();
                let upto = end.saturating_sub(WRITE_BEHIND);
                // SAFETY: sync_file_range and posix_fadvise on a descriptor we hold, in-file
                // ranges. Failures only cost the optimisation (the data is written either way).
                unsafe {
                    libc::sync_file_range(
                        fd,
                        start as libc::off64_t,
                        (end - start) as libc::off64_t,
                        libc::SYNC_FILE_RANGE_WRITE,
                    );
                    if upto >= dropped + DROP_EVERY {
                        libc::posix_fadvise(
                            fd,
                            0,
                            upto as libc::off64_t,
                            libc::POSIX_FADV_DONTNEED,
                        );
                    }
                }
                let dropped = if upto >= dropped + DROP_EVERY {
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
                        lock(&self.shared.free).error.get_or_insert(e);
                    }
                }
            }
        }
    }
}

impl Thread {
    /// Lends the chunk just written (`written`) to the open file's live upload, if it has one
    /// (None), or returns it for the hasher or the pool. When too many chunks are lent, an
    /// upload that has sent parts is marked behind (it reads the rest from the file once
    /// closed); one that has not, or that has stopped, is dropped and the file counted for the
    /// spool.
    fn lend_to_live(&mut self, chunk: Chunk, written: bool) -> Option<Chunk> {
        let Some(f) = self.file.as_mut() else {
            return Some(chunk);
        };
        let (Some(l), Some(live)) = (f.live.as_mut(), self.live.as_ref()) else {
            return Some(chunk);
        };
        if !written || l.behind {
            return Some(chunk);
        }
        let why = match lend(&self.shared, chunk, live.max_lent()) {
            Ok(bytes) => match l.upload.push(bytes) {
                Ok(()) => return None,
                Err(why) => why.to_string(),
            },
            Err(chunk) if l.upload.parts() > 0 => {
                // Parts are stored already: they stay, and the upload reads the rest from the
                // file once it is closed (this chunk and the following ones are not lent).
                l.behind = true;
                info!(file = %f.partial.display(), "The upload of a file fell behind the capture; the rest is read from the spool file once it is closed.");
                return Some(chunk);
            }
            Err(chunk) => {
                give_back(&self.shared, chunk);
                "the upload fell behind the capture".to_owned()
            }
        };
        info!(reason = %why, "Stopped uploading a file while it is written; it is uploaded once closed.");
        // Its chunks come back now; the file has no sums (it was not hashed): the spool's
        // uploader hashes it.
        f.live = None;
        None
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
        let mut pool = lock(&self.shared.free);
        pool.error.get_or_insert(e);
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
                let (file, direct) = create(&partial, self.direct)
                    .map_err(|e| Error::io(&partial, "creating", e))?;
                let live = self.live.as_ref().and_then(|l| l.start(&key));
                // A file uploaded while written is hashed by its upload, off this path.
                let hashing = live.is_none();
                // Unsent only when the hasher is gone, and then no file reaches the uploader.
                self.shared.hash_skip.store(false, Ordering::SeqCst);
                let _ = self.hash.send(Hash::Open { hash: hashing });
                self.file = Some(Open {
                    live,
                    file: Arc::new(file),
                    partial,
                    sidecar,
                    direct,
                    len: 0,
                    padded: false,
                    kicked: 0,
                    hashing,
                });
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
                if let Some(f) = self.file.as_mut()
                    && !f.direct
                {
                    // The last bytes of a file uploaded while written stay out of writeback.
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
}

/// Creates `path`, with O_DIRECT if asked and the file system allows it.
fn create(path: &std::path::Path, direct: bool) -> io::Result<(File, bool)> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if direct {
        match opts.clone().custom_flags(libc::O_DIRECT).open(path) {
            Ok(f) => return Ok((f, true)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                warn!(file = %path.display(), "The spool's file system refuses O_DIRECT; writing through the page cache.");
            }
            Err(e) => return Err(e),
        }
    }
    opts.open(path).map(|f| (f, false))
}

impl Open {
    fn write(&mut self, chunk: &mut Chunk) -> Result<()> {
        if self.padded {
            // Only a file's last chunk may be short; anything after it would land behind the
            // padding. The capture thread never does this.
            return Err(Error::Invalid(
                "internal error: data after a file's last chunk".into(),
            ));
        }
        let pad = self.direct && !chunk.len.is_multiple_of(ALIGN);
        let data = chunk.data(pad);
        (&*self.file)
            .write_all(data)
            .map_err(|e| Error::io(&self.partial, "writing", e))?;
        self.len += chunk.len as u64;
        self.padded = pad;
        Ok(())
    }

    /// Cuts the padding, syncs (`sync`: not a file uploaded while written, see
    /// [`Live::cache_window`]), completes the sidecar and renames: returns the closed path.
    fn finish(self, sidecar: &Sidecar, sync: bool) -> Result<PathBuf> {
        if self.padded {
            self.file
                .set_len(self.len)
                .map_err(|e| Error::io(&self.partial, "truncating", e))?;
        }
        if sync {
            self.file
                .sync_data()
                .map_err(|e| Error::io(&self.partial, "syncing", e))?;
        }
        if sync && !self.direct {
            // Written back: the cache has no use for it (the uploader reads it once).
            // SAFETY: posix_fadvise on our own descriptor (0, 0 = the whole file).
            unsafe { libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
        sidecar.write(&self.sidecar)?;
        let name = self
            .partial
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let done = self
            .partial
            .with_file_name(name.strip_suffix(".partial").unwrap_or(&name));
        std::fs::rename(&self.partial, &done).map_err(|e| Error::io(&done, "renaming", e))?;
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seq: u64) -> CaptureKey {
        CaptureKey::new(
            "team-a",
            "cap",
            "00000000-0000-4000-8000-000000000001",
            "node-1",
            chrono::Utc::now(),
            seq,
        )
        .expect("valid key")
    }

    /// Writes file `seq` in `dir`: `size` bytes of a recognisable pattern, in odd-sized pieces.
    fn write_one(w: &Writer, dir: &std::path::Path, seq: usize, size: usize) {
        write_paced(w, dir, seq, size, || ());
    }

    /// [`write_one`], calling `pace` before each piece.
    fn write_paced(w: &Writer, dir: &std::path::Path, seq: usize, size: usize, pace: impl Fn()) {
        let k = key(seq as u64);
        let name = k.file_name();
        let mut sink = w
            .open(
                dir.join(format!("{name}.partial")),
                dir.join(format!("{name}.json")),
                k.clone(),
            )
            .expect("open");
        for piece in pattern(size).chunks(1499) {
            pace();
            sink.write_all(piece).expect("write");
        }
        let meta = FileMeta {
            packets: Some(seq as u64),
            ..FileMeta::default()
        };
        let info = CloseInfo {
            key: k,
            meta,
            bytes: size as u64,
            rotated: Instant::now(),
        };
        w.close(sink, info).expect("close");
    }

    /// Writes `sizes.len()` files of the given sizes ([`write_one`]) and returns what reached
    /// the uploader.
    fn write_files(dir: &std::path::Path, direct: bool, sizes: &[usize]) -> Vec<ClosedFile> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let w = Writer::start(tx, direct, None).expect("writer");
        for (seq, &size) in sizes.iter().enumerate() {
            write_one(&w, dir, seq, size);
        }
        w.finish().expect("no write error");
        let mut out = Vec::new();
        while let Ok(f) = rx.try_recv() {
            out.push(f);
        }
        out
    }

    /// A live-upload set-up on a one-worker runtime, parts of 5 MiB, into `store`.
    fn live_into(store: Arc<dyn object_store::ObjectStore>) -> (tokio::runtime::Runtime, Live) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let uploader = Arc::new(Uploader::new(
            store,
            nightcap_storage::KeyPrefix::default(),
            nightcap_storage::UploadOptions {
                part_size: 5 << 20,
                ..Default::default()
            },
        ));
        let live = Live {
            uploader,
            runtime: rt.handle().clone(),
            storage_failing: Arc::default(),
            active: Arc::default(),
            cache_window: LIVE_CACHE_WINDOW,
        };
        (rt, live)
    }

    /// A writer uploading live into a local store (it writes each part out and lets go of its
    /// bytes, as S3 does), keeping `window` bytes of live files out of writeback, and its first
    /// file, closed: three parts and a bit, written at the pace of the store (these tests are
    /// not about a store that falls behind: an unoptimised SHA-256 is slower than the writer).
    struct Paced {
        rt: tokio::runtime::Runtime,
        store: Arc<dyn object_store::ObjectStore>,
        w: Writer,
        rx: tokio::sync::mpsc::UnboundedReceiver<ClosedFile>,
        failing: Arc<AtomicBool>,
        first: ClosedFile,
        size: usize,
        dir: tempfile::TempDir,
        _bucket: tempfile::TempDir,
    }

    fn paced_live_file(window: u64) -> Paced {
        let bucket = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(bucket.path())
                .expect("local store"),
        );
        let (rt, mut live) = live_into(store.clone());
        live.cache_window = window;
        let failing = live.storage_failing.clone();
        // The chunks in the pipeline may all be lent on top of these without reaching the limit.
        let in_time = live.max_lent() - CHUNKS - 1;
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let w = Writer::start(tx, false, Some(live)).expect("writer");
        let size = 3 * (5 << 20) + 12_345;
        write_paced(&w, dir.path(), 0, size, || {
            while lock(&w.shared.free).lent > in_time {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        let first = rx.blocking_recv().expect("first file closed");
        Paced {
            rt,
            store,
            w,
            rx,
            failing,
            first,
            size,
            dir,
            _bucket: bucket,
        }
    }

    #[test]
    fn files_go_live_only_while_storage_is_not_failing() {
        let Paced {
            rt,
            store,
            w,
            mut rx,
            failing,
            first,
            size,
            dir,
            _bucket,
        } = paced_live_file(LIVE_CACHE_WINDOW);
        // Its upload kept up: its copy in the spool was neither written back nor synced.
        assert_eq!(w.shared.written_back.load(Ordering::SeqCst), 0);
        assert_eq!(w.shared.synced.load(Ordering::SeqCst), 0);
        // An upload failed: the next file is uploaded from the spool.
        failing.store(true, Ordering::SeqCst);
        write_one(&w, dir.path(), 1, 1000);
        let second = rx.blocking_recv().expect("second file closed");
        assert!(second.live.is_none(), "not live while storage is failing");
        assert!(
            second.sums.is_some(),
            "hashed while written, for its upload"
        );
        // A file uploaded from the spool is written back and synced.
        assert_eq!(w.shared.written_back.load(Ordering::SeqCst), 1000);
        assert_eq!(w.shared.synced.load(Ordering::SeqCst), 1);
        // Storage is back: live again.
        failing.store(false, Ordering::SeqCst);
        write_one(&w, dir.path(), 2, 1000);
        let third = rx.blocking_recv().expect("third file closed");
        let up = rt
            .block_on(third.live.expect("live once storage works").wait())
            .expect("uploaded");
        assert_eq!(up.bytes, 1000);
        let done = first
            .live
            .expect("the first file was uploaded while written");
        // Hashed by its upload, not by the hasher thread.
        assert!(first.sums.is_none());
        assert_stored(&rt, &*store, &first.key, done, size);
        // Every chunk the upload held came back to the writer.
        assert_eq!(lock(&w.shared.free).lent, 0);
        w.finish().expect("no write error");
    }

    #[test]
    fn a_file_uploaded_while_written_keeps_only_its_last_bytes_out_of_writeback() {
        let Paced {
            rt,
            store,
            w,
            first: f,
            size,
            // Held to the end: the spool and the store.
            dir: _dir,
            _bucket,
            ..
        } = paced_live_file(4 << 20);
        // Written back up to the window before its end at most (a busy syncer may skip a
        // request: the next one covers the range), and not synced.
        let back = w.shared.written_back.load(Ordering::SeqCst);
        assert!(
            back > 0,
            "a file longer than the window is written back behind it"
        );
        assert!(
            back <= (size as u64) - (4 << 20),
            "{back} bytes written back"
        );
        assert_eq!(w.shared.synced.load(Ordering::SeqCst), 0);
        // The spool's copy is whole all the same (the uploader falls back to it).
        assert!(std::fs::read(&f.path).expect("closed file") == pattern(size));
        assert_stored(&rt, &*store, &f.key, f.live.expect("uploaded live"), size);
        w.finish().expect("no write error");
    }

    #[test]
    fn an_upload_that_falls_behind_never_holds_up_the_capture_and_reads_the_rest_from_disk() {
        // O_DIRECT: the rest is read from the disk; write-behind: through the page cache (none
        // of it was written back), and the file was neither written back nor synced.
        for direct in [true, false] {
            falls_behind(direct);
        }
    }

    fn falls_behind(direct: bool) {
        use object_store::{ObjectStore, memory::InMemory};
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (rt, live) = live_into(store.clone());
        let most = live.max_lent();
        // The runtime's only worker is held: no part is hashed or stored while the file is
        // written, as when the store (or the CPU the uploads get) is far slower than the capture.
        let (hold, held) = std::sync::mpsc::channel::<()>();
        let (busy, is_busy) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let _ = busy.send(());
            let _ = held.recv();
        });
        is_busy.recv().expect("the worker is held");
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let w = Writer::start(tx, direct, Some(live)).expect("writer");
        // Twice as much as the uploads may hold: the capture never waits for the store.
        let size = 2 * most * CHUNK + 777;
        write_one(&w, dir.path(), 0, size);
        let first = rx.blocking_recv().expect("file closed");
        assert!(
            lock(&w.shared.free).lent <= most,
            "never more lent than allowed"
        );
        let data = std::fs::read(&first.path).expect("closed file");
        assert!(data == pattern(size), "the file holds every byte");
        assert_eq!(w.shared.written_back.load(Ordering::SeqCst), 0);
        assert_eq!(w.shared.synced.load(Ordering::SeqCst), 0);
        drop(hold);
        let done = first.live.expect("still uploaded by its live upload");
        // The parts sent while written, then the rest from the file.
        assert_stored(&rt, &*store, &first.key, done, size);
        assert_eq!(lock(&w.shared.free).lent, 0, "every lent chunk came back");
        w.finish().expect("no write error");
    }

    /// Waits for a live upload and checks that `store` holds the `size` bytes written, as one
    /// multipart object with the right SHA-256.
    fn assert_stored(
        rt: &tokio::runtime::Runtime,
        store: &dyn object_store::ObjectStore,
        key: &CaptureKey,
        done: LiveResult,
        size: usize,
    ) {
        use object_store::ObjectStoreExt;
        let up = rt.block_on(done.wait()).expect("uploaded");
        assert!(up.multipart);
        let mut sums = SumsBuilder::default();
        sums.update(&pattern(size));
        assert_eq!(up.sha256, sums.finish().sha256);
        let prefix = nightcap_storage::KeyPrefix::default();
        let got = rt
            .block_on(async { store.get(&key.to_path(&prefix)).await?.bytes().await })
            .expect("in storage");
        assert!(got.as_ref() == pattern(size), "the bytes written, in order");
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn direct_and_buffered_files_hold_exactly_what_was_written() {
        // Empty, tiny, unaligned, exactly one chunk, several chunks plus a tail.
        let sizes = [0, 100, 4095, 4097, CHUNK, 3 * CHUNK + 12_345];
        for direct in [true, false] {
            let dir = tempfile::tempdir().expect("tempdir");
            let closed = write_files(dir.path(), direct, &sizes);
            assert_eq!(closed.len(), sizes.len(), "direct={direct}");
            for (f, &size) in closed.iter().zip(&sizes) {
                let data = std::fs::read(&f.path).expect("closed file");
                assert_eq!(data.len(), size, "direct={direct} {}", f.path.display());
                assert!(data == pattern(size), "direct={direct}: content differs");
                assert_eq!(f.bytes, size as u64);
                // The uploader's checksums cover exactly the file's bytes (no padding).
                let mut sums = SumsBuilder::default();
                sums.update(&data);
                assert_eq!(f.sums, Some(sums.finish()), "direct={direct} size {size}");
                assert!(!f.path.to_string_lossy().ends_with(".partial"));
                let side = dir.path().join(format!("{}.json", f.key.file_name()));
                let sc: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&side).expect("sidecar")).expect("json");
                assert_eq!(sc["key"], f.key.relative());
                assert_eq!(sc["packets"], f.meta.packets.expect("packets"));
            }
            let partial = std::fs::read_dir(dir.path())
                .expect("dir")
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
                .count();
            assert_eq!(partial, 0);
        }
    }

    /// Pages of `path` in the page cache.
    fn resident_pages(path: &std::path::Path) -> usize {
        nightcap_testsupport::util::page_cache_resident(path).expect("mincore")
    }

    #[test]
    fn direct_files_stay_out_of_the_page_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = 16 * CHUNK + 777;
        let direct = write_files(dir.path(), true, &[size]);
        let supported = matches!(create(&dir.path().join("probe"), true), Ok((_, true)));
        if !supported {
            eprintln!("skipped: the temp directory's file system refuses O_DIRECT");
            return;
        }
        let pages = size.div_ceil(4096);
        let resident = resident_pages(&direct[0].path);
        // Only the tail page may have been read back by the truncation.
        assert!(
            resident <= 1,
            "{resident} of {pages} pages in the page cache"
        );
        // Write-behind leaves the closed file out of the cache too.
        let buffered = write_files(dir.path(), false, &[size]);
        let resident = resident_pages(&buffered[0].path);
        assert!(
            resident <= 1,
            "write-behind: {resident} of {pages} pages cached"
        );
        // Control: a plain write stays cached, so mincore does see cached pages.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, vec![7u8; size]).expect("plain write");
        let resident = resident_pages(&plain);
        assert!(
            resident > pages / 2,
            "control: only {resident} of {pages} pages cached"
        );
    }

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
        let first = done_rx.recv_timeout(std::time::Duration::from_secs(20));
        assert_eq!(
            first.ok(),
            Some(0),
            "the capture side was blocked by the hasher"
        );
        drop(gate);
        // The hasher skips what is left of the first file before the second starts.
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        while shared.hash_backlog.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
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
