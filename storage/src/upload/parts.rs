//! Part buffers: page-aligned (for `O_DIRECT` reads), recycled through a small pool.

use std::sync::Arc;

use nightcap_sys::AlignedBuf;

/// Recycled part buffers.
#[derive(Debug, Clone)]
pub(super) struct PartPool {
    pub(super) free: Arc<std::sync::Mutex<Vec<AlignedBuf>>>,
    keep: usize,
}

impl PartPool {
    /// A pool keeping at most `keep` free buffers.
    pub(super) fn new(keep: usize) -> Self {
        Self {
            free: Arc::default(),
            keep,
        }
    }

    /// A page-aligned buffer of `size` bytes (contents unspecified), reused when one is free.
    pub(super) fn take(&self, size: usize) -> PartBuf {
        let reused = self
            .free
            .lock()
            .ok()
            .and_then(|mut f| f.pop())
            .filter(|b| b.capacity() >= size);
        let mut part = PartBuf::with(reused, size);
        part.pool = Some(self.clone());
        part
    }
}

/// A page-aligned buffer: a part being read and sent. One from a pool goes back to it when the
/// last reference (the store's copy of the payload included) is dropped.
pub(super) struct PartBuf {
    buf: AlignedBuf,
    size: usize,
    len: usize,
    pool: Option<PartPool>,
}

impl PartBuf {
    /// A buffer of `size` bytes that belongs to no pool.
    pub(super) fn detached(size: usize) -> Self {
        Self::with(None, size)
    }

    fn with(reused: Option<AlignedBuf>, size: usize) -> Self {
        // Zeroed allocations come from fresh mappings: no page is touched before the read.
        let buf = reused.unwrap_or_else(|| AlignedBuf::new(size));
        Self {
            buf,
            size,
            len: size,
            pool: None,
        }
    }

    /// The whole buffer, to read into.
    pub(super) fn full(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut_slice()[..self.size]
    }

    pub(super) fn set_len(&mut self, len: usize) {
        self.len = len.min(self.size);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }
}

impl AsRef<[u8]> for PartBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf.as_slice()[..self.len]
    }
}

impl Drop for PartBuf {
    fn drop(&mut self) {
        let Some(pool) = self.pool.take() else {
            return;
        };
        let buf = std::mem::replace(&mut self.buf, AlignedBuf::new(0));
        if let Ok(mut free) = pool.free.lock()
            && free.len() < pool.keep
        {
            free.push(buf);
        }
    }
}
