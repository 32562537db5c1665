//! The flags of `nightcap capture` (and `nightcap-capture`), typed: sizes and durations are
//! parsed by clap with the one grammar of [`nightcap_api::quantity`], so a bad value fails with
//! the flag's name before anything starts. [`crate::run`] dispatches on them; [`crate::options`]
//! turns them into the engine's options. The long form of each flag is in runbooks/capture.md.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use nightcap_api::{
    capture::MAX_SNAP_LEN,
    quantity::{parse_duration, parse_size},
};

/// Capture packets from an interface or network namespace into rotated pcapng files in object
/// storage. Prints one JSON line with what it did when it ends.
#[derive(Debug, Clone, clap::Args)]
pub struct CaptureArgs {
    /// Interface to capture on (inside --netns: default eth0).
    #[arg(long, short = 'i', env = "NIGHTCAP_INTERFACE")]
    pub interface: Option<String>,
    /// Named network namespace (/var/run/netns/NAME). Repeatable.
    #[arg(long, env = "NIGHTCAP_NETNS", value_delimiter = ',')]
    pub netns: Vec<String>,
    /// Capture the pod with this IP (see --attach). Repeatable.
    #[arg(long = "pod-ip", env = "NIGHTCAP_POD_IP", value_delimiter = ',')]
    pub pod_ip: Vec<IpAddr>,
    /// Reach pods by IP from the node's interface (host) or inside their netns.
    #[arg(long, env = "NIGHTCAP_ATTACH", value_enum, default_value_t = Attach::Host)]
    pub attach: Attach,
    /// Filter expression in tcpdump syntax, e.g. 'udp port 53'.
    #[arg(long, short = 'f', env = "NIGHTCAP_FILTER")]
    pub filter: Option<String>,
    /// Bytes kept of each packet (64-262144).
    #[arg(long, short = 's', env = "NIGHTCAP_SNAPLEN", default_value_t = MAX_SNAP_LEN)]
    pub snaplen: u32,
    /// Stop after this long (30s, 15m, 7d). Default: until a signal or a limit.
    #[arg(long, env = "NIGHTCAP_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Close a file at this size (10MB, 64MiB).
    #[arg(long, env = "NIGHTCAP_ROTATE_BYTES", default_value = "100MiB", value_parser = parse_size)]
    pub rotate_bytes: u64,
    /// Close a file after this many seconds.
    #[arg(long, env = "NIGHTCAP_ROTATE_SECONDS", default_value_t = 300)]
    pub rotate_seconds: u64,
    /// Keep at most this many files in storage (a ring).
    #[arg(long, env = "NIGHTCAP_MAX_FILES")]
    pub max_files: Option<u32>,
    /// Stop after writing this many bytes (1GB).
    #[arg(long, env = "NIGHTCAP_MAX_BYTES", value_parser = parse_size)]
    pub max_bytes: Option<u64>,
    /// Stop after writing this many packets.
    #[arg(long, env = "NIGHTCAP_MAX_PACKETS")]
    pub max_packets: Option<u64>,
    /// Where files go: file:///dir or s3://bucket/prefix (S3 settings: AWS_*).
    #[arg(long, short = 'o', env = "NIGHTCAP_OUTPUT")]
    pub output: String,
    /// Local spool until storage has the files (default: under $TMPDIR).
    #[arg(long, env = "NIGHTCAP_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Most bytes the spool holds while storage is down; then packets drop.
    #[arg(long, env = "NIGHTCAP_SPOOL_MAX_BYTES", default_value = "1GiB", value_parser = parse_size)]
    pub spool_max_bytes: u64,
    /// Write spool files with O_DIRECT instead of page-cache write-behind.
    #[arg(long, env = "NIGHTCAP_SPOOL_DIRECT_IO", default_value_t = false, action = clap::ArgAction::Set)]
    pub spool_direct_io: bool,
    /// Upload each file while it is written (false: once closed).
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
    /// After the capture, retry uploads this long (the rest stays spooled).
    #[arg(long, env = "NIGHTCAP_UPLOAD_GRACE", default_value = "5m", value_parser = parse_duration)]
    pub upload_grace: Duration,
    /// Files above this size are uploaded in parts.
    #[arg(long, env = "NIGHTCAP_MULTIPART_THRESHOLD", default_value = "8MiB", value_parser = parse_size)]
    pub multipart_threshold: u64,
    /// Part size of multipart uploads (at least 5MiB).
    #[arg(long, env = "NIGHTCAP_UPLOAD_PART_SIZE", default_value = "5MiB", value_parser = parse_size)]
    pub upload_part_size: u64,
    /// Parts uploaded at once; raise it for a distant store.
    #[arg(long, env = "NIGHTCAP_UPLOAD_PARALLEL_PARTS", default_value_t = 1)]
    pub upload_parallel_parts: usize,
    /// Ring block size per target (power of two).
    #[arg(long, env = "NIGHTCAP_RING_BLOCK_SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub ring_block_size: u64,
    /// Ring blocks per target.
    #[arg(long, env = "NIGHTCAP_RING_BLOCKS", default_value_t = 8)]
    pub ring_blocks: u32,
    /// Kubernetes and local mode (what a capture Job or `nightcap local` runs).
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// How a pod IP (and, in Kubernetes mode, the node's interfaces) is reached. The long form is
/// in runbooks/capture.md; docs/decisions/0008-capture-privileges.md has the measurements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Attach {
    /// The node's interface that carries the pod's packets (host side of its veth, bridge
    /// port, or the interface holding the IP), in the process's own network namespace: no
    /// namespace is entered. Needs NET_RAW, BPF and PERFMON, and the node's network namespace
    /// (`hostNetwork: true`).
    #[default]
    Host,
    /// The pod's own interface inside its network namespace, found by scanning
    /// `/var/run/netns` and `/proc/*/ns/net` and entered with `setns`. Needs NET_RAW,
    /// SYS_ADMIN and SYS_PTRACE, and `hostPID: true`.
    Netns,
}

/// Flags of the Kubernetes and local modes (flattened into [`CaptureArgs`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KubeArgs {
    /// Capture the selected pods of this PacketCapture on --node.
    #[arg(long, env = "NIGHTCAP_CAPTURE", value_name = "NAMESPACE/NAME")]
    pub capture: Option<String>,
    /// With --capture: stop after no selected pod ran on the node this long.
    #[arg(long, env = "NIGHTCAP_EXIT_WHEN_IDLE", value_name = "DURATION", value_parser = parse_duration)]
    pub exit_when_idle: Option<Duration>,
    /// Local mode: the PacketCapture as a JSON file instead of --capture.
    #[arg(
        long,
        env = "NIGHTCAP_CAPTURE_FILE",
        value_name = "PATH",
        conflicts_with = "capture",
        requires_all = ["targets_file", "report_file"]
    )]
    pub capture_file: Option<PathBuf>,
    /// With --capture-file: JSON list of this node's targets, re-read.
    #[arg(
        long,
        env = "NIGHTCAP_TARGETS_FILE",
        value_name = "PATH",
        requires = "capture_file"
    )]
    pub targets_file: Option<PathBuf>,
    /// With --capture-file: this node's status entry, replaced on change.
    #[arg(
        long,
        env = "NIGHTCAP_REPORT_FILE",
        value_name = "PATH",
        requires = "capture_file"
    )]
    pub report_file: Option<PathBuf>,
}

impl CaptureArgs {
    /// Whether these flags run the Kubernetes or local mode (a PacketCapture) rather than a
    /// capture of the given interfaces.
    pub fn follows_a_capture(&self) -> bool {
        self.kube.capture.is_some() || self.kube.capture_file.is_some()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        args: CaptureArgs,
    }

    /// The flags after `--interface lo --output file:///x`.
    pub(crate) fn parse(extra: &[&str]) -> Result<CaptureArgs, clap::Error> {
        let base = [
            "nightcap-capture",
            "--interface",
            "lo",
            "--output",
            "file:///x",
        ];
        Cmd::try_parse_from([&base[..], extra].concat()).map(|c| c.args)
    }

    #[test]
    fn sizes_and_durations_use_the_one_grammar() {
        let a = parse(&[
            "--duration",
            "7d",
            "--rotate-bytes",
            "64KiB",
            "--max-bytes",
            "1GB",
            "--upload-grace",
            "1h30m",
            "--exit-when-idle",
            "1500ms",
        ])
        .expect("valid flags");
        assert_eq!(a.duration, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(a.rotate_bytes, 64 << 10);
        assert_eq!(a.max_bytes, Some(1_000_000_000));
        assert_eq!(a.upload_grace, Duration::from_secs(5400));
        assert_eq!(a.kube.exit_when_idle, Some(Duration::from_millis(1500)));
        let d = parse(&[]).expect("defaults");
        assert_eq!(
            (d.rotate_bytes, d.spool_max_bytes, d.multipart_threshold),
            (100 << 20, 1 << 30, 8 << 20)
        );
        assert_eq!((d.upload_part_size, d.ring_block_size), (5 << 20, 1 << 20));
        assert_eq!(d.upload_grace, Duration::from_secs(300));
        assert_eq!(d.duration, None);
        assert_eq!(d.attach, Attach::Host);
        assert_eq!(
            parse(&["--attach", "netns"]).expect("netns").attach,
            Attach::Netns
        );
    }

    #[test]
    fn a_bad_value_names_its_flag() {
        for (flag, value) in [
            ("--duration", "soon"),
            ("--rotate-bytes", "ten"),
            ("--max-bytes", "1XB"),
            ("--spool-max-bytes", ""),
            ("--upload-grace", "5 minutes"),
            ("--multipart-threshold", "big"),
            ("--upload-part-size", "MiB"),
            ("--ring-block-size", "1MiBs"),
            ("--exit-when-idle", "-1s"),
        ] {
            let err = parse(&[&format!("{flag}={value}")])
                .expect_err(flag)
                .to_string();
            assert!(err.contains(flag), "{flag} {value:?}: {err}");
        }
    }

    #[test]
    fn every_flag_has_one_short_help_line() {
        let mut cmd = Cmd::command();
        cmd.build();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().to_string();
            if id == "help" {
                continue;
            }
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(!help.is_empty(), "--{id} has no help");
            assert!(!help.contains('\n'), "--{id}: one line: {help:?}");
            assert!(help.len() <= 79, "--{id}: {} columns: {help:?}", help.len());
            assert!(arg.get_long_help().is_none(), "--{id} has a long help");
        }
    }
}
