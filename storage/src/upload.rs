//! Uploading closed capture files (used by the capture engine).
//!
//! Files at or below [`UploadOptions::multipart_threshold`] go up in one PUT (at most that many
//! bytes in memory). Larger files go up as a multipart upload streamed from disk: memory stays at
//! about `part_size × (max_concurrent_parts + 1)` whatever the file size. The SHA-256 is recorded
//! as the `nightcap-sha256` attribute; a multipart upload must declare attributes when it starts,
//! so large files are hashed in a first read and hashed again while uploading — a file that changed
//! in between is refused ([`Error::FileChanged`]) and the partial upload aborted.
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

use bytes::BytesMut;
use object_store::{
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, WriteMultipart, path::Path,
};
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tracing::{info, warn};

use crate::{
    error::{Error, Result},
    layout::{CaptureKey, KeyPrefix},
    meta::FileMeta,
};

/// Read buffer size.
const READ_CHUNK: usize = 1 << 20;

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
}

impl Uploader {
    /// An uploader writing under `prefix` of `store`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: KeyPrefix, options: UploadOptions) -> Self {
        Self {
            store,
            prefix,
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
        let mut file = open(local).await?;
        let mut buf = BytesMut::with_capacity(usize::try_from(size).unwrap_or(0));
        let mut hasher = Sha256::new();
        loop {
            let before = buf.len();
            buf.reserve(READ_CHUNK);
            let n = file
                .read_buf(&mut buf)
                .await
                .map_err(|e| local_err(local, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[before..]);
            if buf.len() as u64 > self.options.multipart_threshold {
                // Grew past the threshold after we looked: treat as a changing file.
                return Err(changed(local, path));
            }
        }
        let sha256 = hex::encode(hasher.finalize());
        let bytes = buf.len() as u64;
        let payload = PutPayload::from(buf.freeze());
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
        let (first_sha, first_len) = hash_file(local).await?;
        if first_len != size {
            return Err(changed(local, path));
        }
        let with_attrs = self.attributes.load(Ordering::Relaxed);
        let opts = |attrs: bool| PutMultipartOptions {
            attributes: if attrs {
                meta.to_attributes(&first_sha)
            } else {
                Default::default()
            },
            ..Default::default()
        };
        let mut stored = with_attrs;
        let upload = match self.store.put_multipart_opts(path, opts(with_attrs)).await {
            Err(object_store::Error::NotImplemented { .. }) if with_attrs => {
                self.attributes.store(false, Ordering::Relaxed);
                stored = false;
                self.store.put_multipart_opts(path, opts(false)).await
            }
            other => other,
        }
        .map_err(Attempt::Store)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.options.part_size);
        let mut file = match open(local).await {
            Ok(f) => f,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e);
            }
        };
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            if let Err(e) = writer
                .wait_for_capacity(self.options.max_concurrent_parts)
                .await
            {
                let _ = writer.abort().await;
                return Err(Attempt::Store(e));
            }
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(local_err(local, e));
                }
            };
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            writer.write(&buf[..n]);
            total += n as u64;
        }
        let sha256 = hex::encode(hasher.finalize());
        if sha256 != first_sha || total != size {
            let _ = writer.abort().await;
            return Err(changed(local, path));
        }
        let res = writer.finish().await.map_err(Attempt::Store)?;
        Ok(UploadedFile {
            key: path.to_string(),
            bytes: total,
            sha256,
            e_tag: res.e_tag,
            multipart: true,
            attempts: 1,
            attributes_stored: stored,
        })
    }
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

async fn open(local: &FsPath) -> Result<tokio::fs::File, Attempt> {
    tokio::fs::File::open(local)
        .await
        .map_err(|e| local_err(local, e))
}

/// SHA-256 and length of a file, read in chunks.
async fn hash_file(local: &FsPath) -> Result<(String, u64), Attempt> {
    let mut file = open(local).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).await.map_err(|e| local_err(local, e))?;
        if n == 0 {
            return Ok((hex::encode(hasher.finalize()), total));
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
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
