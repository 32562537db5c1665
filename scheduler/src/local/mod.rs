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
//!
//! `executor` runs the loop; `targets` observes the targets, `process` runs the capture
//! processes, `status` keeps the captures and their status. Each hands the planner facts; none
//! makes Kubernetes objects.

mod config;
mod executor;
mod process;
mod status;
mod targets;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

pub use config::{DEFAULT_NAMESPACE, LocalConfig, TargetConfig};
use nightcap_api::quantity::parse_duration;

use crate::Result;

/// Run captures on this machine without Kubernetes: targets and captures from a file.
/// Every flag is described in runbooks/local.md.
#[derive(Debug, Clone, clap::Args)]
pub struct LocalArgs {
    /// Configuration file (YAML: output, targets, captures); re-read on change.
    #[arg(long, short = 'c', env = "NIGHTCAP_LOCAL_CONFIG")]
    pub config: PathBuf,
    /// Directory for the processes' files [default: $TMPDIR/nightcap-local].
    #[arg(long, env = "NIGHTCAP_LOCAL_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Keep running after every capture finished (start captures added later).
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
    /// Program run per (capture, node) [default: this nightcap binary].
    #[arg(long)]
    pub capture_program: Option<PathBuf>,
}

/// Runs `nightcap local` until every capture has finished (or, with --watch, until SIGINT or
/// SIGTERM). Returns the process exit code: 0, or 1 when a capture failed. The caller has set
/// up logging.
pub fn run_blocking(args: LocalArgs) -> Result<i32> {
    nightcap_process::block_on("local", executor::run(args))?
}

/// Replaces `path` with `bytes` atomically (a reader never sees half a file). The file gets the
/// permissions a newly created file gets (0666 less the umask).
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::PermissionsExt};
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let mut tmp = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir.unwrap_or_else(|| Path::new(".")))?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
