//! The local executor's loop: every tick it re-reads the configuration, observes the targets,
//! plans every capture of the state with the shared planner over facts, and applies the
//! actions to capture processes and capture statuses.
//!
//! The executor stops when told to (SIGINT/SIGTERM or, without anything serving, once every
//! capture finished): its capture processes upload their last files and exit; the captures stay
//! in the state as they are, and the next start resumes those whose window is still open.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use jiff::Timestamp;
use nightcap_scheduler::plan::{Action, PlanConfig, Planner};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    config::LocalConfig,
    process::Processes,
    state::State,
    status::{CaptureKey, Captures},
    sums::Sums,
    targets::{Observed, nodes, observe, selected},
};

/// How often targets, children and the configuration file are looked at.
const TICK: Duration = Duration::from_millis(250);

/// After a change of the state, how long to wait for more before planning.
const WAKE_DEBOUNCE: Duration = Duration::from_millis(2);

/// What the executor needs.
pub(crate) struct ExecutorOptions {
    pub config_path: PathBuf,
    pub program: PathBuf,
    pub work_dir: PathBuf,
    pub status_file: Option<PathBuf>,
    pub pods_gone_grace: Duration,
    pub kill_after: Duration,
    /// Keep running after every capture finished.
    pub keep_running: bool,
}

struct Executor {
    opts: ExecutorOptions,
    config: Arc<LocalConfig>,
    config_tx: watch::Sender<Arc<LocalConfig>>,
    config_stamp: Option<(SystemTime, u64)>,
    config_error: Option<String>,
    default_node: String,
    planner: Planner,
    captures: Captures,
    processes: Processes,
    sums: Sums,
    stopping: bool,
}

/// Runs until `stop` resolves (a first signal) — then stops the capture processes and returns
/// once they are gone — or, unless `keep_running`, until every capture finished. A second
/// signal (`kill`) kills the processes. Returns the exit code: 0, or 1 when a capture failed.
pub(crate) async fn run(
    opts: ExecutorOptions,
    state: Arc<State>,
    store: nightcap_storage::Store,
    config_tx: watch::Sender<Arc<LocalConfig>>,
    stop: impl Future<Output = ()>,
    kill: impl Future<Output = ()>,
) -> i32 {
    let config = config_tx.borrow().clone();
    let default_node = config.node.clone().unwrap_or_else(nightcap_sys::host_name);
    let planner = Planner::new(PlanConfig {
        pods_gone_grace: opts.pods_gone_grace,
        // Capture processes cannot watch the capture: stop them as soon as it ends.
        stop_grace: Duration::ZERO,
        ..PlanConfig::default()
    });
    let mut sums = Sums::new(store);
    let mut captures = Captures::new(state, opts.status_file.clone());
    captures.refresh();
    let mut processes =
        Processes::new(opts.program.clone(), opts.work_dir.clone(), opts.kill_after);
    // The processes of a run that was killed upload their last files and exit by themselves;
    // wait for them and keep what they reported, so their files stay listed.
    for report in processes.adopt(opts.kill_after).await {
        if let Some(pc) = captures.get(&report.capture)
            && pc.metadata.uid.as_deref() == Some(report.uid.as_str())
        {
            sums.learn(pc);
            let patch = sums.patch(&report.node, report.entry).await;
            captures.merge(&report.capture, &patch);
        }
    }
    info!(
        config = %opts.config_path.display(),
        work_dir = %opts.work_dir.display(),
        node = %default_node,
        "Running captures locally."
    );
    let mut ex = Executor {
        config_stamp: stamp(&opts.config_path),
        config,
        config_tx,
        config_error: None,
        default_node,
        planner,
        captures,
        processes,
        sums,
        stopping: false,
        opts,
    };
    tokio::pin!(stop);
    tokio::pin!(kill);
    let mut tick = tokio::time::interval(TICK);
    // A capture created or changed by another component (an alert, the API) is planned at once,
    // not at the next tick.
    let mut changed = ex.captures.subscribe();
    loop {
        tokio::select! {
            () = &mut stop, if !ex.stopping => {
                info!("Stopping: the capture processes upload their last files; captures resume at the next start.");
                ex.stopping = true;
                ex.processes.stop_all();
            }
            () = &mut kill, if ex.stopping => {
                warn!("Second signal: killing the capture processes (open files are lost).");
                ex.processes.kill_all().await;
                break;
            }
            _ = tick.tick() => {}
            Ok(()) = changed.changed() => {
                // Let a burst of writes land before planning.
                tokio::time::sleep(WAKE_DEBOUNCE).await;
                changed.mark_unchanged();
            }
        }
        ex.tick().await;
        if ex.finished() {
            break;
        }
    }
    ex.captures.refresh();
    ex.captures.write_status();
    ex.captures.report()
}

/// Modification time and size of a file, to notice edits.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Executor {
    async fn tick(&mut self) {
        self.reload_config();
        let now = Timestamp::now();
        if self.stopping {
            self.captures.refresh();
        } else {
            self.captures.sync(&self.config.captures, now);
        }
        let observed = observe(&self.config.targets, &self.default_node);
        for report in self.processes.reap() {
            if let Some(pc) = self.captures.get(&report.capture) {
                self.sums.learn(pc);
                let patch = self.sums.patch(&report.node, report.entry).await;
                self.captures.merge(&report.capture, &patch);
            }
        }
        if self.stopping {
            return;
        }
        let targets: Vec<_> = observed.iter().map(|o| o.fact.clone()).collect();
        let nodes = nodes(&self.config.targets, &self.default_node, &observed);
        for key in self.captures.keys() {
            let Some(pc) = self.captures.get(&key) else {
                continue;
            };
            let jobs = self.processes.facts(&key);
            let actions = self.planner.plan(pc, &targets, &nodes, &jobs, now);
            for action in actions {
                self.apply(&key, action, &observed, now);
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
        let now = stamp(&self.opts.config_path);
        if now == self.config_stamp {
            return;
        }
        self.config_stamp = now;
        match LocalConfig::load(&self.opts.config_path) {
            Ok(cfg) => {
                if cfg.output != self.config.output {
                    warn!(
                        "The output changed: running capture processes keep the old one; new ones use the new one."
                    );
                }
                if let Some(node) = &cfg.node {
                    self.default_node = node.clone();
                }
                self.config = Arc::new(cfg);
                self.config_tx.send_replace(self.config.clone());
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

    fn apply(&mut self, key: &CaptureKey, action: Action, observed: &[Observed], now: Timestamp) {
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
            Action::Event(note) => self.captures.event(key, &note, now),
            Action::ReleaseFinalizer => {
                if self.captures.release(key) {
                    self.processes.release(key);
                }
            }
            Action::RequeueAfter(_) => {} // planned again every tick
        }
    }

    /// Whether the executor is done: stopping and no capture process left, or (unless it keeps
    /// running) every capture finished.
    fn finished(&self) -> bool {
        if self.processes.any_running() {
            return false;
        }
        if self.stopping {
            return true;
        }
        !self.opts.keep_running && self.captures.all_finished()
    }
}
