//! The capture thread: polls every target's ring, encodes kept packets as pcapng into the open
//! file's chunks, rotates files (size or age, whichever first) and enforces the stop limits.
//! No per-packet allocation, lock or system call; the disk belongs to the writer thread
//! ([`crate::writer`]), which writes the chunks and hands each closed file to the uploader.

use std::{
    os::fd::AsFd,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use nightcap_ebpf::{Packet, PacketRing, RingStats};
use nightcap_storage::{CaptureKey, FileMeta};
use tokio::sync::mpsc::UnboundedSender;
use tracing::warn;

use crate::{
    Error, Result,
    pcapng::{InterfaceInfo, PcapngWriter},
    spooled::ClosedFile,
    writer::{CloseInfo, FileSink, Live, Writer},
};

/// Longest poll when nothing else is due: control messages wake the thread through an eventfd,
/// a ring with a block ready wakes it, and rotation, duration and retiring-ring deadlines
/// shorten the wait — so a quiet capture only wakes when the kernel hands over a block.
const POLL_MS: u64 = 10_000;

/// Bytes of a file waiting in a chunk that is not full are written out after this long (where
/// the writer allows short chunks), so packets of a quiet capture reach the spool file within
/// it.
const WRITE_OUT: Duration = Duration::from_millis(100);

/// Who the files belong to: the components of their object keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdentity {
    /// Namespace of the capture.
    pub namespace: String,
    /// Capture name.
    pub capture: String,
    /// Capture UID.
    pub uid: String,
    /// Node name.
    pub node: String,
}

/// What the capture thread does.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Section Header comment (the filter as the user wrote it).
    pub shb_comment: String,
    /// Snap length (recorded in interface blocks).
    pub snaplen: u32,
    /// Close a file at this size.
    pub rotate_bytes: u64,
    /// Close a file at this age.
    pub rotate_every: Option<Duration>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many bytes written.
    pub max_bytes: Option<u64>,
    /// Stop after this many packets written.
    pub max_packets: Option<u64>,
    /// Where open and closed files live until uploaded.
    pub spool_dir: PathBuf,
    /// Most bytes the spool may hold (closed files waiting plus the open file).
    pub spool_max_bytes: u64,
    /// Key components.
    pub identity: FileIdentity,
    /// First sequence number.
    pub first_seq: u64,
    /// Write files with O_DIRECT where the spool's file system allows it; `false` (the
    /// command's default) writes through the page cache with write-behind (see
    /// [`crate::writer`]).
    pub direct_io: bool,
}

/// Wakes the capture thread when a control message is queued (a descriptor it polls).
pub(crate) type Waker = nightcap_sys::Wakeup;

/// Messages to the capture thread.
#[derive(Debug)]
pub(crate) enum Control {
    Add {
        id: u64,
        ring: Box<PacketRing>,
        info: InterfaceInfo,
    },
    Remove {
        id: u64,
    },
    Stop,
}

/// What the capture thread did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Packets written to files.
    pub packets: u64,
    /// Bytes written to files (all blocks).
    pub bytes: u64,
    /// Files closed.
    pub files: u64,
    /// Packets the kernel dropped because a ring was full.
    pub ring_drops: u64,
    /// Packets not written because the spool was full (storage unreachable too long).
    pub spool_drops: u64,
    /// Why the capture stopped.
    pub stop: StopReason,
}

/// Why a capture stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// Asked to (signal, API).
    #[default]
    Requested,
    /// `duration` elapsed.
    Duration,
    /// `max-bytes` reached.
    MaxBytes,
    /// `max-packets` reached.
    MaxPackets,
}

struct OpenFile {
    writer: PcapngWriter<FileSink>,
    partial: PathBuf,
    key: CaptureKey,
    opened: Instant,
    start: DateTime<Utc>,
    /// Timestamp of the first packet (ns): no packet more than `rotate_every` younger goes in.
    first_ts: Option<u64>,
    if_ids: Vec<(u64, u32)>,
}

/// Everything but the rings, so a ring can be drained while this is borrowed mutably.
struct Sink {
    cfg: EngineConfig,
    infos: Vec<(u64, InterfaceInfo)>,
    file: Option<OpenFile>,
    seq: u64,
    stats: EngineStats,
    files: Writer,
    spool_used: Arc<AtomicU64>,
    error: Option<Error>,
}

impl Sink {
    fn open(&mut self) -> Result<()> {
        let start = Utc::now();
        let id = &self.cfg.identity;
        let key = CaptureKey::new(
            &id.namespace,
            &id.capture,
            &id.uid,
            &id.node,
            start,
            self.seq,
        )
        .map_err(Error::Storage)?;
        self.seq += 1;
        let name = key.file_name();
        let partial = self.cfg.spool_dir.join(format!("{name}.partial"));
        let sink = self
            .files
            .open(
                partial.clone(),
                self.cfg.spool_dir.join(format!("{name}.json")),
                key.clone(),
            )
            .map_err(|e| Error::io(&partial, "creating", e))?;
        let mut writer = PcapngWriter::new(
            sink,
            &self.cfg.shb_comment,
            concat!("nightcap ", env!("CARGO_PKG_VERSION")),
        )
        .map_err(|e| Error::io(&partial, "writing", e))?;
        let mut if_ids = Vec::new();
        for (tid, info) in &self.infos {
            let i = writer
                .add_interface(info)
                .map_err(|e| Error::io(&partial, "writing", e))?;
            if_ids.push((*tid, i));
        }
        // The header blocks count as written, so the summary's bytes are the files' sizes.
        self.stats.bytes += writer.bytes();
        self.file = Some(OpenFile {
            writer,
            partial,
            key,
            opened: Instant::now(),
            start,
            first_ts: None,
            if_ids,
        });
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        let Some(f) = self.file.take() else {
            return Ok(());
        };
        let packets = f.writer.packets();
        let bytes = f.writer.bytes();
        let sink = f
            .writer
            .finish()
            .map_err(|e| Error::io(&f.partial, "flushing", e))?;
        let meta = FileMeta {
            pods: Vec::new(),
            start: Some(f.start),
            end: Some(Utc::now()),
            packets: Some(packets),
        };
        // Counted now: the writer thread renames and queues it shortly.
        self.spool_used.fetch_add(bytes, Ordering::SeqCst);
        self.stats.files += 1;
        self.files
            .close(
                sink,
                CloseInfo {
                    key: f.key,
                    meta,
                    bytes,
                    rotated: Instant::now(),
                },
            )
            .map_err(|e| Error::io(&f.partial, "closing", e))
    }

    fn packet(&mut self, target: u64, p: &Packet<'_>) -> Result<()> {
        let open_bytes = self.file.as_ref().map_or(0, |f| f.writer.bytes());
        let need = (crate::pcapng::EPB_OVERHEAD + p.data.len() + 4 + 3) as u64;
        if self.spool_used.load(Ordering::Relaxed) + open_bytes + need > self.cfg.spool_max_bytes {
            self.stats.spool_drops += 1;
            return Ok(());
        }
        let too_old = match (
            self.cfg.rotate_every,
            self.file.as_ref().and_then(|f| f.first_ts),
        ) {
            (Some(every), Some(first)) => p.ts_ns.saturating_sub(first) >= every.as_nanos() as u64,
            _ => false,
        };
        if too_old {
            self.close()?;
        }
        if self.file.is_none() {
            self.open()?;
        }
        let f = self.file.as_mut().expect("opened above");
        f.first_ts.get_or_insert(p.ts_ns);
        let Some(&(_, if_id)) = f.if_ids.iter().find(|(t, _)| *t == target) else {
            return Ok(()); // a target removed in this very batch
        };
        let before = f.writer.bytes();
        f.writer
            .write_packet(if_id, p.ts_ns, p.data, p.orig_len, p.vlan, p.outbound)
            .map_err(|e| Error::io(&f.partial, "writing", e))?;
        self.stats.packets += 1;
        self.stats.bytes += f.writer.bytes() - before;
        if f.writer.bytes() >= self.cfg.rotate_bytes {
            self.close()?;
        }
        Ok(())
    }

    fn add(&mut self, id: u64, info: InterfaceInfo) -> Result<()> {
        if let Some(f) = self.file.as_mut() {
            let before = f.writer.bytes();
            let i = f
                .writer
                .add_interface(&info)
                .map_err(|e| Error::io(&f.partial, "writing", e))?;
            self.stats.bytes += f.writer.bytes() - before;
            f.if_ids.push((id, i));
        }
        self.infos.push((id, info));
        Ok(())
    }

    fn limit_reached(&self) -> Option<StopReason> {
        if self
            .cfg
            .max_packets
            .is_some_and(|m| self.stats.packets >= m)
        {
            return Some(StopReason::MaxPackets);
        }
        if self.cfg.max_bytes.is_some_and(|m| self.stats.bytes >= m) {
            return Some(StopReason::MaxBytes);
        }
        None
    }
}

/// Drains every packet `ring` holds into `sink` (target `id`).
fn drain_all(sink: &mut Sink, id: u64, ring: &mut PacketRing) {
    ring.drain(usize::MAX, |p| {
        if sink.error.is_none()
            && let Err(e) = sink.packet(id, p)
        {
            sink.error = Some(e);
        }
    });
}

/// A removed target's ring, kept until the kernel has handed over its partly filled block.
struct Retiring {
    id: u64,
    ring: Box<PacketRing>,
    at: Instant,
}

/// Runs the capture loop until stopped; closes the last file and waits for the writer thread
/// before returning.
///
/// `block_timeout` is the rings' block timeout: a partly filled block reaches user space only
/// after it, so a stopping capture waits this long (plus a margin) before the last drain, and a
/// removed target's ring is drained for the last time that long after its removal (meanwhile
/// the other rings are served as usual).
pub(crate) fn run(
    cfg: EngineConfig,
    block_timeout: Duration,
    control: mpsc::Receiver<Control>,
    waker: Arc<Waker>,
    closed: UnboundedSender<ClosedFile>,
    spool_used: Arc<AtomicU64>,
    live: Option<Live>,
) -> Result<EngineStats> {
    let seq = cfg.first_seq;
    let files = Writer::start(closed, cfg.direct_io, live)?;
    let mut sink = Sink {
        cfg,
        infos: Vec::new(),
        file: None,
        seq,
        stats: EngineStats::default(),
        files,
        spool_used,
        error: None,
    };
    let stats = run_loop(&mut sink, block_timeout, &control, &waker)?;
    sink.files.finish()?;
    Ok(stats)
}

fn run_loop(
    sink: &mut Sink,
    block_timeout: Duration,
    control: &mpsc::Receiver<Control>,
    waker: &Waker,
) -> Result<EngineStats> {
    let started = Instant::now();
    let mut written_out = started;
    let retire_after = block_timeout + Duration::from_millis(20);
    let mut rings: Vec<(u64, Box<PacketRing>)> = Vec::new();
    let mut retiring: Vec<Retiring> = Vec::new();
    let mut removed = RingStats::default();
    let mut polls = nightcap_sys::PollSet::new();
    let retire = |sink: &mut Sink, mut r: Retiring, removed: &mut RingStats| {
        drain_all(sink, r.id, &mut r.ring);
        if let Ok(s) = r.ring.stats() {
            removed.drops += s.drops;
            removed.packets += s.packets;
        }
        sink.infos.retain(|(t, _)| *t != r.id);
    };
    let stop = loop {
        // Control messages.
        let mut stop_now = None;
        loop {
            match control.try_recv() {
                Ok(Control::Add { id, ring, info }) => {
                    sink.add(id, info)?;
                    rings.push((id, ring));
                }
                Ok(Control::Remove { id }) => {
                    if let Some(pos) = rings.iter().position(|(r, _)| *r == id) {
                        // The kernel hands over its partly filled block after the block
                        // timeout; until then the ring is drained like the others.
                        let (_, ring) = rings.remove(pos);
                        retiring.push(Retiring {
                            id,
                            ring,
                            at: Instant::now() + retire_after,
                        });
                    }
                }
                Ok(Control::Stop) | Err(mpsc::TryRecvError::Disconnected) => {
                    stop_now = Some(StopReason::Requested);
                    break;
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        if let Some(r) = stop_now {
            break r;
        }
        if sink.cfg.duration.is_some_and(|d| started.elapsed() >= d) {
            break StopReason::Duration;
        }
        if let Some(e) = sink.files.take_error() {
            return Err(e);
        }
        // Wait for a block on any ring, a control message, or the next deadline.
        let mut wait = Duration::from_millis(POLL_MS);
        if let Some(d) = sink.cfg.duration {
            wait = wait.min(d.saturating_sub(started.elapsed()));
        }
        if let (Some(every), Some(f)) = (sink.cfg.rotate_every, sink.file.as_ref()) {
            wait = wait.min(every.saturating_sub(f.opened.elapsed()));
        }
        if let Some(first) = retiring.iter().map(|r| r.at).min() {
            wait = wait.min(first.saturating_duration_since(Instant::now()));
        }
        if sink
            .file
            .as_mut()
            .is_some_and(|f| f.writer.get_mut().pending())
        {
            wait = wait.min(WRITE_OUT.saturating_sub(written_out.elapsed()));
        }
        polls.clear();
        let woken = polls.push(waker.as_fd());
        for r in rings
            .iter()
            .map(|(_, r)| r)
            .chain(retiring.iter().map(|r| &r.ring))
        {
            polls.push(r.fd());
        }
        let timeout = wait.max(Duration::from_millis(1));
        if let Err(e) = polls.wait(timeout)
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            warn!(error = %e, "poll failed");
        }
        if polls.ready(woken) {
            waker.clear();
        }
        let mut limit = None;
        let all = rings
            .iter_mut()
            .map(|(id, r)| (*id, r))
            .chain(retiring.iter_mut().map(|r| (r.id, &mut r.ring)));
        for (id, ring) in all {
            ring.drain(64, |p| {
                if sink.error.is_some() || limit.is_some() {
                    return;
                }
                if let Err(e) = sink.packet(id, p) {
                    sink.error = Some(e);
                }
                limit = sink.limit_reached();
            });
        }
        if let Some(e) = sink.error.take() {
            return Err(e);
        }
        if let Some(r) = limit {
            break r;
        }
        let now = Instant::now();
        if now.duration_since(written_out) >= WRITE_OUT {
            written_out = now;
            if let Some(f) = sink.file.as_mut() {
                f.writer
                    .get_mut()
                    .write_out()
                    .map_err(|e| Error::io(&f.partial, "writing", e))?;
            }
        }
        while let Some(pos) = retiring.iter().position(|r| r.at <= now) {
            let r = retiring.swap_remove(pos);
            retire(sink, r, &mut removed);
        }
        if let Some(e) = sink.error.take() {
            return Err(e);
        }
        if let (Some(every), Some(f)) = (sink.cfg.rotate_every, sink.file.as_ref())
            && f.opened.elapsed() >= every
        {
            sink.close()?;
        }
    };
    // Final pass: what the rings hold now belongs to the capture (unless a limit stopped it).
    if stop == StopReason::Requested || stop == StopReason::Duration {
        if !rings.is_empty() || !retiring.is_empty() {
            // The kernel hands over a partly filled block only after the block timeout.
            std::thread::sleep(retire_after);
        }
        for (id, ring) in rings.iter_mut() {
            drain_all(sink, *id, ring);
        }
        for r in retiring.drain(..) {
            retire(sink, r, &mut removed);
        }
        if let Some(e) = sink.error.take() {
            return Err(e);
        }
    }
    sink.close()?;
    let mut drops = removed.drops;
    for (_, ring) in rings.iter_mut() {
        drops += ring.stats().map(|s| s.drops).unwrap_or(0);
    }
    for r in retiring.iter_mut() {
        drops += r.ring.stats().map(|s| s.drops).unwrap_or(0);
    }
    sink.stats.ring_drops = drops;
    sink.stats.stop = stop;
    Ok(sink.stats)
}
