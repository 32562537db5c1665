//! The chunk pool: page-aligned buffers the capture thread fills, the writer thread writes, and
//! the hasher or a live upload gives back — plus what else both ends of the writer share.

use std::{
    io,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicUsize},
    },
};

use nightcap_sys::{ALIGN, AlignedBuf};

use crate::Error;

/// Bytes per chunk (a multiple of [`ALIGN`]). O_DIRECT writes of 512 KiB ran as fast as 1 MiB
/// ones on the machines we measured (~1.6 GB/s).
pub(crate) const CHUNK: usize = 512 << 10;
/// Chunks per capture: one being filled, the rest queued for or being written or hashed. Two
/// keep the disk busy, one the hasher; the others absorb short write stalls before the ring has
/// to.
pub(super) const CHUNKS: usize = 6;

/// A page-aligned buffer of [`CHUNK`] bytes and how many are used.
pub(super) struct Chunk {
    buf: AlignedBuf,
    pub(super) len: usize,
}

impl Chunk {
    fn new() -> Self {
        Self {
            buf: AlignedBuf::new(CHUNK),
            len: 0,
        }
    }

    #[inline]
    pub(super) fn spare(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut_slice()[self.len..]
    }

    #[inline]
    pub(super) fn full(&self) -> bool {
        self.len == CHUNK
    }

    /// The bytes written into it.
    pub(super) fn used(&self) -> &[u8] {
        &self.buf.as_slice()[..self.len]
    }

    /// The used bytes, zero-padded to `ALIGN` when `pad` (for the last write of a file).
    pub(super) fn data(&mut self, pad: bool) -> &[u8] {
        let len = if pad {
            self.len.next_multiple_of(ALIGN)
        } else {
            self.len
        };
        if len > self.len {
            let used = self.len;
            self.spare()[..len - used].fill(0);
        }
        // len <= CHUNK: CHUNK is a multiple of ALIGN.
        &self.buf.as_slice()[..len]
    }
}

/// State both ends share: the free chunks and the first error.
pub(super) struct Shared {
    pub(super) free: Mutex<Pool>,
    pub(super) returned: Condvar,
    /// Chunks handed to the hasher and not yet given back.
    pub(super) hash_backlog: AtomicUsize,
    /// Set when the writer gave up hashing the current file: queued chunks go straight back.
    pub(super) hash_skip: AtomicBool,
    /// Held by a test to stall this writer's hasher.
    #[cfg(test)]
    pub(super) hash_gate: std::sync::Mutex<()>,
    /// Bytes handed to the syncer for writeback, and files synced to disk when closed: what a
    /// test can see of the disk traffic.
    #[cfg(test)]
    pub(super) written_back: std::sync::atomic::AtomicU64,
    #[cfg(test)]
    pub(super) synced: AtomicUsize,
}

impl Shared {
    /// [`CHUNKS`] free chunks, no error.
    pub(super) fn new() -> Self {
        Self {
            free: Mutex::new(Pool {
                chunks: (0..CHUNKS).map(|_| Chunk::new()).collect(),
                allocated: CHUNKS,
                lent: 0,
                gone: false,
                error: None,
            }),
            returned: Condvar::new(),
            hash_backlog: AtomicUsize::new(0),
            hash_skip: AtomicBool::new(false),
            #[cfg(test)]
            hash_gate: std::sync::Mutex::new(()),
            #[cfg(test)]
            written_back: std::sync::atomic::AtomicU64::new(0),
            #[cfg(test)]
            synced: AtomicUsize::new(0),
        }
    }

    /// Records `e` unless an earlier error is recorded.
    pub(super) fn fail(&self, e: Error) {
        lock(&self.free).error.get_or_insert(e);
    }

    /// The writer thread has ended: whoever waits for a chunk stops waiting.
    pub(super) fn gone(&self) {
        lock(&self.free).gone = true;
        self.returned.notify_all();
    }
}

pub(super) struct Pool {
    pub(super) chunks: Vec<Chunk>,
    /// Chunks in existence: [`CHUNKS`] for the capture plus as many as are lent.
    allocated: usize,
    /// Chunks lent to live uploads (see [`Lent`]).
    pub(super) lent: usize,
    /// The writer thread has ended: nobody returns chunks any more.
    gone: bool,
    pub(super) error: Option<Error>,
}

pub(super) fn lock(m: &Mutex<Pool>) -> std::sync::MutexGuard<'_, Pool> {
    // The pool holds plain data; a panic elsewhere does not leave it inconsistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A free chunk, emptied; waits for one while none is free and the capture holds its
/// [`CHUNKS`].
pub(super) fn take_free(shared: &Shared) -> io::Result<Chunk> {
    let mut pool = lock(&shared.free);
    loop {
        if let Some(mut c) = pool.chunks.pop() {
            c.len = 0;
            return Ok(c);
        }
        // The capture has its CHUNKS however many are lent to uploads.
        if pool.allocated < CHUNKS + pool.lent {
            pool.allocated += 1;
            return Ok(Chunk::new());
        }
        if pool.gone {
            return Err(io::Error::other("the file writer thread has stopped"));
        }
        pool = shared
            .returned
            .wait(pool)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
}

pub(super) fn give_back(shared: &Shared, chunk: Chunk) {
    lock(&shared.free).chunks.push(chunk);
    shared.returned.notify_one();
}

/// A written chunk lent to a live upload as the bytes of the file it holds; back in the pool
/// when the upload lets go of it (the store has its part, or the upload was dropped).
struct Lent {
    chunk: Option<Chunk>,
    shared: Arc<Shared>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        self.chunk.as_ref().map_or(&[], Chunk::used)
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(c) = self.chunk.take() {
            let mut pool = lock(&self.shared.free);
            pool.lent -= 1;
            pool.chunks.push(c);
            drop(pool);
            self.shared.returned.notify_one();
        }
    }
}

/// Lends `chunk` to a live upload unless `max` are lent already (then it is handed back).
pub(super) fn lend(shared: &Arc<Shared>, chunk: Chunk, max: usize) -> Result<bytes::Bytes, Chunk> {
    let mut pool = lock(&shared.free);
    if pool.lent >= max {
        return Err(chunk);
    }
    pool.lent += 1;
    drop(pool);
    // The capture may be waiting for a chunk: it can have one more now.
    shared.returned.notify_one();
    Ok(bytes::Bytes::from_owner(Lent {
        chunk: Some(chunk),
        shared: shared.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lent_chunks_come_back_and_the_capture_keeps_its_own() {
        let shared = Arc::new(Shared::new());
        let mut lent = Vec::new();
        // Every chunk of the capture lent: each lent one lets the capture have one more.
        for i in 0..CHUNKS {
            let mut c = take_free(&shared).expect("free chunk");
            c.spare()[..3].copy_from_slice(&[1, 2, 3]);
            c.len = 3;
            let bytes = lend(&shared, c, CHUNKS).unwrap_or_else(|_| panic!("lent {i}"));
            assert_eq!(bytes.as_ref(), &[1, 2, 3]);
            lent.push(bytes);
        }
        let c = take_free(&shared).expect("a new chunk while the others are lent");
        assert_eq!(c.len, 0);
        let Err(refused) = lend(&shared, c, CHUNKS) else {
            panic!("no more than max lent");
        };
        give_back(&shared, refused);
        assert_eq!(lock(&shared.free).lent, CHUNKS);
        drop(lent);
        let pool = lock(&shared.free);
        assert_eq!(pool.lent, 0, "every lent chunk came back");
        assert_eq!(pool.chunks.len(), CHUNKS + 1);
    }

    #[test]
    fn the_last_chunk_of_a_direct_file_is_padded_with_zeros() {
        let mut c = Chunk::new();
        c.spare()[..5000].fill(9);
        c.len = 5000;
        // Bytes beyond the used ones, left from an earlier file.
        c.spare()[..100].fill(7);
        assert_eq!(c.data(false).len(), 5000);
        let padded = c.data(true);
        assert_eq!(padded.len(), 2 * ALIGN);
        assert!(padded[..5000].iter().all(|&b| b == 9));
        assert!(padded[5000..].iter().all(|&b| b == 0));
        assert_eq!(c.used().len(), 5000);
    }
}
