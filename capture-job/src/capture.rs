//! [`Capture`]: the library API (start, add/remove targets, stop, finish).

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Duration,
};

use nightcap_api::filter::RuleTable;
use nightcap_ebpf::{Counters, Filter, PacketRing, RingConfig, View, netns};
use nightcap_storage::{KeyPrefix, Uploader};
use object_store::ObjectStore;
use serde::Serialize;
use tokio::task::JoinHandle as TaskHandle;
use tracing::info;

use crate::{
    Error, Result,
    engine::{self, Control, EngineConfig, EngineStats, StopReason, Waker},
    pcapng::{InterfaceInfo, LINKTYPE_ETHERNET},
    spool::{self, UploadReport, UploaderConfig},
    target::{self, TargetMeta, TargetSpec},
};

/// Handle of an attached target.
pub type TargetId = u64;

/// Everything a capture needs besides its targets.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// The compiled filter.
    pub table: RuleTable,
    /// The capture thread's settings (file names, rotation, limits, spool).
    pub engine: EngineConfig,
    /// Ring size per target.
    pub ring: RingConfig,
    /// Upload settings.
    pub upload: UploaderConfig,
    /// Node name and capture name/uid for the interface comments.
    pub comments: Vec<String>,
}

/// What a finished capture did (the JSON line `nightcap capture` prints).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Packets the filter saw on all targets.
    pub packets_seen: u64,
    /// Packets the filter kept.
    pub packets_matched: u64,
    /// Packets written to files.
    pub packets_written: u64,
    /// Packets lost: ring full (kernel) plus spool full.
    pub packets_dropped: u64,
    /// Bytes written to files: every block, so the files' sizes add up to it.
    pub bytes: u64,
    /// Files closed.
    pub files: u64,
    /// Object keys uploaded and still in storage.
    pub keys: Vec<String>,
    /// Keys deleted again by the max-files ring.
    pub deleted_keys: Vec<String>,
    /// Files left in the spool because storage stayed unreachable.
    pub spool_left: Vec<PathBuf>,
    /// Longest time in milliseconds from a file's rotation to its upload being confirmed
    /// (files of this run; None when none was uploaded).
    pub max_upload_latency_ms: Option<u64>,
    /// Files uploaded while they were written (the rest were read back from the spool).
    pub files_uploaded_live: u64,
    /// Files published into a local store by hard link (no copy: the spool is on the same file
    /// system).
    pub files_linked: u64,
    /// Why it stopped.
    pub stop: StopReason,
}

/// The loaded filter programs: one for sockets on the captured interface itself, one (loaded
/// with the first such target) for sockets on the node's end of a pod's link.
#[derive(Debug)]
struct Filters {
    table: RuleTable,
    own: Filter,
    peer: Option<Filter>,
}

impl Filters {
    fn for_view(&mut self, view: View) -> Result<&mut Filter> {
        match view {
            View::Interface => Ok(&mut self.own),
            View::Peer => {
                if self.peer.is_none() {
                    self.peer = Some(Filter::load_for(
                        &self.table,
                        self.own.snaplen(),
                        View::Peer,
                    )?);
                }
                Ok(self.peer.as_mut().expect("loaded above"))
            }
        }
    }

    fn counters(&self) -> Result<Counters> {
        let mut c = self.own.counters()?;
        if let Some(peer) = &self.peer {
            let p = peer.counters()?;
            c.seen += p.seen;
            c.matched += p.matched;
        }
        Ok(c)
    }
}

/// A running capture.
#[derive(Debug)]
pub struct Capture {
    filters: Arc<Mutex<Filters>>,
    control: mpsc::Sender<Control>,
    waker: Arc<Waker>,
    done: tokio::sync::watch::Receiver<bool>,
    engine: Option<JoinHandle<Result<EngineStats>>>,
    uploads: Option<TaskHandle<UploadReport>>,
    next_id: AtomicU64,
    ring: RingConfig,
    snaplen: u32,
    comments: Vec<String>,
}

impl Capture {
    /// Loads the filter, uploads leftovers from the spool and starts the capture thread (with no
    /// target yet). Must be called inside a tokio runtime.
    pub fn start(
        opts: CaptureOptions,
        uploader: Arc<Uploader>,
        store: Arc<dyn ObjectStore>,
        prefix: KeyPrefix,
    ) -> Result<Self> {
        let filter = Filter::load(&opts.table, opts.engine.snaplen)?;
        std::fs::create_dir_all(&opts.engine.spool_dir)
            .map_err(|e| Error::io(&opts.engine.spool_dir, "creating spool directory", e))?;
        let leftovers = spool::leftovers(&opts.engine.spool_dir)?;
        if !leftovers.is_empty() {
            info!(
                files = leftovers.len(),
                "Uploading files an earlier run left in the spool."
            );
        }
        let counters = spool::SpoolCounters {
            used: Arc::new(AtomicU64::new(leftovers.iter().map(|f| f.bytes).sum())),
            ..Default::default()
        };
        let used = counters.used.clone();
        // Files linked into a local store are not copied at all: nothing to upload while writing.
        let linked = uploader.links_from(&opts.engine.spool_dir);
        let live = (opts.upload.live && !linked).then(|| crate::writer::Live {
            uploader: uploader.clone(),
            runtime: tokio::runtime::Handle::current(),
            storage_failing: counters.storage_failing.clone(),
            active: Arc::default(),
            cache_window: crate::writer::LIVE_CACHE_WINDOW,
        });
        let mut engine_cfg = opts.engine.clone();
        let block_timeout = Duration::from_millis(u64::from(opts.ring.block_timeout_ms));
        // Continue numbering after leftovers of the same capture so keys never collide.
        let max_seen = leftovers.iter().map(|f| f.key.seq + 1).max().unwrap_or(0);
        engine_cfg.first_seq = engine_cfg.first_seq.max(max_seen);
        let (closed_tx, closed_rx) = tokio::sync::mpsc::unbounded_channel();
        let uploads = tokio::spawn(spool::run_uploader(
            leftovers,
            closed_rx,
            uploader,
            store,
            prefix,
            counters,
            opts.upload.clone(),
        ));
        let (control, control_rx) = mpsc::channel();
        let waker = Arc::new(
            Waker::new().map_err(|e| Error::Invalid(format!("cannot create an eventfd: {e}")))?,
        );
        let (done_tx, done) = tokio::sync::watch::channel(false);
        let engine_waker = waker.clone();
        let engine = std::thread::Builder::new()
            .name("nightcap-capture".into())
            .spawn(move || {
                // Started from a runtime thread it would inherit the runtime's lower priority.
                if nightcap_sys::set_thread_nice(0).is_err() {
                    tracing::debug!("The capture thread could not return to nice 0.");
                }
                let r = engine::run(
                    engine_cfg,
                    block_timeout,
                    control_rx,
                    engine_waker,
                    closed_tx,
                    used,
                    live,
                );
                let _ = done_tx.send(true);
                r
            })
            .map_err(|e| Error::Invalid(format!("cannot start the capture thread: {e}")))?;
        Ok(Self {
            filters: Arc::new(Mutex::new(Filters {
                table: opts.table,
                own: filter,
                peer: None,
            })),
            control,
            waker,
            done,
            engine: Some(engine),
            uploads: Some(uploads),
            next_id: AtomicU64::new(1),
            ring: opts.ring,
            snaplen: opts.engine.snaplen,
            comments: opts.comments,
        })
    }

    /// Resolves a target, opens its ring with the filter attached and starts capturing on it.
    /// Blocking (may enter namespaces): from async code call it in `spawn_blocking`.
    pub fn add_target(&self, spec: &TargetSpec, meta: &TargetMeta) -> Result<TargetId> {
        let resolved = target::resolve(spec)?;
        let ring = {
            let mut guard = self.filters.lock().map_err(|_| Error::Stopped)?;
            let filter: &mut Filter = guard.for_view(resolved.view)?;
            let ifname = resolved.interface.clone();
            let cfg = self.ring;
            netns::run_in(resolved.netns.as_deref(), || match resolved.ifindex {
                Some(index) => PacketRing::open_index(index, &ifname, filter, cfg),
                None => PacketRing::open(&ifname, filter, cfg),
            })
            .map_err(|source| Error::Target {
                target: resolved.label(),
                source: match source {
                    nightcap_ebpf::Error::NoInterface { name, .. } => {
                        nightcap_ebpf::Error::NoInterface {
                            name,
                            netns: format!("network namespace {}", resolved.netns_label),
                            netns_arg: resolved
                                .netns
                                .as_ref()
                                .map(|_| format!("-n {} ", resolved.netns_label))
                                .unwrap_or_default(),
                        }
                    }
                    other => other,
                },
            })?
        };
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let mut comments = self.comments.clone();
        if let Some(uid) = &meta.pod_uid {
            comments.push(format!("pod-uid: {uid}"));
        }
        let info = InterfaceInfo {
            name: match &meta.pod {
                Some((ns, pod)) => format!("{ns}/{pod}"),
                None => resolved.label(),
            },
            description: resolved.description(),
            comments,
            link_type: LINKTYPE_ETHERNET,
            snaplen: self.snaplen,
        };
        info!(target = %info.name, id, "Capturing on target.");
        self.control
            .send(Control::Add {
                id,
                ring: Box::new(ring),
                info,
            })
            .map_err(|_| Error::Stopped)?;
        self.waker.wake();
        Ok(id)
    }

    /// Stops capturing on a target (packets already in its ring are written first).
    pub fn remove_target(&self, id: TargetId) -> Result<()> {
        self.control
            .send(Control::Remove { id })
            .map_err(|_| Error::Stopped)?;
        self.waker.wake();
        Ok(())
    }

    /// Asks the capture to stop; [`finish`](Self::finish) then waits for the last uploads.
    pub fn stop(&self) {
        // Already stopped is fine.
        let _ = self.control.send(Control::Stop);
        self.waker.wake();
    }

    /// Resolves when the capture thread has ended (a limit, the duration, or an error).
    pub async fn ended(&self) {
        let mut done = self.done.clone();
        // An error means the sender is gone: the thread ended too.
        let _ = done.wait_for(|d| *d).await;
    }

    /// Whether the capture thread has ended (limit or duration reached, or an error).
    pub fn is_finished(&self) -> bool {
        self.engine.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// The filter's counters so far.
    pub fn counters(&self) -> Result<Counters> {
        let filters = self.filters.lock().map_err(|_| Error::Stopped)?;
        filters.counters()
    }

    /// Waits for the capture thread to end (stop it first, or let a limit end it) and for the
    /// uploads (bounded by the grace period), then reports.
    pub async fn finish(mut self) -> Result<Summary> {
        let engine = self.engine.take().ok_or(Error::Stopped)?;
        let stats = tokio::task::spawn_blocking(move || engine.join())
            .await
            .map_err(|e| Error::Invalid(format!("capture thread: {e}")))?
            .map_err(|_| Error::Invalid("the capture thread panicked".into()))?;
        let report = match self.uploads.take() {
            Some(u) => u
                .await
                .map_err(|e| Error::Invalid(format!("upload task: {e}")))?,
            None => UploadReport::default(),
        };
        let stats = stats?;
        let counters = self.counters()?;
        Ok(Summary {
            packets_seen: counters.seen,
            packets_matched: counters.matched,
            packets_written: stats.packets,
            packets_dropped: stats.ring_drops + stats.spool_drops,
            bytes: stats.bytes,
            files: stats.files,
            keys: report.keys,
            deleted_keys: report.deleted,
            spool_left: report.left,
            max_upload_latency_ms: report
                .max_upload_latency
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            files_uploaded_live: report.uploaded_live,
            files_linked: report.linked,
            stop: stats.stop,
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}
