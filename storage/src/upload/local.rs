//! Reading a local file for an upload: on tokio's blocking pool, with `O_DIRECT` while the file
//! system and the buffers allow it, else through the page cache.

use std::{fs::File, io::Read, path::Path as FsPath};

use super::{Attempt, FileSums, SumsBuilder, local_err, parts::PartBuf};

/// The first read hashes the file in pieces this big (they stay in the CPU's cache between the
/// read and the two checksums).
const SCAN_PIECE: usize = 256 << 10;

/// Longest single read: a direct read is one disk request, and the capture's own writes (512 KiB)
/// queue behind whatever the uploader has in flight.
const READ_PIECE: usize = 512 << 10;

/// [`FileSums`] of a file, read into (a piece of) `buf`.
pub(super) fn scan(mut file: LocalFile, mut buf: PartBuf) -> std::io::Result<FileSums> {
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
pub(super) async fn read_part(
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

/// A local file being uploaded, read with `O_DIRECT` while the file system allows it.
pub(super) struct LocalFile {
    pub(super) file: File,
    pub(super) direct: bool,
}

impl LocalFile {
    pub(super) fn open(path: &FsPath, direct: bool) -> std::io::Result<Self> {
        let (file, direct) =
            nightcap_sys::direct::open(std::fs::OpenOptions::new().read(true), path, direct)?;
        Ok(Self { file, direct })
    }

    /// Fills `buf` unless the file ends first; returns the bytes read. An `O_DIRECT` read the
    /// kernel refuses (an unaligned buffer or offset) goes on through the page cache.
    pub(super) fn read_full(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let end = buf.len().min(n + READ_PIECE);
            match self.file.read(&mut buf[n..end]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if self.direct && nightcap_sys::direct::refused(&e) => {
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
        nightcap_sys::direct::clear_direct(&self.file)?;
        self.direct = false;
        Ok(())
    }
}

/// Opens `local` and runs `f` on it, both on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
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
