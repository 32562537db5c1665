//! The pod worker: watches pods bound to this node and moves them through their lifecycle —
//! sandbox, process start, Running, exit (restart per restartPolicy or terminal phase), and on
//! deletion SIGTERM, SIGKILL after the grace period, final status, delete with grace 0.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
    runtime::{WatchStreamExt, watcher},
};
use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    Ctx, Running,
    container::{self, PodView},
    pod_dir,
    runc::{self, RuncContainer, StartFailure},
    runtime::Runtime,
    sandbox::{PodRef, Sandbox},
    service_proxy::{self, ServiceProxy},
    status::{ContainerState, PodStatus, render},
};
use crate::time::timestamp;

enum Ev {
    Apply(Box<Pod>),
    Gone(String),
    Exited {
        uid: String,
        generation: u64,
        code: i32,
        signal: Option<i32>,
        start_error: Option<String>,
    },
    Restart {
        uid: String,
        generation: u64,
    },
    Kill {
        uid: String,
        generation: u64,
    },
}

struct PodRt {
    pod: Pod,
    sandbox: Option<Box<dyn Sandbox>>,
    _api_proxy: Option<ServiceProxy>,
    ips: Vec<String>,
    pid: Option<i32>,
    runc: Option<RuncContainer>,
    container_id: String,
    image_id: String,
    generation: u64,
    restart_count: i32,
    started_at: String,
    start_time: String,
    terminating: bool,
    last_state: Option<ContainerState>,
}

struct Worker {
    ctx: Ctx,
    api: Api<Pod>,
    tx: mpsc::Sender<Ev>,
    pods: HashMap<String, PodRt>,
}

/// Run the pod worker until aborted.
pub(crate) async fn run(ctx: Ctx) {
    let (tx, mut rx) = mpsc::channel(256);
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node));
    let wtx = tx.clone();
    let watch_api = api.clone();
    let feed = async move {
        let mut stream = watcher(watch_api, cfg).default_backoff().boxed();
        let mut listing: Option<HashSet<String>> = None;
        let mut known: HashSet<String> = HashSet::new();
        while let Some(ev) = stream.next().await {
            let evs = match ev {
                Ok(watcher::Event::Init) => {
                    listing = Some(HashSet::new());
                    vec![]
                }
                Ok(watcher::Event::InitApply(p)) => {
                    if let Some(l) = listing.as_mut() {
                        l.insert(p.uid().unwrap_or_default());
                    }
                    known.insert(p.uid().unwrap_or_default());
                    vec![Ev::Apply(Box::new(p))]
                }
                Ok(watcher::Event::InitDone) => {
                    let seen = listing.take().unwrap_or_default();
                    let gone: Vec<String> = known.difference(&seen).cloned().collect();
                    known = seen;
                    gone.into_iter().map(Ev::Gone).collect()
                }
                Ok(watcher::Event::Apply(p)) => {
                    known.insert(p.uid().unwrap_or_default());
                    vec![Ev::Apply(Box::new(p))]
                }
                Ok(watcher::Event::Delete(p)) => {
                    let uid = p.uid().unwrap_or_default();
                    known.remove(&uid);
                    vec![Ev::Gone(uid)]
                }
                Err(e) => {
                    tracing::debug!(error = %e, "Pod watch error; the watcher retries.");
                    vec![]
                }
            };
            for e in evs {
                if wtx.send(e).await.is_err() {
                    return;
                }
            }
        }
    };
    let mut w = Worker {
        ctx,
        api,
        tx,
        pods: HashMap::new(),
    };
    let work = async move {
        while let Some(ev) = rx.recv().await {
            match ev {
                Ev::Apply(p) => w.on_pod(*p).await,
                Ev::Gone(uid) => w.on_gone(&uid),
                Ev::Exited {
                    uid,
                    generation,
                    code,
                    signal,
                    start_error,
                } => w.on_exit(&uid, generation, code, signal, start_error).await,
                Ev::Restart { uid, generation } => w.on_restart(&uid, generation).await,
                Ev::Kill { uid, generation } => w.on_kill(&uid, generation),
            }
        }
    };
    // One task: aborting the kubelet stops the watch and the worker together.
    tokio::join!(feed, work);
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn signal_group(pid: i32, sig: Signal) {
    let _ = nix::sys::signal::killpg(Pid::from_raw(pid), sig);
}

/// Signal a running container: `runc kill` in runc mode (KILL reaches all its processes),
/// else the process group.
fn stop(rt: &PodRt, sig: Signal) {
    match (&rt.runc, rt.pid) {
        (Some(c), Some(_)) => {
            let c = c.clone();
            let kill = sig == Signal::SIGKILL;
            tokio::task::spawn_blocking(move || c.kill(if kill { "KILL" } else { "TERM" }, kill));
        }
        (None, Some(pid)) => signal_group(pid, sig),
        _ => {}
    }
}

/// A started container as the worker tracks it.
struct Spawned {
    child: tokio::process::Child,
    runc: Option<RuncContainer>,
    container_id: String,
    image_id: String,
}

impl Worker {
    async fn on_pod(&mut self, pod: Pod) {
        let uid = pod.uid().unwrap_or_default();
        let deleting = pod.metadata.deletion_timestamp.is_some();
        if let Some(rt) = self.pods.get_mut(&uid) {
            rt.pod = pod.clone();
        }
        if deleting {
            return self.on_deleting(&uid, pod).await;
        }
        if self.pods.contains_key(&uid) || matches!(phase(&pod), "Succeeded" | "Failed") {
            return;
        }
        self.start_pod(pod).await;
    }

    async fn on_deleting(&mut self, uid: &str, pod: Pod) {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or(0)
            .max(0) as u64;
        match self.pods.get_mut(uid) {
            Some(rt) if rt.pid.is_some() => {
                if !rt.terminating {
                    rt.terminating = true;
                    stop(rt, Signal::SIGTERM);
                    let (tx, generation, uid) = (self.tx.clone(), rt.generation, uid.to_string());
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(grace)).await;
                        let _ = tx.send(Ev::Kill { uid, generation }).await;
                    });
                }
            }
            _ => self.finish_deletion(uid, &pod).await,
        }
    }

    /// Containers are stopped: delete with grace 0 (the API server removes the pod).
    async fn finish_deletion(&mut self, uid: &str, pod: &Pod) {
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => tracing::warn!(pod = %pod.name_any(), error = %e, "Final pod delete failed."),
        }
        self.on_gone(uid);
    }

    fn on_gone(&mut self, uid: &str) {
        if let Some(rt) = self.pods.remove(uid) {
            stop(&rt, Signal::SIGKILL);
            self.ctx
                .pids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(uid);
        }
    }

    fn on_kill(&mut self, uid: &str, generation: u64) {
        if let Some(rt) = self.pods.get(uid).filter(|rt| rt.generation == generation) {
            stop(rt, Signal::SIGKILL);
        }
    }

    async fn start_pod(&mut self, pod: Pod) {
        let uid = pod.uid().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let host_network = spec.host_network == Some(true);
        let now = timestamp(Timestamp::now());
        let mut rt = PodRt {
            pod: pod.clone(),
            sandbox: None,
            _api_proxy: None,
            ips: vec![self.ctx.opts.node_ip.to_string()],
            pid: None,
            runc: None,
            container_id: String::new(),
            image_id: String::new(),
            generation: 0,
            restart_count: 0,
            started_at: now.clone(),
            start_time: now,
            terminating: false,
            last_state: None,
        };
        if let (false, Some(provider)) = (host_network, &self.ctx.opts.sandboxes) {
            let r = PodRef {
                namespace: pod.namespace().unwrap_or_default(),
                name: pod.name_any(),
                uid: uid.clone(),
                node: self.ctx.node.clone(),
            };
            match provider.create(&r) {
                Ok(sb) => {
                    let mut ips = sb.ips();
                    ips.sort_by_key(|ip| ip.is_ipv6());
                    rt.ips = ips.iter().map(ToString::to_string).collect();
                    if let Some(ns) = sb.netns_path() {
                        match service_proxy::start(&ns, self.ctx.server_port()) {
                            Ok(p) => rt._api_proxy = Some(p),
                            Err(e) => tracing::warn!(pod = %r.name, error = %e,
                                "The API server is not reachable from the pod's network namespace."),
                        }
                    }
                    rt.sandbox = Some(sb);
                }
                Err(e) => {
                    tracing::warn!(pod = %r.name, error = %e, "Pod sandbox creation failed.");
                    let state = ContainerState::Waiting {
                        reason: "CreatePodSandboxError".into(),
                        message: e.to_string(),
                    };
                    self.pods.insert(uid.clone(), rt);
                    self.write_status(&uid, "Pending", state).await;
                    return;
                }
            }
        }
        self.pods.insert(uid.clone(), rt);
        self.launch(&uid).await;
    }

    async fn launch(&mut self, uid: &str) {
        let Some(rt) = self.pods.get(uid) else { return };
        let pod = rt.pod.clone();
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let dir = pod_dir(&self.ctx.state_dir, &ns, &name, uid);
        let view = PodView {
            pod: serde_json::to_value(&pod).unwrap_or_default(),
            pod_ips: rt.ips.clone(),
            host_ip: self.ctx.opts.node_ip.to_string(),
        };
        let netns = rt.sandbox.as_ref().and_then(|s| s.netns_path());
        let generation = rt.generation + 1;
        let (container_id, result) = match &self.ctx.opts.runtime {
            Runtime::Process => (
                format!("fake://{uid}-{generation}"),
                container::prepare(&self.ctx, &pod, &view, &dir, netns)
                    .await
                    .and_then(|l| container::spawn(&l))
                    .map(|child| Spawned {
                        child,
                        runc: None,
                        container_id: format!("fake://{uid}-{generation}"),
                        image_id: String::new(),
                    })
                    .map_err(StartFailure::Error),
            ),
            Runtime::Runc(r) => {
                let id = format!("{uid}-{generation}");
                (
                    format!("runc://{id}"),
                    runc::start(&self.ctx, r, &pod, &view, &dir, netns, &id)
                        .await
                        .map(|s| Spawned {
                            child: s.child,
                            runc: Some(s.container),
                            container_id: format!("runc://{id}"),
                            image_id: s.image_id,
                        }),
                )
            }
        };
        let now = timestamp(Timestamp::now());
        let Some(rt) = self.pods.get_mut(uid) else {
            return;
        };
        match result {
            Ok(Spawned {
                mut child,
                runc,
                container_id,
                image_id,
            }) => {
                rt.generation = generation;
                let pid = child.id().map(|p| p as i32);
                rt.pid = pid;
                rt.runc = runc.clone();
                rt.container_id = container_id;
                rt.image_id = image_id;
                rt.started_at = now.clone();
                if let Some(pid) = pid {
                    self.ctx
                        .pids
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(
                            uid.to_string(),
                            Running {
                                pid,
                                runc: runc.clone(),
                            },
                        );
                }
                let (tx, uid2) = (self.tx.clone(), uid.to_string());
                tokio::spawn(async move {
                    use std::os::unix::process::ExitStatusExt;
                    let (mut code, mut signal) = match child.wait().await {
                        Ok(st) => match st.signal() {
                            Some(sig) => (128 + sig, Some(sig)),
                            None => (st.code().unwrap_or(1), None),
                        },
                        Err(_) => (1, None),
                    };
                    let mut start_error = None;
                    if let Some(c) = runc {
                        // runc reports a container killed by signal N as exit code 128+N.
                        if (129..=128 + 64).contains(&code) {
                            signal = signal.or(Some(code - 128));
                        }
                        start_error = (code != 0).then(|| c.start_error()).flatten();
                        if start_error.is_some() {
                            code = 128;
                        }
                        let _ = tokio::task::spawn_blocking(move || c.delete()).await;
                    }
                    let ev = Ev::Exited {
                        uid: uid2,
                        generation,
                        code,
                        signal,
                        start_error,
                    };
                    let _ = tx.send(ev).await;
                });
                self.write_status(uid, "Running", ContainerState::Running { started_at: now })
                    .await;
            }
            Err(StartFailure::Waiting { reason, message }) => {
                tracing::warn!(pod = %name, reason, %message, "Container not created.");
                let phase = if rt.restart_count == 0 {
                    "Pending"
                } else {
                    "Running"
                };
                let state = ContainerState::Waiting {
                    reason: reason.into(),
                    message,
                };
                self.write_status(uid, phase, state).await;
            }
            Err(StartFailure::Error(e)) => {
                tracing::warn!(pod = %name, error = %e, "Container start failed.");
                rt.generation = generation;
                rt.container_id = container_id;
                let msg = e.to_string();
                rt.started_at = now.clone();
                if self
                    .tx
                    .try_send(Ev::Exited {
                        uid: uid.to_string(),
                        generation,
                        code: 128,
                        signal: None,
                        start_error: Some(msg),
                    })
                    .is_err()
                {
                    tracing::warn!(pod = %name, "Kubelet event queue full; the start failure is not recorded.");
                }
            }
        }
    }

    async fn on_exit(
        &mut self,
        uid: &str,
        generation: u64,
        code: i32,
        signal: Option<i32>,
        start_error: Option<String>,
    ) {
        let backoff = self.ctx.opts.restart_backoff;
        let Some(rt) = self
            .pods
            .get_mut(uid)
            .filter(|rt| rt.generation == generation)
        else {
            return;
        };
        rt.pid = None;
        rt.runc = None;
        self.ctx
            .pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
        let now = timestamp(Timestamp::now());
        let message = start_error.unwrap_or_default();
        let reason = if !message.is_empty() {
            "StartError"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let terminated = ContainerState::Terminated {
            exit_code: code,
            signal,
            reason: reason.into(),
            message,
            started_at: rt.started_at.clone(),
            finished_at: now,
        };
        let policy = rt
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let deleting = rt.terminating || rt.pod.metadata.deletion_timestamp.is_some();
        let restart = !deleting && (policy == "Always" || (policy == "OnFailure" && code != 0));
        if restart {
            rt.restart_count += 1;
            rt.last_state = Some(terminated.clone());
            let (tx, uid2) = (self.tx.clone(), uid.to_string());
            tokio::spawn(async move {
                tokio::time::sleep(backoff).await;
                let _ = tx
                    .send(Ev::Restart {
                        uid: uid2,
                        generation,
                    })
                    .await;
            });
            let waiting = ContainerState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: format!(
                    "back-off {}s restarting failed container",
                    backoff.as_secs()
                ),
            };
            self.write_status(uid, "Running", waiting).await;
            return;
        }
        rt.last_state = None;
        let phase = if code == 0 { "Succeeded" } else { "Failed" };
        self.write_status(uid, phase, terminated).await;
        if deleting {
            let pod = rt_pod(&self.pods, uid);
            if let Some(pod) = pod {
                self.finish_deletion(uid, &pod).await;
            }
        }
    }

    async fn on_restart(&mut self, uid: &str, generation: u64) {
        let ok = self
            .pods
            .get(uid)
            .is_some_and(|rt| rt.generation == generation && !rt.terminating && rt.pid.is_none());
        if ok {
            self.launch(uid).await;
        }
    }

    async fn write_status(&self, uid: &str, phase: &'static str, state: ContainerState) {
        let Some(rt) = self.pods.get(uid) else { return };
        let c = rt.pod.spec.as_ref().and_then(|s| s.containers.first());
        let st = PodStatus {
            phase,
            container: c.map(|c| c.name.clone()).unwrap_or_default(),
            image: c.and_then(|c| c.image.clone()).unwrap_or_default(),
            container_id: rt.container_id.clone(),
            image_id: rt.image_id.clone(),
            state,
            last_state: rt
                .last_state
                .clone()
                .filter(|s| matches!(s, ContainerState::Terminated { .. })),
            restart_count: rt.restart_count,
            pod_ips: rt.ips.clone(),
            host_ip: self.ctx.opts.node_ip.to_string(),
            start_time: rt.start_time.clone(),
            now: timestamp(Timestamp::now()),
        };
        let body: Value = json!({"status": render(&st)});
        let ns = rt.pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.api.clone().into_client(), &ns);
        if let Err(e) = api
            .patch_status(
                &rt.pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&body),
            )
            .await
        {
            tracing::debug!(pod = %rt.pod.name_any(), error = %e, "Pod status update failed.");
        }
    }
}

fn rt_pod(pods: &HashMap<String, PodRt>, uid: &str) -> Option<Pod> {
    pods.get(uid).map(|rt| rt.pod.clone())
}
