//! The open file on the writer threads' side: created (with `O_DIRECT` or through the page
//! cache), written chunk by chunk, then cut back, synced and renamed to its closed name.

use std::{
    fs::File,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use nightcap_storage::{CaptureKey, FileMeta};
use tracing::warn;

use super::{live::LiveFile, pool::Chunk};
use crate::{Error, Result, spooled::Sidecar};

/// What the writer thread needs to close a file.
pub(crate) struct CloseInfo {
    pub(crate) key: CaptureKey,
    pub(crate) meta: FileMeta,
    pub(crate) bytes: u64,
    /// When the capture thread finished the file.
    pub(crate) rotated: Instant,
}

/// The open file on the writer thread's side.
pub(super) struct Open {
    pub(super) file: Arc<File>,
    pub(super) partial: PathBuf,
    pub(super) sidecar: PathBuf,
    /// Opened with O_DIRECT.
    pub(super) direct: bool,
    /// Bytes of pcapng written.
    pub(super) len: u64,
    /// The last write was padded (the file is longer than `len` until cut back).
    padded: bool,
    /// Buffered mode: writeback was requested up to here.
    pub(super) kicked: u64,
    /// Its chunks still go to the hasher (false once hashing fell behind the capture).
    pub(super) hashing: bool,
    /// Its upload while it is written, if it has one.
    pub(super) live: Option<LiveFile>,
}

impl Open {
    /// Creates `partial` (with O_DIRECT if `direct` and the file system allows it), hashed and
    /// without a live upload.
    pub(super) fn create(partial: PathBuf, sidecar: PathBuf, direct: bool) -> Result<Self> {
        let (file, direct) =
            create(&partial, direct).map_err(|e| Error::io(&partial, "creating", e))?;
        Ok(Self {
            live: None,
            file: Arc::new(file),
            partial,
            sidecar,
            direct,
            len: 0,
            padded: false,
            kicked: 0,
            hashing: true,
        })
    }

    pub(super) fn write(&mut self, chunk: &mut Chunk) -> Result<()> {
        if self.padded {
            // Only a file's last chunk may be short; anything after it would land behind the
            // padding. The capture thread never does this.
            return Err(Error::Invalid(
                "internal error: data after a file's last chunk".into(),
            ));
        }
        let pad = self.direct && !chunk.len.is_multiple_of(nightcap_sys::ALIGN);
        let data = chunk.data(pad);
        (&*self.file)
            .write_all(data)
            .map_err(|e| Error::io(&self.partial, "writing", e))?;
        self.len += chunk.len as u64;
        self.padded = pad;
        Ok(())
    }

    /// Cuts the padding, syncs (`sync`: not a file uploaded while written, see
    /// [`super::live::Live::cache_window`]), completes the sidecar and renames: returns the
    /// closed path.
    pub(super) fn finish(self, sidecar: &Sidecar, sync: bool) -> Result<PathBuf> {
        if self.padded {
            self.file
                .set_len(self.len)
                .map_err(|e| Error::io(&self.partial, "truncating", e))?;
        }
        if sync {
            self.file
                .sync_data()
                .map_err(|e| Error::io(&self.partial, "syncing", e))?;
        }
        if sync && !self.direct {
            // Written back: the cache has no use for it (the uploader reads it once). A refusal
            // only leaves the pages cached.
            let _ = nightcap_sys::page_cache::drop_cached(&*self.file, 0, 0);
        }
        sidecar.write(&self.sidecar)?;
        let name = self
            .partial
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let done = self
            .partial
            .with_file_name(name.strip_suffix(".partial").unwrap_or(&name));
        std::fs::rename(&self.partial, &done).map_err(|e| Error::io(&done, "renaming", e))?;
        Ok(done)
    }
}

/// Creates `path`, with O_DIRECT if asked and the file system allows it.
fn create(path: &Path, direct: bool) -> io::Result<(File, bool)> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    let (file, opened_direct) = nightcap_sys::direct::open(&opts, path, direct)?;
    if direct && !opened_direct {
        warn!(file = %path.display(), "The spool's file system refuses O_DIRECT; writing through the page cache.");
    }
    Ok((file, opened_direct))
}

#[cfg(test)]
mod tests {
    use nightcap_storage::SumsBuilder;

    use super::{super::testing::*, *};
    use crate::writer::pool::CHUNK;

    #[test]
    fn direct_and_buffered_files_hold_exactly_what_was_written() {
        // Empty, tiny, unaligned, exactly one chunk, several chunks plus a tail.
        let sizes = [0, 100, 4095, 4097, CHUNK, 3 * CHUNK + 12_345];
        for direct in [true, false] {
            let dir = tempfile::tempdir().expect("tempdir");
            let closed = write_files(dir.path(), direct, &sizes);
            assert_eq!(closed.len(), sizes.len(), "direct={direct}");
            for (f, &size) in closed.iter().zip(&sizes) {
                let data = std::fs::read(&f.path).expect("closed file");
                assert_eq!(data.len(), size, "direct={direct} {}", f.path.display());
                assert!(data == pattern(size), "direct={direct}: content differs");
                assert_eq!(f.bytes, size as u64);
                // The uploader's checksums cover exactly the file's bytes (no padding).
                let mut sums = SumsBuilder::default();
                sums.update(&data);
                assert_eq!(f.sums, Some(sums.finish()), "direct={direct} size {size}");
                assert!(!f.path.to_string_lossy().ends_with(".partial"));
                let side = dir.path().join(format!("{}.json", f.key.file_name()));
                let sc: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&side).expect("sidecar")).expect("json");
                assert_eq!(sc["key"], f.key.relative());
                assert_eq!(sc["packets"], f.meta.packets.expect("packets"));
            }
            let partial = std::fs::read_dir(dir.path())
                .expect("dir")
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
                .count();
            assert_eq!(partial, 0);
        }
    }

    /// Pages of `path` in the page cache.
    fn resident_pages(path: &Path) -> usize {
        nightcap_sys::page_cache::resident_pages(path).expect("mincore")
    }

    #[test]
    fn direct_files_stay_out_of_the_page_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = 16 * CHUNK + 777;
        let direct = write_files(dir.path(), true, &[size]);
        let supported = matches!(create(&dir.path().join("probe"), true), Ok((_, true)));
        if !supported {
            eprintln!("skipped: the temp directory's file system refuses O_DIRECT");
            return;
        }
        let pages = size.div_ceil(4096);
        let resident = resident_pages(&direct[0].path);
        // Only the tail page may have been read back by the truncation.
        assert!(
            resident <= 1,
            "{resident} of {pages} pages in the page cache"
        );
        // Write-behind leaves the closed file out of the cache too.
        let buffered = write_files(dir.path(), false, &[size]);
        let resident = resident_pages(&buffered[0].path);
        assert!(
            resident <= 1,
            "write-behind: {resident} of {pages} pages cached"
        );
        // Control: a plain write stays cached, so mincore does see cached pages.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, vec![7u8; size]).expect("plain write");
        let resident = resident_pages(&plain);
        assert!(
            resident > pages / 2,
            "control: only {resident} of {pages} pages cached"
        );
    }
}
