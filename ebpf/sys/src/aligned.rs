//! Buffers aligned for direct I/O.

/// Alignment of buffers, file offsets and lengths for `O_DIRECT` I/O: the largest logical
/// block size in use (devices with 512-byte blocks accept it too).
pub const ALIGN: usize = 4096;

/// A zeroed heap buffer of a fixed capacity whose first byte sits on an [`ALIGN`] boundary,
/// so it can be read into or written from with `O_DIRECT`.
///
/// The memory is one zeroed allocation [`ALIGN`] bytes larger than the capacity: large ones
/// come from fresh mappings, so no page is touched before the buffer is used. Safe code only:
/// the aligned window is a range of that allocation.
pub struct AlignedBuf {
    buf: Vec<u8>,
    start: usize,
    capacity: usize,
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("capacity", &self.capacity)
            .field("aligned", &self.is_aligned())
            .finish()
    }
}

impl AlignedBuf {
    /// A zeroed buffer of `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        let buf = vec![0; capacity + ALIGN];
        // `align_offset` may decline (never for bytes in practice): the buffer is then used
        // unaligned, and direct I/O on it is refused by the kernel (callers fall back).
        let start = match buf.as_ptr().align_offset(ALIGN) {
            off if off < ALIGN => off,
            _ => 0,
        };
        Self {
            buf,
            start,
            capacity,
        }
    }

    /// Its size in bytes.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether its first byte is on an [`ALIGN`] boundary.
    pub fn is_aligned(&self) -> bool {
        (self.buf.as_ptr() as usize + self.start).is_multiple_of(ALIGN)
    }

    /// All of its bytes.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.capacity]
    }

    /// All of its bytes, to fill.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.capacity]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_zeroed_and_of_their_capacity() {
        for capacity in [0, 1, 4095, ALIGN, 512 << 10, (8 << 20) + 3] {
            let mut b = AlignedBuf::new(capacity);
            assert!(b.is_aligned(), "capacity {capacity}");
            assert_eq!(b.as_slice().as_ptr() as usize % ALIGN, 0);
            assert_eq!(b.capacity(), capacity);
            assert_eq!(b.as_slice().len(), capacity);
            assert!(b.as_slice().iter().all(|&x| x == 0));
            b.as_mut_slice().fill(7);
            assert!(b.as_slice().iter().all(|&x| x == 7));
        }
    }
}
