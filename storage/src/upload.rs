//! Uploading closed capture files (used by the capture engine).
//!
//! Files at or below [`UploadOptions::multipart_threshold`] go up in one PUT (at most that many
//! bytes in memory). Larger files go up as a multipart upload read from disk part by part: memory
//! stays at about `part_size × (max_concurrent_parts + 1)` whatever the file size. The SHA-256 is
//! recorded as the `nightcap-sha256` attribute; a multipart upload must declare attributes when it
//! starts, so a large file is read twice: the first read computes its SHA-256 and a CRC-64, the
//! second sends it and recomputes the CRC-64 (~20x cheaper than hashing again). A file that
//! changed in between (different length or CRC) is refused ([`Error::FileChanged`]) and the
//! partial upload aborted, so the declared SHA-256 is that of the bytes sent.
//!
//! Reads run on tokio's blocking pool with plain `read(2)` into the buffer that is sent: one copy
//! from the page cache, none in user space. Part buffers are recycled through a small pool (at
//! most `max_concurrent_parts + 1` kept), so steady uploading neither allocates nor faults in
//! fresh pages, and memory stays flat.
//!
//! Retries: object_store already retries single requests; on top, a whole upload that failed with
//! a transient error is retried with exponential backoff and jitter, at most
//! [`UploadOptions::max_attempts`] times.

use std::{
    path::{Path as FsPath, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use crc_fast::CrcAlgorithm;
use futures::{StreamExt, stream::FuturesUnordered};
use object_store::{
    MultipartUpload, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, path::Path,
};
use rand::Rng;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::{
    error::{Error, Result},
    layout::{CaptureKey, KeyPrefix},
    meta::FileMeta,
};

/// The first read hashes the file in pieces this big (they stay in the CPU's cache between the
/// read and the two checksums).
const SCAN_PIECE: usize = 256 << 10;

/// How uploads behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadOptions {
    /// Files larger than this use a multipart upload. Default: 16 MiB.
    pub multipart_threshold: u64,
    /// Part size of multipart uploads (S3 needs ≥ 5 MiB). Default: 8 MiB.
    pub part_size: usize,
    /// Parts in flight at once. Default: 4.
    pub max_concurrent_parts: usize,
    /// Attempts per file, the first included. Default: 5.
    pub max_attempts: u32,
    /// Delay before the first retry; doubled each time. Default: 200 ms.
    pub initial_backoff: Duration,
    /// Longest delay between attempts. Default: 10 s.
    pub max_backoff: Duration,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
            max_concurrent_parts: 4,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// The result of one upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedFile {
    /// Full object key.
    pub key: String,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Hex SHA-256 of the bytes uploaded.
    pub sha256: String,
    /// ETag the store returned, if any.
    pub e_tag: Option<String>,
    /// Whether a multipart upload was used.
    pub multipart: bool,
    /// Attempts it took (1 = no retry).
    pub attempts: u32,
    /// Whether the SHA-256 and metadata were stored as object attributes (false on backends
    /// without attributes, such as the local file system).
    pub attributes_stored: bool,
}

/// Uploads local files under a store's prefix.
#[derive(Debug)]
pub struct Uploader {
    store: Arc<dyn ObjectStore>,
    prefix: KeyPrefix,
    options: UploadOptions,
    /// Cleared the first time the backend answers "attributes not implemented".
    attributes: AtomicBool,
    /// Part buffers ready for reuse.
    parts: PartPool,
}

impl Uploader {
    /// An uploader writing under `prefix` of `store`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: KeyPrefix, options: UploadOptions) -> Self {
        Self {
            store,
            prefix,
            parts: PartPool::new(options.max_concurrent_parts.max(1) + 1),
            options,
            attributes: AtomicBool::new(true),
        }
    }

    /// The options in use.
    pub fn options(&self) -> &UploadOptions {
        &self.options
    }

    /// Uploads `local` as `key` with no extra metadata.
    pub async fn upload_file(&self, local: &FsPath, key: &CaptureKey) -> Result<UploadedFile> {
        self.upload_file_with_meta(local, key, &FileMeta::default())
            .await
    }

    /// Uploads `local` as `key`, recording `meta` and the SHA-256 as object attributes.
    #[tracing::instrument(skip(self, meta), fields(key = %key))]
    pub async fn upload_file_with_meta(
        &self,
        local: &FsPath,
        key: &CaptureKey,
        meta: &FileMeta,
    ) -> Result<UploadedFile> {
        let path = key.to_path(&self.prefix);
        let key_str = path.to_string();
        let mut attempt = 0;
        let mut backoff = self.options.initial_backoff;
        loop {
            attempt += 1;
            match self.attempt(local, &path, meta).await {
                Ok(mut up) => {
                    up.attempts = attempt;
                    info!(key = %key_str, bytes = up.bytes, multipart = up.multipart, "Uploaded.");
                    return Ok(up);
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Store(source)) => {
                    if attempt >= self.options.max_attempts || !is_transient(&source) {
                        return Err(Error::UploadFailed {
                            key: key_str,
                            attempts: attempt,
                            source,
                        });
                    }
                    let jitter = rand::rng().random_range(0.5..1.0);
                    let delay = backoff.mul_f64(jitter);
                    warn!(key = %key_str, attempt, error = %source, delay_ms = delay.as_millis() as u64, "Upload failed; retrying.");
                    tokio::time::sleep(delay).await;
                    backoff = (backoff * 2).min(self.options.max_backoff);
                }
            }
        }
    }

    async fn attempt(
        &self,
        local: &FsPath,
        path: &Path,
        meta: &FileMeta,
    ) -> Result<UploadedFile, Attempt> {
        let io = |source| {
            Attempt::Fatal(Error::LocalIo {
                path: local.to_path_buf(),
                source,
            })
        };
        let size = tokio::fs::metadata(local).await.map_err(io)?.len();
        if size <= self.options.multipart_threshold {
            self.put_small(local, path, meta, size).await
        } else {
            self.put_multipart(local, path, meta, size).await
        }
    }

    async fn put_small(
        &self,
        local: &FsPath,
        path: &Path,
        meta: &FileMeta,
        size: u64,
    ) -> Result<UploadedFile, Attempt> {
        let limit = self.options.multipart_threshold;
        let (buf, sha256) = blocking(local, move |file| {
            let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            // One byte over the limit is enough to see that the file grew.
            std::io::Read::read_to_end(
                &mut std::io::Read::take(file, limit.saturating_add(1)),
                &mut buf,
            )?;
            let sha256 = hex::encode(Sha256::digest(&buf));
            Ok((buf, sha256))
        })
        .await?;
        if buf.len() as u64 > limit {
            // Grew past the threshold after we looked: treat as a changing file.
            return Err(changed(local, path));
        }
        let bytes = buf.len() as u64;
        let payload = PutPayload::from(Bytes::from(buf));
        let with_attrs = self.attributes.load(Ordering::Relaxed);
        let opts = |attrs: bool| PutOptions {
            attributes: if attrs {
                meta.to_attributes(&sha256)
            } else {
                Default::default()
            },
            ..Default::default()
        };
        let mut stored = with_attrs;
        let res = match self
            .store
            .put_opts(path, payload.clone(), opts(with_attrs))
            .await
        {
            Err(object_store::Error::NotImplemented { .. }) if with_attrs => {
                self.attributes.store(false, Ordering::Relaxed);
                stored = false;
                self.store.put_opts(path, payload, opts(false)).await
            }
            other => other,
        }
        .map_err(Attempt::Store)?;
        Ok(UploadedFile {
            key: path.to_string(),
            bytes,
            sha256,
            e_tag: res.e_tag,
            multipart: false,
            attempts: 1,
            attributes_stored: stored,
        })
    }

    async fn put_multipart(
        &self,
        local: &FsPath,
        path: &Path,
        meta: &FileMeta,
        size: u64,
    ) -> Result<UploadedFile, Attempt> {
        let buf = self.parts.take(self.options.part_size.max(1));
        let first = blocking(local, move |file| scan(file, buf)).await?;
        if first.len != size {
            return Err(changed(local, path));
        }
        let with_attrs = self.attributes.load(Ordering::Relaxed);
        let opts = |attrs: bool| PutMultipartOptions {
            attributes: if attrs {
                meta.to_attributes(&first.sha256)
            } else {
                Default::default()
            },
            ..Default::default()
        };
        let mut stored = with_attrs;
        let mut upload = match self.store.put_multipart_opts(path, opts(with_attrs)).await {
            Err(object_store::Error::NotImplemented { .. }) if with_attrs => {
                self.attributes.store(false, Ordering::Relaxed);
                stored = false;
                self.store.put_multipart_opts(path, opts(false)).await
            }
            other => other,
        }
        .map_err(Attempt::Store)?;
        match self.send_parts(local, path, &first, upload.as_mut()).await {
            Ok(()) => {}
            Err(e) => {
                let _ = upload.abort().await;
                return Err(e);
            }
        }
        let res = upload.complete().await.map_err(Attempt::Store)?;
        Ok(UploadedFile {
            key: path.to_string(),
            bytes: first.len,
            sha256: first.sha256,
            e_tag: res.e_tag,
            multipart: true,
            attempts: 1,
            attributes_stored: stored,
        })
    }

    /// Reads `local` again part by part and sends each part, at most `max_concurrent_parts`
    /// at once; the bytes read must be those `first` saw (length and CRC-64).
    async fn send_parts(
        &self,
        local: &FsPath,
        path: &Path,
        first: &Scan,
        upload: &mut dyn MultipartUpload,
    ) -> Result<(), Attempt> {
        let part_size = self.options.part_size.max(1);
        let parallel = self.options.max_concurrent_parts.max(1);
        let mut file = open(local).await?;
        let mut crc = crc_fast::Digest::new(CrcAlgorithm::Crc64Nvme);
        let mut total = 0u64;
        let mut in_flight: FuturesUnordered<object_store::UploadPart> = FuturesUnordered::new();
        loop {
            while in_flight.len() >= parallel {
                if let Some(done) = in_flight.next().await {
                    done.map_err(Attempt::Store)?;
                }
            }
            let part;
            let buf = self.parts.take(part_size);
            (file, crc, part) = read_part(local, file, crc, buf).await?;
            if part.is_empty() {
                break;
            }
            total += part.len() as u64;
            if total > first.len {
                return Err(changed(local, path));
            }
            let last = part.len() < part_size;
            in_flight.push(upload.put_part(PutPayload::from(Bytes::from_owner(part))));
            if last {
                break;
            }
        }
        while let Some(done) = in_flight.next().await {
            done.map_err(Attempt::Store)?;
        }
        if total != first.len || crc.finalize() != first.crc64 {
            return Err(changed(local, path));
        }
        Ok(())
    }
}

/// What the first read of a file found.
struct Scan {
    sha256: String,
    crc64: u64,
    len: u64,
}

/// SHA-256, CRC-64/NVME and length of a file, read into (a piece of) `buf`.
fn scan(mut file: std::fs::File, mut buf: PartBuf) -> std::io::Result<Scan> {
    let mut sha = Sha256::new();
    let mut crc = crc_fast::Digest::new(CrcAlgorithm::Crc64Nvme);
    let mut len = 0u64;
    let full = buf.full();
    let take = SCAN_PIECE.min(full.len());
    let piece = &mut full[..take];
    loop {
        let n = read_full(&mut file, piece)?;
        if n == 0 {
            return Ok(Scan {
                sha256: hex::encode(sha.finalize()),
                crc64: crc.finalize(),
                len,
            });
        }
        sha.update(&piece[..n]);
        crc.update(&piece[..n]);
        len += n as u64;
    }
}

/// Reads the next part (up to the buffer's size; shorter only at the end of the file) on the
/// blocking pool, updating `crc`.
async fn read_part(
    local: &FsPath,
    mut file: std::fs::File,
    mut crc: crc_fast::Digest,
    mut part: PartBuf,
) -> Result<(std::fs::File, crc_fast::Digest, PartBuf), Attempt> {
    tokio::task::spawn_blocking(move || {
        let n = read_full(&mut file, part.full())?;
        part.set_len(n);
        crc.update(part.as_ref());
        Ok((file, crc, part))
    })
    .await
    .map_err(|e| local_err(local, std::io::Error::other(e)))?
    .map_err(|e| local_err(local, e))
}

/// Recycled part buffers.
#[derive(Debug, Clone)]
struct PartPool {
    free: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    keep: usize,
}

impl PartPool {
    fn new(keep: usize) -> Self {
        Self {
            free: Arc::default(),
            keep,
        }
    }

    /// A buffer of `size` bytes (contents unspecified), reused when one is free.
    fn take(&self, size: usize) -> PartBuf {
        let reused = self.free.lock().ok().and_then(|mut f| f.pop());
        let mut buf = reused.unwrap_or_default();
        // Only a new (or smaller) buffer is zero-filled; a recycled one is overwritten by the read.
        buf.resize(size, 0);
        PartBuf {
            len: size,
            buf,
            pool: self.clone(),
        }
    }
}

/// A part buffer that goes back to its pool when the last reference (the store's copy of the
/// payload included) is dropped.
struct PartBuf {
    buf: Vec<u8>,
    len: usize,
    pool: PartPool,
}

impl PartBuf {
    /// The whole buffer, to read into.
    fn full(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    fn set_len(&mut self, len: usize) {
        self.len = len.min(self.buf.len());
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl AsRef<[u8]> for PartBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PartBuf {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if let Ok(mut free) = self.pool.free.lock()
            && free.len() < self.pool.keep
        {
            free.push(buf);
        }
    }
}

/// Fills `buf` unless the file ends first; returns the bytes read.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Opens `local` and runs `f` on it, both on the blocking pool.
async fn blocking<T: Send + 'static>(
    local: &FsPath,
    f: impl FnOnce(std::fs::File) -> std::io::Result<T> + Send + 'static,
) -> Result<T, Attempt> {
    let owned = local.to_path_buf();
    tokio::task::spawn_blocking(move || f(std::fs::File::open(owned)?))
        .await
        .map_err(|e| local_err(local, std::io::Error::other(e)))?
        .map_err(|e| local_err(local, e))
}

/// Why one attempt failed: a store error may be retried, anything else is final.
enum Attempt {
    Store(object_store::Error),
    Fatal(Error),
}

fn local_err(local: &FsPath, source: std::io::Error) -> Attempt {
    Attempt::Fatal(Error::LocalIo {
        path: local.to_path_buf(),
        source,
    })
}

fn changed(local: &FsPath, path: &Path) -> Attempt {
    Attempt::Fatal(Error::FileChanged {
        path: PathBuf::from(local),
        key: path.to_string(),
    })
}

async fn open(local: &FsPath) -> Result<std::fs::File, Attempt> {
    let owned = local.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(owned))
        .await
        .map_err(|e| local_err(local, std::io::Error::other(e)))?
        .map_err(|e| local_err(local, e))
}

/// Whether an object store error may go away on its own (network, throttling, 5xx).
pub fn is_transient(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    !matches!(
        e,
        E::NotFound { .. }
            | E::InvalidPath { .. }
            | E::NotSupported { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
            | E::NotImplemented { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::UnknownConfigurationKey { .. }
    )
}

#[cfg(test)]
mod tests;
