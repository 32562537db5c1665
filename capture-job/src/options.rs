//! Flags → options, in one place: the engine, ring, spool and upload settings of a capture.
//!
//! Standalone mode takes the filter, rotation and limits from the flags ([`standalone`]); the
//! Kubernetes and local modes take them from the PacketCapture's accepted spec
//! ([`from_spec`]). Both share the ring, spool and upload settings, the pcapng comments and the
//! checks clap cannot make (ranges, powers of two), all made before anything is created.

use std::{path::PathBuf, time::Duration};

use nightcap_api::{
    PacketCaptureSpec,
    capture::{DEFAULT_SNAP_LEN, MAX_SNAP_LEN, MIN_SNAP_LEN},
    filter,
};
use nightcap_ebpf::RingConfig;
use nightcap_storage::UploadOptions;

use crate::{
    CaptureArgs, CaptureOptions, Error, Result,
    engine::{EngineConfig, FileIdentity},
    spool::UploaderConfig,
};

/// Ring block timeout of standalone mode: a partly filled block reaches user space after this
/// long (libpcap uses tcpdump's 1 s timeout too): a quiet capture wakes once a second; stopping
/// waits this long for the last block.
const STANDALONE_BLOCK_TIMEOUT_MS: u32 = 1000;
/// Ring block timeout of the Kubernetes and local modes (their status reports count packets).
const FOLLOW_BLOCK_TIMEOUT_MS: u32 = 100;
/// Rotation of a PacketCapture without `rotation`.
const DEFAULT_ROTATE_BYTES: u64 = 100 << 20;
const DEFAULT_ROTATE_SECONDS: u32 = 300;
/// Longest wait between upload retries.
const MAX_UPLOAD_BACKOFF: Duration = Duration::from_secs(5);

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// Upload settings from the flags: memory stays near the multipart threshold or
/// part size × (parallel parts + 1), whichever is larger.
pub(crate) fn upload(args: &CaptureArgs) -> Result<UploadOptions> {
    if args.upload_part_size < 5 << 20 {
        return Err(invalid(
            "--upload-part-size must be at least 5MiB (the S3 minimum)",
        ));
    }
    Ok(UploadOptions {
        multipart_threshold: args.multipart_threshold,
        part_size: usize::try_from(args.upload_part_size)
            .map_err(|_| invalid("--upload-part-size is too large"))?,
        max_concurrent_parts: args.upload_parallel_parts.max(1),
        ..UploadOptions::default()
    })
}

fn ring(args: &CaptureArgs, block_timeout_ms: u32) -> Result<RingConfig> {
    Ok(RingConfig {
        block_size: u32::try_from(args.ring_block_size)
            .ok()
            .filter(|b| b.is_power_of_two() && *b >= 4096)
            .ok_or_else(|| invalid("--ring-block-size must be a power of two from 4KiB to 2GiB"))?,
        block_count: args.ring_blocks.max(1),
        block_timeout_ms,
    })
}

/// The interface comments: node and capture.
fn comments(identity: &FileIdentity) -> Vec<String> {
    vec![
        format!("node: {}", identity.node),
        format!("capture: {}/{}", identity.namespace, identity.capture),
        format!("capture-uid: {}", identity.uid),
    ]
}

/// The section header comment: the filter as given.
fn shb_comment(filter: &str) -> String {
    if filter.is_empty() {
        "filter: (none, every packet)".into()
    } else {
        format!("filter: {filter}")
    }
}

/// The object-key identity of a standalone capture: the flags, a new UID and the host name by
/// default; checked now, so a bad --name does not fail at the first packet.
pub(crate) fn identity(args: &CaptureArgs) -> Result<FileIdentity> {
    let identity = FileIdentity {
        namespace: args.namespace.clone(),
        capture: args.name.clone(),
        uid: args
            .uid
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        node: args.node.clone().unwrap_or_else(nightcap_sys::host_name),
    };
    nightcap_storage::CaptureKey::new(
        &identity.namespace,
        &identity.capture,
        &identity.uid,
        &identity.node,
        chrono::Utc::now(),
        0,
    )?;
    Ok(identity)
}

/// Standalone mode: everything from the flags.
pub(crate) fn standalone(args: &CaptureArgs, identity: FileIdentity) -> Result<CaptureOptions> {
    let table = filter::compile(args.filter.as_deref(), &[])?;
    if !(MIN_SNAP_LEN..=MAX_SNAP_LEN).contains(&args.snaplen) {
        return Err(invalid(format!(
            "--snaplen must be {MIN_SNAP_LEN}-{MAX_SNAP_LEN}, is {}",
            args.snaplen
        )));
    }
    if args.rotate_bytes < 4096 {
        return Err(invalid("--rotate-bytes must be at least 4KiB"));
    }
    if args.rotate_seconds == 0 {
        return Err(invalid("--rotate-seconds must be at least 1"));
    }
    if args.max_files == Some(0) {
        return Err(invalid("--max-files must be at least 1"));
    }
    let spool_dir = args.spool_dir.clone().unwrap_or_else(|| {
        default_spool_root().join(format!("{}-{}", identity.namespace, identity.capture))
    });
    assemble(
        args,
        identity,
        Policy {
            table,
            filter_text: args.filter.clone().unwrap_or_default(),
            snaplen: args.snaplen,
            rotate_bytes: args.rotate_bytes,
            rotate_every: Duration::from_secs(args.rotate_seconds),
            duration: args.duration,
            max_bytes: args.max_bytes,
            max_packets: args.max_packets,
            max_files: args.max_files,
            spool_dir,
            block_timeout_ms: STANDALONE_BLOCK_TIMEOUT_MS,
        },
    )
}

/// The Kubernetes and local modes: filter, snap length, rotation and limits from the capture's
/// spec, the window left from its start; ring, spool and uploads from the flags.
pub(crate) fn from_spec(
    args: &CaptureArgs,
    spec: &PacketCaptureSpec,
    identity: FileIdentity,
    window: Option<Duration>,
) -> Result<CaptureOptions> {
    let table = filter::compile(spec.expression.as_deref(), &spec.filters)?;
    let rotation = spec.rotation.clone().unwrap_or_default();
    // One directory per (capture, node): a restarted container finds its own leftovers, and
    // captures sharing a volume never mix files.
    let spool_dir = args
        .spool_dir
        .clone()
        .unwrap_or_else(default_spool_root)
        .join(format!("{}-{}", identity.uid, identity.node));
    let mut filter_text = spec.expression.clone().unwrap_or_default();
    if !spec.filters.is_empty() {
        let filters = serde_json::to_string(&spec.filters).unwrap_or_default();
        filter_text = format!("{filter_text} filters={filters}")
            .trim()
            .to_string();
    }
    assemble(
        args,
        identity,
        Policy {
            table,
            filter_text,
            snaplen: spec.snap_len.unwrap_or(DEFAULT_SNAP_LEN),
            rotate_bytes: rotation.max_file_bytes.unwrap_or(DEFAULT_ROTATE_BYTES),
            rotate_every: Duration::from_secs(
                rotation
                    .max_file_seconds
                    .unwrap_or(DEFAULT_ROTATE_SECONDS)
                    .into(),
            ),
            duration: window,
            // Per node; the scheduler enforces the capture-wide totals.
            max_bytes: spec.max_bytes,
            max_packets: spec.max_packets,
            max_files: rotation.max_files,
            spool_dir,
            block_timeout_ms: FOLLOW_BLOCK_TIMEOUT_MS,
        },
    )
}

/// What the capture's source (the flags, or the PacketCapture) decides.
struct Policy {
    table: filter::RuleTable,
    filter_text: String,
    snaplen: u32,
    rotate_bytes: u64,
    rotate_every: Duration,
    duration: Option<Duration>,
    max_bytes: Option<u64>,
    max_packets: Option<u64>,
    max_files: Option<u32>,
    spool_dir: PathBuf,
    block_timeout_ms: u32,
}

/// The options of a capture: its policy plus the ring, spool and upload flags.
fn assemble(args: &CaptureArgs, identity: FileIdentity, p: Policy) -> Result<CaptureOptions> {
    Ok(CaptureOptions {
        table: p.table,
        comments: comments(&identity),
        engine: EngineConfig {
            shb_comment: shb_comment(&p.filter_text),
            snaplen: p.snaplen,
            rotate_bytes: p.rotate_bytes,
            rotate_every: Some(p.rotate_every),
            duration: p.duration,
            max_bytes: p.max_bytes,
            max_packets: p.max_packets,
            spool_dir: p.spool_dir,
            spool_max_bytes: args.spool_max_bytes,
            identity,
            first_seq: 0,
            direct_io: args.spool_direct_io,
        },
        ring: ring(args, p.block_timeout_ms)?,
        upload: UploaderConfig {
            max_files: p.max_files,
            grace: args.upload_grace,
            max_backoff: MAX_UPLOAD_BACKOFF,
            live: args.upload_while_writing,
        },
    })
}

fn default_spool_root() -> PathBuf {
    std::env::temp_dir().join("nightcap-spool")
}

#[cfg(test)]
mod tests {
    use nightcap_api::capture::Rotation;

    use super::*;

    fn parse(extra: &[&str]) -> CaptureArgs {
        crate::cli::tests::parse(extra).expect("valid flags")
    }

    fn id() -> FileIdentity {
        FileIdentity {
            namespace: "ns".into(),
            capture: "c".into(),
            uid: "u1".into(),
            node: "n1".into(),
        }
    }

    #[test]
    fn defaults_are_write_behind_and_one_part_in_flight() {
        let args = parse(&[]);
        assert!(!args.spool_direct_io, "write-behind spool by default");
        assert!(
            args.upload_while_writing,
            "files are uploaded while written"
        );
        let up = upload(&args).expect("defaults are valid");
        assert_eq!(up.max_concurrent_parts, 1);
        assert_eq!(up.part_size, 5 << 20);
        assert_eq!(up.multipart_threshold, 8 << 20);
        assert!(
            up.direct_io,
            "uploads read with O_DIRECT: the file is out of the cache by then"
        );
        let direct = parse(&["--spool-direct-io=true"]);
        assert!(direct.spool_direct_io);
        assert!(upload(&direct).expect("valid").direct_io);
        assert_eq!(
            upload(&parse(&["--upload-parallel-parts", "3"]))
                .expect("valid")
                .max_concurrent_parts,
            3
        );
    }

    #[test]
    fn values_clap_cannot_check_are_refused_with_the_flag() {
        for (flags, want) in [
            (&["--upload-part-size", "4MiB"][..], "--upload-part-size"),
            (&["--rotate-bytes", "4095"], "--rotate-bytes"),
            (&["--rotate-seconds", "0"], "--rotate-seconds"),
            (&["--max-files", "0"], "--max-files"),
            (&["--snaplen", "10"], "--snaplen"),
            (&["--ring-block-size", "12KiB"], "--ring-block-size"),
            (&["--ring-block-size", "4GiB"], "--ring-block-size"),
        ] {
            let args = parse(flags);
            let err = upload(&args)
                .and_then(|_| standalone(&args, id()))
                .expect_err(want)
                .to_string();
            assert!(err.contains(want), "{flags:?}: {err}");
        }
        let spec = PacketCaptureSpec::default();
        let err = from_spec(&parse(&["--ring-block-size", "3MiB"]), &spec, id(), None)
            .expect_err("not a power of two")
            .to_string();
        assert!(err.contains("--ring-block-size"), "{err}");
    }

    #[test]
    fn standalone_takes_the_flags() {
        let args = parse(&[
            "--filter",
            "udp port 53",
            "--duration",
            "7d",
            "--rotate-bytes",
            "10MB",
            "--rotate-seconds",
            "60",
            "--max-files",
            "4",
            "--max-bytes",
            "1GB",
            "--spool-dir",
            "/spool",
            "--upload-grace",
            "90s",
        ]);
        let o = standalone(&args, id()).expect("valid");
        let e = &o.engine;
        assert_eq!(e.shb_comment, "filter: udp port 53");
        assert_eq!(e.duration, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(e.rotate_bytes, 10_000_000);
        assert_eq!(e.rotate_every, Some(Duration::from_secs(60)));
        assert_eq!(e.max_bytes, Some(1_000_000_000));
        assert_eq!(e.spool_dir, PathBuf::from("/spool"));
        assert_eq!(e.spool_max_bytes, 1 << 30);
        assert_eq!(o.upload.max_files, Some(4));
        assert_eq!(o.upload.grace, Duration::from_secs(90));
        assert!(o.upload.live);
        assert_eq!(o.ring.block_timeout_ms, STANDALONE_BLOCK_TIMEOUT_MS);
        assert_eq!((o.ring.block_size, o.ring.block_count), (1 << 20, 8));
        assert_eq!(o.comments, ["node: n1", "capture: ns/c", "capture-uid: u1"]);
        let plain = standalone(&parse(&[]), id()).expect("valid");
        assert_eq!(plain.engine.shb_comment, "filter: (none, every packet)");
        assert_eq!(
            plain.engine.spool_dir,
            std::env::temp_dir().join("nightcap-spool").join("ns-c")
        );
    }

    #[test]
    fn the_kubernetes_mode_takes_the_spec() {
        let spec = PacketCaptureSpec {
            expression: Some("tcp port 443".into()),
            snap_len: Some(128),
            max_bytes: Some(1 << 20),
            rotation: Some(Rotation {
                max_file_bytes: Some(1 << 16),
                max_file_seconds: Some(30),
                max_files: Some(2),
            }),
            ..PacketCaptureSpec::default()
        };
        let args = parse(&["--rotate-bytes", "1GiB", "--spool-dir", "/spool"]);
        let window = Some(Duration::from_secs(42));
        let o = from_spec(&args, &spec, id(), window).expect("valid");
        let e = &o.engine;
        assert_eq!(e.shb_comment, "filter: tcp port 443");
        assert_eq!((e.snaplen, e.rotate_bytes), (128, 1 << 16));
        assert_eq!(e.rotate_every, Some(Duration::from_secs(30)));
        assert_eq!((e.duration, e.max_bytes), (window, Some(1 << 20)));
        assert_eq!(e.spool_dir, PathBuf::from("/spool/u1-n1"));
        assert_eq!(o.upload.max_files, Some(2));
        assert_eq!(o.ring.block_timeout_ms, FOLLOW_BLOCK_TIMEOUT_MS);
        let plain = from_spec(&args, &PacketCaptureSpec::default(), id(), None).expect("valid");
        assert_eq!(plain.engine.shb_comment, "filter: (none, every packet)");
        assert_eq!(plain.engine.snaplen, DEFAULT_SNAP_LEN);
        assert_eq!(plain.engine.rotate_bytes, DEFAULT_ROTATE_BYTES);
        assert_eq!(plain.engine.rotate_every, Some(Duration::from_secs(300)));
        assert_eq!(plain.upload.max_files, None);
    }
}
