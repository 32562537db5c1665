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
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes::Bytes;
use futures::{StreamExt, stream::FuturesUnordered};
use object_store::{MultipartUpload, PutPayload, path::Path};
use tokio::{
    sync::{Notify, mpsc, oneshot},
    task::JoinHandle,
};
use tracing::{debug, info};

use super::{LocalFile, MAX_PARTS, Uploader};
use crate::{
    error::{Error, Result},
    layout::CaptureKey,
    meta::FileMeta,
    upload::UploadedFile,
};

/// The length and SHA-256 of the bytes an upload sent (no CRC-64: that only checks a file
/// read back from disk against sums computed while it was written, and costs ~2 % of a
/// saturating capture's CPU).
#[derive(Default)]
struct LiveSums {
    sha: sha2::Sha256,
    len: u64,
}

/// What [`LiveSums`] found.
struct Summed {
    len: u64,
    sha256: String,
}

impl LiveSums {
    fn update(&mut self, bytes: &[u8]) {
        use sha2::Digest;
        self.sha.update(bytes);
        self.len += bytes.len() as u64;
    }

    fn finish(self) -> Summed {
        use sha2::Digest;
        Summed {
            len: self.len,
            sha256: hex::encode(self.sha.finalize()),
        }
    }
}

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

/// What the writer's end and the task share.
#[derive(Debug, Default)]
struct State {
    /// Set by the task when it stopped with an error.
    stopped: AtomicBool,
    /// The writer dropped the upload: the task drops what it holds and aborts.
    cancel: Notify,
}

/// Work for the task.
enum Msg {
    /// A complete part.
    Part(Vec<Bytes>),
    /// The end of the file: the last piece(s) (possibly none), the file's length and the closed
    /// file's metadata.
    End {
        rest: Vec<Bytes>,
        len: u64,
        meta: FileMeta,
        tail: Option<Tail>,
    },
}

/// The rest of a file that is read from disk: the file, positioned at `from`, the first byte
/// not pushed.
struct Tail {
    file: LocalFile,
    from: u64,
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

/// The runtime side of one live upload.
struct Task {
    up: Arc<Uploader>,
    path: Path,
    open_meta: FileMeta,
    state: Arc<State>,
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

/// A started multipart upload and the parts travelling.
struct Sending {
    upload: Box<dyn MultipartUpload>,
    /// Each sending one part (holding its bytes until the store has them).
    in_flight: FuturesUnordered<JoinHandle<object_store::Result<()>>>,
}

impl Sending {
    /// Sends `part` from a task of its own, so it travels while the next part is hashed.
    fn put(&mut self, part: Vec<Bytes>) {
        let put = self
            .upload
            .put_part(part.into_iter().collect::<PutPayload>());
        self.in_flight.push(tokio::spawn(put));
    }

    /// Stops the parts travelling (their bytes are dropped) and aborts the upload.
    async fn abort(mut self, path: &Path) {
        for part in &self.in_flight {
            part.abort();
        }
        if let Err(e) = self.upload.abort().await {
            debug!(key = %path, error = %e, "Aborting a live upload failed.");
        }
    }
}

/// Why the task's loop ended.
enum Ended {
    /// The writer finished the file: the last part and the completion are to come.
    End {
        rest: Vec<Bytes>,
        len: u64,
        meta: FileMeta,
        tail: Option<Tail>,
    },
    /// The writer dropped the upload.
    Dropped,
}

impl Task {
    /// Sends parts as they come; `Ok(None)` when the writer dropped the upload.
    async fn run(&self, mut rx: mpsc::UnboundedReceiver<Msg>) -> Result<Option<UploadedFile>> {
        let mut sending: Option<Sending> = None;
        let mut sums = LiveSums::default();
        let ended = self.take_parts(&mut rx, &mut sending, &mut sums).await;
        // Parts not taken yet (a dropped upload) go back to the writer now.
        drop(rx);
        let r = match ended {
            Ok(Ended::End {
                rest,
                len,
                meta: _,
                tail: Some(tail),
            }) => {
                return self
                    .complete_from_file(sending, sums, rest, tail, len)
                    .await
                    .map(Some);
            }
            Ok(Ended::End {
                rest,
                len,
                meta,
                tail: None,
            }) => {
                return self
                    .complete(sending, sums, rest, len, meta)
                    .await
                    .map(Some);
            }
            Ok(Ended::Dropped) => Ok(None),
            Err(e) => Err(e),
        };
        if let Some(s) = sending {
            s.abort(&self.path).await;
        }
        r
    }

    /// Hashes and sends each part as it comes, until the end or the writer drops the upload.
    async fn take_parts(
        &self,
        rx: &mut mpsc::UnboundedReceiver<Msg>,
        sending: &mut Option<Sending>,
        sums: &mut LiveSums,
    ) -> Result<Ended> {
        loop {
            let busy = sending.as_ref().is_some_and(|s| !s.in_flight.is_empty());
            let in_flight = sending.as_mut().map(|s| &mut s.in_flight);
            tokio::select! {
                biased;
                () = self.state.cancel.notified() => return Ok(Ended::Dropped),
                Some(done) = async move {
                    match in_flight {
                        Some(f) => f.next().await,
                        None => None,
                    }
                }, if busy => joined(done).map_err(|e| self.store_err(e))?,
                msg = rx.recv() => match msg {
                    None => return Ok(Ended::Dropped),
                    Some(Msg::End { rest, len, meta, tail }) => {
                        return Ok(Ended::End { rest, len, meta, tail });
                    }
                    Some(Msg::Part(part)) => {
                        let Some(part) = self.hash(part, sums).await? else {
                            return Ok(Ended::Dropped);
                        };
                        let started = match sending.take() {
                            Some(s) => s,
                            None => tokio::select! {
                                biased;
                                () = self.state.cancel.notified() => return Ok(Ended::Dropped),
                                r = self.start() => r?,
                            },
                        };
                        sending.insert(started).put(part);
                    }
                },
            }
        }
    }

    /// Starts the multipart upload.
    async fn start(&self) -> Result<Sending> {
        let attrs = self.open_meta.to_attributes_unhashed();
        let (upload, _) = self
            .up
            .multipart_with(&self.path, attrs)
            .await
            .map_err(|e| self.store_err(e))?;
        Ok(Sending {
            upload,
            in_flight: FuturesUnordered::new(),
        })
    }

    /// Sends `rest` and the file's bytes after them (read from `tail`) as the remaining parts,
    /// at most `max_concurrent_parts` at once, and completes. Anything started is aborted on an
    /// error.
    async fn complete_from_file(
        &self,
        sending: Option<Sending>,
        sums: LiveSums,
        rest: Vec<Bytes>,
        tail: Tail,
        len: u64,
    ) -> Result<UploadedFile> {
        let mut s = match sending {
            Some(s) => s,
            None => self.start().await?,
        };
        let sha256 = match self.send_tail(&mut s, sums, rest, tail, len).await {
            Ok(sha256) => sha256,
            Err(e) => {
                s.abort(&self.path).await;
                return Err(e);
            }
        };
        // Every part is stored already (send_tail waited for them).
        self.complete_parts(
            s,
            len,
            sha256,
            "Uploaded while written (the rest read from the spool file).",
        )
        .await
    }

    /// Waits for the parts still travelling and completes the multipart upload (aborted on an
    /// error).
    async fn complete_parts(
        &self,
        mut s: Sending,
        len: u64,
        sha256: String,
        done: &'static str,
    ) -> Result<UploadedFile> {
        let finished = async {
            while let Some(part) = s.in_flight.next().await {
                joined(part)?;
            }
            s.upload.complete().await
        };
        match finished.await {
            Ok(res) => {
                info!(key = %self.path, bytes = len, "{done}");
                Ok(UploadedFile {
                    key: self.path.to_string(),
                    bytes: len,
                    sha256,
                    e_tag: res.e_tag,
                    multipart: true,
                    attempts: 1,
                    // Declared before the SHA-256 was known: not all of them.
                    attributes_stored: false,
                    linked: false,
                })
            }
            Err(e) => {
                s.abort(&self.path).await;
                Err(self.store_err(e))
            }
        }
    }

    /// The part loop of [`Task::complete_from_file`]; returns the file's SHA-256 once every part
    /// is stored.
    async fn send_tail(
        &self,
        s: &mut Sending,
        mut sums: LiveSums,
        mut first: Vec<Bytes>,
        tail: Tail,
        len: u64,
    ) -> Result<String> {
        // Only the file's `len` bytes are read: an O_DIRECT file may still carry the padding of
        // its last block.
        let mut remaining = len.saturating_sub(tail.from);
        let mut file = tail.file;
        let part_size = self.up.options.part_size.max(1);
        let parallel = self.up.options.max_concurrent_parts.max(1);
        let read_err = |e: std::io::Error| Error::LiveStopped {
            key: self.path.to_string(),
            reason: format!("reading the rest of the file: {e}"),
        };
        loop {
            while s.in_flight.len() >= parallel {
                if let Some(done) = s.in_flight.next().await {
                    joined(done).map_err(|e| self.store_err(e))?;
                }
            }
            // The pieces pushed before the upload fell behind start the first part.
            let have: usize = first.iter().map(Bytes::len).sum();
            let want = part_size
                .saturating_sub(have)
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            // The last read asks for whole blocks, so a direct read of the end of the file is
            // not refused (any padding read is cut off).
            let size = if want as u64 == remaining {
                want.next_multiple_of(super::ALIGN)
            } else {
                want
            };
            let mut buf = self.up.parts.take(size);
            let read = tokio::task::spawn_blocking(move || {
                let n = file.read_full(buf.full())?;
                buf.set_len(n.min(want));
                for piece in &first {
                    sums.update(piece);
                }
                sums.update(buf.as_ref());
                Ok::<_, std::io::Error>((file, sums, first, buf))
            })
            .await
            .map_err(|e| read_err(std::io::Error::other(e)))?
            .map_err(read_err)?;
            let buf;
            (file, sums, first, buf) = read;
            remaining -= buf.len() as u64;
            // The end of the file, or of what it should hold (then the length check fails).
            let last = remaining == 0 || buf.len() < want;
            let mut part = std::mem::take(&mut first);
            if !buf.is_empty() {
                part.push(Bytes::from_owner(buf));
            }
            if !part.is_empty() {
                s.put(part);
            }
            if last {
                break;
            }
        }
        while let Some(done) = s.in_flight.next().await {
            joined(done).map_err(|e| self.store_err(e))?;
        }
        let sums = sums.finish();
        if sums.len != len {
            return Err(Error::LiveStopped {
                key: self.path.to_string(),
                reason: format!("the file holds {} bytes, {len} were written", sums.len),
            });
        }
        Ok(sums.sha256)
    }

    /// Adds `part` to `sums` on the blocking pool; None when the writer dropped the upload
    /// meanwhile.
    async fn hash(&self, part: Vec<Bytes>, sums: &mut LiveSums) -> Result<Option<Vec<Bytes>>> {
        let mut taken = std::mem::take(sums);
        let hashed = tokio::task::spawn_blocking(move || {
            for piece in &part {
                taken.update(piece);
            }
            (part, taken)
        });
        let (part, more) = tokio::select! {
            biased;
            () = self.state.cancel.notified() => return Ok(None),
            r = hashed => r.map_err(|e| Error::LiveStopped {
                key: self.path.to_string(),
                reason: format!("hashing a part failed: {e}"),
            })?,
        };
        *sums = more;
        Ok(Some(part))
    }

    /// Sends the last part and completes. Anything started is aborted on an error.
    async fn complete(
        &self,
        sending: Option<Sending>,
        mut sums: LiveSums,
        rest: Vec<Bytes>,
        len: u64,
        meta: FileMeta,
    ) -> Result<UploadedFile> {
        let hashed = match self.hash(rest, &mut sums).await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(Error::LiveStopped {
                key: self.path.to_string(),
                reason: "stopped while finishing".into(),
            }),
            Err(e) => Err(e),
        };
        let sums = sums.finish();
        let rest = match hashed {
            Ok(rest) if sums.len == len => rest,
            other => {
                if let Some(s) = sending {
                    s.abort(&self.path).await;
                }
                return Err(other.err().unwrap_or_else(|| Error::LiveStopped {
                    key: self.path.to_string(),
                    reason: format!("{} bytes were pushed, the file holds {len}", sums.len),
                }));
            }
        };
        let Some(mut s) = sending else {
            // The whole file fit in one part: one PUT, with every attribute. A store may keep a
            // one-piece payload as it is (the in-memory one does), which would keep the
            // writer's buffer forever: that piece is copied.
            let payload = match rest.as_slice() {
                [one] => PutPayload::from(Bytes::copy_from_slice(one)),
                _ => rest.into_iter().collect(),
            };
            let (res, stored) = self
                .up
                .put_with(&self.path, payload, meta.to_attributes(&sums.sha256))
                .await
                .map_err(|e| self.store_err(e))?;
            info!(key = %self.path, bytes = len, "Uploaded while written.");
            return Ok(UploadedFile {
                key: self.path.to_string(),
                bytes: len,
                sha256: sums.sha256,
                e_tag: res.e_tag,
                multipart: false,
                attempts: 1,
                attributes_stored: stored,
                linked: false,
            });
        };
        if !rest.is_empty() {
            s.put(rest);
        }
        self.complete_parts(s, len, sums.sha256, "Uploaded while written.")
            .await
    }

    fn store_err(&self, source: object_store::Error) -> Error {
        Error::UploadFailed {
            key: self.path.to_string(),
            attempts: 1,
            source,
        }
    }
}
