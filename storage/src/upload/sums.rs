//! The checksums of a file's bytes: what an upload declares and checks what it sends against.

use crc_fast::CrcAlgorithm;
use sha2::{Digest, Sha256};

/// Length, SHA-256 and CRC-64/NVME of a file's bytes: what an upload declares (the SHA-256) and
/// checks the bytes it sends against (length and CRC-64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSums {
    /// Bytes.
    pub len: u64,
    /// Hex SHA-256.
    pub sha256: String,
    /// CRC-64/NVME.
    pub crc64: u64,
}

/// Computes [`FileSums`] over bytes fed in order.
#[derive(Clone)]
pub struct SumsBuilder {
    sha: Sha256,
    crc: crc_fast::Digest,
    len: u64,
}

impl std::fmt::Debug for SumsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SumsBuilder")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Default for SumsBuilder {
    fn default() -> Self {
        Self {
            sha: Sha256::new(),
            crc: crc_fast::Digest::new(CrcAlgorithm::Crc64Nvme),
            len: 0,
        }
    }
}

impl SumsBuilder {
    /// Feeds the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.crc.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// The sums of everything fed.
    pub fn finish(self) -> FileSums {
        FileSums {
            len: self.len,
            sha256: hex::encode(self.sha.finalize()),
            crc64: self.crc.finalize(),
        }
    }
}
