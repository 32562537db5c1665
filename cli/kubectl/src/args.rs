//! The plugin's flags. One short line of help each; runbooks/kubectl-plugin.md has the long form.

use std::{path::PathBuf, time::Duration};

use nightcap_api::quantity::{parse_duration, parse_size};

/// Where the plugin connects: a cluster (kubeconfig) or one host (`--server`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnArgs {
    /// Path to the kubeconfig file (default: KUBECONFIG, else ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, env = "NIGHTCAP_CONTEXT")]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace).
    #[arg(short = 'n', long, env = "NIGHTCAP_NAMESPACE")]
    pub namespace: Option<String>,
    /// Gateway base URL for files (default: published address, else port-forward).
    #[arg(long, env = "NIGHTCAP_GATEWAY", value_name = "URL")]
    pub gateway: Option<String>,
    /// A `nightcap local` API instead of a cluster (one host).
    #[arg(long, env = "NIGHTCAP_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Bearer token for `--server` (and for the gateway).
    #[arg(long, env = "NIGHTCAP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Output formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// The default table with more columns.
    Wide,
    /// JSON (a List for several objects).
    Json,
    /// YAML (a List for several objects).
    Yaml,
    /// `kind/name` per object.
    Name,
}

/// Output formats of `create --dry-run=client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ManifestOutput {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
    /// `kind/name`.
    Name,
}

/// `--dry-run` modes (kubectl's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DryRun {
    /// Send nothing: validate and print.
    Client,
    /// Send nothing (server-side dry run is not offered).
    None,
}

/// `create NAME`.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// Name of the capture.
    pub name: String,
    /// Pods to capture, by label (kubectl syntax: `app=web,tier!=db`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Node-level capture on this node (repeat).
    #[arg(long = "node", value_name = "NODE")]
    pub nodes: Vec<String>,
    /// Node-level capture on the nodes with these labels (`k=v,k2=v2`).
    #[arg(long)]
    pub node_selector: Option<String>,
    /// tcpdump-style filter expression (`udp port 53`).
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Structured filter: protocol (TCP, UDP, ICMP, ICMPv6, SCTP, any).
    #[arg(long)]
    pub protocol: Option<String>,
    /// Structured filter: port (repeat or comma-separate; `8000-8080` for a range).
    #[arg(long = "port", value_delimiter = ',')]
    pub ports: Vec<String>,
    /// Bytes kept of each packet (64–262144).
    #[arg(long)]
    pub snaplen: Option<u32>,
    /// How long to capture (`90s`, `15m`, `1h30m`).
    #[arg(long, value_parser = parse_duration, conflicts_with = "end")]
    pub duration: Option<Duration>,
    /// When to start (RFC 3339, e.g. 2026-12-02T03:00:00Z).
    #[arg(long)]
    pub start: Option<String>,
    /// When to stop (RFC 3339).
    #[arg(long)]
    pub end: Option<String>,
    /// Stop after this many bytes in total (`100MB`, `1GiB`).
    #[arg(long, value_parser = parse_size)]
    pub max_bytes: Option<u64>,
    /// Stop after this many packets in total.
    #[arg(long)]
    pub max_packets: Option<u64>,
    /// Close each file at this size (`100MB`).
    #[arg(long, value_parser = parse_size)]
    pub rotate_size: Option<u64>,
    /// Close each file after this long (`5m`).
    #[arg(long, value_parser = parse_duration)]
    pub rotate_every: Option<Duration>,
    /// Keep at most this many files per node (a ring).
    #[arg(long)]
    pub max_files: Option<u32>,
    /// Name of a configured store (default: the default store).
    #[arg(long)]
    pub storage: Option<String>,
    /// Delete the files this long after the capture ends (`7d`).
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Print the manifest instead of creating it (`client`).
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: Option<DryRun>,
    /// Output of `--dry-run=client` (default: name).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<ManifestOutput>,
    /// Go on watching the capture until it ends.
    #[arg(short = 'w', long)]
    pub watch: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// What `get` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// PacketCaptures.
    Captures,
    /// CaptureTriggers.
    Triggers,
    /// CaptureSchedules.
    Schedules,
}

impl Kind {
    /// `get triggers`, `get schedules`, else captures (with an optional name).
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "captures" | "capture" | "packetcaptures" | "packetcapture" | "pcap" => {
                Some(Self::Captures)
            }
            "triggers" | "trigger" | "capturetriggers" | "capturetrigger" => Some(Self::Triggers),
            "schedules" | "schedule" | "captureschedules" | "captureschedule" => {
                Some(Self::Schedules)
            }
            _ => None,
        }
    }
}

/// `get [NAME]`, `get triggers`, `get schedules`.
#[derive(Debug, Clone, clap::Args)]
pub struct GetArgs {
    /// A capture name, or `triggers` / `schedules` (then an optional name).
    pub what: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Only objects with these labels (kubectl syntax).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Verbs that name one capture (`describe`, `watch`, `stop`).
#[derive(Debug, Clone, clap::Args)]
pub struct NameArgs {
    /// Name of the capture.
    pub name: String,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `stop NAME`.
#[derive(Debug, Clone, clap::Args)]
pub struct StopArgs {
    /// Name of the capture.
    pub name: String,
    /// Why (recorded in the capture's status).
    #[arg(long, default_value = "stopped with kubectl nightcap")]
    pub reason: String,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `delete NAME`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeleteArgs {
    /// Name of the capture.
    pub name: String,
    /// Keep the files in storage (`--server`; a cluster always keeps them).
    #[arg(long)]
    pub keep_files: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `download NAME`.
#[derive(Debug, Clone, clap::Args)]
pub struct DownloadArgs {
    /// Name of the capture.
    pub name: String,
    /// Directory to download into (default: ./NAME).
    #[arg(short = 'o', long = "output-dir", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Download one files.zip instead of the files.
    #[arg(long)]
    pub zip: bool,
    /// Files downloaded at the same time.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `link NAME`.
#[derive(Debug, Clone, clap::Args)]
pub struct LinkArgs {
    /// Name of the capture.
    pub name: String,
    /// How long the link works (`24h`, at most `7d`).
    #[arg(long, value_parser = parse_duration, default_value = "24h")]
    pub expires: Duration,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `completion SHELL`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}
