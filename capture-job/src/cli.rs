//! `nightcap capture`: a better tcpdump for a network namespace, writing rotated pcapng files
//! to object storage.

use std::{net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

use nightcap_api::{
    capture::{MAX_SNAP_LEN, MIN_SNAP_LEN},
    filter,
    quantity::{parse_duration, parse_size},
};
use nightcap_ebpf::{RingConfig, netns};
use nightcap_storage::{StoreConfig, UploadOptions, Uploader};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path as StorePath};
use tracing::info;

use crate::{
    Capture, CaptureOptions, Error, Result, Summary,
    engine::{EngineConfig, FileIdentity},
    spool::UploaderConfig,
    target::{self, TargetMeta, TargetSpec},
};

/// Capture packets from an interface or network namespace into rotated pcapng files in object
/// storage. Prints one JSON line with what it did when it ends.
#[derive(Debug, Clone, clap::Args)]
pub struct CaptureArgs {
    /// Interface to capture on: in the current network namespace, or inside --netns
    /// (default there: eth0).
    #[arg(long, short = 'i', env = "NIGHTCAP_INTERFACE")]
    pub interface: Option<String>,
    /// Named network namespace (/var/run/netns/NAME, as `ip netns` creates). Repeatable.
    #[arg(long, env = "NIGHTCAP_NETNS", value_delimiter = ',')]
    pub netns: Vec<String>,
    /// Capture in the network namespace whose interface has this IP (a pod IP). Repeatable.
    #[arg(long = "pod-ip", env = "NIGHTCAP_POD_IP", value_delimiter = ',')]
    pub pod_ip: Vec<IpAddr>,
    /// Filter expression in tcpdump syntax, e.g. 'udp port 53 or tcp port 443'.
    #[arg(long, short = 'f', env = "NIGHTCAP_FILTER")]
    pub filter: Option<String>,
    /// Bytes kept of each packet (64-262144).
    #[arg(long, short = 's', env = "NIGHTCAP_SNAPLEN", default_value_t = MAX_SNAP_LEN)]
    pub snaplen: u32,
    /// Stop after this long (e.g. 30s, 15m). Default: until SIGTERM/SIGINT or a limit.
    #[arg(long, env = "NIGHTCAP_DURATION")]
    pub duration: Option<String>,
    /// Close a file at this size (e.g. 10MB, 64MiB).
    #[arg(long, env = "NIGHTCAP_ROTATE_BYTES", default_value = "100MiB")]
    pub rotate_bytes: String,
    /// Close a file after this many seconds.
    #[arg(long, env = "NIGHTCAP_ROTATE_SECONDS", default_value_t = 300)]
    pub rotate_seconds: u64,
    /// Keep at most this many files in storage (older ones are deleted: a ring).
    #[arg(long, env = "NIGHTCAP_MAX_FILES")]
    pub max_files: Option<u32>,
    /// Stop after writing this many bytes (e.g. 1GB).
    #[arg(long, env = "NIGHTCAP_MAX_BYTES")]
    pub max_bytes: Option<String>,
    /// Stop after writing this many packets.
    #[arg(long, env = "NIGHTCAP_MAX_PACKETS")]
    pub max_packets: Option<u64>,
    /// Where files go: file:///dir or s3://bucket/prefix (endpoint and credentials from the
    /// AWS_* environment: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION, AWS_ALLOW_HTTP; AWS_UNSIGNED_PAYLOAD, default true for https endpoints only,
    /// skips SigV4's SHA-256 of every uploaded byte where TLS protects them).
    #[arg(long, short = 'o', env = "NIGHTCAP_OUTPUT")]
    pub output: String,
    /// Local spool for files until storage confirms them (default: $TMPDIR/nightcap-spool/
    /// NAMESPACE-NAME). Files an earlier run left there are uploaded first.
    #[arg(long, env = "NIGHTCAP_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Most bytes the spool may hold while storage is unreachable; beyond it packets are
    /// dropped (and counted) rather than files deleted.
    #[arg(long, env = "NIGHTCAP_SPOOL_MAX_BYTES", default_value = "1GiB")]
    pub spool_max_bytes: String,
    /// `false` (default): write spool files through the page cache with write-behind (about
    /// 32 MiB of each file cached), which rides out disk stalls as tcpdump does. `true`: write
    /// them with O_DIRECT (uploads then read in the idle I/O class): the least CPU, and other
    /// processes' page cache cannot slow it down, but every disk stall longer than the ring
    /// reaches the capture. A file system without O_DIRECT gets the page cache either way.
    /// Uploads read closed files with O_DIRECT either way.
    #[arg(long, env = "NIGHTCAP_SPOOL_DIRECT_IO", default_value_t = false, action = clap::ArgAction::Set)]
    pub spool_direct_io: bool,
    /// `true` (default): upload each file while it is written — the writer's buffers, once
    /// written to the spool file, are sent as the file's parts (nothing copied or read back),
    /// so a closed file is in storage as soon as its last part is (tens of ms instead of
    /// hundreds at 1 Gbit/s), with the SHA-256 computed by the upload. Objects larger than one
    /// part then carry no `nightcap-sha256`/packets/end metadata (unknown when the upload
    /// starts; the PacketCapture status has them). An upload that falls behind the capture
    /// (its buffers beyond (--upload-parallel-parts + 1) parts) keeps the parts it sent and
    /// reads the rest from the spool file once the file is closed. A file whose upload fails,
    /// and every file while uploads are failing (until one succeeds), is uploaded from the
    /// spool once closed. The spool copy of a file uploaded this way is neither written back
    /// (its last 128 MiB) nor synced: it is deleted once in storage. `false`: upload closed
    /// files from the spool.
    #[arg(long, env = "NIGHTCAP_UPLOAD_WHILE_WRITING", default_value_t = true, action = clap::ArgAction::Set)]
    pub upload_while_writing: bool,
    /// Namespace component of the object keys.
    #[arg(long, env = "NIGHTCAP_NAMESPACE", default_value = "local")]
    pub namespace: String,
    /// Capture name (object keys, pcapng comments).
    #[arg(long, env = "NIGHTCAP_CAPTURE_NAME", default_value = "capture")]
    pub name: String,
    /// Capture UID (object keys). Default: a new random UUID.
    #[arg(long, env = "NIGHTCAP_CAPTURE_UID")]
    pub uid: Option<String>,
    /// Node name (object keys, pcapng comments). Default: the host name.
    #[arg(long, env = "NIGHTCAP_NODE")]
    pub node: Option<String>,
    /// After the capture ends, keep retrying uploads this long before giving up (files stay
    /// in the spool for the next run).
    #[arg(long, env = "NIGHTCAP_UPLOAD_GRACE", default_value = "5m")]
    pub upload_grace: String,
    /// Files above this size are uploaded in parts (a smaller file is read into memory whole).
    #[arg(long, env = "NIGHTCAP_MULTIPART_THRESHOLD", default_value = "8MiB")]
    pub multipart_threshold: String,
    /// Part size of multipart uploads (S3 needs at least 5 MiB).
    #[arg(long, env = "NIGHTCAP_UPLOAD_PART_SIZE", default_value = "5MiB")]
    pub upload_part_size: String,
    /// Parts uploaded at once (the next part is read meanwhile). Upload memory is about part
    /// size × (parts + 1); raise it for a store far away (high round-trip time).
    #[arg(long, env = "NIGHTCAP_UPLOAD_PARALLEL_PARTS", default_value_t = 1)]
    pub upload_parallel_parts: usize,
    /// Ring block size per target (power of two).
    #[arg(long, env = "NIGHTCAP_RING_BLOCK_SIZE", default_value = "1MiB")]
    pub ring_block_size: String,
    /// Ring blocks per target.
    #[arg(long, env = "NIGHTCAP_RING_BLOCKS", default_value_t = 8)]
    pub ring_blocks: u32,
    /// Kubernetes mode (what a capture Job runs).
    #[command(flatten)]
    pub kube: crate::KubeArgs,
}

/// Upload settings from the flags: memory stays near the multipart threshold or
/// part size × (parallel parts + 1), whichever is larger.
pub(crate) fn upload_options(args: &CaptureArgs) -> Result<UploadOptions> {
    let part_size = size("upload-part-size", &args.upload_part_size)?;
    if part_size < 5 << 20 {
        return Err(Error::Invalid(
            "--upload-part-size must be at least 5MiB (the S3 minimum)".into(),
        ));
    }
    Ok(UploadOptions {
        multipart_threshold: size("multipart-threshold", &args.multipart_threshold)?,
        part_size: usize::try_from(part_size)
            .map_err(|_| Error::Invalid("--upload-part-size is too large".into()))?,
        max_concurrent_parts: args.upload_parallel_parts.max(1),
        ..UploadOptions::default()
    })
}

fn size(flag: &str, text: &str) -> Result<u64> {
    parse_size(text).map_err(|e| Error::Invalid(format!("--{flag}: {e}")))
}

fn duration(flag: &str, text: &str) -> Result<Duration> {
    parse_duration(text).map_err(|e| Error::Invalid(format!("--{flag}: {e}")))
}

fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let cleaned: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches(|c| c == '-' || c == '.').to_owned();
    if cleaned.is_empty() {
        "node".into()
    } else {
        cleaned
    }
}

/// Everything checked before anything is created.
struct Plan {
    opts: CaptureOptions,
    targets: Vec<TargetSpec>,
    store: StoreConfig,
    upload: UploadOptions,
}

fn plan(args: &CaptureArgs) -> Result<Plan> {
    let table = filter::compile(args.filter.as_deref(), &[])?;
    if !(MIN_SNAP_LEN..=MAX_SNAP_LEN).contains(&args.snaplen) {
        return Err(Error::Invalid(format!(
            "--snaplen must be {MIN_SNAP_LEN}-{MAX_SNAP_LEN}, is {}",
            args.snaplen
        )));
    }
    let rotate_bytes = size("rotate-bytes", &args.rotate_bytes)?;
    if rotate_bytes < 4096 {
        return Err(Error::Invalid(
            "--rotate-bytes must be at least 4KiB".into(),
        ));
    }
    if args.rotate_seconds == 0 {
        return Err(Error::Invalid("--rotate-seconds must be at least 1".into()));
    }
    if args.max_files == Some(0) {
        return Err(Error::Invalid("--max-files must be at least 1".into()));
    }
    let block_size = size("ring-block-size", &args.ring_block_size)?;
    let ring = RingConfig {
        block_size: u32::try_from(block_size)
            .ok()
            .filter(|b| b.is_power_of_two() && *b >= 4096)
            .ok_or_else(|| {
                Error::Invalid("--ring-block-size must be a power of two from 4KiB to 2GiB".into())
            })?,
        block_count: args.ring_blocks.max(1),
        // A partly filled block reaches user space after this long (libpcap uses tcpdump's
        // 1 s timeout too): a quiet capture wakes once a second; stopping waits this long
        // for the last block.
        block_timeout_ms: 1000,
    };
    let mut targets = Vec::new();
    for name in &args.netns {
        targets.push(TargetSpec::Netns {
            name: name.clone(),
            interface: args.interface.clone(),
        });
    }
    for ip in &args.pod_ip {
        targets.push(TargetSpec::PodIp(*ip));
    }
    if targets.is_empty() {
        match &args.interface {
            Some(i) => targets.push(TargetSpec::Interface(i.clone())),
            None => {
                return Err(Error::Invalid(
                    "nothing to capture: pass --interface IF, --netns NAME or --pod-ip IP".into(),
                ));
            }
        }
    }
    // Resolve every target and check its interface exists now, before anything is created.
    for t in &targets {
        let r = target::resolve(t)?;
        let ifaces = netns::run_in(r.netns.as_deref(), netns::interfaces).map_err(|source| {
            Error::Target {
                target: r.label(),
                source,
            }
        })?;
        if !ifaces.contains_key(&r.interface) {
            return Err(Error::Invalid(format!(
                "no interface {:?} in network namespace {} (it has: {}); pass --interface",
                r.interface,
                r.netns_label,
                ifaces.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let store = StoreConfig::from_url(&args.output)?;
    let identity = FileIdentity {
        namespace: args.namespace.clone(),
        capture: args.name.clone(),
        uid: args
            .uid
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        node: args.node.clone().unwrap_or_else(host_name),
    };
    // Validate the key components now (a bad --name must not fail at the first packet).
    nightcap_storage::CaptureKey::new(
        &identity.namespace,
        &identity.capture,
        &identity.uid,
        &identity.node,
        chrono::Utc::now(),
        0,
    )?;
    let spool_dir = args.spool_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir()
            .join("nightcap-spool")
            .join(format!("{}-{}", identity.namespace, identity.capture))
    });
    let comments = vec![
        format!("node: {}", identity.node),
        format!("capture: {}/{}", identity.namespace, identity.capture),
        format!("capture-uid: {}", identity.uid),
    ];
    let shb_comment = match &args.filter {
        Some(f) => format!("filter: {f}"),
        None => "filter: (none, every packet)".into(),
    };
    Ok(Plan {
        opts: CaptureOptions {
            table,
            engine: EngineConfig {
                shb_comment,
                snaplen: args.snaplen,
                rotate_bytes,
                rotate_every: Some(Duration::from_secs(args.rotate_seconds)),
                duration: args
                    .duration
                    .as_deref()
                    .map(|d| duration("duration", d))
                    .transpose()?,
                max_bytes: args
                    .max_bytes
                    .as_deref()
                    .map(|b| size("max-bytes", b))
                    .transpose()?,
                max_packets: args.max_packets,
                spool_dir,
                spool_max_bytes: size("spool-max-bytes", &args.spool_max_bytes)?,
                identity,
                first_seq: 0,
                direct_io: args.spool_direct_io,
            },
            ring,
            upload: UploaderConfig {
                max_files: args.max_files,
                grace: duration("upload-grace", &args.upload_grace)?,
                max_backoff: Duration::from_secs(5),
                live: args.upload_while_writing,
            },
            comments,
        },
        targets,
        store,
        upload: upload_options(args)?,
    })
}

/// Checks a local output directory is writable (an S3 store may be down at start: the spool
/// covers that).
async fn probe(store: &Arc<dyn ObjectStore>, output: &str) -> Result<()> {
    let path = StorePath::from(format!(".nightcap-write-test-{}", std::process::id()));
    store
        .put(&path, PutPayload::from_static(b"nightcap"))
        .await
        .map_err(|e| Error::Invalid(format!("cannot write to {output}: {e}")))?;
    store
        .delete(&path)
        .await
        .map_err(|e| Error::Invalid(format!("cannot delete from {output}: {e}")))
}

/// Runs `nightcap capture`: prints one JSON line with the [`Summary`] when the capture ran;
/// fails (exit ≠ 0) on bad input before anything is created, or when files could not be
/// uploaded.
pub fn run(args: CaptureArgs) -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    if args.kube.capture.is_some() || args.kube.capture_file.is_some() {
        return crate::kube_mode::run(args);
    }
    let plan = plan(&args)?;
    let runtime = crate::runtime(args.spool_direct_io)?;
    let summary = runtime.block_on(capture(plan, &args.output))?;
    println!(
        "{}",
        serde_json::to_string(&summary).map_err(|e| Error::Invalid(e.to_string()))?
    );
    if !summary.spool_left.is_empty() {
        return Err(Error::Invalid(format!(
            "{} file(s) could not be uploaded and remain in the spool; run again with the same \
             --spool-dir to upload them",
            summary.spool_left.len()
        )));
    }
    Ok(())
}

/// The uploader for an opened store: a local directory gets closed files by hard link where the
/// spool is on the same file system (no copy), everything else gets them uploaded.
pub(crate) fn uploader_for(
    config: &StoreConfig,
    opened: &nightcap_storage::Store,
    options: UploadOptions,
) -> Result<Uploader> {
    let up = Uploader::new(opened.store.clone(), opened.prefix.clone(), options);
    Ok(match config {
        StoreConfig::Local(c) => up.link_into(&c.path)?,
        _ => up,
    })
}

async fn capture(plan: Plan, output: &str) -> Result<Summary> {
    // Before anything is captured: a SIGTERM from the first moment on closes and uploads the
    // open file (installed after the first target, a signal in between killed the process).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::Invalid(format!("cannot handle SIGTERM: {e}")))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| Error::Invalid(format!("cannot handle SIGINT: {e}")))?;
    let opened = plan.store.open()?;
    if opened.backend == "local" {
        probe(&opened.store, output).await?;
    }
    let uploader = Arc::new(uploader_for(&plan.store, &opened, plan.upload)?);
    let spool_dir = plan.opts.engine.spool_dir.clone();
    let spool_existed = spool_dir.exists();
    let capture = Capture::start(plan.opts, uploader, opened.store, opened.prefix)?;
    for t in &plan.targets {
        if let Err(e) = capture.add_target(t, &TargetMeta::default()) {
            capture.stop();
            let _ = capture.finish().await;
            if !spool_existed {
                // Only removes an empty directory: nothing half-written is left, nothing else lost.
                let _ = std::fs::remove_dir(&spool_dir);
            }
            return Err(e);
        }
    }
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: closing and uploading the open file."),
        _ = int.recv() => info!("SIGINT: closing and uploading the open file."),
        () = capture.ended() => {}
    }
    capture.stop();
    capture.finish().await
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        args: CaptureArgs,
    }

    fn parse(extra: &[&str]) -> CaptureArgs {
        let base = [
            "nightcap-capture",
            "--interface",
            "lo",
            "--output",
            "file:///nonexistent",
        ];
        let argv = [&base[..], extra].concat();
        Cmd::try_parse_from(argv).expect("valid flags").args
    }

    #[test]
    fn defaults_are_write_behind_and_one_part_in_flight() {
        let args = parse(&[]);
        assert!(!args.spool_direct_io, "write-behind spool by default");
        assert!(
            args.upload_while_writing,
            "files are uploaded while written"
        );
        let up = upload_options(&args).expect("defaults are valid");
        assert_eq!(up.max_concurrent_parts, 1);
        assert_eq!(up.part_size, 5 << 20);
        assert_eq!(up.multipart_threshold, 8 << 20);
        assert!(
            up.direct_io,
            "uploads read with O_DIRECT: the file is out of the cache by then"
        );
        let direct = parse(&["--spool-direct-io=true"]);
        assert!(direct.spool_direct_io);
        assert!(upload_options(&direct).expect("valid").direct_io);
        assert_eq!(
            upload_options(&parse(&["--upload-parallel-parts", "3"]))
                .expect("valid")
                .max_concurrent_parts,
            3
        );
    }
}
