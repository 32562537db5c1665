//! The local executor's loop: every tick it re-reads the configuration, observes the targets,
//! plans every capture with the shared planner over facts, and applies the actions to capture
//! processes and capture statuses.

use std::{
    path::Path,
    pin::Pin,
    time::{Duration, SystemTime},
};

use jiff::Timestamp;
use tracing::{info, warn};

use super::{
    LocalArgs,
    config::LocalConfig,
    process::Processes,
    status::{CaptureKey, Captures, event},
    targets::{Observed, nodes, observe, selected},
};
use crate::{
    Error, Result,
    plan::{Action, PlanConfig, Planner},
};

/// How often targets, children and the configuration file are looked at.
const TICK: Duration = Duration::from_millis(250);

struct Executor {
    args: LocalArgs,
    config: LocalConfig,
    config_stamp: Option<(SystemTime, u64)>,
    config_error: Option<String>,
    default_node: String,
    planner: Planner,
    captures: Captures,
    processes: Processes,
    shutting_down: bool,
}

pub(super) async fn run(args: LocalArgs) -> Result<i32> {
    let config = LocalConfig::load(&args.config)?;
    let program = match &args.capture_program {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| Error::Config(format!("cannot find the nightcap binary: {e}")))?,
    };
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("nightcap-local"));
    std::fs::create_dir_all(work_dir.join("jobs"))
        .map_err(|e| Error::Config(format!("cannot create {}: {e}", work_dir.display())))?;
    let default_node = config.node.clone().unwrap_or_else(nightcap_sys::host_name);
    let planner = Planner::new(PlanConfig {
        pods_gone_grace: args.pods_gone_grace,
        // Capture processes cannot watch the capture: stop them as soon as it ends.
        stop_grace: Duration::ZERO,
        ..PlanConfig::default()
    });
    if config.captures.is_empty() && !args.watch {
        return Err(Error::Config(format!(
            "{} has no captures (add some, or pass --watch to wait for them)",
            args.config.display()
        )));
    }
    info!(
        config = %args.config.display(),
        work_dir = %work_dir.display(),
        node = %default_node,
        "Running captures locally."
    );
    let mut ex = Executor {
        config_stamp: stamp(&args.config),
        config,
        config_error: None,
        default_node,
        planner,
        captures: Captures::new(args.status_file.clone()),
        processes: Processes::new(program, work_dir, args.kill_after),
        shutting_down: false,
        args,
    };
    let mut shutdown: Pin<Box<dyn Future<Output = ()>>> =
        Box::pin(nightcap_process::shutdown_signal());
    let mut tick = tokio::time::interval(TICK);
    loop {
        let signalled = tokio::select! {
            () = &mut shutdown => true,
            _ = tick.tick() => false,
        };
        if signalled {
            if ex.shutting_down {
                warn!("Second signal: killing the capture processes (open files are lost).");
                ex.processes.kill_all().await;
                break;
            }
            info!("Stopping every capture: the capture processes upload their last files.");
            ex.shutting_down = true;
            shutdown = Box::pin(nightcap_process::shutdown_signal());
        }
        ex.tick().await;
        if ex.finished() {
            break;
        }
    }
    ex.captures.write_status();
    Ok(ex.captures.report())
}

/// Modification time and size of a file, to notice edits.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Executor {
    async fn tick(&mut self) {
        self.reload_config();
        if self.shutting_down {
            self.captures.delete_all(Timestamp::now());
        } else {
            self.captures
                .sync(&self.config.captures, self.args.watch, Timestamp::now());
        }
        let observed = observe(&self.config.targets, &self.default_node);
        for report in self.processes.reap() {
            let (node, entry) = (report.node, report.entry);
            let patch = serde_json::json!({ "status": { "nodes": { node: entry } } });
            self.captures.merge(&report.capture, &patch);
        }
        let now = Timestamp::now();
        let targets: Vec<_> = observed.iter().map(|o| o.fact.clone()).collect();
        let nodes = nodes(&self.config.targets, &self.default_node, &observed);
        for key in self.captures.keys() {
            let Some(pc) = self.captures.get(&key) else {
                continue;
            };
            let jobs = self.processes.facts(&key);
            let actions = self.planner.plan(pc, &targets, &nodes, &jobs, now);
            for action in actions {
                self.apply(&key, action, &observed);
            }
            self.captures.log_phase(&key);
        }
        let captures = &self.captures;
        self.processes
            .write_targets(|key, node| captures.get(key).map(|pc| selected(pc, node, &observed)));
        self.captures.write_status();
    }

    /// Re-reads the configuration file when it changed; a broken edit keeps the previous one.
    fn reload_config(&mut self) {
        let now = stamp(&self.args.config);
        if now == self.config_stamp {
            return;
        }
        self.config_stamp = now;
        match LocalConfig::load(&self.args.config) {
            Ok(cfg) => {
                if cfg.output != self.config.output {
                    warn!(
                        "The output changed: running capture processes keep the old one; new ones use the new one."
                    );
                }
                if let Some(node) = &cfg.node {
                    self.default_node = node.clone();
                }
                self.config = cfg;
                self.config_error = None;
                info!("Configuration reloaded.");
            }
            Err(e) => {
                let msg = e.to_string();
                if self.config_error.as_ref() != Some(&msg) {
                    warn!(error = %msg, "The edited configuration is invalid; keeping the previous one.");
                    self.config_error = Some(msg);
                }
            }
        }
    }

    fn apply(&mut self, key: &CaptureKey, action: Action, observed: &[Observed]) {
        match action {
            Action::UpdateStatus(update) => self.captures.merge(key, &update.to_merge_patch()),
            Action::CreateJob(req) => {
                if let Some(pc) = self.captures.get(key) {
                    let targets = selected(pc, &req.node, observed);
                    self.processes
                        .start(key, pc, &req, targets, &self.config.output);
                }
            }
            Action::StopJob(stop) => self.processes.stop(&stop),
            Action::MarkJobIdle { job, since, .. } => {
                self.processes.mark(&job, |j| j.idle_since = Some(since));
            }
            Action::ClearJobIdle { job, .. } => self.processes.mark(&job, |j| j.idle_since = None),
            Action::MarkJobEnded { job, .. } => {
                self.processes.mark(&job, |j| j.end_recorded = true);
            }
            Action::Event(note) => event(key, &note),
            Action::ReleaseFinalizer => {
                if self.captures.release(key) {
                    self.processes.release(key);
                }
            }
            Action::RequeueAfter(_) => {} // planned again every tick
        }
    }

    /// Whether `nightcap local` is done: every capture finished (and, when stopping, released)
    /// and no capture process left.
    fn finished(&self) -> bool {
        if self.processes.any_running() {
            return false;
        }
        if self.shutting_down {
            return self.captures.is_empty();
        }
        !self.args.watch && self.captures.all_finished()
    }
}
