//! `nightcap local`: the scheduler without Kubernetes. The same [`Planner`](crate::Planner)
//! decides; instead of Jobs it drives child processes (`nightcap capture --capture-file …`),
//! one per (capture, node), over targets (network namespaces or host interfaces standing in for
//! pods) listed in a configuration file.
//!
//! - A target exists while its network namespace (or interface) does; a namespace deleted and
//!   created again is a new sandbox, attached again — as a pod restarted on its node.
//! - Editing the file moves targets between nodes, adds targets (scale-out) and adds or removes
//!   captures (removal = deletion: the processes stop and upload their last files).
//! - SIGINT/SIGTERM stop every capture the same way, then `nightcap local` exits.
//!
//! Every capture's final status is printed as one JSON line on stdout; the exit code is 1 when
//! a capture failed.

mod config;
mod executor;

use std::{path::PathBuf, time::Duration};

pub use config::{DEFAULT_NAMESPACE, LocalConfig, TargetConfig};

use crate::{Error, Result};

/// Run captures on this machine without Kubernetes: targets and captures from a file.
#[derive(Debug, Clone, clap::Args)]
pub struct LocalArgs {
    /// The configuration file (YAML): output, targets, captures. Re-read when it changes.
    #[arg(long, short = 'c', env = "NIGHTCAP_LOCAL_CONFIG")]
    pub config: PathBuf,
    /// Directory for the capture processes' files: their targets, reports, logs and spools
    /// (default: $TMPDIR/nightcap-local). Keep it to retry uploads that failed.
    #[arg(long, env = "NIGHTCAP_LOCAL_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Keep running after every capture has finished: captures added to the file later start.
    #[arg(long)]
    pub watch: bool,
    /// Write the status of every capture to this file as JSON (replaced on each change).
    #[arg(long)]
    pub status_file: Option<PathBuf>,
    /// How long a node's capture process keeps running after its last target left (a
    /// namespace recreated within this time is attached by the same process).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub pods_gone_grace: Duration,
    /// Kill a capture process that has not exited this long after SIGTERM (it uploads its
    /// last file first; its --upload-grace is 5m).
    #[arg(long, default_value = "6m", value_parser = humantime::parse_duration)]
    pub kill_after: Duration,
    /// Program run for each (capture, node) as `PROGRAM capture --capture-file …`
    /// (default: this nightcap binary).
    #[arg(long)]
    pub capture_program: Option<PathBuf>,
}

/// Runs `nightcap local` until every capture has finished (or, with --watch, until SIGINT or
/// SIGTERM). Returns the process exit code: 0, or 1 when a capture failed.
pub fn run_blocking(args: LocalArgs) -> Result<i32> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the async runtime: {e}")))?
        .block_on(executor::run(args))
}
