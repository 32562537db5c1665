//! Uploading a file while it is being written ([`Uploader::live`]).
//!
//! The writer tells the upload how far the file has grown ([`LiveUpload::grown`], an atomic
//! store and a wake-up: it never blocks); a task on the async runtime reads each part from the
//! file as soon as the part is complete and sends it, and [`LiveUpload::finish`] has it send the
//! rest and complete. The parts are read right behind the writer, so they come from the page
//! cache, not the disk, and a file closed at rotation is in storage as soon as its last part is.
//! A part's buffer is taken when its read starts and given back when the store has it; all live
//! uploads of an [`Uploader`] share `max_concurrent_parts` of them, so memory is
//! `part_size × max_concurrent_parts` whatever the file size and however many files overlap
//! (the previous file's last part and the next file's first). When the store is slower than the
//! writer the task simply falls behind (and its reads reach the disk once the pages are gone);
//! nothing is aborted and nothing waits on the writer's side.
//!
//! The task computes the SHA-256 of the parts as it reads them, on the blocking pool at the
//! runtime's priority, so the writer need not hash the file at all; at the end the bytes sent
//! must be as many as the file holds ([`Error::FileChanged`] otherwise). A file no larger than
//! one part goes up in one PUT with all attributes. A larger one is a multipart upload, which must declare its
//! attributes before the first part: it records the content type, start and pods
//! ([`FileMeta::to_attributes_unhashed`]) but not the SHA-256, packets or end, which are only
//! known at the end (the PacketCapture status records them).

use std::{
    fs::File,
    os::unix::fs::FileExt,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use futures::{StreamExt, stream::FuturesUnordered};
use object_store::{MultipartUpload, PutPayload, path::Path};
use tokio::{
    sync::{Notify, OwnedSemaphorePermit, oneshot},
    task::JoinHandle,
};
use tracing::{debug, info};

use super::{MAX_PARTS, PartBuf, Uploader};
use crate::{
    error::{Error, Result},
    layout::CaptureKey,
    meta::FileMeta,
    upload::{SumsBuilder, UploadedFile},
};

/// Why a [`LiveUpload`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveStop {
    /// The upload failed (the store refused a request, the file could not be read, or the
    /// runtime is gone).
    Failed,
    /// The file outgrew the most parts a multipart upload may have (10 000).
    TooLarge,
    /// The upload fell further behind the writer than [`LiveUpload::max_lag`] allows.
    Behind,
}

impl std::fmt::Display for LiveStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Failed => "the upload failed",
            Self::TooLarge => "the file is larger than 10 000 parts",
            Self::Behind => "the upload fell behind the capture",
        })
    }
}

/// What the writer and the task share.
#[derive(Debug, Default)]
struct Progress {
    /// Bytes the file holds.
    len: AtomicU64,
    /// Wakes the task when `len` grew.
    grew: Notify,
    /// Set by the task when it stopped.
    stopped: AtomicBool,
    too_large: AtomicBool,
    /// Bytes the task has read so far.
    read: AtomicU64,
}

/// The end of a file: its length and closed metadata.
#[derive(Debug)]
struct End {
    len: u64,
    meta: FileMeta,
}

/// A file being uploaded while it is written; dropped without [`LiveUpload::finish`], the
/// upload is aborted.
#[derive(Debug)]
pub struct LiveUpload {
    key: String,
    progress: Arc<Progress>,
    end: oneshot::Sender<End>,
    done: oneshot::Receiver<Result<UploadedFile>>,
    max_lag: u64,
}

/// The outcome of a finished [`LiveUpload`].
#[derive(Debug)]
pub struct LiveDone {
    key: String,
    done: oneshot::Receiver<Result<UploadedFile>>,
}

impl LiveDone {
    /// Waits for the last part and the completion.
    pub async fn wait(self) -> Result<UploadedFile> {
        match self.done.await {
            Ok(r) => r,
            Err(_) => Err(Error::LiveStopped {
                key: self.key,
                reason: "the upload task ended without a result".into(),
            }),
        }
    }
}

impl Uploader {
    /// Starts uploading `key` from `local` while it is written (`file`: open for reading), on
    /// `runtime`; `meta` is what is known when the file is opened (recorded when the file turns
    /// out larger than one part).
    pub fn live(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        key: &CaptureKey,
        meta: FileMeta,
        local: PathBuf,
        file: File,
    ) -> LiveUpload {
        let path = key.to_path(&self.prefix);
        let progress = Arc::new(Progress::default());
        let (end, end_rx) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let direct = open_direct(&local).map(Arc::new);
        let task = Task {
            direct,
            up: self.clone(),
            path: path.clone(),
            local,
            file: Arc::new(file),
            open_meta: meta,
            progress: progress.clone(),
            part_size: self.options.part_size.max(1),
        };
        runtime.spawn(async move {
            let r = task.run(end_rx).await;
            task.progress.stopped.store(true, Ordering::SeqCst);
            // Nobody listens when the writer gave up (dropped the upload): nothing to report.
            if let Some(r) = r.transpose() {
                let _ = done_tx.send(r);
            }
        });
        LiveUpload {
            key: path.to_string(),
            progress,
            end,
            done,
            max_lag: u64::MAX,
        }
    }
}

impl LiveUpload {
    /// Gives up ([`LiveStop::Behind`] from [`LiveUpload::grown`]) once the file is more than
    /// `bytes` ahead of what the upload has read: its reads would no longer find the pages in
    /// the page cache, and a store or runtime that slow is better served by one read of the
    /// closed file. Default: never.
    pub fn max_lag(mut self, bytes: u64) -> Self {
        self.max_lag = bytes;
        self
    }

    /// The file now holds `len` bytes. Never blocks; an error says the upload stopped (the
    /// caller drops it and uploads the file once it is closed).
    pub fn grown(&self, len: u64) -> std::result::Result<(), LiveStop> {
        if len.saturating_sub(self.progress.read.load(Ordering::Relaxed)) > self.max_lag {
            return Err(LiveStop::Behind);
        }
        if self.progress.stopped.load(Ordering::Relaxed) {
            return Err(if self.progress.too_large.load(Ordering::Relaxed) {
                LiveStop::TooLarge
            } else {
                LiveStop::Failed
            });
        }
        self.progress.len.fetch_max(len, Ordering::SeqCst);
        self.progress.grew.notify_one();
        Ok(())
    }

    /// The file is complete and holds `len` bytes: sends the rest and completes the upload;
    /// `meta` is the closed file's.
    pub fn finish(self, len: u64, meta: FileMeta) -> LiveDone {
        self.progress.len.fetch_max(len, Ordering::SeqCst);
        // A task gone already has put its error in `done`.
        let _ = self.end.send(End { len, meta });
        LiveDone {
            key: self.key,
            done: self.done,
        }
    }
}

/// The runtime side of one live upload.
struct Task {
    up: Arc<Uploader>,
    path: Path,
    local: PathBuf,
    file: Arc<File>,
    /// The same file opened with `O_DIRECT` (None where refused): parts no longer in the page
    /// cache are read with it.
    direct: Option<Arc<File>>,
    open_meta: FileMeta,
    progress: Arc<Progress>,
    part_size: usize,
}

/// Opens `path` for `O_DIRECT` reads, if the file system allows them.
pub(super) fn open_direct(path: &std::path::Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

/// Fills `buf` from `file` at `offset`: copied from the page cache when all of it is there
/// (the usual case, right behind the writer); otherwise, when it starts and ends on a 4 KiB
/// boundary of an aligned buffer, read with `O_DIRECT` (a cold buffered read costs ~18× the CPU
/// here, and would fill the cache with pages nobody reads again); else through the page cache.
pub(super) fn read_part(
    file: &File,
    direct: Option<&File>,
    buf: &mut [u8],
    offset: u64,
) -> std::io::Result<()> {
    let aligned = offset.is_multiple_of(super::ALIGN as u64)
        && buf.len().is_multiple_of(super::ALIGN)
        && (buf.as_ptr() as usize).is_multiple_of(super::ALIGN);
    if let Some(d) = direct.filter(|_| aligned && !cached(file, offset, buf.len())) {
        match d.read_exact_at(buf, offset) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            other => return other,
        }
    }
    file.read_exact_at(buf, offset)
}

/// Whether every page of `[offset, offset + len)` of `file` is in the page cache (`mincore` on
/// a mapping that is never touched); true when that cannot be told.
fn cached(file: &File, offset: u64, len: usize) -> bool {
    use std::os::fd::AsRawFd;
    const PAGE: u64 = 4096;
    if len == 0 {
        return true;
    }
    let start = offset - offset % PAGE;
    let Ok(span) = usize::try_from(offset + len as u64 - start) else {
        return true;
    };
    let mut pages = vec![0u8; span.div_ceil(PAGE as usize)];
    // SAFETY: a read-only mapping of a range the file holds, never dereferenced (so no SIGBUS
    // even if the file shrank), unmapped before returning; mincore writes one byte per page
    // into `pages`, which has room for all of them.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            start as libc::off_t,
        );
        if p == libc::MAP_FAILED {
            return true;
        }
        let ok = libc::mincore(p, span, pages.as_mut_ptr()) == 0;
        libc::munmap(p, span);
        !ok || pages.iter().all(|v| v & 1 == 1)
    }
}

/// A part's outcome from its task (a task that panicked or was cancelled is an error too).
fn joined(
    r: std::result::Result<object_store::Result<()>, tokio::task::JoinError>,
) -> object_store::Result<()> {
    r.unwrap_or_else(|e| {
        Err(object_store::Error::Generic {
            store: "live upload",
            source: Box::new(e),
        })
    })
}

impl Sending {
    /// Sends `part` from a task of its own (so it progresses while the next part waits for a
    /// buffer), which gives the buffer back when the store has it.
    fn put(&mut self, part: PartBuf, permit: OwnedSemaphorePermit) {
        let put = self
            .upload
            .put_part(PutPayload::from(Bytes::from_owner(part)));
        self.in_flight.push(tokio::spawn(async move {
            let r = put.await;
            drop(permit);
            r
        }));
    }
}

/// A started multipart upload and the parts travelling.
struct Sending {
    upload: Box<dyn MultipartUpload>,
    /// Each a task holding its buffer's permit until the store has the part.
    in_flight: FuturesUnordered<JoinHandle<object_store::Result<()>>>,
    parts: u64,
}

impl Task {
    /// Sends parts as they are written; `Ok(None)` when the writer dropped the upload.
    async fn run(&self, mut end_rx: oneshot::Receiver<End>) -> Result<Option<UploadedFile>> {
        enum Wake {
            Part(object_store::Result<()>),
            Grew,
            End(std::result::Result<End, oneshot::error::RecvError>),
        }
        let mut sending: Option<Sending> = None;
        let mut sent = 0u64;
        let mut sums = SumsBuilder::default();
        let mut end: Option<End> = None;
        let mut ended = false;
        let r = loop {
            let len = self.progress.len.load(Ordering::SeqCst);
            let busy = sending.as_ref().map_or(0, |s| s.in_flight.len());
            // Every complete part with more bytes after it (the last part is never empty); its
            // read waits for a free buffer.
            if len.saturating_sub(sent) > self.part_size as u64 {
                if let Err(e) = self.send_part(&mut sending, &mut sent, &mut sums).await {
                    break Err(e);
                }
                continue;
            } else if let Some(e) = end.take() {
                break self.complete(&mut sending, sent, sums, e).await.map(Some);
            }
            let wake = {
                let in_flight = sending.as_mut().map(|s| &mut s.in_flight);
                tokio::select! {
                    Some(done) = async move {
                        match in_flight {
                            Some(f) => f.next().await,
                            None => None,
                        }
                    }, if busy > 0 => Wake::Part(joined(done)),
                    () = self.progress.grew.notified(), if !ended => Wake::Grew,
                    e = &mut end_rx, if !ended => Wake::End(e),
                    else => break Err(Error::LiveStopped {
                        key: self.path.to_string(),
                        reason: "internal error: nothing to wait for".into(),
                    }),
                }
            };
            match wake {
                Wake::Part(Ok(())) | Wake::Grew => {}
                Wake::Part(Err(e)) => break Err(self.store_err(e)),
                Wake::End(Ok(e)) => {
                    ended = true;
                    end = Some(e);
                }
                // The writer dropped the upload: abort.
                Wake::End(Err(_)) => break Ok(None),
            }
        };
        match r {
            Ok(Some(done)) => Ok(Some(done)),
            other => {
                if let Some(mut s) = sending
                    && let Err(e) = s.upload.abort().await
                {
                    debug!(key = %self.path, error = %e, "Aborting a live upload failed.");
                }
                other
            }
        }
    }

    /// Reads `[sent, sent + len)` of the file on the blocking pool, adding it to `sums`, once a
    /// part buffer is free (its permit comes with it).
    async fn read(
        &self,
        sent: u64,
        len: usize,
        mut sums: SumsBuilder,
    ) -> Result<(PartBuf, OwnedSemaphorePermit, SumsBuilder)> {
        let permit = self
            .up
            .live_parts
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::LiveStopped {
                key: self.path.to_string(),
                reason: "the uploader is closed".into(),
            })?;
        let mut buf = self.up.parts.take(len);
        let file = self.file.clone();
        let direct = self.direct.clone();
        let read = tokio::task::spawn_blocking(move || {
            read_part(&file, direct.as_deref(), buf.full(), sent)?;
            sums.update(buf.as_ref());
            Ok::<_, std::io::Error>((buf, sums))
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        let (buf, sums) = read.map_err(|source| Error::LocalIo {
            path: self.local.clone(),
            source,
        })?;
        Ok((buf, permit, sums))
    }

    async fn send_part(
        &self,
        sending: &mut Option<Sending>,
        sent: &mut u64,
        sums: &mut SumsBuilder,
    ) -> Result<()> {
        let parts = sending.as_ref().map_or(0, |s| s.parts);
        // The last part is still to come.
        if parts + 1 >= MAX_PARTS {
            self.progress.too_large.store(true, Ordering::SeqCst);
            return Err(Error::LiveStopped {
                key: self.path.to_string(),
                reason: LiveStop::TooLarge.to_string(),
            });
        }
        let started = match sending {
            Some(s) => s,
            None => {
                let attrs = self.open_meta.to_attributes_unhashed();
                let (upload, _) = self
                    .up
                    .multipart_with(&self.path, attrs)
                    .await
                    .map_err(|e| self.store_err(e))?;
                sending.insert(Sending {
                    upload,
                    in_flight: FuturesUnordered::new(),
                    parts: 0,
                })
            }
        };
        let (part, permit, more) = self
            .read(*sent, self.part_size, std::mem::take(sums))
            .await?;
        *sums = more;
        *sent += part.len() as u64;
        self.progress.read.store(*sent, Ordering::Relaxed);
        started.parts += 1;
        started.put(part, permit);
        Ok(())
    }

    /// Sends the last part (`end.len - sent` bytes, at most one part) and completes. On an
    /// error before the last part, `sending` is left for the caller to abort.
    async fn complete(
        &self,
        sending: &mut Option<Sending>,
        sent: u64,
        sums: SumsBuilder,
        end: End,
    ) -> Result<UploadedFile> {
        let End { len, meta } = end;
        let rest = len
            .checked_sub(sent)
            .and_then(|r| usize::try_from(r).ok())
            .ok_or_else(|| self.changed())?;
        // A file cut shorter than `len` fails the read.
        let (last, permit, sums) = self.read(sent, rest, sums).await?;
        let sums = sums.finish();
        let bytes = len;
        let Some(mut s) = sending.take() else {
            // The whole file fit in one part: one PUT, with every attribute.
            let payload = PutPayload::from(Bytes::from_owner(last));
            let (res, stored) = self
                .up
                .put_with(&self.path, payload, meta.to_attributes(&sums.sha256))
                .await
                .map_err(|e| self.store_err(e))?;
            info!(key = %self.path, bytes, "Uploaded while written.");
            return Ok(UploadedFile {
                key: self.path.to_string(),
                bytes,
                sha256: sums.sha256,
                e_tag: res.e_tag,
                multipart: false,
                attempts: 1,
                attributes_stored: stored,
                linked: false,
            });
        };
        let finished = async {
            if last.is_empty() {
                drop(permit);
            } else {
                s.put(last, permit);
            }
            while let Some(done) = s.in_flight.next().await {
                joined(done)?;
            }
            s.upload.complete().await
        };
        match finished.await {
            Ok(res) => {
                info!(key = %self.path, bytes, "Uploaded while written.");
                Ok(UploadedFile {
                    key: self.path.to_string(),
                    bytes,
                    sha256: sums.sha256,
                    e_tag: res.e_tag,
                    multipart: true,
                    attempts: 1,
                    // Declared before the SHA-256 was known: not all of them.
                    attributes_stored: false,
                    linked: false,
                })
            }
            Err(e) => {
                let _ = s.upload.abort().await;
                Err(self.store_err(e))
            }
        }
    }

    fn changed(&self) -> Error {
        Error::FileChanged {
            path: self.local.clone(),
            key: self.path.to_string(),
        }
    }

    fn store_err(&self, source: object_store::Error) -> Error {
        Error::UploadFailed {
            key: self.path.to_string(),
            attempts: 1,
            source,
        }
    }
}
