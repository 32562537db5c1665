//! Hints about a file's pages in the page cache, and what the cache holds of a file.
//!
//! The hints only cost or save work: the data is written and read the same whichever way the
//! kernel takes them, so callers may ignore their errors.

use std::{fs::File, io, num::NonZeroUsize, os::fd::AsFd, path::Path};

use nix::{
    fcntl::{PosixFadviseAdvice, posix_fadvise},
    sys::mman::{MapFlags, ProtFlags, mmap, munmap},
};

/// Starts writeback of the dirty pages in `[offset, offset + len)` of `file` without waiting
/// for it (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`; not a durability guarantee).
pub fn start_writeback(file: impl AsFd, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (offset, len) = (to_off(offset)?, to_off(len)?);
    // SAFETY: sync_file_range on a descriptor borrowed for the call, integer arguments; it
    // reads or writes no memory of ours. (nix has no wrapper for it.)
    let rc = unsafe {
        libc::sync_file_range(
            file.as_fd().as_raw_fd(),
            offset,
            len,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Drops the clean cached pages of `[offset, offset + len)` of `file` (`len` 0: to the end of
/// the file) with `posix_fadvise(POSIX_FADV_DONTNEED)`; dirty pages stay.
pub fn drop_cached(file: impl AsFd, offset: u64, len: u64) -> io::Result<()> {
    posix_fadvise(
        file,
        to_off(offset)?,
        to_off(len)?,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )?;
    Ok(())
}

/// How many of `path`'s pages are in the page cache (`mincore(2)` on a read-only mapping of
/// it), to see whether a file was written or read around the cache. An empty file has none.
pub fn resident_pages(path: &Path) -> io::Result<usize> {
    let file = File::open(path)?;
    let len = usize::try_from(file.metadata()?.len()).map_err(io::Error::other)?;
    let Some(length) = NonZeroUsize::new(len) else {
        return Ok(0);
    };
    // SAFETY: a fresh read-only shared mapping of a file we hold open, never dereferenced
    // here and unmapped below.
    let map = unsafe {
        mmap(
            None,
            length,
            ProtFlags::PROT_READ,
            MapFlags::MAP_SHARED,
            &file,
            0,
        )
    }?;
    let mut pages = vec![0u8; len.div_ceil(page_size())];
    // SAFETY: `pages` has one byte per page of the `len`-byte mapping at `map`. (nix has no
    // wrapper for mincore.)
    let rc = unsafe { libc::mincore(map.as_ptr(), len, pages.as_mut_ptr()) };
    let err = io::Error::last_os_error();
    // SAFETY: the mapping made above, unmapped once; nothing refers to it any more.
    unsafe { munmap(map, len) }?;
    if rc != 0 {
        return Err(err);
    }
    Ok(pages.iter().filter(|b| **b & 1 == 1).count())
}

/// The system's page size.
fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| usize::try_from(p).ok())
        .unwrap_or(4096)
}

fn to_off(v: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn written_back_pages_can_be_dropped_and_residency_is_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let size = 64 * 4096;
        let mut f = File::create(&path).expect("create");
        f.write_all(&vec![3u8; size]).expect("write");
        assert!(
            resident_pages(&path).expect("mincore") > size / 4096 / 2,
            "a plain write stays cached"
        );
        start_writeback(&f, 0, size as u64).expect("writeback started");
        f.sync_data().expect("sync");
        drop_cached(&f, 0, 0).expect("dropped");
        assert!(
            resident_pages(&path).expect("mincore") <= 1,
            "clean pages are dropped"
        );
        let empty = dir.path().join("empty");
        File::create(&empty).expect("create");
        assert_eq!(resident_pages(&empty).expect("mincore"), 0);
    }

    #[test]
    fn offsets_beyond_the_kernels_range_are_refused() {
        let f = tempfile::tempfile().expect("tempfile");
        let e = drop_cached(&f, u64::MAX, 0).expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
