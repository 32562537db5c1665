//! nightcap-capture-job: the process that turns packets into files in object storage.
//!
//! A [`Capture`] loads the eBPF filter once, opens an AF_PACKET ring per target (an interface
//! here, a named network namespace, or the namespace holding a pod IP), writes pcapng files in a
//! bounded spool, rotates them by size or age, and hands each closed file to the storage
//! [`Uploader`](nightcap_storage::Uploader). Targets can be added and removed while it runs
//! (the Kubernetes mode does that as pods come and go). [`run`] is `nightcap capture`: the flags
//! ([`CaptureArgs`]) become options in one place (`options`), and run standalone mode (the
//! targets of the flags) or the Kubernetes/local mode (the pods of a PacketCapture).
//!
//! This crate must never delete a spooled file before its upload is confirmed, never widen the
//! user's filter, and never write outside its spool directory and the configured store.

mod capture;
mod cli;
pub mod engine;
mod kube_mode;
mod options;
mod output;
pub mod pcapng;
pub mod spool;
pub mod spooled;
mod standalone;
pub mod target;
mod writer;

use std::{net::IpAddr, path::Path};

pub use capture::{Capture, CaptureOptions, Summary, TargetId};
pub use cli::{Attach, CaptureArgs, KubeArgs};
pub use engine::{EngineStats, FileIdentity, StopReason};
pub use target::{TargetMeta, TargetSpec};

/// Runs `nightcap capture`: the Kubernetes or local mode when the flags name a PacketCapture,
/// standalone mode otherwise. Prints one JSON line with the [`Summary`] when the capture ran.
/// Logging is the binary's (`nightcap_process::init_logging`).
pub fn run(args: CaptureArgs) -> Result<()> {
    if args.follows_a_capture() {
        kube_mode::run(&args)
    } else {
        standalone::run(&args)
    }
}

/// Everything that can go wrong in a capture.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The filter expression or structured filters cannot be compiled.
    #[error("invalid filter: {0}")]
    Filter(#[from] nightcap_api::filter::FilterError),
    /// A target could not be found or opened.
    #[error("target {target}: {source}")]
    Target {
        /// The target as given.
        target: String,
        /// Why.
        #[source]
        source: nightcap_ebpf::Error,
    },
    /// The kernel side failed (filter load, ring).
    #[error(transparent)]
    Kernel(#[from] nightcap_ebpf::Error),
    /// No namespace has an interface with this address.
    #[error(
        "no network namespace on this host has an interface with address {ip}; check the pod \
         runs on this node (kubectl get pod -o wide) or pass --netns"
    )]
    PodIpNotFound {
        /// The address.
        ip: IpAddr,
    },
    /// Several namespaces have it.
    #[error("address {ip} is on several interfaces ({}); pass --netns and --interface", places.join(", "))]
    PodIpAmbiguous {
        /// The address.
        ip: IpAddr,
        /// Where it was found.
        places: Vec<String>,
    },
    /// Storage (configuration, key, upload).
    #[error(transparent)]
    Storage(#[from] nightcap_storage::Error),
    /// A local file operation.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was done.
        action: &'static str,
        /// The file.
        path: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A bad option.
    #[error("{0}")]
    Invalid(String),
    /// The capture was already stopped.
    #[error("the capture has stopped")]
    Stopped,
}

impl Error {
    /// The capability whose absence caused this error, if a permission check failed: the
    /// error repeats until the process is given it.
    pub fn missing_capability(&self) -> Option<&'static str> {
        match self {
            Self::Target { source, .. } | Self::Kernel(source) => source.missing_capability(),
            _ => None,
        }
    }

    pub(crate) fn io(path: &Path, action: &'static str, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.display().to_string(),
            source,
        }
    }
}

/// Nice value of the async runtime's threads (see [`runtime`]).
pub const RUNTIME_NICE: i32 = 10;

/// The async runtime of a capture process: one worker thread plus tokio's blocking pool. They
/// run uploads (reading spool files, talking to storage) and Kubernetes calls at nice
/// [`RUNTIME_NICE`], below the capture and writer threads (nice 0): on a busy node an upload
/// then only takes longer, it does not delay draining the rings. Call [`Capture::start`] from
/// the thread that runs `block_on` (not from a spawned task), so its threads keep nice 0.
/// With `io_idle` (an `O_DIRECT` spool, whose writes wait for the disk) their disk I/O is in the
/// idle class too; a write-behind spool's writes go to the page cache, and reads in the idle
/// class only made uploads wait for writeback (2.4 s instead of 1.0 s to storage at 280 MB/s).
pub(crate) fn runtime(io_idle: bool) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(move || {
            // Without them the process still works, with uploads at the capture's priority.
            let _ = nightcap_sys::set_thread_nice(RUNTIME_NICE);
            if io_idle {
                // The uploader's reads of spool files then wait while the capture's writes are
                // queued.
                let _ = nightcap_sys::set_thread_io_idle();
            }
        })
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start the async runtime: {e}")))
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use nightcap_sys::IoClass;

    /// The calling thread's I/O priority class (`ioprio_get`).
    fn io_class_of_this_thread() -> IoClass {
        nightcap_sys::thread_io_class().expect("ioprio_get")
    }

    #[test]
    fn upload_reads_wait_for_the_captures_writes() {
        for io_idle in [true, false] {
            let rt = super::runtime(io_idle).expect("runtime");
            let (blocking, plain) = rt.block_on(async {
                let blocking = tokio::task::spawn_blocking(io_class_of_this_thread)
                    .await
                    .expect("blocking");
                let plain = std::thread::spawn(io_class_of_this_thread)
                    .join()
                    .expect("thread");
                (blocking, plain)
            });
            assert_eq!(
                blocking == IoClass::Idle,
                io_idle,
                "the blocking pool (spool reads) is in the idle I/O class with an O_DIRECT spool"
            );
            assert_ne!(plain, IoClass::Idle, "the writer's threads are not");
        }
    }

    #[test]
    fn a_refused_permission_names_its_capability_through_the_target() {
        let refused = nightcap_ebpf::Error::Permission {
            action: "socket(AF_PACKET)".into(),
            needs: "CAP_NET_RAW (AF_PACKET sockets; grant NET_RAW)",
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        };
        let e = super::Error::Target {
            target: "host/ncv0".into(),
            source: refused,
        };
        assert_eq!(
            e.missing_capability(),
            Some("CAP_NET_RAW (AF_PACKET sockets; grant NET_RAW)")
        );
        assert!(
            e.to_string().contains("the process lacks CAP_NET_RAW"),
            "{e}"
        );
        let other = super::Error::PodIpNotFound {
            ip: "10.0.0.1".parse().expect("ip"),
        };
        assert_eq!(other.missing_capability(), None);
    }

    fn nice_of_this_thread() -> i32 {
        nightcap_sys::thread_nice().expect("getpriority")
    }

    #[test]
    fn runtime_threads_run_below_the_capture_threads() {
        let rt = super::runtime(false).expect("runtime");
        let (task, blocking, plain) = rt.block_on(async {
            let task = tokio::spawn(async { nice_of_this_thread() })
                .await
                .expect("task");
            let blocking = tokio::task::spawn_blocking(nice_of_this_thread)
                .await
                .expect("blocking");
            // What Capture::start does from block_on: a plain thread keeps nice 0.
            let plain = std::thread::spawn(nice_of_this_thread)
                .join()
                .expect("thread");
            (task, blocking, plain)
        });
        assert_eq!(task, super::RUNTIME_NICE, "async tasks (uploads)");
        assert_eq!(blocking, super::RUNTIME_NICE, "blocking pool (file reads)");
        assert_eq!(plain, 0, "threads started by block_on's thread");
    }
}
