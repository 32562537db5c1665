//! Capture processes standing in for capture Jobs: started per (capture, node) as
//! `PROGRAM capture --capture-file …`, kept fed with their targets file, stopped with SIGTERM
//! (killed when they ignore it), and read back as the planner's Job facts.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant, SystemTime},
};

use nightcap_api::{PacketCapture, local::LocalTargets};
use serde_json::Value;
use tokio::process::{Child, Command};
use tracing::{info, warn};

use crate::{
    replace_file,
    status::{CaptureKey, show},
};
use nightcap_scheduler::plan::{JobFact, JobRequest, JobState, StopJob, spec_hash};

/// A capture process and what the planner knows of it.
struct LocalJob {
    capture: CaptureKey,
    /// What the planner sees.
    fact: JobFact,
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

/// A report file a process wrote since it was last read: its `status.nodes[node]` entry.
pub(crate) struct Report {
    pub capture: CaptureKey,
    /// The capture incarnation the process captured for.
    pub uid: String,
    pub node: String,
    pub entry: Value,
}

/// Every capture process, by Job name.
pub(crate) struct Processes {
    program: PathBuf,
    work_dir: PathBuf,
    kill_after: Duration,
    jobs: BTreeMap<String, LocalJob>,
}

impl Processes {
    /// Processes run as `program capture …`, with their files under `work_dir/jobs/NAME`.
    pub fn new(program: PathBuf, work_dir: PathBuf, kill_after: Duration) -> Self {
        Self {
            program,
            work_dir,
            kill_after,
            jobs: BTreeMap::new(),
        }
    }

    /// The Job facts of one capture's processes.
    pub fn facts(&self, capture: &CaptureKey) -> Vec<JobFact> {
        self.jobs
            .values()
            .filter(|j| j.capture == *capture)
            .map(|j| j.fact.clone())
            .collect()
    }

    /// Whether any process is still running.
    pub fn any_running(&self) -> bool {
        self.jobs.values().any(|j| j.child.is_some())
    }

    /// Starts the capture process of (capture, node) writing to `output`; a process that
    /// cannot start is a failed Job (the planner reports it), never a silent gap.
    pub fn start(
        &mut self,
        key: &CaptureKey,
        pc: &PacketCapture,
        req: &JobRequest,
        targets: LocalTargets,
        output: &str,
    ) {
        let dir = self.work_dir.join("jobs").join(&req.name);
        let accepted = pc
            .status
            .as_ref()
            .and_then(|s| s.accepted_spec.as_ref())
            .unwrap_or(&pc.spec);
        let mut job = LocalJob {
            capture: key.clone(),
            fact: JobFact {
                name: req.name.clone(),
                node: req.node.clone(),
                capture_uid: pc.metadata.uid.clone().unwrap_or_default(),
                spec_hash: Some(spec_hash(accepted)),
                state: JobState::Active,
                idle_since: None,
                end_recorded: false,
            },
            child: None,
            dir: dir.clone(),
            targets: Some(targets.clone()),
            report_seen: None,
            term_sent: None,
            delete_requested: false,
        };
        match self.spawn(pc, req, &dir, &targets, output) {
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
                job.fact.state = JobState::Failed {
                    reason: "StartError".into(),
                    message: format!("cannot start the capture process: {error}"),
                };
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
        output: &str,
    ) -> std::io::Result<Child> {
        std::fs::create_dir_all(dir)?;
        let capture_file = dir.join("capture.json");
        let targets_file = dir.join("targets.json");
        let report_file = dir.join("report.json");
        let _ = std::fs::remove_file(&report_file);
        replace_file(&dir.join("node"), req.node.as_bytes())?;
        replace_file(&capture_file, &serde_json::to_vec_pretty(pc)?)?;
        replace_file(&targets_file, &serde_json::to_vec(targets)?)?;
        let log = std::fs::File::create(dir.join("capture.log"))?;
        let summary = std::fs::File::create(dir.join("summary.json"))?;
        let child = Command::new(&self.program)
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
            .arg(output)
            .arg("--spool-dir")
            .arg(self.work_dir.join("spool"))
            .stdin(Stdio::null())
            .stdout(summary)
            .stderr(log)
            .spawn()?;
        if let Some(pid) = child.id() {
            replace_file(&dir.join("pid"), pid.to_string().as_bytes())?;
        }
        Ok(child)
    }

    /// Sends SIGTERM to every process (each uploads its last file and exits).
    pub fn stop_all(&mut self) {
        for (name, job) in &mut self.jobs {
            if let Some(child) = &job.child
                && job.term_sent.is_none()
            {
                if let Some(pid) = child.id() {
                    term(pid);
                }
                info!(job = %name, "Stopping the capture process.");
                job.term_sent = Some(Instant::now());
            }
        }
    }

    /// The job directories of an earlier run: waits (at most `wait`) for processes still
    /// running there — orphans of a killed `nightcap local` upload their last file and exit by
    /// themselves — and returns their last reports. The directories are reused by new
    /// processes of the same Job name.
    pub async fn adopt(&mut self, wait: Duration) -> Vec<Report> {
        let jobs = self.work_dir.join("jobs");
        let Ok(dirs) = std::fs::read_dir(&jobs) else {
            return Vec::new();
        };
        let dirs: Vec<PathBuf> = dirs.flatten().map(|e| e.path()).collect();
        let deadline = Instant::now() + wait;
        let mut reports = Vec::new();
        for dir in dirs {
            let pid = std::fs::read_to_string(dir.join("pid"))
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok());
            if let Some(pid) = pid {
                let mut told = false;
                while alive(pid, &dir) && Instant::now() < deadline {
                    if !told {
                        info!(dir = %dir.display(), pid, "Waiting for a capture process of the previous run to upload and exit.");
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if alive(pid, &dir) {
                    warn!(dir = %dir.display(), pid, "A capture process of the previous run is still running; stopping it.");
                    term(pid);
                }
            }
            let _ = std::fs::remove_file(dir.join("pid"));
            let capture: Option<PacketCapture> = std::fs::read(dir.join("capture.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let entry: Option<Value> = std::fs::read(dir.join("report.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let node = entry
                .as_ref()
                .and_then(|e| e.get("node").and_then(Value::as_str).map(str::to_owned))
                .or_else(|| std::fs::read_to_string(dir.join("node")).ok());
            if let (Some(pc), Some(entry), Some(node)) = (capture, entry, node) {
                reports.push(Report {
                    capture: (
                        pc.metadata.namespace.clone().unwrap_or_default(),
                        pc.metadata.name.clone().unwrap_or_default(),
                    ),
                    uid: pc.metadata.uid.clone().unwrap_or_default(),
                    node,
                    entry,
                });
            }
            let _ = std::fs::remove_file(dir.join("report.json"));
        }
        reports
    }

    /// Stops a process (SIGTERM: it uploads its last file and exits); forgotten once gone.
    pub fn stop(&mut self, stop: &StopJob) {
        let Some(job) = self.jobs.get_mut(&stop.name) else {
            return;
        };
        job.delete_requested = true;
        match &job.child {
            Some(child) if job.term_sent.is_none() => {
                info!(job = %stop.name, node = %stop.node, reason = %stop.reason, "Stopping the capture process.");
                if let Some(pid) = child.id() {
                    term(pid);
                }
                job.term_sent = Some(Instant::now());
            }
            Some(_) => {}
            None => {
                self.jobs.remove(&stop.name);
            }
        }
    }

    /// Edits what the planner knows of a Job (its idle and ended marks).
    pub fn mark(&mut self, job: &str, edit: impl FnOnce(&mut JobFact)) {
        if let Some(j) = self.jobs.get_mut(job) {
            edit(&mut j.fact);
        }
    }

    /// Forgets the ended processes of a released capture.
    pub fn release(&mut self, capture: &CaptureKey) {
        self.jobs
            .retain(|_, j| j.capture != *capture || j.child.is_some());
    }

    /// Notices exited processes (a finished or failed Job), collects new reports, and kills
    /// those that ignored SIGTERM for too long.
    pub fn reap(&mut self) -> Vec<Report> {
        let mut gone = Vec::new();
        let mut reports = Vec::new();
        for (name, job) in &mut self.jobs {
            if job.child.is_none() {
                if job.delete_requested {
                    gone.push(name.clone());
                }
                continue;
            }
            if let Some(r) = read_report(job) {
                reports.push(r);
            }
            let Some(child) = job.child.as_mut() else {
                continue;
            };
            match child.try_wait() {
                Ok(None) => {
                    if job.term_sent.is_some_and(|t| t.elapsed() > self.kill_after) {
                        warn!(job = %name, "The capture process ignored SIGTERM; killing it.");
                        let _ = child.start_kill();
                    }
                }
                Ok(Some(status)) => {
                    job.child = None;
                    // The last report ("Finished", every file) is written before exiting.
                    job.report_seen = None;
                    if let Some(r) = read_report(job) {
                        reports.push(r);
                    }
                    let log = tail(&job.dir.join("capture.log"), 3);
                    job.fact.state = if status.success() {
                        info!(job = %name, node = %job.fact.node, "Capture process finished.");
                        JobState::Finished
                    } else {
                        warn!(job = %name, node = %job.fact.node, %status, log = %log, "Capture process failed.");
                        JobState::Failed {
                            reason: "BackoffLimitExceeded".into(),
                            message: format!("the capture process exited with {status}: {log}"),
                        }
                    };
                    if job.delete_requested {
                        gone.push(name.clone());
                    }
                }
                Err(error) => warn!(job = %name, %error, "Cannot check the capture process."),
            }
        }
        for name in gone {
            self.jobs.remove(&name);
        }
        reports
    }

    /// Keeps every running process's targets file current: `targets(capture, node)` are the
    /// targets it should have now (`None`: its capture is gone).
    pub fn write_targets(&mut self, targets: impl Fn(&CaptureKey, &str) -> Option<LocalTargets>) {
        for job in self.jobs.values_mut() {
            if job.child.is_none() || job.term_sent.is_some() {
                continue;
            }
            let Some(want) = targets(&job.capture, &job.fact.node) else {
                continue;
            };
            if job.targets.as_ref() == Some(&want) {
                continue;
            }
            let bytes = serde_json::to_vec(&want).unwrap_or_default();
            match replace_file(&job.dir.join("targets.json"), &bytes) {
                Ok(()) => job.targets = Some(want),
                Err(error) => {
                    warn!(dir = %job.dir.display(), %error, "Cannot write the targets file.")
                }
            }
        }
    }

    /// Kills every process (open files are lost).
    pub async fn kill_all(&mut self) {
        for job in self.jobs.values_mut() {
            if let Some(child) = job.child.as_mut() {
                let _ = child.kill().await;
            }
        }
    }
}

/// The report file of a process, when it changed since last read.
fn read_report(job: &mut LocalJob) -> Option<Report> {
    let path = job.dir.join("report.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if job.report_seen == Some(modified) {
        return None;
    }
    let entry = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    job.report_seen = Some(modified);
    Some(Report {
        capture: job.capture.clone(),
        uid: job.fact.capture_uid.clone(),
        node: job.fact.node.clone(),
        entry,
    })
}

fn term(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// Whether `pid` is still the capture process of `dir` (its command line names the dir).
fn alive(pid: u32, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let dir = dir.as_os_str().as_encoded_bytes();
    cmdline.windows(dir.len()).any(|w| w == dir)
}

/// The last `n` non-empty lines of a log, joined (for a failure message).
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}
