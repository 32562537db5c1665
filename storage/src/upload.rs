//! Uploading closed capture files (used by the capture engine).
//!
//! Files at or below [`UploadOptions::multipart_threshold`] go up in one PUT (at most that many
//! bytes in memory). Larger files go up as a multipart upload read from disk part by part: memory
//! stays at about `part_size × (max_concurrent_parts + 1)` whatever the file size. The SHA-256 is
//! recorded as the `nightcap-sha256` attribute; a multipart upload must declare attributes when it
//! starts. The capture engine computes [`FileSums`] (length, SHA-256, CRC-64/NVME) while it
//! writes a file and hands them over ([`Uploader::upload_file_with_sums`]), so the file is read
//! once: the upload recomputes only the CRC-64 (~20x cheaper than SHA-256) of the bytes it sends.
//! Without sums a large file is read twice: the first read computes them, the second sends. A
//! file whose bytes differ from its sums (different length or CRC) is refused
//! ([`Error::FileChanged`]) and the partial upload aborted, so the declared SHA-256 is that of
//! the bytes sent.
//!
//! Reads run on tokio's blocking pool with `read(2)` straight into the buffer that is sent, with
//! `O_DIRECT` by default ([`UploadOptions::direct_io`]): a closed capture file is no longer in the
//! page cache (the capture engine writes with `O_DIRECT` or drops written pages), and filling
//! page-cache pages only to copy them out once cost ~18x the CPU of a direct read on the VMs we
//! measured (1 GiB: 1.46 s vs 0.08 s of system time). A file system that refuses `O_DIRECT` is
//! read through the page cache. Part buffers are page-aligned and recycled through a small pool
//! (at most `max_concurrent_parts + 1` kept), so steady uploading neither allocates nor faults in
//! fresh pages, and memory stays flat.
//!
//! Retries: object_store already retries single requests; on top, a whole upload that failed with
//! a transient error is retried with exponential backoff and jitter, at most
//! [`UploadOptions::max_attempts`] times.

use std::{
    fs::File,
    io::Read,
    os::unix::fs::OpenOptionsExt,
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
    Attributes, MultipartUpload, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, path::Path,
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

/// Longest single read: a direct read is one disk request, and the capture's own writes (512 KiB)
/// queue behind whatever the uploader has in flight.
const READ_PIECE: usize = 512 << 10;

/// Alignment of buffers, file offsets and lengths for `O_DIRECT` reads (the largest logical block
/// size in use).
const ALIGN: usize = 4096;

/// Most parts in one multipart upload (S3's limit; a bigger file gets bigger parts).
const MAX_PARTS: u64 = 10_000;

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
    /// Read files with `O_DIRECT` where the file system allows it (multipart uploads only when
    /// `part_size` is a multiple of 4 KiB). Default: true.
    pub direct_io: bool,
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
            direct_io: true,
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
    /// Whether the file was published by a hard link instead of copied (a local store on the
    /// same file system, see [`Uploader::link_into`]).
    pub linked: bool,
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
    /// Where files are linked instead of copied (a local store).
    link: Option<link::LinkTarget>,
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
            link: None,
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
    pub async fn upload_file_with_meta(
        &self,
        local: &FsPath,
        key: &CaptureKey,
        meta: &FileMeta,
    ) -> Result<UploadedFile> {
        self.upload_file_with_sums(local, key, meta, None).await
    }

    /// Like [`Uploader::upload_file_with_meta`] for a file whose [`FileSums`] are known (computed
    /// while it was written): it is read once, and refused unless its bytes match `sums`.
    #[tracing::instrument(skip(self, meta, sums), fields(key = %key))]
    pub async fn upload_file_with_sums(
        &self,
        local: &FsPath,
        key: &CaptureKey,
        meta: &FileMeta,
        sums: Option<&FileSums>,
    ) -> Result<UploadedFile> {
        let path = key.to_path(&self.prefix);
        let key_str = path.to_string();
        let mut attempt = 0;
        let mut backoff = self.options.initial_backoff;
        loop {
            attempt += 1;
            match self.attempt(local, &path, meta, sums).await {
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
        sums: Option<&FileSums>,
    ) -> Result<UploadedFile, Attempt> {
        let io = |source| {
            Attempt::Fatal(Error::LocalIo {
                path: local.to_path_buf(),
                source,
            })
        };
        if let Some(up) = self.try_link(local, path, sums).await? {
            return Ok(up);
        }
        let size = tokio::fs::metadata(local).await.map_err(io)?.len();
        if sums.is_some_and(|s| s.len != size) {
            return Err(changed(local, path));
        }
        if size <= self.options.multipart_threshold {
            self.put_small(local, path, meta, size, sums).await
        } else {
            self.put_multipart(local, path, meta, size, sums).await
        }
    }

    async fn put_small(
        &self,
        local: &FsPath,
        path: &Path,
        meta: &FileMeta,
        size: u64,
        sums: Option<&FileSums>,
    ) -> Result<UploadedFile, Attempt> {
        // One byte more than the size is enough to see that the file grew.
        let want = usize::try_from(size)
            .ok()
            .and_then(|s| s.checked_add(1))
            .and_then(|s| s.checked_next_multiple_of(ALIGN))
            .ok_or_else(|| changed(local, path))?;
        let direct = self.options.direct_io;
        let known = sums.cloned();
        let (buf, read) = blocking(local, direct, move |mut file| {
            let mut buf = PartBuf::detached(want);
            let n = file.read_full(buf.full())?;
            buf.set_len(n);
            // With known sums, the (cheap) CRC-64 shows whether these are the bytes hashed.
            let read = match known {
                Some(k) => {
                    let mut crc = crc_fast::Digest::new(CrcAlgorithm::Crc64Nvme);
                    crc.update(buf.as_ref());
                    (crc.finalize() == k.crc64).then_some(k.sha256)
                }
                None => Some(hex::encode(Sha256::digest(buf.as_ref()))),
            };
            Ok((buf, read))
        })
        .await?;
        let Some(sha256) = read.filter(|_| buf.len() as u64 == size) else {
            return Err(changed(local, path));
        };
        let payload = PutPayload::from(Bytes::from_owner(buf));
        let (res, stored) = self
            .put_with(path, payload, meta.to_attributes(&sha256))
            .await
            .map_err(Attempt::Store)?;
        Ok(UploadedFile {
            key: path.to_string(),
            bytes: size,
            sha256,
            e_tag: res.e_tag,
            multipart: false,
            attempts: 1,
            attributes_stored: stored,
            linked: false,
        })
    }

    async fn put_multipart(
        &self,
        local: &FsPath,
        path: &Path,
        meta: &FileMeta,
        size: u64,
        sums: Option<&FileSums>,
    ) -> Result<UploadedFile, Attempt> {
        let first = match sums {
            Some(s) => s.clone(),
            None => {
                let buf = self.parts.take(self.options.part_size.max(1));
                blocking(local, self.direct_multipart(), move |file| scan(file, buf)).await?
            }
        };
        if first.len != size {
            return Err(changed(local, path));
        }
        let (mut upload, stored) = self
            .multipart_with(path, meta.to_attributes(&first.sha256))
            .await
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
            linked: false,
        })
    }

    /// PUTs `payload` with `attrs`, or without them on a backend that has none (remembered).
    /// Returns the result and whether the attributes were stored.
    async fn put_with(
        &self,
        path: &Path,
        payload: PutPayload,
        attrs: Attributes,
    ) -> object_store::Result<(PutResult, bool)> {
        if self.attributes.load(Ordering::Relaxed) {
            let opts = PutOptions {
                attributes: attrs,
                ..Default::default()
            };
            match self.store.put_opts(path, payload.clone(), opts).await {
                Err(object_store::Error::NotImplemented { .. }) => {
                    self.attributes.store(false, Ordering::Relaxed);
                }
                other => return other.map(|r| (r, true)),
            }
        }
        let r = self
            .store
            .put_opts(path, payload, PutOptions::default())
            .await;
        r.map(|r| (r, false))
    }

    /// Starts a multipart upload declaring `attrs` (as [`Uploader::put_with`]).
    async fn multipart_with(
        &self,
        path: &Path,
        attrs: Attributes,
    ) -> object_store::Result<(Box<dyn MultipartUpload>, bool)> {
        if self.attributes.load(Ordering::Relaxed) {
            let opts = PutMultipartOptions {
                attributes: attrs,
                ..Default::default()
            };
            match self.store.put_multipart_opts(path, opts).await {
                Err(object_store::Error::NotImplemented { .. }) => {
                    self.attributes.store(false, Ordering::Relaxed);
                }
                other => return other.map(|u| (u, true)),
            }
        }
        let opts = PutMultipartOptions::default();
        let r = self.store.put_multipart_opts(path, opts).await;
        r.map(|u| (u, false))
    }

    /// Whether multipart uploads read with `O_DIRECT` (every part starts at an aligned offset).
    fn direct_multipart(&self) -> bool {
        self.options.direct_io && self.options.part_size.max(1).is_multiple_of(ALIGN)
    }

    /// Part size for a file of `size` bytes: the configured one, or bigger (in whole MiB) when
    /// that would take more than [`MAX_PARTS`] parts.
    fn part_size_for(&self, size: u64) -> usize {
        let least = usize::try_from(size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20))
            .unwrap_or(usize::MAX);
        self.options.part_size.max(1).max(least)
    }

    /// Reads `local` again part by part and sends each part, at most `max_concurrent_parts`
    /// at once; the bytes read must be those `first` saw (length and CRC-64).
    async fn send_parts(
        &self,
        local: &FsPath,
        path: &Path,
        first: &FileSums,
        upload: &mut dyn MultipartUpload,
    ) -> Result<(), Attempt> {
        let part_size = self.part_size_for(first.len);
        let parallel = self.options.max_concurrent_parts.max(1);
        let mut file = blocking(local, self.direct_multipart(), Ok).await?;
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

/// Length, SHA-256 and CRC-64/NVME of a file's bytes: what an upload declares (the SHA-256) and
/// checks the bytes it sends against (length and CRC-64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSums {
    /// Bytes.
    pub len: u64,
    /// Hex SHA-256.
    pub sha256: String,
    /// CRC-64/NVME.
    pub crc64: u64,
}

/// Computes [`FileSums`] over bytes fed in order.
#[derive(Clone)]
pub struct SumsBuilder {
    sha: Sha256,
    crc: crc_fast::Digest,
    len: u64,
}

impl std::fmt::Debug for SumsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SumsBuilder")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Default for SumsBuilder {
    fn default() -> Self {
        Self {
            sha: Sha256::new(),
            crc: crc_fast::Digest::new(CrcAlgorithm::Crc64Nvme),
            len: 0,
        }
    }
}

impl SumsBuilder {
    /// Feeds the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.crc.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// The sums of everything fed.
    pub fn finish(self) -> FileSums {
        FileSums {
            len: self.len,
            sha256: hex::encode(self.sha.finalize()),
            crc64: self.crc.finalize(),
        }
    }
}

/// [`FileSums`] of a file, read into (a piece of) `buf`.
fn scan(mut file: LocalFile, mut buf: PartBuf) -> std::io::Result<FileSums> {
    let mut sums = SumsBuilder::default();
    let full = buf.full();
    let take = SCAN_PIECE.min(full.len());
    let piece = &mut full[..take];
    loop {
        let n = file.read_full(piece)?;
        if n == 0 {
            return Ok(sums.finish());
        }
        sums.update(&piece[..n]);
    }
}

/// Reads the next part (up to the buffer's size; shorter only at the end of the file) on the
/// blocking pool, updating `crc`.
async fn read_part(
    local: &FsPath,
    mut file: LocalFile,
    mut crc: crc_fast::Digest,
    mut part: PartBuf,
) -> Result<(LocalFile, crc_fast::Digest, PartBuf), Attempt> {
    tokio::task::spawn_blocking(move || {
        let n = file.read_full(part.full())?;
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

    /// A page-aligned buffer of `size` bytes (contents unspecified), reused when one is free.
    fn take(&self, size: usize) -> PartBuf {
        let reused = self
            .free
            .lock()
            .ok()
            .and_then(|mut f| f.pop())
            .filter(|b| b.len() >= size + ALIGN);
        let mut part = PartBuf::with(reused, size);
        part.pool = Some(self.clone());
        part
    }
}

/// A page-aligned buffer: a part being read and sent. One from a pool goes back to it when the
/// last reference (the store's copy of the payload included) is dropped.
struct PartBuf {
    /// `ALIGN` bytes longer than needed, so an aligned `size` bytes fit somewhere inside.
    buf: Vec<u8>,
    start: usize,
    size: usize,
    len: usize,
    pool: Option<PartPool>,
}

impl PartBuf {
    /// A buffer of `size` bytes that belongs to no pool.
    fn detached(size: usize) -> Self {
        Self::with(None, size)
    }

    fn with(reused: Option<Vec<u8>>, size: usize) -> Self {
        // Zeroed allocations come from fresh mappings: no page is touched before the read.
        let buf = reused.unwrap_or_else(|| vec![0; size + ALIGN]);
        // An address that cannot be aligned only makes O_DIRECT reads fall back.
        let start = match buf.as_ptr().align_offset(ALIGN) {
            off if off < ALIGN => off,
            _ => 0,
        };
        Self {
            buf,
            start,
            size,
            len: size,
            pool: None,
        }
    }

    /// The whole buffer, to read into.
    fn full(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.size]
    }

    fn set_len(&mut self, len: usize) {
        self.len = len.min(self.size);
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
        &self.buf[self.start..self.start + self.len]
    }
}

impl Drop for PartBuf {
    fn drop(&mut self) {
        let Some(pool) = self.pool.take() else {
            return;
        };
        let buf = std::mem::take(&mut self.buf);
        if let Ok(mut free) = pool.free.lock()
            && free.len() < pool.keep
        {
            free.push(buf);
        }
    }
}

/// A local file being uploaded, read with `O_DIRECT` while the file system allows it.
struct LocalFile {
    file: File,
    direct: bool,
}

impl LocalFile {
    fn open(path: &FsPath, direct: bool) -> std::io::Result<Self> {
        if direct {
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(path);
            match opened {
                Ok(file) => {
                    return Ok(Self { file, direct: true });
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Self {
            file: File::open(path)?,
            direct: false,
        })
    }

    /// Fills `buf` unless the file ends first; returns the bytes read. An `O_DIRECT` read the
    /// kernel refuses (an unaligned buffer or offset) goes on through the page cache.
    fn read_full(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let end = buf.len().min(n + READ_PIECE);
            match self.file.read(&mut buf[n..end]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    self.reopen_buffered()?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Goes on through the page cache: clears `O_DIRECT` on the descriptor itself (the file
    /// may have been renamed since it was opened), keeping the position.
    fn reopen_buffered(&mut self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        // SAFETY: fcntl F_GETFL/F_SETFL on a descriptor we own, integer arguments.
        let cleared = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) == 0
        };
        if !cleared {
            return Err(std::io::Error::last_os_error());
        }
        self.direct = false;
        Ok(())
    }
}

/// Opens `local` and runs `f` on it, both on the blocking pool.
async fn blocking<T: Send + 'static>(
    local: &FsPath,
    direct: bool,
    f: impl FnOnce(LocalFile) -> std::io::Result<T> + Send + 'static,
) -> Result<T, Attempt> {
    let owned = local.to_path_buf();
    tokio::task::spawn_blocking(move || f(LocalFile::open(&owned, direct)?))
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

mod link;
mod live;
pub use live::{LiveDone, LiveStop, LiveUpload};

#[cfg(test)]
mod tests;
