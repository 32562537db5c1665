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
//! never need to reach the disk ([`live::Live::cache_window`]). With `direct`
//! (`--spool-direct-io=true`) files are written with
//! `O_DIRECT` instead: the least CPU and no page cache for other processes to take from under us,
//! but a disk stall longer than the chunk pool and the ring hold loses packets. Chunks are full and
//! aligned except a file's last one, which is zero-padded to the alignment, written, and cut back
//! with `ftruncate`. Where `O_DIRECT` is refused (`EINVAL`), write-behind is used.
//!
//! Modules: [`pool`] (the chunks and lending them), [`live`] (which files are uploaded while
//! written), [`thread`], [`hasher`] and [`syncer`] (one thread each), [`file`] (the open file).

mod file;
mod hasher;
pub(crate) mod live;
mod pool;
mod syncer;
#[cfg(test)]
mod testing;
mod thread;

use std::{
    io::{self, Write},
    path::PathBuf,
    sync::{Arc, mpsc},
    thread::JoinHandle,
};

pub(crate) use file::CloseInfo;
pub(crate) use live::{LIVE_CACHE_WINDOW, Live};
use nightcap_storage::CaptureKey;
use pool::{CHUNKS, Chunk, Shared, give_back, lock, take_free};
use thread::Cmd;
use tokio::sync::mpsc::UnboundedSender;

use crate::{Error, Result, spooled::ClosedFile};

/// The capture thread's end of the writer thread.
pub(crate) struct Writer {
    tx: Option<mpsc::SyncSender<Cmd>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Short chunks may be written before they are full ([`FileSink::write_out`]): only
    /// through the page cache (O_DIRECT needs whole blocks) and without uploads while writing
    /// (their parts are built from whole chunks).
    partial_ok: bool,
}

impl Writer {
    /// Starts the writer thread; closed files go to `closed`, uploaded while written with `live`.
    pub(crate) fn start(
        closed: UnboundedSender<ClosedFile>,
        direct: bool,
        live: Option<Live>,
    ) -> Result<Self> {
        let partial_ok = !direct && live.is_none();
        let shared = Arc::new(Shared::new());
        // Every chunk plus an open and a close per file fit, so a send blocks only when the
        // thread is far behind (and then the pool has already run dry).
        let (tx, rx) = mpsc::sync_channel(CHUNKS + 8);
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("nightcap-writer".into())
            .spawn(move || thread::run(rx, thread_shared, closed, direct, live))
            .map_err(|e| Error::Invalid(format!("cannot start the file writer thread: {e}")))?;
        Ok(Self {
            tx: Some(tx),
            shared,
            thread: Some(thread),
            partial_ok,
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
            partial_ok: self.partial_ok,
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

/// The `Write` end of one open file: fills chunks and queues the full ones.
pub(crate) struct FileSink {
    chunk: Option<Chunk>,
    tx: Option<mpsc::SyncSender<Cmd>>,
    shared: Arc<Shared>,
    partial_ok: bool,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink").finish_non_exhaustive()
    }
}

impl FileSink {
    /// Hands the bytes of the chunk being filled to the writer thread now, before it is full,
    /// so a slow capture's packets reach the file within the caller's interval rather than
    /// with the 512 KiB chunk or at the rotation. Does nothing without bytes, or where short
    /// chunks may not be written (O_DIRECT, uploads while writing).
    pub(crate) fn write_out(&mut self) -> io::Result<()> {
        if self.partial_ok && self.chunk.as_ref().is_some_and(|c| c.len > 0) {
            self.rotate_chunk()?;
        }
        Ok(())
    }

    /// Whether the chunk being filled holds bytes not yet handed on.
    pub(crate) fn pending(&self) -> bool {
        self.partial_ok && self.chunk.as_ref().is_some_and(|c| c.len > 0)
    }

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
