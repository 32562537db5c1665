//! `nightcap local`: every component of nightcap in one process on one Linux host, over the
//! same manifests as in a cluster, with its state in an embedded database.
//!
//! - the webhook (Alertmanager, capture requests), NATS and cron sources with the CaptureTrigger
//!   rule engine, creating captures through the state ([`triggers`]);
//! - the scheduler's planner driving capture processes (`nightcap capture --capture-file …`),
//!   one per (capture, node), over targets — network namespaces or host interfaces standing in
//!   for pods — listed in the configuration file ([`executor`], [`targets`], [`process`]);
//! - the gateway (files, files.zip, share links) and the capture API ([`api`]) with token-file
//!   access per namespace, `/metrics` and `/healthz`;
//! - the state ([`state`]): captures with their status and file manifest, schedule runs and
//!   Events in SQLite under `--state-dir`. A restart (or a SIGKILL) loses nothing: captures
//!   whose window is still open resume, a repeated alert is still deduplicated.
//!
//! Targets follow the file and the namespaces: a namespace deleted and created again is a new
//! sandbox, attached again, as a pod restarted on its node; editing the file moves targets,
//! adds targets and adds or removes configured captures. Every capture's final status is printed
//! as one JSON line on stdout at exit; the exit code is 1 when a capture failed.
//!
//! This crate must never write to the user's configuration file, never start anything when the
//! file has a problem, and never let a token read or change another namespace's captures.

pub mod api;
pub mod config;
mod error;
mod executor;
mod process;
pub mod retention;
mod run;
pub mod state;
mod status;
mod sums;
mod targets;
mod triggers;

use std::{path::PathBuf, time::Duration};

pub use config::{DEFAULT_NAMESPACE, LocalConfig, TargetConfig};
pub use error::{Error, Result};
use nightcap_api::quantity::parse_duration;

/// Run nightcap on this machine without Kubernetes: alerts, schedules, captures and downloads.
/// Every flag is described in runbooks/local.md.
#[derive(Debug, Clone, clap::Args)]
pub struct LocalArgs {
    /// Configuration file (YAML: output, targets, sources, gateway, manifests); re-read on change.
    #[arg(long, short = 'c', env = "NIGHTCAP_LOCAL_CONFIG")]
    pub config: PathBuf,
    /// Directory of the state database and the processes' files
    /// [default: /var/lib/nightcap as root, else ~/.local/state/nightcap].
    #[arg(long, env = "NIGHTCAP_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Directory for the processes' files [default: STATE_DIR/work].
    #[arg(long, env = "NIGHTCAP_LOCAL_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Keep running after every capture finished (implied by webhook, nats, gateway, triggers
    /// or schedules in the file).
    #[arg(long)]
    pub watch: bool,
    /// Write every capture's status to this JSON file (replaced on change).
    #[arg(long)]
    pub status_file: Option<PathBuf>,
    /// Keep a node's capture process this long after its last target left.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub pods_gone_grace: Duration,
    /// Kill a capture process still running this long after SIGTERM.
    #[arg(long, default_value = "6m", value_parser = parse_duration)]
    pub kill_after: Duration,
    /// How often expired captures and their files are deleted.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub retention_interval: Duration,
    /// Program run per (capture, node) [default: this nightcap binary].
    #[arg(long)]
    pub capture_program: Option<PathBuf>,
}

/// Runs `nightcap local` until every capture has finished (or, when it serves or with --watch,
/// until SIGINT or SIGTERM). Returns the process exit code: 0, or 1 when a capture failed. The
/// caller has set up logging.
pub fn run_blocking(args: LocalArgs) -> Result<i32> {
    nightcap_process::block_on("local", run::run(args))?
}

/// Replaces `path` with `bytes` atomically (a reader never sees half a file). The file gets the
/// permissions a newly created file gets (0666 less the umask).
fn replace_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::PermissionsExt};
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let mut tmp = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir.unwrap_or_else(|| std::path::Path::new(".")))?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
