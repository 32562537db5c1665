//! Local mode of `nightcap capture` (`--capture-file F --targets-file T --report-file R
//! --node N`): what `nightcap local` runs for each (capture, node) instead of a capture Job.
//!
//! The same capture as the Kubernetes mode, with files in place of the API: the capture (with
//! the status the executor keeps: `acceptedSpec`, `startTime`) comes from `--capture-file`;
//! the targets on this node from `--targets-file`, re-read every [`TICK`] (attached and
//! detached as the list changes); this node's status entry goes to `--report-file`. The
//! executor stops the process with SIGTERM; the window end and the limits stop it too, and so
//! does the executor's death (the process is orphaned).

use std::{path::Path, time::Duration};

use kube::ResourceExt;
use nightcap_api::{PacketCapture, local::LocalTargets};
use tracing::{info, warn};

use super::{accepted, fail, invalid, pods, report, start, wind_up};
use crate::{Attach, CaptureArgs, Error, Result, engine::FileIdentity, options};

/// How often the targets file is read and the report refreshed.
const TICK: Duration = Duration::from_millis(250);

pub(super) fn run(args: &CaptureArgs) -> Result<()> {
    let node = args
        .node
        .clone()
        .ok_or_else(|| invalid("--capture-file needs --node"))?;
    if !args.netns.is_empty()
        || !args.pod_ip.is_empty()
        || args.interface.is_some()
        || args.filter.is_some()
    {
        return Err(invalid(
            "--capture-file takes its targets from --targets-file and its filter from the \
             capture; drop --netns, --pod-ip, --interface and --filter",
        ));
    }
    let path = args.kube.capture_file.clone().unwrap_or_default();
    let text = std::fs::read(&path).map_err(|e| Error::io(&path, "reading", e))?;
    let pc: PacketCapture = serde_json::from_slice(&text)
        .map_err(|e| invalid(format!("{}: not a PacketCapture: {e}", path.display())))?;
    let runtime = crate::runtime(args.spool_direct_io)?;
    runtime.block_on(follow(args, pc, &node))
}

/// Reads the targets file; `None` (with the reason) when it is missing or not valid JSON.
async fn read_targets(path: &Path) -> Result<LocalTargets, String> {
    let text = tokio::fs::read(path)
        .await
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))
}

async fn follow(args: &CaptureArgs, pc: PacketCapture, node: &str) -> Result<()> {
    let namespace = pc
        .namespace()
        .ok_or_else(|| invalid("the capture file has no metadata.namespace"))?;
    let name = pc.name_any();
    let uid = pc
        .uid()
        .ok_or_else(|| invalid("the capture file has no metadata.uid"))?;
    let (spec, window) = accepted(&pc, jiff::Timestamp::now());
    if window.is_some_and(|w| w.is_zero()) {
        info!("The capture window is over; nothing to capture.");
        return Ok(());
    }
    let identity = FileIdentity {
        namespace: namespace.clone(),
        capture: name.clone(),
        uid,
        node: node.into(),
    };
    let opts = options::from_spec(args, &spec, identity, window)?;
    // Before anything is captured, so a signal from the first moment on closes and uploads.
    let shutdown = nightcap_process::shutdown_signal();
    tokio::pin!(shutdown);
    let report_file = args.kube.report_file.clone().unwrap_or_default();
    let targets_file = args.kube.targets_file.clone().unwrap_or_default();
    let (capture, lister) = start(args, opts).await?;
    let mut reporter = report::Reporter::new(report::Sink::File(report_file), &pc, node, lister);
    let capture = match capture {
        Ok(c) => c,
        Err(error) => return Err(fail(&mut reporter, error).await),
    };
    // Local targets name their namespaces: they are always entered (the process runs as root).
    let mut targets = pods::Targets::new(capture.clone(), &namespace, &spec, Attach::Netns);
    let mut tick = tokio::time::interval(TICK);
    let mut unreadable = false;
    // Orphaned (nightcap local was killed): nobody updates the targets or stops this process
    // any more, so end the capture cleanly instead of running to the window's end.
    let parent = std::os::unix::process::parent_id();
    info!(capture = %format!("{namespace}/{name}"), %node, targets = %targets_file.display(), "Following the targets file.");
    loop {
        tokio::select! {
            () = &mut shutdown => {
                info!("Shutdown signal: closing and uploading the open file.");
                break;
            }
            _ = tick.tick() => {
                if capture.is_finished() {
                    break;
                }
                if std::os::unix::process::parent_id() != parent {
                    warn!("nightcap local is gone: closing and uploading the open file.");
                    break;
                }
                match read_targets(&targets_file).await {
                    Ok(list) => {
                        unreadable = false;
                        targets.sync_local(&list.targets).await;
                    }
                    // Keep the current targets: the executor replaces the file atomically, so
                    // this is a missing file (the executor is gone) or a bug; say it once.
                    Err(error) if !unreadable => {
                        unreadable = true;
                        warn!(%error, "Cannot read the targets file; keeping the current targets.");
                    }
                    Err(_) => {}
                }
                if targets.fatal().is_some() {
                    break;
                }
                reporter.report(&capture, &targets, false).await;
            }
        }
    }
    wind_up(capture, targets, reporter).await
}
