//! A zip archive of objects, streamed: entries are written as they are read from the store, so
//! memory stays flat whatever the total size (a few 256 KiB frames per range in flight plus ~100
//! bytes of central directory per entry). Objects are read with ranged GETs, several started at a
//! time and across file boundaries, so request latency and many small files do not stall the
//! stream; sizes come
//! from the listing (capture files are immutable once uploaded — one that changed size ends the
//! stream with an error).
//!
//! Entries are *stored* (pcapng files are served as they are; deflate would cap throughput far
//! below the network). Each local header sets general-purpose bit 3 and the CRC-32 and sizes
//! follow the data in a data descriptor, because the CRC is only known once the object was read.
//! ZIP64 extra fields are used for entries ≥ 4 GiB, offsets ≥ 4 GiB and more than 65535 entries.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use crc_fast::{CrcAlgorithm, Digest};
use futures::{Stream, StreamExt};
use object_store::{GetOptions, GetRange, ObjectStore, path::Path};
use tokio::sync::mpsc;
use tracing::warn;

mod records;
use records::{Central, U32_MAX, central_header, descriptor, dos_time, end_records, local_header};

/// Frames buffered between the reader task and the HTTP body.
const CHANNEL_DEPTH: usize = 4;
/// Largest frame handed to the HTTP body.
const COALESCE: usize = 256 * 1024;

/// How objects are read while zipping: ranged GETs of `range_bytes`, `parallel` of them in
/// flight. Memory does not grow with the range size — each range read ahead holds at most a few
/// 256 KiB frames (about `parallel` MiB in all) and TCP flow control holds the rest at the store —
/// so larger ranges only mean fewer requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZipOptions {
    /// Bytes per ranged GET. Default: 16 MiB.
    pub range_bytes: u64,
    /// Ranged GETs in flight (read-ahead, across file boundaries). Default: 4.
    pub parallel: usize,
    /// Write ZIP64 records for every entry (tests of the ZIP64 path). Default: only when needed.
    pub force_zip64: bool,
}

impl Default for ZipOptions {
    fn default() -> Self {
        Self {
            range_bytes: 16 << 20,
            parallel: 4,
            force_zip64: false,
        }
    }
}
/// One file in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// Name inside the archive (`node/file.pcapng`).
    pub name: String,
    /// Where to read it from; `None` for `inline` data.
    pub location: Option<Path>,
    /// Bytes of an entry with no location (e.g. `manifest.json`).
    pub inline: Bytes,
    /// Expected size (decides ZIP64 up front; the descriptor records the real size).
    pub size: u64,
    /// Modification time shown by zip tools.
    pub modified: DateTime<Utc>,
}

/// Streams a zip of `entries`, read from `store`. Errors while reading end the stream with an
/// error (the HTTP response is then cut short, which clients report as a broken download).
pub fn zip_stream(
    store: Arc<dyn ObjectStore>,
    entries: Vec<ArchiveEntry>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    zip_stream_with(store, entries, ZipOptions::default())
}

/// [`zip_stream`] with explicit [`ZipOptions`].
pub fn zip_stream_with(
    store: Arc<dyn ObjectStore>,
    entries: Vec<ArchiveEntry>,
    opts: ZipOptions,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    tokio::spawn(async move {
        if let Err(WriteError::Io(e)) = write_zip(&store, entries, opts, &tx).await {
            warn!(error = %e, "Zip stream failed.");
            let _ = tx.send(Err(e)).await;
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}

enum WriteError {
    /// The receiver is gone (client disconnected): stop quietly.
    Closed,
    /// Reading an object failed.
    Io(std::io::Error),
}

struct Writer<'a> {
    tx: &'a mpsc::Sender<std::io::Result<Bytes>>,
    offset: u64,
}

impl Writer<'_> {
    async fn send(&mut self, b: Bytes) -> Result<(), WriteError> {
        self.offset += b.len() as u64;
        self.tx.send(Ok(b)).await.map_err(|_| WriteError::Closed)
    }
}

/// One piece of work: a byte range of one entry (or its inline bytes), in archive order.
struct Piece {
    entry: usize,
    range: std::ops::Range<u64>,
    first: bool,
    last: bool,
}

/// Splits every entry into ranges of at most `range` bytes (one empty piece for an empty entry).
fn pieces(entries: &[ArchiveEntry], range: u64) -> Vec<Piece> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let size = if e.location.is_some() {
            e.size
        } else {
            e.inline.len() as u64
        };
        let mut start = 0;
        loop {
            let end = (start + range).min(size);
            out.push(Piece {
                entry: i,
                range: start..end,
                first: start == 0,
                last: end == size,
            });
            if end == size {
                break;
            }
            start = end;
        }
    }
    out
}

/// Frames buffered per range being read ahead.
const RANGE_DEPTH: usize = 4;

type Frames = mpsc::Receiver<Result<Bytes, WriteError>>;

/// Starts reading one range: a task streams it into a small bounded channel (frames of up to
/// [`COALESCE`] bytes), so a range read ahead holds at most `RANGE_DEPTH` frames in memory while
/// TCP flow control holds the rest at the store.
fn start_range(
    store: Arc<dyn ObjectStore>,
    entry: &ArchiveEntry,
    range: std::ops::Range<u64>,
) -> Frames {
    let (tx, rx) = mpsc::channel(RANGE_DEPTH);
    let Some(loc) = entry.location.clone() else {
        let bytes = entry.inline.slice(range.start as usize..range.end as usize);
        // Capacity ≥ 1: never blocks.
        let _ = tx.try_send(Ok(bytes));
        return rx;
    };
    if range.is_empty() {
        return rx;
    }
    tokio::spawn(async move {
        let want = range.end - range.start;
        let err = |e: String| WriteError::Io(std::io::Error::other(format!("{loc}: {e}")));
        let opts = GetOptions::new().with_range(Some(GetRange::Bounded(range)));
        let mut body = match store.get_opts(&loc, opts).await {
            Ok(r) => r.into_stream(),
            Err(e) => {
                let _ = tx.send(Err(err(e.to_string()))).await;
                return;
            }
        };
        let mut got = 0u64;
        let mut buf = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(err(e.to_string()))).await;
                    return;
                }
            };
            got += chunk.len() as u64;
            buf.extend_from_slice(&chunk);
            if buf.len() >= COALESCE && tx.send(Ok(buf.split().freeze())).await.is_err() {
                return; // the archive was abandoned
            }
        }
        if !buf.is_empty() && tx.send(Ok(buf.split().freeze())).await.is_err() {
            return;
        }
        if got != want {
            let _ = tx
                .send(Err(err(format!(
                    "expected {want} bytes, read {got}; the object changed while being archived"
                ))))
                .await;
        }
    });
    rx
}

async fn write_zip(
    store: &Arc<dyn ObjectStore>,
    entries: Vec<ArchiveEntry>,
    opts: ZipOptions,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
) -> Result<(), WriteError> {
    let force_zip64 = opts.force_zip64;
    let mut w = Writer { tx, offset: 0 };
    let mut central = Vec::with_capacity(entries.len());
    let plan = pieces(&entries, opts.range_bytes.max(64 * 1024));
    let entries_ref = &entries;
    // Ranges are started `parallel` at a time (read-ahead across entry boundaries) and written
    // in order.
    let mut ranges = futures::stream::iter(plan)
        .map(|p| {
            let rx = start_range(store.clone(), &entries_ref[p.entry], p.range.clone());
            futures::future::ready((p, rx))
        })
        .buffered(opts.parallel.max(1));
    let mut crc = Digest::new(CrcAlgorithm::Crc32IsoHdlc);
    let mut size = 0u64;
    let mut offset = 0u64;
    while let Some((p, mut frames)) = ranges.next().await {
        let e = &entries[p.entry];
        let zip64 = force_zip64 || e.size >= U32_MAX;
        let (time, date) = dos_time(e.modified);
        if p.first {
            offset = w.offset;
            crc = Digest::new(CrcAlgorithm::Crc32IsoHdlc);
            size = 0;
            w.send(local_header(&e.name, zip64, time, date)).await?;
        }
        while let Some(frame) = frames.recv().await {
            let frame = frame?;
            crc.update(&frame);
            size += frame.len() as u64;
            w.send(frame).await?;
        }
        if p.last {
            let crc = crc.clone().finalize() as u32;
            w.send(descriptor(crc, size, zip64)).await?;
            central.push(Central {
                name: e.name.clone(),
                crc,
                size,
                offset,
                zip64,
                time,
                date,
            });
        }
    }
    drop(ranges);
    let cd_start = w.offset;
    let mut cd = BytesMut::new();
    for c in &central {
        central_header(&mut cd, c, force_zip64);
        if cd.len() > 64 * 1024 {
            w.send(cd.split().freeze()).await?;
        }
    }
    w.send(cd.split().freeze()).await?;
    let cd_size = w.offset - cd_start;
    w.send(end_records(
        central.len() as u64,
        cd_start,
        cd_size,
        w.offset,
        force_zip64,
    ))
    .await
}

#[cfg(test)]
mod tests;
