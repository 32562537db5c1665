//! Uploading a file while it is being written ([`Uploader::live`]).
//!
//! The writer hands the upload each piece of the file it has just written
//! ([`LiveUpload::push`]: the writer's own buffer as [`Bytes`], no copy, and it never blocks).
//! Pieces are gathered into parts of at least `part_size` bytes (a part goes when the next piece
//! arrives, so the last part is never empty); a task on the async runtime
//! computes the SHA-256 of each part (on the blocking pool) and sends it at once, from a task of
//! its own, so the file is never read back and a file closed at rotation is in storage as soon
//! as its last part is. A piece's buffer goes back to its owner when the store has the part (the
//! [`Bytes`] is dropped): the writer sees how much of its memory the upload holds and decides
//! when the upload is too far behind ([`LiveUpload`] itself never refuses for that).
//!
//! [`LiveUpload::finish`] sends the rest and completes: a file no larger than one part goes up
//! in one PUT with all attributes. A writer whose upload falls behind stops pushing and calls
//! [`LiveUpload::finish_from_file`] once the file is closed: the parts already sent stay, and the
//! rest is read from the file (part by part, with `O_DIRECT` like an upload from the spool, or
//! through the page cache when the writer never wrote it back), hashed and sent, so nothing is
//! read or hashed twice. A larger one is a multipart upload, which must declare its
//! attributes before the first part: it records the content type, start and pods
//! ([`FileMeta::to_attributes_unhashed`]) but not the SHA-256, packets or end, which are only
//! known at the end (the PacketCapture status records them). Dropping a [`LiveUpload`] aborts it:
//! the parts waiting or travelling are dropped (their buffers go back at once) and the multipart
//! upload is aborted in the store.

use std::{
    io::{Seek, SeekFrom},
    path::Path as FsPath,
    sync::{Arc, atomic::Ordering},
};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::{LocalFile, MAX_PARTS, Uploader};
use crate::{
    error::{Error, Result},
    layout::CaptureKey,
    meta::FileMeta,
    upload::UploadedFile,
};

mod tail;
mod task;

use task::{Msg, State, Tail, Task};

/// Why a [`LiveUpload`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveStop {
    /// The upload failed (the store refused a request, or the runtime is gone).
    Failed,
    /// The file outgrew the most parts a multipart upload may have (10 000).
    TooLarge,
}

impl std::fmt::Display for LiveStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Failed => "the upload failed",
            Self::TooLarge => "the file is larger than 10 000 parts",
        })
    }
}

/// A file being uploaded while it is written; dropped without [`LiveUpload::finish`], the
/// upload is aborted.
#[derive(Debug)]
pub struct LiveUpload {
    key: String,
    part_size: usize,
    /// Pieces not yet making up a part.
    pending: Vec<Bytes>,
    pending_len: usize,
    /// Bytes pushed so far.
    pushed: u64,
    /// Parts handed to the task.
    parts: u64,
    /// Read the rest of a file with `O_DIRECT` ([`LiveUpload::finish_from_file`]).
    direct: bool,
    tx: Option<mpsc::UnboundedSender<Msg>>,
    done: Option<oneshot::Receiver<Result<UploadedFile>>>,
    state: Arc<State>,
}

/// The outcome of a finished [`LiveUpload`].
#[derive(Debug)]
pub struct LiveDone {
    key: String,
    done: Option<oneshot::Receiver<Result<UploadedFile>>>,
}

impl LiveDone {
    /// Waits for the last part and the completion.
    pub async fn wait(self) -> Result<UploadedFile> {
        let stopped = |key| Error::LiveStopped {
            key,
            reason: "the upload task ended without a result".into(),
        };
        match self.done {
            Some(rx) => rx.await.unwrap_or_else(|_| Err(stopped(self.key))),
            None => Err(stopped(self.key)),
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
        let state = Arc::new(State::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done) = oneshot::channel();
        let task = Task {
            up: self.clone(),
            path: path.clone(),
            open_meta: meta,
            state: state.clone(),
        };
        runtime.spawn(async move {
            let r = task.run(rx).await;
            if r.is_err() {
                task.state.stopped.store(true, Ordering::SeqCst);
            }
            // Nobody listens when the writer gave up (dropped the upload): nothing to report.
            if let Some(r) = r.transpose() {
                let _ = done_tx.send(r);
            }
        });
        LiveUpload {
            key: path.to_string(),
            part_size: self.options.part_size.max(1),
            pending: Vec::new(),
            pending_len: 0,
            pushed: 0,
            parts: 0,
            direct: self.options.direct_io,
            tx: Some(tx),
            done: Some(done),
            state,
        }
    }
}

impl LiveUpload {
    /// The next bytes of the file (the upload keeps `bytes` until the store has them). Never
    /// blocks; an error says the upload stopped (the caller drops it and uploads the file once
    /// it is closed).
    pub fn push(&mut self, bytes: Bytes) -> std::result::Result<(), LiveStop> {
        if self.state.stopped.load(Ordering::Relaxed) {
            return Err(LiveStop::Failed);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        // A full part goes once more bytes follow it (the last part is never empty, and a file
        // of one part goes up in one PUT).
        if self.pending_len >= self.part_size {
            // The part after this one is still to come.
            if self.parts + 1 >= MAX_PARTS {
                return Err(LiveStop::TooLarge);
            }
            self.parts += 1;
            self.pending_len = 0;
            let part = std::mem::take(&mut self.pending);
            self.tx
                .as_ref()
                .and_then(|tx| tx.send(Msg::Part(part)).ok())
                .ok_or(LiveStop::Failed)?;
        }
        self.pushed += bytes.len() as u64;
        self.pending_len += bytes.len();
        self.pending.push(bytes);
        Ok(())
    }

    /// Bytes pushed so far.
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Parts sent so far: a multipart upload is under way when there are any.
    pub fn parts(&self) -> u64 {
        self.parts
    }

    /// The file is complete and holds `len` bytes (as many as were pushed, or the upload fails
    /// with [`Error::LiveStopped`]): sends the rest and completes the upload; `meta` is the
    /// closed file's.
    pub fn finish(self, len: u64, meta: FileMeta) -> LiveDone {
        self.end(len, meta, None)
    }

    /// The file at `path` is complete and holds `len` bytes, of which only the first
    /// [`LiveUpload::pushed`] were pushed: the rest is read from the file (opened now, so it may
    /// be renamed afterwards), hashed and sent, and the upload completed. `cached`: the rest is
    /// still in the page cache (it was never written back), so it is read through the cache —
    /// a copy, where a direct read would first wait for the pages to be written back and then
    /// read them from the disk; otherwise it is read as
    /// [`UploadOptions::direct_io`](super::UploadOptions::direct_io) says. A file
    /// that cannot be opened fails the upload ([`Error::LiveStopped`]).
    pub fn finish_from_file(
        self,
        path: &FsPath,
        len: u64,
        meta: FileMeta,
        cached: bool,
    ) -> LiveDone {
        let opened = LocalFile::open(path, self.direct && !cached).and_then(|mut f| {
            f.file.seek(SeekFrom::Start(self.pushed))?;
            Ok(f)
        });
        match opened {
            Ok(file) => {
                let from = self.pushed;
                self.end(len, meta, Some(Tail { file, from }))
            }
            Err(e) => {
                let key = self.key.clone();
                // Dropped: the task aborts the upload.
                drop(self);
                let (tx, done) = oneshot::channel();
                let _ = tx.send(Err(Error::LiveStopped {
                    key: key.clone(),
                    reason: format!("cannot read the rest of {}: {e}", path.display()),
                }));
                LiveDone {
                    key,
                    done: Some(done),
                }
            }
        }
    }

    fn end(mut self, len: u64, meta: FileMeta, tail: Option<Tail>) -> LiveDone {
        let rest = std::mem::take(&mut self.pending);
        // A task gone already has put its error in `done`.
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::End {
                rest,
                len,
                meta,
                tail,
            });
        }
        LiveDone {
            key: std::mem::take(&mut self.key),
            done: self.done.take(),
        }
    }
}

impl Drop for LiveUpload {
    fn drop(&mut self) {
        // Not finished: the task drops its parts and aborts (a stored wake-up if it is busy).
        if self.tx.is_some() {
            self.state.cancel.notify_one();
        }
    }
}
