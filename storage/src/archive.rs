//! A zip archive of objects, streamed: entries are written as they are read from the store, so
//! memory stays flat whatever the total size (a few chunks in flight plus ~100 bytes of central
//! directory per entry).
//!
//! Entries are *stored* (pcapng files are served as they are; deflate would cap throughput far
//! below the network). Each local header sets general-purpose bit 3 and the CRC-32 and sizes
//! follow the data in a data descriptor, because the CRC is only known once the object was read.
//! ZIP64 extra fields are used for entries ≥ 4 GiB, offsets ≥ 4 GiB and more than 65535 entries.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Datelike, Timelike, Utc};
use crc_fast::{CrcAlgorithm, Digest};
use futures::{Stream, StreamExt};
use object_store::{ObjectStore, ObjectStoreExt, path::Path};
use tokio::sync::mpsc;
use tracing::warn;

/// Chunks buffered between the reader task and the HTTP body.
const CHANNEL_DEPTH: usize = 8;
/// Target size of the chunks sent to the HTTP body (memory: about `CHANNEL_DEPTH` of these).
const COALESCE: usize = 256 * 1024;
const U32_MAX: u64 = 0xFFFF_FFFF;
const FLAG_DESCRIPTOR: u16 = 0x0008;
const FLAG_UTF8: u16 = 0x0800;
const VERSION_ZIP20: u16 = 20;
const VERSION_ZIP64: u16 = 45;
/// "Made by" Unix, spec 4.5.
const MADE_BY_UNIX: u16 = (3 << 8) | VERSION_ZIP64;

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
    zip_stream_with(store, entries, false)
}

/// [`zip_stream`], optionally forcing ZIP64 records for every entry (tests of the ZIP64 path).
pub fn zip_stream_with(
    store: Arc<dyn ObjectStore>,
    entries: Vec<ArchiveEntry>,
    force_zip64: bool,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    tokio::spawn(async move {
        if let Err(WriteError::Io(e)) = write_zip(&store, entries, force_zip64, &tx).await {
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

struct Central {
    name: String,
    crc: u32,
    size: u64,
    offset: u64,
    zip64: bool,
    time: u16,
    date: u16,
}

async fn write_zip(
    store: &Arc<dyn ObjectStore>,
    entries: Vec<ArchiveEntry>,
    force_zip64: bool,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
) -> Result<(), WriteError> {
    let mut w = Writer { tx, offset: 0 };
    let mut central = Vec::with_capacity(entries.len());
    for e in entries {
        let zip64 = force_zip64 || e.size >= U32_MAX;
        let (time, date) = dos_time(e.modified);
        let offset = w.offset;
        w.send(local_header(&e.name, zip64, time, date)).await?;
        let mut crc = Digest::new(CrcAlgorithm::Crc32IsoHdlc);
        let mut size = 0u64;
        match &e.location {
            None => {
                crc.update(&e.inline);
                size = e.inline.len() as u64;
                w.send(e.inline.clone()).await?;
            }
            Some(loc) => {
                let got = store.get(loc).await.map_err(|err| {
                    WriteError::Io(std::io::Error::other(format!("{loc}: {err}")))
                })?;
                let mut body = got.into_stream();
                // Stores hand out small chunks (s3s-fs: 4 KiB); coalesce them so the channel
                // and the HTTP body see fewer, larger frames.
                let mut buf = BytesMut::with_capacity(COALESCE);
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|err| {
                        WriteError::Io(std::io::Error::other(format!("{loc}: {err}")))
                    })?;
                    crc.update(&chunk);
                    size += chunk.len() as u64;
                    if buf.is_empty() && chunk.len() >= COALESCE {
                        w.send(chunk).await?;
                        continue;
                    }
                    buf.extend_from_slice(&chunk);
                    if buf.len() >= COALESCE {
                        w.send(buf.split().freeze()).await?;
                    }
                }
                if !buf.is_empty() {
                    w.send(buf.split().freeze()).await?;
                }
            }
        }
        if size >= U32_MAX && !zip64 {
            return Err(WriteError::Io(std::io::Error::other(format!(
                "{} grew past 4 GiB while being archived",
                e.name
            ))));
        }
        let crc = crc.finalize() as u32;
        w.send(descriptor(crc, size, zip64)).await?;
        central.push(Central {
            name: e.name,
            crc,
            size,
            offset,
            zip64,
            time,
            date,
        });
    }
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

fn dos_time(t: DateTime<Utc>) -> (u16, u16) {
    if t.year() < 1980 {
        return (0, (1 << 5) | 1);
    }
    let year = (t.year() - 1980).min(127) as u16;
    let date = (year << 9) | ((t.month() as u16) << 5) | t.day() as u16;
    let time = ((t.hour() as u16) << 11) | ((t.minute() as u16) << 5) | (t.second() as u16 / 2);
    (time, date)
}

fn local_header(name: &str, zip64: bool, time: u16, date: u16) -> Bytes {
    let mut b = BytesMut::with_capacity(30 + name.len() + 20);
    b.put_u32_le(0x0403_4b50);
    b.put_u16_le(if zip64 { VERSION_ZIP64 } else { VERSION_ZIP20 });
    b.put_u16_le(FLAG_DESCRIPTOR | FLAG_UTF8);
    b.put_u16_le(0); // stored
    b.put_u16_le(time);
    b.put_u16_le(date);
    b.put_u32_le(0); // crc: in the descriptor
    let sz = if zip64 { U32_MAX as u32 } else { 0 };
    b.put_u32_le(sz);
    b.put_u32_le(sz);
    b.put_u16_le(name.len() as u16);
    b.put_u16_le(if zip64 { 20 } else { 0 });
    b.put_slice(name.as_bytes());
    if zip64 {
        b.put_u16_le(0x0001);
        b.put_u16_le(16);
        b.put_u64_le(0);
        b.put_u64_le(0);
    }
    b.freeze()
}

fn descriptor(crc: u32, size: u64, zip64: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(24);
    b.put_u32_le(0x0807_4b50);
    b.put_u32_le(crc);
    if zip64 {
        b.put_u64_le(size);
        b.put_u64_le(size);
    } else {
        b.put_u32_le(size as u32);
        b.put_u32_le(size as u32);
    }
    b.freeze()
}

fn central_header(b: &mut BytesMut, c: &Central, force_zip64: bool) {
    let big_size = c.zip64;
    let big_offset = c.offset >= U32_MAX || force_zip64;
    let mut extra = BytesMut::new();
    if big_size || big_offset {
        extra.put_u16_le(0x0001);
        let len = if big_size { 16 } else { 0 } + if big_offset { 8 } else { 0 };
        extra.put_u16_le(len);
        if big_size {
            extra.put_u64_le(c.size);
            extra.put_u64_le(c.size);
        }
        if big_offset {
            extra.put_u64_le(c.offset);
        }
    }
    let needs64 = c.zip64 || big_offset;
    b.put_u32_le(0x0201_4b50);
    b.put_u16_le(MADE_BY_UNIX);
    b.put_u16_le(if needs64 {
        VERSION_ZIP64
    } else {
        VERSION_ZIP20
    });
    b.put_u16_le(FLAG_DESCRIPTOR | FLAG_UTF8);
    b.put_u16_le(0);
    b.put_u16_le(c.time);
    b.put_u16_le(c.date);
    b.put_u32_le(c.crc);
    let sz = if big_size {
        U32_MAX as u32
    } else {
        c.size as u32
    };
    b.put_u32_le(sz);
    b.put_u32_le(sz);
    b.put_u16_le(c.name.len() as u16);
    b.put_u16_le(extra.len() as u16);
    b.put_u16_le(0); // comment
    b.put_u16_le(0); // disk
    b.put_u16_le(0); // internal attributes
    b.put_u32_le(0o100_644 << 16); // regular file, rw-r--r--
    b.put_u32_le(if big_offset {
        U32_MAX as u32
    } else {
        c.offset as u32
    });
    b.put_slice(c.name.as_bytes());
    b.put_slice(&extra);
}

fn end_records(entries: u64, cd_start: u64, cd_size: u64, here: u64, force: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(98);
    let zip64 = force || entries >= 0xFFFF || cd_start >= U32_MAX || cd_size >= U32_MAX;
    if zip64 {
        b.put_u32_le(0x0606_4b50);
        b.put_u64_le(44);
        b.put_u16_le(MADE_BY_UNIX);
        b.put_u16_le(VERSION_ZIP64);
        b.put_u32_le(0);
        b.put_u32_le(0);
        b.put_u64_le(entries);
        b.put_u64_le(entries);
        b.put_u64_le(cd_size);
        b.put_u64_le(cd_start);
        b.put_u32_le(0x0706_4b50);
        b.put_u32_le(0);
        b.put_u64_le(here);
        b.put_u32_le(1);
    }
    b.put_u32_le(0x0605_4b50);
    b.put_u16_le(0);
    b.put_u16_le(0);
    let n = if zip64 { 0xFFFF } else { entries as u16 };
    b.put_u16_le(n);
    b.put_u16_le(n);
    b.put_u32_le(if zip64 {
        U32_MAX as u32
    } else {
        cd_size as u32
    });
    b.put_u32_le(if zip64 {
        U32_MAX as u32
    } else {
        cd_start as u32
    });
    b.put_u16_le(0);
    b.freeze()
}

#[cfg(test)]
mod tests;
