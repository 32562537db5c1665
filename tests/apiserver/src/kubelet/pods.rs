//! The pod worker: watches pods bound to this node and moves them through their lifecycle —
//! sandbox, process start, Running, exit (restart per restartPolicy or terminal phase), and on
//! deletion SIGTERM, SIGKILL after the grace period, final status, delete with grace 0.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
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
    Ctx,
    container::{self, Launch, PodView},
    sandbox::{PodRef, Sandbox},
    status::{ContainerState, PodStatus, render},
};
use crate::time::timestamp;

pub(crate) fn pod_dir(state: &Path, ns: &str, name: &str, uid: &str) -> PathBuf {
    state.join("pods").join(ns).join(name).join(uid)
}

/// The directory of the newest pod (by uid) with this name.
pub(crate) fn newest_dir(state: &Path, ns: &str, name: &str) -> Option<PathBuf> {
    let dir = state.join("pods").join(ns).join(name);
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, p)| p)
}

pub(crate) fn logs(state: &Path, ns: &str, name: &str) -> String {
    let Some(d) = newest_dir(state, ns, name) else {
        return String::new();
    };
    let mut out = String::new();
    for e in std::fs::read_dir(d.join("logs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
    }
    out
}

enum Ev {
    Apply(Box<Pod>),
    Gone(String),
    Exited {
        uid: String,
        generation: u64,
        code: i32,
        signal: Option<i32>,
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
    ips: Vec<String>,
    pid: Option<i32>,
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
                } => w.on_exit(&uid, generation, code, signal).await,
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
                    if let Some(pid) = rt.pid {
                        signal_group(pid, Signal::SIGTERM);
                    }
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
            if let Some(pid) = rt.pid {
                signal_group(pid, Signal::SIGKILL);
            }
            self.ctx
                .pids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(uid);
        }
    }

    fn on_kill(&mut self, uid: &str, generation: u64) {
        if let Some(rt) = self.pods.get(uid).filter(|rt| rt.generation == generation)
            && let Some(pid) = rt.pid
        {
            signal_group(pid, Signal::SIGKILL);
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
            ips: vec![self.ctx.opts.node_ip.to_string()],
            pid: None,
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
        let result = self
            .prepare(&pod, &view, &dir, netns)
            .await
            .and_then(|l| container::spawn(&l));
        let now = timestamp(Timestamp::now());
        let Some(rt) = self.pods.get_mut(uid) else {
            return;
        };
        rt.generation += 1;
        match result {
            Ok(mut child) => {
                let pid = child.id().map(|p| p as i32);
                rt.pid = pid;
                rt.started_at = now.clone();
                if let Some(pid) = pid {
                    self.ctx
                        .pids
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(uid.to_string(), pid);
                }
                let (tx, generation, uid2) = (self.tx.clone(), rt.generation, uid.to_string());
                tokio::spawn(async move {
                    use std::os::unix::process::ExitStatusExt;
                    let (code, signal) = match child.wait().await {
                        Ok(st) => match st.signal() {
                            Some(sig) => (128 + sig, Some(sig)),
                            None => (st.code().unwrap_or(1), None),
                        },
                        Err(_) => (1, None),
                    };
                    let _ = tx
                        .send(Ev::Exited {
                            uid: uid2,
                            generation,
                            code,
                            signal,
                        })
                        .await;
                });
                self.write_status(uid, "Running", ContainerState::Running { started_at: now })
                    .await;
            }
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "Container start failed.");
                let msg = e.to_string();
                let generation = rt.generation;
                rt.started_at = now.clone();
                if self
                    .tx
                    .try_send(Ev::Exited {
                        uid: uid.to_string(),
                        generation,
                        code: 128,
                        signal: None,
                    })
                    .is_err()
                {
                    tracing::warn!(pod = %name, "Kubelet event queue full; the start failure is not recorded.");
                }
                if let Some(rt) = self.pods.get_mut(uid) {
                    rt.last_state = Some(ContainerState::Waiting {
                        reason: "StartError".into(),
                        message: msg,
                    });
                }
            }
        }
    }

    async fn prepare(
        &self,
        pod: &Pod,
        view: &PodView,
        dir: &Path,
        netns: Option<PathBuf>,
    ) -> crate::Result<Launch> {
        let c = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .ok_or_else(|| crate::Error::Config("pod has no containers".into()))?;
        std::fs::create_dir_all(dir.join("logs")).map_err(|source| crate::Error::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let ns = pod.namespace().unwrap_or_default();
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let token = self.ctx.shared.service_account_token(&ns, &sa);
        if let Some(ns_path) = &netns {
            std::fs::write(dir.join("netns"), ns_path.to_string_lossy().as_bytes()).map_err(
                |source| crate::Error::Io {
                    what: format!("writing {}/netns", dir.display()),
                    source,
                },
            )?;
        }
        let kubeconfig = dir.join("kubeconfig");
        container::write_kubeconfig(
            &kubeconfig,
            &self.ctx.server_url,
            self.ctx.ca_pem.as_deref(),
            &token,
            &ns,
        )?;
        let mut env = std::collections::BTreeMap::new();
        env.insert(
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        );
        env.insert("HOME".to_string(), dir.to_string_lossy().into_owned());
        env.insert("HOSTNAME".to_string(), pod.name_any());
        env.insert(
            "KUBECONFIG".to_string(),
            kubeconfig.to_string_lossy().into_owned(),
        );
        let port = self
            .ctx
            .server_url
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_string();
        env.insert("KUBERNETES_SERVICE_HOST".to_string(), "127.0.0.1".into());
        env.insert("KUBERNETES_SERVICE_PORT".to_string(), port);
        env.extend(container::environment(&self.ctx.client, view, c).await?);
        let argv = container::argv(pod, &env, &self.ctx.opts.binaries)?;
        Ok(Launch {
            argv,
            env,
            workdir: dir.to_path_buf(),
            log: dir.join("logs").join(format!("{}.log", c.name)),
            netns,
        })
    }

    async fn on_exit(&mut self, uid: &str, generation: u64, code: i32, signal: Option<i32>) {
        let backoff = self.ctx.opts.restart_backoff;
        let Some(rt) = self
            .pods
            .get_mut(uid)
            .filter(|rt| rt.generation == generation)
        else {
            return;
        };
        rt.pid = None;
        self.ctx
            .pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
        let now = timestamp(Timestamp::now());
        let message = match &rt.last_state {
            Some(ContainerState::Waiting { reason, message }) if reason == "StartError" => {
                message.clone()
            }
            _ => String::new(),
        };
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
            container_id: if rt.generation > 0 {
                format!("fake://{uid}-{}", rt.generation)
            } else {
                String::new()
            },
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
