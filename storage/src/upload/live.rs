//! Uploading a file while it is being written ([`Uploader::live`]).
//!
//! The writer copies each written piece into a part buffer ([`LiveUpload::write`], never
//! blocking); a task on the async runtime sends every full part as soon as it is full, and
//! [`LiveUpload::finish`] sends the last one and completes the upload. A file closed at rotation
//! is then in storage as soon as its last part is: nothing is read back from disk, so the upload
//! neither waits for nor competes with the disk the capture writes to.
//!
//! Capture first: at most [`UploadOptions::max_concurrent_parts`] full parts wait for the store;
//! when one more is full, `write` gives up ([`LiveUpload::write`] returns an error), the partial
//! upload is aborted, and the caller uploads the closed file from disk instead — memory stays at
//! about `part_size × (max_concurrent_parts + 1)`, as for a file uploaded from disk.
//!
//! A file no larger than one part goes up in one PUT with all attributes. A larger one is a
//! multipart upload, which must declare its attributes before the first part: it records the
//! content type, start and pods ([`FileMeta::to_attributes_unhashed`]) but not the SHA-256,
//! packets or end, which are only known at the end (the PacketCapture status records them).

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use bytes::Bytes;
use futures::{StreamExt, stream::FuturesUnordered};
use object_store::{MultipartUpload, PutPayload, UploadPart, path::Path};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

use super::{PartBuf, PartPool, Uploader};
use crate::{
    error::{Error, Result},
    layout::CaptureKey,
    meta::FileMeta,
    upload::{FileSums, UploadedFile},
};

/// Why [`LiveUpload::write`] stopped taking bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveStop {
    /// The store is slower than the writer: every part buffer is waiting for it.
    Behind,
    /// The upload failed (the store refused a request, or the runtime is gone).
    Failed,
    /// The file outgrew the most parts a multipart upload may have (10 000).
    TooLarge,
}

impl std::fmt::Display for LiveStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Behind => "storage is slower than the capture",
            Self::Failed => "the upload failed",
            Self::TooLarge => "the file is larger than 10 000 parts",
        })
    }
}

enum Msg {
    Part(PartBuf),
    Finish {
        last: PartBuf,
        sums: FileSums,
        meta: FileMeta,
    },
}

/// A file being uploaded while it is written; dropped without [`LiveUpload::finish`], the
/// upload is aborted.
pub struct LiveUpload {
    key: String,
    tx: mpsc::UnboundedSender<Msg>,
    /// The part being filled, and how much of it is.
    part: PartBuf,
    filled: usize,
    part_size: usize,
    pool: PartPool,
    /// Full parts handed to the task and not yet stored.
    waiting: Arc<AtomicUsize>,
    limit: usize,
    /// Set by the task when the upload failed.
    failed: Arc<AtomicBool>,
    /// Bytes written so far.
    written: u64,
    /// Full parts sent.
    parts: u64,
    done: oneshot::Receiver<Result<UploadedFile>>,
}

impl std::fmt::Debug for LiveUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveUpload")
            .field("key", &self.key)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
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
    /// Starts uploading `key` while it is written, on `runtime`; `meta` is what is known when
    /// the file is opened (recorded when the file turns out larger than one part).
    pub fn live(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        key: &CaptureKey,
        meta: FileMeta,
    ) -> LiveUpload {
        let path = key.to_path(&self.prefix);
        let part_size = self.options.part_size.max(1);
        let limit = self.options.max_concurrent_parts.max(1);
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done) = oneshot::channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let task = Task {
            up: self.clone(),
            path: path.clone(),
            open_meta: meta,
            waiting: waiting.clone(),
            limit,
        };
        let task_failed = failed.clone();
        runtime.spawn(async move {
            let r = task.run(rx).await;
            if r.is_err() {
                task_failed.store(true, Ordering::SeqCst);
            }
            // Nobody listens when the writer gave up (dropped the upload): nothing to report.
            if let Some(r) = r.transpose() {
                let _ = done_tx.send(r);
            }
        });
        LiveUpload {
            key: path.to_string(),
            tx,
            part: self.parts.take(part_size),
            filled: 0,
            part_size,
            pool: self.parts.clone(),
            waiting,
            limit,
            failed,
            written: 0,
            parts: 0,
            done,
        }
    }
}

impl LiveUpload {
    /// Appends `bytes` (copied); a full part is handed to the upload task. Never blocks: when
    /// the store is behind or the upload failed it returns why, and the caller drops this
    /// upload (aborting it) and uploads the file once it is closed.
    pub fn write(&mut self, mut bytes: &[u8]) -> std::result::Result<(), LiveStop> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(LiveStop::Failed);
        }
        while !bytes.is_empty() {
            if self.filled == self.part_size {
                // Sent only once more bytes follow, so the last part is never empty.
                if self.waiting.load(Ordering::SeqCst) >= self.limit {
                    return Err(LiveStop::Behind);
                }
                // The last part is still to come.
                if self.parts + 1 >= super::MAX_PARTS {
                    return Err(LiveStop::TooLarge);
                }
                self.parts += 1;
                let mut full = std::mem::replace(&mut self.part, self.pool.take(self.part_size));
                full.set_len(self.part_size);
                self.waiting.fetch_add(1, Ordering::SeqCst);
                self.tx
                    .send(Msg::Part(full))
                    .map_err(|_| LiveStop::Failed)?;
                self.filled = 0;
            }
            let n = bytes.len().min(self.part_size - self.filled);
            self.part.full()[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            self.written += n as u64;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Sends the last part and completes the upload; `sums` must be those of every byte
    /// written, `meta` is the closed file's.
    pub fn finish(mut self, sums: FileSums, meta: FileMeta) -> LiveDone {
        let mut last = self.part;
        last.set_len(self.filled);
        if sums.len != self.written {
            self.failed.store(true, Ordering::SeqCst);
            let (tx, done) = oneshot::channel();
            let _ = tx.send(Err(Error::LiveStopped {
                key: self.key.clone(),
                reason: format!(
                    "{} bytes were written but the sums cover {}",
                    self.written, sums.len
                ),
            }));
            self.done = done;
        } else {
            // A task gone already has put its error in `done`.
            let _ = self.tx.send(Msg::Finish { last, sums, meta });
        }
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
    open_meta: FileMeta,
    waiting: Arc<AtomicUsize>,
    limit: usize,
}

impl Task {
    /// Sends parts as they come; `Ok(None)` when the writer dropped the upload (aborted).
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Msg>) -> Result<Option<UploadedFile>> {
        let mut upload: Option<(Box<dyn MultipartUpload>, bool)> = None;
        let mut in_flight: FuturesUnordered<UploadPart> = FuturesUnordered::new();
        let mut sent = 0u64;
        let r = loop {
            let msg = tokio::select! {
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    match done {
                        Ok(()) => {
                            self.waiting.fetch_sub(1, Ordering::SeqCst);
                            continue;
                        }
                        Err(e) => break Err(self.store_err(e)),
                    }
                }
                msg = rx.recv() => msg,
            };
            match msg {
                None => break Ok(None),
                Some(Msg::Part(part)) => {
                    if upload.is_none() {
                        let attrs = self.open_meta.to_attributes_unhashed();
                        match self.up.multipart_with(&self.path, attrs).await {
                            Ok(u) => upload = Some(u),
                            Err(e) => break Err(self.store_err(e)),
                        }
                    }
                    // At most `limit` parts travel at once (the writer keeps no more waiting).
                    while in_flight.len() >= self.limit {
                        match in_flight.next().await {
                            Some(Err(e)) => {
                                return self.abort(upload, Err(self.store_err(e))).await;
                            }
                            _ => {
                                self.waiting.fetch_sub(1, Ordering::SeqCst);
                            }
                        }
                    }
                    sent += part.len() as u64;
                    if let Some((u, _)) = upload.as_mut() {
                        in_flight.push(u.put_part(PutPayload::from(Bytes::from_owner(part))));
                    }
                }
                Some(Msg::Finish { last, sums, meta }) => {
                    break self
                        .complete(upload.take(), in_flight, last, sent, sums, meta)
                        .await
                        .map(Some);
                }
            }
        };
        match r {
            Ok(Some(done)) => Ok(Some(done)),
            other => self.abort(upload, other).await,
        }
    }

    async fn complete(
        &self,
        upload: Option<(Box<dyn MultipartUpload>, bool)>,
        mut in_flight: FuturesUnordered<UploadPart>,
        last: PartBuf,
        sent: u64,
        sums: FileSums,
        meta: FileMeta,
    ) -> Result<UploadedFile> {
        let bytes = sent + last.len() as u64;
        let Some((mut upload, _)) = upload else {
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
            });
        };
        let finished = async {
            if !last.is_empty() {
                in_flight.push(upload.put_part(PutPayload::from(Bytes::from_owner(last))));
            }
            while let Some(done) = in_flight.next().await {
                done?;
            }
            upload.complete().await
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
                })
            }
            Err(e) => {
                let _ = upload.abort().await;
                Err(self.store_err(e))
            }
        }
    }

    /// Aborts a started multipart upload (best effort) and passes `r` on.
    async fn abort<T>(
        &self,
        upload: Option<(Box<dyn MultipartUpload>, bool)>,
        r: Result<Option<T>>,
    ) -> Result<Option<T>> {
        if let Some((mut u, _)) = upload
            && let Err(e) = u.abort().await
        {
            debug!(key = %self.path, error = %e, "Aborting a live upload failed.");
        }
        r
    }

    fn store_err(&self, source: object_store::Error) -> Error {
        Error::UploadFailed {
            key: self.path.to_string(),
            attempts: 1,
            source,
        }
    }
}
