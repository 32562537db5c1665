//! The zip records (spec APPNOTE 6.3): local headers, data descriptors, the central directory
//! and the end records, with ZIP64 fields where sizes, offsets or counts need them.

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Datelike, Timelike, Utc};

pub(super) const U32_MAX: u64 = 0xFFFF_FFFF;
const FLAG_DESCRIPTOR: u16 = 0x0008;
const FLAG_UTF8: u16 = 0x0800;
const VERSION_ZIP20: u16 = 20;
const VERSION_ZIP64: u16 = 45;
/// "Made by" Unix, spec 4.5.
const MADE_BY_UNIX: u16 = (3 << 8) | VERSION_ZIP64;

/// What the central directory records of one written entry.
pub(super) struct Central {
    pub(super) name: String,
    pub(super) crc: u32,
    pub(super) size: u64,
    pub(super) offset: u64,
    pub(super) zip64: bool,
    pub(super) time: u16,
    pub(super) date: u16,
}

pub(super) fn dos_time(t: DateTime<Utc>) -> (u16, u16) {
    if t.year() < 1980 {
        return (0, (1 << 5) | 1);
    }
    let year = (t.year() - 1980).min(127) as u16;
    let date = (year << 9) | ((t.month() as u16) << 5) | t.day() as u16;
    let time = ((t.hour() as u16) << 11) | ((t.minute() as u16) << 5) | (t.second() as u16 / 2);
    (time, date)
}

pub(super) fn local_header(name: &str, zip64: bool, time: u16, date: u16) -> Bytes {
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

pub(super) fn descriptor(crc: u32, size: u64, zip64: bool) -> Bytes {
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

pub(super) fn central_header(b: &mut BytesMut, c: &Central, force_zip64: bool) {
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

pub(super) fn end_records(
    entries: u64,
    cd_start: u64,
    cd_size: u64,
    here: u64,
    force: bool,
) -> Bytes {
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
