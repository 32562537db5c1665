//! The runtime side of one live upload: hashes each part as it comes and sends it from a task
//! of its own, then sends the last part and completes.

use std::sync::{Arc, atomic::AtomicBool};

use bytes::Bytes;
use futures::{StreamExt, stream::FuturesUnordered};
use object_store::{MultipartUpload, PutPayload, path::Path};
use tokio::{
    sync::{Notify, mpsc},
    task::JoinHandle,
};
use tracing::{debug, info};

use crate::{
    error::{Error, Result},
    meta::FileMeta,
    upload::{LocalFile, UploadedFile, Uploader},
};

/// The length and SHA-256 of the bytes an upload sent (no CRC-64: that only checks a file
/// read back from disk against sums computed while it was written, and costs ~2 % of a
/// saturating capture's CPU).
#[derive(Default)]
pub(super) struct LiveSums {
    pub(super) sha: sha2::Sha256,
    pub(super) len: u64,
}

/// What [`LiveSums`] found.
pub(super) struct Summed {
    pub(super) len: u64,
    pub(super) sha256: String,
}

impl LiveSums {
    pub(super) fn update(&mut self, bytes: &[u8]) {
        use sha2::Digest;
        self.sha.update(bytes);
        self.len += bytes.len() as u64;
    }

    pub(super) fn finish(self) -> Summed {
        use sha2::Digest;
        Summed {
            len: self.len,
            sha256: hex::encode(self.sha.finalize()),
        }
    }
}

/// What the writer's end and the task share.
#[derive(Debug, Default)]
pub(super) struct State {
    /// Set by the task when it stopped with an error.
    pub(super) stopped: AtomicBool,
    /// The writer dropped the upload: the task drops what it holds and aborts.
    pub(super) cancel: Notify,
}

/// Work for the task.
pub(super) enum Msg {
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
pub(super) struct Tail {
    pub(super) file: LocalFile,
    pub(super) from: u64,
}

/// The runtime side of one live upload.
pub(super) struct Task {
    pub(super) up: Arc<Uploader>,
    pub(super) path: Path,
    pub(super) open_meta: FileMeta,
    pub(super) state: Arc<State>,
}

/// A part's outcome from its task (a task that panicked or was cancelled is an error too).
pub(super) fn joined(
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
pub(super) struct Sending {
    pub(super) upload: Box<dyn MultipartUpload>,
    /// Each sending one part (holding its bytes until the store has them).
    pub(super) in_flight: FuturesUnordered<JoinHandle<object_store::Result<()>>>,
}

impl Sending {
    /// Sends `part` from a task of its own, so it travels while the next part is hashed.
    pub(super) fn put(&mut self, part: Vec<Bytes>) {
        let put = self
            .upload
            .put_part(part.into_iter().collect::<PutPayload>());
        self.in_flight.push(tokio::spawn(put));
    }

    /// Stops the parts travelling (their bytes are dropped) and aborts the upload.
    pub(super) async fn abort(mut self, path: &Path) {
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
    pub(super) async fn run(
        &self,
        mut rx: mpsc::UnboundedReceiver<Msg>,
    ) -> Result<Option<UploadedFile>> {
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
    pub(super) async fn start(&self) -> Result<Sending> {
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

    /// Waits for the parts still travelling and completes the multipart upload (aborted on an
    /// error).
    pub(super) async fn complete_parts(
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

    pub(super) fn store_err(&self, source: object_store::Error) -> Error {
        Error::UploadFailed {
            key: self.path.to_string(),
            attempts: 1,
            source,
        }
    }
}
