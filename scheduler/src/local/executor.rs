//! The local executor: observes targets, plans every capture with the shared planner and
//! applies the actions to child processes instead of Jobs.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant, SystemTime},
};

use jiff::Timestamp;
use k8s_openapi::{
    api::{
        batch::v1::{Job, JobCondition, JobStatus},
        core::v1::{Node, NodeCondition, NodeStatus, Pod, PodSpec, PodStatus},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::ResourceExt;
use nightcap_api::{
    PacketCapture, Phase,
    local::{LocalTarget, LocalTargets},
};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tracing::{info, warn};

use super::{LocalArgs, config::LocalConfig};
use crate::{
    Error, Result, labels,
    plan::{Action, EventKind, EventNote, JobRequest, PlanConfig, Planner, selector_matches},
};

/// How often targets, children and the configuration file are looked at.
const TICK: Duration = Duration::from_millis(250);
/// Where `ip netns` keeps named network namespaces.
const NETNS_DIR: &str = "/var/run/netns";

type CaptureKey = (String, String);

/// A capture process standing in for a capture Job.
struct LocalJob {
    capture: CaptureKey,
    node: String,
    /// What the planner sees.
    job: Job,
    child: Option<Child>,
    dir: PathBuf,
    /// Targets last written to the targets file.
    targets: Option<LocalTargets>,
    /// Modification time of the report file last merged.
    report_seen: Option<SystemTime>,
    term_sent: Option<Instant>,
    /// The planner stopped it: forget it once the process is gone (a deleted Job).
    delete_requested: bool,
}

/// A target as the planner sees it (a pod) and as a capture process attaches it.
struct Observed {
    pod: Pod,
    node: String,
    target: LocalTarget,
}

struct Executor {
    args: LocalArgs,
    config: LocalConfig,
    config_stamp: Option<(SystemTime, u64)>,
    config_error: Option<String>,
    default_node: String,
    planner: Planner,
    program: PathBuf,
    work_dir: PathBuf,
    captures: BTreeMap<CaptureKey, PacketCapture>,
    /// Captures released after deletion, with their last status.
    done: Vec<PacketCapture>,
    jobs: BTreeMap<String, LocalJob>,
    phases: BTreeMap<CaptureKey, Option<Phase>>,
    status_written: Option<Vec<u8>>,
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
    let default_node = config.node.clone().unwrap_or_else(host_name);
    let planner = Planner::new(PlanConfig {
        pods_gone_grace: args.pods_gone_grace,
        // Capture processes cannot watch the capture: stop them as soon as it ends.
        stop_grace: Duration::ZERO,
        ..PlanConfig::default()
    });
    let config_stamp = stamp(&args.config);
    let mut ex = Executor {
        args,
        config,
        config_stamp,
        config_error: None,
        default_node,
        planner,
        program,
        work_dir,
        captures: BTreeMap::new(),
        done: Vec::new(),
        jobs: BTreeMap::new(),
        phases: BTreeMap::new(),
        status_written: None,
        shutting_down: false,
    };
    if ex.config.captures.is_empty() && !ex.args.watch {
        return Err(Error::Config(format!(
            "{} has no captures (add some, or pass --watch to wait for them)",
            ex.args.config.display()
        )));
    }
    info!(
        config = %ex.args.config.display(),
        work_dir = %ex.work_dir.display(),
        node = %ex.default_node,
        "Running captures locally."
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::Config(format!("cannot handle SIGTERM: {e}")))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| Error::Config(format!("cannot handle SIGINT: {e}")))?;
    let mut tick = tokio::time::interval(TICK);
    loop {
        let signalled = tokio::select! {
            _ = term.recv() => true,
            _ = int.recv() => true,
            _ = tick.tick() => false,
        };
        if signalled {
            if ex.shutting_down {
                warn!("Second signal: killing the capture processes (open files are lost).");
                ex.kill_all().await;
                break;
            }
            info!("Stopping every capture: the capture processes upload their last files.");
            ex.shutting_down = true;
        }
        ex.tick().await;
        if ex.finished() {
            break;
        }
    }
    ex.write_status();
    Ok(ex.report())
}

/// Modification time and size of a file, to notice edits.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
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
    let name = name.trim_matches(|c| c == '-' || c == '.');
    if name.is_empty() {
        "localhost".into()
    } else {
        name.into()
    }
}

fn key_of(pc: &PacketCapture) -> CaptureKey {
    (pc.namespace().unwrap_or_default(), pc.name_any())
}

fn show(key: &CaptureKey) -> String {
    format!("{}/{}", key.0, key.1)
}

/// Writes `bytes` to `path` atomically (a reader never sees half a file).
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn now_time() -> Time {
    Time(Timestamp::now())
}

impl Executor {
    async fn tick(&mut self) {
        self.reload_config();
        self.sync_captures();
        let observed = self.observe();
        self.reap().await;
        let now = Timestamp::now();
        let pods: Vec<&Pod> = observed.iter().map(|o| &o.pod).collect();
        let nodes = self.nodes(&observed);
        let keys: Vec<CaptureKey> = self.captures.keys().cloned().collect();
        for key in keys {
            let Some(pc) = self.captures.get(&key) else {
                continue;
            };
            let uid = pc.uid().unwrap_or_default();
            let jobs: Vec<&Job> = self
                .jobs
                .values()
                .filter(|j| j.capture == key)
                .map(|j| &j.job)
                .collect();
            let actions = self.planner.plan(pc, &pods, &nodes, &jobs, now);
            for action in actions {
                self.apply(&key, &uid, action, &observed).await;
            }
            self.log_phase(&key);
        }
        self.write_targets(&observed);
        self.write_status();
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

    /// New captures get a UID and the finalizer; captures gone from the file (or all of them
    /// when shutting down) are deleted; edited specs bump the generation.
    fn sync_captures(&mut self) {
        let now = now_time();
        let wanted: BTreeMap<CaptureKey, &PacketCapture> = if self.shutting_down {
            BTreeMap::new()
        } else {
            self.config
                .captures
                .iter()
                .map(|pc| (key_of(pc), pc))
                .collect()
        };
        for (key, pc) in &mut self.captures {
            if pc.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match wanted.get(key) {
                None => {
                    if !self.shutting_down {
                        info!(capture = %show(key), "Removed from the configuration: stopping it.");
                    }
                    pc.metadata.deletion_timestamp = Some(now.clone());
                }
                Some(want) if want.spec != pc.spec => {
                    pc.spec = want.spec.clone();
                    pc.metadata.generation = Some(pc.metadata.generation.unwrap_or(1) + 1);
                }
                Some(_) => {}
            }
        }
        for (key, want) in wanted {
            if self.captures.contains_key(&key) {
                continue;
            }
            // A capture finished before this run and still in the file is not run again.
            if self
                .done
                .iter()
                .any(|d| key_of(d) == key && !self.args.watch)
            {
                continue;
            }
            let mut pc = want.clone();
            pc.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
            pc.metadata.generation = Some(1);
            pc.metadata.creation_timestamp = Some(now.clone());
            pc.metadata.finalizers = Some(vec![labels::FINALIZER.to_string()]);
            pc.status = None;
            info!(capture = %show(&key), uid = %pc.uid().unwrap_or_default(), "New capture.");
            self.captures.insert(key, pc);
        }
    }

    /// The targets that exist now, as pods.
    fn observe(&self) -> Vec<Observed> {
        let mut out = Vec::new();
        for t in &self.config.targets {
            // The identity of this incarnation: the namespace file's inode or the interface's
            // index, so a target created again is a new sandbox.
            let incarnation = match (&t.netns, &t.interface) {
                (Some(ns), _) => std::fs::metadata(Path::new(NETNS_DIR).join(ns))
                    .ok()
                    .map(|m| format!("ns{}", m.ino())),
                (None, Some(iface)) => {
                    std::fs::read_to_string(format!("/sys/class/net/{iface}/ifindex"))
                        .ok()
                        .map(|i| format!("if{}", i.trim()))
                }
                (None, None) => None,
            };
            let Some(incarnation) = incarnation else {
                continue;
            };
            let node = t.node.clone().unwrap_or_else(|| self.default_node.clone());
            let id = format!("{}.{}.{incarnation}", t.namespace, t.name);
            let pod = Pod {
                metadata: ObjectMeta {
                    name: Some(t.name.clone()),
                    namespace: Some(t.namespace.clone()),
                    uid: Some(id.clone()),
                    labels: Some(t.labels.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(PodSpec {
                    node_name: Some(node.clone()),
                    ..PodSpec::default()
                }),
                status: Some(PodStatus {
                    phase: Some("Running".into()),
                    ..PodStatus::default()
                }),
            };
            out.push(Observed {
                pod,
                node,
                target: LocalTarget {
                    id,
                    pod: format!("{}/{}", t.namespace, t.name),
                    netns: t.netns.clone(),
                    interface: t.interface.clone(),
                },
            });
        }
        out
    }

    /// Every node named in the file (and the default one), all Ready: this machine.
    fn nodes(&self, observed: &[Observed]) -> Vec<Node> {
        let mut names: BTreeSet<String> = BTreeSet::from([self.default_node.clone()]);
        names.extend(self.config.targets.iter().filter_map(|t| t.node.clone()));
        names.extend(observed.iter().map(|o| o.node.clone()));
        names
            .into_iter()
            .map(|name| Node {
                metadata: ObjectMeta {
                    name: Some(name),
                    ..ObjectMeta::default()
                },
                status: Some(NodeStatus {
                    conditions: Some(vec![NodeCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        ..NodeCondition::default()
                    }]),
                    ..NodeStatus::default()
                }),
                ..Node::default()
            })
            .collect()
    }

    /// Notices exited processes (a finished or failed Job), merges their reports, and kills
    /// those that ignored SIGTERM for too long.
    async fn reap(&mut self) {
        let mut gone = Vec::new();
        let mut reports = Vec::new();
        for (name, job) in &mut self.jobs {
            if job.child.is_none() {
                if job.delete_requested {
                    gone.push(name.clone());
                }
                continue;
            }
            if let Some(report) = read_report(job) {
                reports.push((job.capture.clone(), job.node.clone(), report));
            }
            let Some(child) = job.child.as_mut() else {
                continue;
            };
            match child.try_wait() {
                Ok(None) => {
                    if job
                        .term_sent
                        .is_some_and(|t| t.elapsed() > self.args.kill_after)
                    {
                        warn!(job = %name, "The capture process ignored SIGTERM; killing it.");
                        let _ = child.start_kill();
                    }
                }
                Ok(Some(status)) => {
                    job.child = None;
                    // The last report ("Finished", every file) is written before exiting.
                    job.report_seen = None;
                    if let Some(report) = read_report(job) {
                        reports.push((job.capture.clone(), job.node.clone(), report));
                    }
                    let log = tail(&job.dir.join("capture.log"), 3);
                    let condition = if status.success() {
                        info!(job = %name, node = %job.node, "Capture process finished.");
                        job_condition("Complete", "Completed", "")
                    } else {
                        warn!(job = %name, node = %job.node, %status, log = %log, "Capture process failed.");
                        job_condition(
                            "Failed",
                            "BackoffLimitExceeded",
                            &format!("the capture process exited with {status}: {log}"),
                        )
                    };
                    if let Some(s) = job.job.status.as_mut() {
                        s.active = None;
                        s.conditions = Some(vec![condition]);
                    }
                    if job.delete_requested {
                        gone.push(name.clone());
                    }
                }
                Err(error) => warn!(job = %name, %error, "Cannot check the capture process."),
            }
        }
        for (key, node, report) in reports {
            self.merge(&key, &json!({ "status": { "nodes": { node: report } } }));
        }
        for name in gone {
            self.jobs.remove(&name);
        }
    }

    async fn apply(&mut self, key: &CaptureKey, uid: &str, action: Action, observed: &[Observed]) {
        match action {
            Action::UpdateStatus(update) => self.merge(key, &update.to_merge_patch()),
            Action::CreateJob(req) => self.start(key, uid, &req, observed),
            Action::StopJob(stop) => {
                if let Some(job) = self.jobs.get_mut(&stop.name) {
                    job.delete_requested = true;
                    match &job.child {
                        Some(child) if job.term_sent.is_none() => {
                            info!(job = %stop.name, node = %stop.node, reason = %stop.reason, "Stopping the capture process.");
                            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                                let _ = nix::sys::signal::kill(
                                    nix::unistd::Pid::from_raw(pid),
                                    nix::sys::signal::Signal::SIGTERM,
                                );
                            }
                            job.term_sent = Some(Instant::now());
                        }
                        Some(_) => {}
                        None => {
                            self.jobs.remove(&stop.name);
                        }
                    }
                }
            }
            Action::MarkJobIdle { job, since, .. } => {
                self.annotate(&job, labels::IDLE_SINCE, Some(since.to_string()))
            }
            Action::ClearJobIdle { job, .. } => self.annotate(&job, labels::IDLE_SINCE, None),
            Action::MarkJobEnded { job, .. } => {
                self.annotate(&job, labels::END_RECORDED, Some("true".into()))
            }
            Action::Event(note) => event(key, &note),
            Action::ReleaseFinalizer => {
                if let Some(mut pc) = self.captures.remove(key) {
                    pc.metadata.finalizers = None;
                    self.jobs
                        .retain(|_, j| j.capture != *key || j.child.is_some());
                    self.log_phase_of(key, &pc);
                    self.phases.remove(key);
                    self.done.push(pc);
                }
            }
            Action::RequeueAfter(_) => {} // planned again every tick
        }
    }

    /// Starts the capture process of (capture, node); a process that cannot start is a failed
    /// Job (the planner reports it), never a silent gap.
    fn start(&mut self, key: &CaptureKey, uid: &str, req: &JobRequest, observed: &[Observed]) {
        let Some(pc) = self.captures.get(key) else {
            return;
        };
        let dir = self.work_dir.join("jobs").join(&req.name);
        let targets = selected(pc, &req.node, observed);
        let mut job = LocalJob {
            capture: key.clone(),
            node: req.node.clone(),
            job: job_object(key, uid, req),
            child: None,
            dir: dir.clone(),
            targets: Some(targets.clone()),
            report_seen: None,
            term_sent: None,
            delete_requested: false,
        };
        match self.spawn(pc, req, &dir, &targets) {
            Ok(child) => {
                info!(
                    capture = %show(key),
                    job = %req.name,
                    node = %req.node,
                    targets = %targets.targets.iter().map(|t| t.pod.as_str()).collect::<Vec<_>>().join(", "),
                    log = %dir.join("capture.log").display(),
                    "Started a capture process."
                );
                job.child = Some(child);
            }
            Err(error) => {
                warn!(capture = %show(key), node = %req.node, %error, "Cannot start the capture process.");
                if let Some(s) = job.job.status.as_mut() {
                    s.active = None;
                    s.conditions = Some(vec![job_condition(
                        "Failed",
                        "StartError",
                        &format!("cannot start the capture process: {error}"),
                    )]);
                }
            }
        }
        self.jobs.insert(req.name.clone(), job);
    }

    fn spawn(
        &self,
        pc: &PacketCapture,
        req: &JobRequest,
        dir: &Path,
        targets: &LocalTargets,
    ) -> std::io::Result<Child> {
        std::fs::create_dir_all(dir)?;
        let capture_file = dir.join("capture.json");
        let targets_file = dir.join("targets.json");
        let report_file = dir.join("report.json");
        let _ = std::fs::remove_file(&report_file);
        write_atomic(&capture_file, &serde_json::to_vec_pretty(pc)?)?;
        write_atomic(&targets_file, &serde_json::to_vec(targets)?)?;
        let log = std::fs::File::create(dir.join("capture.log"))?;
        let summary = std::fs::File::create(dir.join("summary.json"))?;
        Command::new(&self.program)
            .arg("capture")
            .arg("--capture-file")
            .arg(&capture_file)
            .arg("--targets-file")
            .arg(&targets_file)
            .arg("--report-file")
            .arg(&report_file)
            .arg("--node")
            .arg(&req.node)
            .arg("--output")
            .arg(&self.config.output)
            .arg("--spool-dir")
            .arg(self.work_dir.join("spool"))
            .stdin(Stdio::null())
            .stdout(summary)
            .stderr(log)
            .spawn()
    }

    fn annotate(&mut self, job: &str, key: &str, value: Option<String>) {
        if let Some(j) = self.jobs.get_mut(job) {
            let a = j.job.metadata.annotations.get_or_insert_default();
            match value {
                Some(v) => a.insert(key.to_string(), v),
                None => a.remove(key),
            };
        }
    }

    /// JSON merge patch on a capture (its status, as the API server's status subresource).
    fn merge(&mut self, key: &CaptureKey, patch: &Value) {
        let Some(pc) = self.captures.get_mut(key) else {
            return;
        };
        let Ok(mut doc) = serde_json::to_value(&*pc) else {
            return;
        };
        json_patch::merge(&mut doc, patch);
        match serde_json::from_value::<PacketCapture>(doc) {
            Ok(new) => pc.status = new.status,
            Err(error) => {
                warn!(capture = %show(key), %error, "Ignoring a status update that does not fit the status.")
            }
        }
    }

    /// Keeps every running process's targets file current: targets that appeared, left, or
    /// were created again on its node.
    fn write_targets(&mut self, observed: &[Observed]) {
        for job in self.jobs.values_mut() {
            if job.child.is_none() || job.term_sent.is_some() {
                continue;
            }
            let Some(pc) = self.captures.get(&job.capture) else {
                continue;
            };
            let targets = selected(pc, &job.node, observed);
            if job.targets.as_ref() == Some(&targets) {
                continue;
            }
            let bytes = serde_json::to_vec(&targets).unwrap_or_default();
            match write_atomic(&job.dir.join("targets.json"), &bytes) {
                Ok(()) => job.targets = Some(targets),
                Err(error) => {
                    warn!(dir = %job.dir.display(), %error, "Cannot write the targets file.")
                }
            }
        }
    }

    fn all_captures(&self) -> Vec<&PacketCapture> {
        self.done.iter().chain(self.captures.values()).collect()
    }

    fn write_status(&mut self) {
        let Some(path) = self.args.status_file.clone() else {
            return;
        };
        let all: Vec<Value> = self.all_captures().into_iter().map(summary).collect();
        let bytes = serde_json::to_vec_pretty(&all).unwrap_or_default();
        if self.status_written.as_ref() == Some(&bytes) {
            return;
        }
        match write_atomic(&path, &bytes) {
            Ok(()) => self.status_written = Some(bytes),
            Err(error) => warn!(path = %path.display(), %error, "Cannot write the status file."),
        }
    }

    fn log_phase(&mut self, key: &CaptureKey) {
        if let Some(pc) = self.captures.get(key).cloned() {
            self.log_phase_of(key, &pc);
        }
    }

    fn log_phase_of(&mut self, key: &CaptureKey, pc: &PacketCapture) {
        let status = pc.status.clone().unwrap_or_default();
        if self.phases.get(key) == Some(&status.phase) {
            return;
        }
        self.phases.insert(key.clone(), status.phase);
        let phase = status.phase.map_or("-".to_string(), |p| format!("{p:?}"));
        let message = status.message.unwrap_or_default();
        if status.phase == Some(Phase::Failed) {
            warn!(capture = %show(key), %phase, note = %message, "Capture phase.");
        } else {
            info!(capture = %show(key), %phase, note = %message, "Capture phase.");
        }
    }

    /// Whether `nightcap local` is done: every capture finished (and, when stopping, released)
    /// and no capture process left.
    fn finished(&self) -> bool {
        if self.jobs.values().any(|j| j.child.is_some()) {
            return false;
        }
        if self.shutting_down {
            return self.captures.is_empty();
        }
        !self.args.watch
            && self.captures.values().all(|pc| {
                pc.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(Phase::is_finished)
            })
    }

    async fn kill_all(&mut self) {
        for job in self.jobs.values_mut() {
            if let Some(child) = job.child.as_mut() {
                let _ = child.kill().await;
            }
        }
    }

    /// Prints one JSON line per capture; returns the exit code.
    fn report(&self) -> i32 {
        let mut failed = false;
        for pc in self.all_captures() {
            failed |= pc.status.as_ref().and_then(|s| s.phase) == Some(Phase::Failed);
            println!("{}", summary(pc));
        }
        i32::from(failed)
    }
}

/// The targets `pc` selects on `node`: pods of its namespace matching its selector, or every
/// target on the node for a node-level capture.
fn selected(pc: &PacketCapture, node: &str, observed: &[Observed]) -> LocalTargets {
    let ns = pc.namespace().unwrap_or_default();
    let spec = pc
        .status
        .as_ref()
        .and_then(|s| s.accepted_spec.as_ref())
        .unwrap_or(&pc.spec);
    let empty = BTreeMap::new();
    let mut targets: Vec<LocalTarget> = observed
        .iter()
        .filter(|o| o.node == node)
        .filter(|o| match &spec.selector {
            Some(sel) => {
                o.pod.metadata.namespace.as_deref() == Some(ns.as_str())
                    && selector_matches(sel, o.pod.metadata.labels.as_ref().unwrap_or(&empty))
            }
            None => true,
        })
        .map(|o| o.target.clone())
        .collect();
    targets.sort();
    LocalTargets { targets }
}

fn job_object(key: &CaptureKey, uid: &str, req: &JobRequest) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some(req.name.clone()),
            namespace: Some(key.0.clone()),
            labels: Some(BTreeMap::from([(
                labels::CAPTURE_UID.to_string(),
                uid.to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                labels::NODE.to_string(),
                req.node.clone(),
            )])),
            creation_timestamp: Some(now_time()),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(JobStatus {
            active: Some(1),
            ..JobStatus::default()
        }),
    }
}

fn job_condition(type_: &str, reason: &str, message: &str) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: (!message.is_empty()).then(|| message.into()),
        last_transition_time: Some(now_time()),
        ..JobCondition::default()
    }
}

/// The report file of a process, when it changed since last read.
fn read_report(job: &mut LocalJob) -> Option<Value> {
    let path = job.dir.join("report.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if job.report_seen == Some(modified) {
        return None;
    }
    let report = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    job.report_seen = Some(modified);
    Some(report)
}

/// The last `n` non-empty lines of a log, joined (for a failure message).
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

fn event(key: &CaptureKey, note: &EventNote) {
    let job = note.job.as_deref().unwrap_or("");
    match note.kind {
        EventKind::Normal => {
            info!(capture = %show(key), reason = note.reason, job, "{}", note.note)
        }
        EventKind::Warning => {
            warn!(capture = %show(key), reason = note.reason, job, "{}", note.note)
        }
    }
}

/// What is printed (and written to the status file) for a capture.
fn summary(pc: &PacketCapture) -> Value {
    json!({
        "namespace": pc.namespace(),
        "name": pc.name_any(),
        "uid": pc.uid(),
        "status": pc.status,
    })
}

#[cfg(test)]
mod tests {
    use nightcap_api::PacketCaptureSpec;

    use super::*;

    fn observed(ns: &str, name: &str, app: &str, node: &str) -> Observed {
        Observed {
            pod: Pod {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(ns.into()),
                    labels: Some(BTreeMap::from([("app".into(), app.into())])),
                    ..ObjectMeta::default()
                },
                ..Pod::default()
            },
            node: node.into(),
            target: LocalTarget {
                id: format!("{ns}.{name}.ns1"),
                pod: format!("{ns}/{name}"),
                netns: Some(name.into()),
                interface: None,
            },
        }
    }

    fn capture(spec: &str) -> PacketCapture {
        let spec: PacketCaptureSpec = serde_yaml::from_str(spec).expect("spec");
        let mut pc = PacketCapture::new("c", spec);
        pc.metadata.namespace = Some("shop".into());
        pc
    }

    fn pods(t: &LocalTargets) -> Vec<&str> {
        t.targets.iter().map(|t| t.pod.as_str()).collect()
    }

    #[test]
    fn selects_by_labels_in_the_capture_namespace_on_the_node() {
        let all = [
            observed("shop", "web-1", "web", "a"),
            observed("shop", "web-2", "web", "b"),
            observed("shop", "db", "db", "a"),
            observed("other", "web-x", "web", "a"),
        ];
        let pc = capture("{selector: {matchLabels: {app: web}}}");
        assert_eq!(pods(&selected(&pc, "a", &all)), ["shop/web-1"]);
        assert_eq!(pods(&selected(&pc, "b", &all)), ["shop/web-2"]);
        assert!(selected(&pc, "c", &all).targets.is_empty());
        // A node-level capture takes every target of its node, whatever the namespace.
        let node_level = capture("{nodeNames: [a]}");
        assert_eq!(
            pods(&selected(&node_level, "a", &all)),
            ["other/web-x", "shop/db", "shop/web-1"]
        );
    }

    #[test]
    fn the_accepted_spec_wins_over_an_edited_one() {
        let all = [
            observed("shop", "web-1", "web", "a"),
            observed("shop", "db", "db", "a"),
        ];
        let mut pc = capture("{selector: {matchLabels: {app: db}}}");
        pc.status = Some(nightcap_api::PacketCaptureStatus {
            accepted_spec: Some(
                serde_yaml::from_str("{selector: {matchLabels: {app: web}}}").expect("spec"),
            ),
            ..Default::default()
        });
        assert_eq!(pods(&selected(&pc, "a", &all)), ["shop/web-1"]);
    }

    #[test]
    fn job_objects_carry_what_the_planner_reads() {
        let req = JobRequest {
            node: "a".into(),
            name: "nc-c-a-123".into(),
            active_deadline_seconds: 60,
            pods: vec![],
        };
        let job = job_object(&("shop".into(), "c".into()), "uid-1", &req);
        let labels = job.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels[labels::CAPTURE_UID], "uid-1");
        let annotations = job.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(annotations[labels::NODE], "a");
        assert_eq!(job.status.and_then(|s| s.active), Some(1));
    }
}
