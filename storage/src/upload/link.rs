//! Publishing into a local directory by hard link.
//!
//! When the store is a directory (`file:///dir`) on the same file system as the file to upload,
//! copying the bytes is wasted work: the object is published by linking the file under its key
//! (a staging name, then an atomic rename), so a 100 MB capture file costs a few system calls
//! instead of reading and writing 100 MB. The file's data is flushed (`fdatasync`) and the
//! directory entry made durable (`fsync` of the directory) before the upload counts as
//! confirmed; the caller then removes its own name for the file. Where linking is impossible
//! (another file system, a file system without hard links, a permission error) the file is copied
//! as before.

use std::{
    fs::File,
    io,
    os::unix::fs::MetadataExt,
    path::{Path as FsPath, PathBuf},
};

use object_store::{local::LocalFileSystem, path::Path};
use tracing::{debug, warn};

use super::{Attempt, FileSums, UploadedFile, Uploader, blocking, changed, scan};
use crate::error::{Error, Result};

/// The directory a local store writes into, and the file system it is on.
#[derive(Debug)]
pub(super) struct LinkTarget {
    fs: LocalFileSystem,
    dev: u64,
}

impl Uploader {
    /// Publishes files by hard link where they are on the same file system as `root`, the
    /// directory of a local store (the store this uploader writes to must be
    /// `LocalFileSystem::new_with_prefix(root)`); other files are still copied.
    pub fn link_into(mut self, root: &FsPath) -> Result<Self> {
        let io_err = |source| Error::LocalIo {
            path: root.to_path_buf(),
            source,
        };
        let dev = std::fs::metadata(root).map_err(io_err)?.dev();
        let fs = LocalFileSystem::new_with_prefix(root).map_err(|source| Error::OpenStore {
            backend: "local",
            source,
        })?;
        self.link = Some(LinkTarget { fs, dev });
        Ok(self)
    }

    /// Whether files in `dir` are published by hard link rather than copied.
    pub fn links_from(&self, dir: &FsPath) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| std::fs::metadata(dir).is_ok_and(|m| m.dev() == l.dev))
    }

    /// Links `local` under `path` when it can: `Ok(None)` means "copy it instead".
    pub(super) async fn try_link(
        &self,
        local: &FsPath,
        path: &Path,
        sums: Option<&FileSums>,
    ) -> Result<Option<UploadedFile>, Attempt> {
        let Some(link) = &self.link else {
            return Ok(None);
        };
        let meta = match std::fs::metadata(local) {
            Ok(m) => m,
            Err(e) => return Err(super::local_err(local, e)),
        };
        if meta.dev() != link.dev {
            return Ok(None);
        }
        let dest = match link.fs.path_to_filesystem(path) {
            Ok(d) => d,
            Err(e) => return Err(Attempt::Store(e)),
        };
        let sums = match sums {
            Some(s) => s.clone(),
            None => {
                let buf = self.parts.take(self.options.part_size.max(1));
                blocking(local, self.direct_multipart(), move |file| scan(file, buf)).await?
            }
        };
        if sums.len != meta.len() {
            return Err(changed(local, path));
        }
        let src = local.to_path_buf();
        let linked = tokio::task::spawn_blocking(move || publish(&src, &dest, sums.len))
            .await
            .map_err(|e| super::local_err(local, io::Error::other(e)))?;
        match linked {
            Ok(()) => {
                debug!(key = %path, bytes = sums.len, "Published by hard link.");
                Ok(Some(UploadedFile {
                    key: path.to_string(),
                    bytes: sums.len,
                    sha256: sums.sha256,
                    e_tag: None,
                    multipart: false,
                    attempts: 1,
                    attributes_stored: false,
                    linked: true,
                }))
            }
            Err(Publish::Changed) => Err(changed(local, path)),
            Err(Publish::Io(e)) => {
                warn!(file = %local.display(), key = %path, error = %e, "Cannot publish the file by hard link; copying it.");
                Ok(None)
            }
        }
    }
}

enum Publish {
    /// The file is no longer as long as its sums say.
    Changed,
    /// Linking failed; copying may still work.
    Io(io::Error),
}

impl From<io::Error> for Publish {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Flushes `src`, links it as a staging name next to `dest`, renames that over `dest` and
/// flushes the directory.
fn publish(src: &FsPath, dest: &FsPath, len: u64) -> Result<(), Publish> {
    let file = File::open(src)?;
    if file.metadata()?.len() != len {
        return Err(Publish::Changed);
    }
    file.sync_data()?;
    let dir = dest
        .parent()
        .ok_or_else(|| io::Error::other("the key has no parent directory"))?;
    std::fs::create_dir_all(dir)?;
    // A leftover of a run that stopped after publishing it but before removing its spool name:
    // already there (renaming a link over itself would do nothing and leave the staging name).
    let same = |m: std::fs::Metadata| {
        let s = file.metadata().ok();
        s.is_some_and(|s| (s.dev(), s.ino()) == (m.dev(), m.ino()))
    };
    if std::fs::metadata(dest).is_ok_and(same) {
        File::open(dir)?.sync_all()?;
        return Ok(());
    }
    let staging = link_staging(src, dest)?;
    if let Err(e) = std::fs::rename(&staging, dest) {
        let _ = std::fs::remove_file(&staging);
        return Err(e.into());
    }
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Hard-links `src` as `dest#N` (a name the local store's listing skips, as it does its own
/// unfinished uploads), choosing the first free N from a range object_store does not use.
fn link_staging(src: &FsPath, dest: &FsPath) -> io::Result<PathBuf> {
    for n in 0..1000u64 {
        let mut name = dest.as_os_str().to_owned();
        name.push(format!("#{}", 9_000_000_000 + n));
        let staging = PathBuf::from(name);
        match std::fs::hard_link(src, &staging) {
            Ok(()) => return Ok(staging),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "no free staging name next to {}",
        dest.display()
    )))
}
