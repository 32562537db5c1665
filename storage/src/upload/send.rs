//! Sending a local file: one PUT for a small file, a multipart upload read part by part for a
//! larger one, and the attribute fallback for stores that have none.

use bytes::Bytes;
use crc_fast::CrcAlgorithm;
use futures::{StreamExt, stream::FuturesUnordered};
use object_store::{
    Attributes, MultipartUpload, PutMultipartOptions, PutOptions, PutPayload, PutResult, path::Path,
};
use sha2::{Digest, Sha256};
use std::{path::Path as FsPath, sync::atomic::Ordering};

use super::{
    Attempt, FileSums, UploadedFile, Uploader, changed,
    local::{blocking, read_part, scan},
    parts::PartBuf,
};
use crate::meta::FileMeta;

/// Most parts in one multipart upload (S3's limit; a bigger file gets bigger parts).
pub(super) const MAX_PARTS: u64 = 10_000;

impl Uploader {
    pub(super) async fn put_small(
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
            .and_then(|s| s.checked_next_multiple_of(nightcap_sys::ALIGN))
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

    pub(super) async fn put_multipart(
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
    pub(super) async fn put_with(
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
    pub(super) async fn multipart_with(
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
    pub(super) fn direct_multipart(&self) -> bool {
        self.options.direct_io
            && self
                .options
                .part_size
                .max(1)
                .is_multiple_of(nightcap_sys::ALIGN)
    }

    /// Part size for a file of `size` bytes: the configured one, or bigger (in whole MiB) when
    /// that would take more than [`MAX_PARTS`] parts.
    pub(super) fn part_size_for(&self, size: u64) -> usize {
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
