//! Test helpers: files written through a [`Writer`] as the capture thread writes them.

use std::{io::Write, path::Path, time::Instant};

use nightcap_storage::{CaptureKey, FileMeta};

use super::{CloseInfo, Writer};
use crate::spooled::ClosedFile;

pub(super) fn key(seq: u64) -> CaptureKey {
    CaptureKey::new(
        "team-a",
        "cap",
        "00000000-0000-4000-8000-000000000001",
        "node-1",
        chrono::Utc::now(),
        seq,
    )
    .expect("valid key")
}

/// Writes file `seq` in `dir`: `size` bytes of a recognisable pattern, in odd-sized pieces.
pub(super) fn write_one(w: &Writer, dir: &Path, seq: usize, size: usize) {
    write_paced(w, dir, seq, size, || ());
}

/// [`write_one`], calling `pace` before each piece.
pub(super) fn write_paced(w: &Writer, dir: &Path, seq: usize, size: usize, pace: impl Fn()) {
    let k = key(seq as u64);
    let name = k.file_name();
    let mut sink = w
        .open(
            dir.join(format!("{name}.partial")),
            dir.join(format!("{name}.json")),
            k.clone(),
        )
        .expect("open");
    for piece in pattern(size).chunks(1499) {
        pace();
        sink.write_all(piece).expect("write");
    }
    let meta = FileMeta {
        packets: Some(seq as u64),
        ..FileMeta::default()
    };
    let info = CloseInfo {
        key: k,
        meta,
        bytes: size as u64,
        rotated: Instant::now(),
    };
    w.close(sink, info).expect("close");
}

/// Writes `sizes.len()` files of the given sizes ([`write_one`]) and returns what reached
/// the uploader.
pub(super) fn write_files(dir: &Path, direct: bool, sizes: &[usize]) -> Vec<ClosedFile> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = Writer::start(tx, direct, None).expect("writer");
    for (seq, &size) in sizes.iter().enumerate() {
        write_one(&w, dir, seq, size);
    }
    w.finish().expect("no write error");
    let mut out = Vec::new();
    while let Ok(f) = rx.try_recv() {
        out.push(f);
    }
    out
}

pub(super) fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}
