//! `O_DIRECT` opens that fall back to the page cache.

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use nix::{
    errno::Errno,
    fcntl::{FcntlArg, OFlag, fcntl},
};

/// Opens `path` with `options`, with `O_DIRECT` when `direct` and the file system allows it;
/// returns the file and whether it is open with `O_DIRECT`. A file system that refuses
/// `O_DIRECT` (`EINVAL`: tmpfs, some FUSE and network file systems) gets a plain open with the
/// same options; any other error is returned as it is.
pub fn open(options: &OpenOptions, path: &Path, direct: bool) -> io::Result<(File, bool)> {
    if direct {
        match options
            .clone()
            .custom_flags(OFlag::O_DIRECT.bits())
            .open(path)
        {
            Ok(f) => return Ok((f, true)),
            Err(e) if refused(&e) => {}
            Err(e) => return Err(e),
        }
    }
    options.open(path).map(|f| (f, false))
}

/// Whether `e` is the kernel refusing direct I/O (`EINVAL`): an open on a file system without
/// it, or a read or write whose buffer, offset or length is not aligned.
pub fn refused(e: &io::Error) -> bool {
    e.raw_os_error() == Some(Errno::EINVAL as i32)
}

/// Clears `O_DIRECT` on `file`'s open file description (`fcntl` `F_SETFL`), keeping its
/// position and other flags: its I/O goes through the page cache from now on, whatever name
/// the file has now.
pub fn clear_direct(file: &File) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(file, FcntlArg::F_GETFL)?);
    fcntl(file, FcntlArg::F_SETFL(flags - OFlag::O_DIRECT))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::aligned::{ALIGN, AlignedBuf};

    #[test]
    fn direct_opens_fall_back_where_refused_and_clearing_goes_on_through_the_cache() {
        // /dev/shm is tmpfs (refuses O_DIRECT); the temp directory may accept it.
        for dir in [Path::new("/dev/shm"), &std::env::temp_dir()] {
            let dir = tempfile::tempdir_in(dir).expect("tempdir");
            let path = dir.path().join("f");
            let mut create = OpenOptions::new();
            create.write(true).create(true).truncate(true);
            let (mut f, direct) = open(&create, &path, true).expect("created");
            let mut buf = AlignedBuf::new(2 * ALIGN);
            buf.as_mut_slice().fill(9);
            f.write_all(buf.as_slice()).expect("aligned write");
            drop(f);
            let (plain, plainly) = open(&create, &path, false).expect("plain open");
            assert!(!plainly, "not asked for O_DIRECT");
            drop(plain);
            std::fs::write(&path, vec![5u8; 3 * ALIGN]).expect("rewrite");
            let (mut f, direct_read) =
                open(OpenOptions::new().read(true), &path, true).expect("opened");
            assert_eq!(direct_read, direct, "{}", dir.path().display());
            assert_eq!(is_direct(&f), direct);
            if direct {
                clear_direct(&f).expect("cleared");
                assert!(!is_direct(&f), "O_DIRECT cleared");
            }
            // One byte past an aligned address: never aligned, fine through the page cache.
            let mut aligned = AlignedBuf::new(ALIGN);
            let unaligned = &mut aligned.as_mut_slice()[..100];
            assert_eq!(f.read(&mut unaligned[1..]).expect("read"), 99);
            assert!(unaligned[1..].iter().all(|&b| b == 5));
        }
    }

    fn is_direct(f: &File) -> bool {
        OFlag::from_bits_retain(fcntl(f, FcntlArg::F_GETFL).expect("flags"))
            .contains(OFlag::O_DIRECT)
    }

    #[test]
    fn other_open_errors_are_returned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = open(
            OpenOptions::new().read(true),
            &dir.path().join("absent"),
            true,
        )
        .expect_err("missing");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(!refused(&e));
    }
}
