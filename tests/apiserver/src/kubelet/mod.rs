//! [`FakeKubelet`]: one fake node. Registers its Node and Lease, runs the pods bound to it (see
//! `pods`) as local processes or, with [`Runtime::Runc`], as runc containers (see `runc`), and
//! runs a minimal Job controller for Jobs pinned to it (see `jobs`). Several kubelets can share
//! one machine and one [`ApiServer`].

pub(crate) mod container;
mod jobs;
mod node;
mod pods;
mod runc;
mod runtime;
mod sandbox;
mod service_proxy;
mod status;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use tokio::task::JoinHandle;

pub use runtime::{RuncRuntime, Runtime};
pub use sandbox::{NetnsSandboxes, PodRef, Sandbox, SandboxProvider};

use crate::{
    error::{Error, Result},
    server::{ApiServer, Shared},
};

/// Options of one fake node.
#[derive(Debug, Clone)]
pub struct KubeletOptions {
    /// Extra node labels (`kubernetes.io/hostname`, `kubernetes.io/os` and `kubernetes.io/arch`
    /// are always set).
    pub labels: BTreeMap<String, String>,
    /// Node taints (`{"key", "value", "effect"}` objects).
    pub taints: Vec<Value>,
    /// Where pod working directories and logs go (default: a temporary directory).
    pub state_dir: Option<PathBuf>,
    /// Binaries by command name: a container command `nightcap` runs this path.
    pub binaries: BTreeMap<String, PathBuf>,
    /// Sandboxes for non-hostNetwork pods (e.g. [`NetnsSandboxes`]); without one such pods get
    /// the node IP and run in the host network namespace.
    pub sandboxes: Option<Arc<dyn SandboxProvider>>,
    /// The node's InternalIP (and hostIP of its pods).
    pub node_ip: IpAddr,
    /// Delay before a failed container is restarted (real kubelet: 10 s doubling).
    pub restart_backoff: Duration,
    /// Delay before a Job replaces a failed pod (real controller: 10 s doubling).
    pub job_backoff: Duration,
    /// Node lease renewal interval.
    pub heartbeat: Duration,
    /// Also run Jobs whose pods are not pinned to any node (set on at most one kubelet).
    pub accept_unpinned: bool,
    /// How containers run: local processes (default) or [`Runtime::Runc`].
    pub runtime: Runtime,
}

impl Default for KubeletOptions {
    fn default() -> Self {
        Self {
            labels: BTreeMap::new(),
            taints: vec![],
            state_dir: None,
            binaries: BTreeMap::new(),
            sandboxes: None,
            node_ip: IpAddr::from([127, 0, 0, 1]),
            restart_backoff: Duration::from_secs(1),
            job_backoff: Duration::from_secs(1),
            heartbeat: Duration::from_secs(10),
            accept_unpinned: false,
            runtime: Runtime::Process,
        }
    }
}

/// A running container: its process (the container process, or `runc run`) and, in runc
/// mode, the runc container.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub pid: i32,
    pub runc: Option<runc::RuncContainer>,
}

/// Running containers by pod uid (so Drop can kill them synchronously).
pub(crate) type Pids = Arc<Mutex<HashMap<String, Running>>>;

/// A fake kubelet (RAII): its containers are killed and its tasks stopped when dropped.
pub struct FakeKubelet {
    node: String,
    state_dir: PathBuf,
    pids: Pids,
    runc: bool,
    tasks: Vec<JoinHandle<()>>,
    client: kube::Client,
    _tmp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for FakeKubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKubelet")
            .field("node", &self.node)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        kill_all(&self.pids);
        if self.runc {
            runc::remove_cgroups(&self.node);
        }
    }
}

/// Kill every container now: runc containers are killed and deleted (and their overlays
/// unmounted) before their `runc run` process group gets SIGKILL.
fn kill_all(pids: &Pids) {
    let running: Vec<Running> = pids
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect();
    for r in running {
        if let Some(c) = &r.runc {
            c.kill("KILL", true);
            c.delete();
        }
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(r.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

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

pub(crate) fn pod_logs(state: &Path, ns: &str, name: &str) -> String {
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

/// What the kubelet's tasks share.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub node: String,
    pub client: kube::Client,
    pub opts: KubeletOptions,
    pub state_dir: PathBuf,
    pub server_url: String,
    pub ca_pem: Option<String>,
    pub shared: Arc<Shared>,
    pub pids: Pids,
}

impl Ctx {
    /// The API server's port (pods reach it at `127.0.0.1:PORT`).
    pub(crate) fn server_port(&self) -> u16 {
        self.server_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_default()
    }
}

impl FakeKubelet {
    /// Register node `node_name` and start running its pods.
    pub async fn start(server: &ApiServer, node_name: &str, opts: KubeletOptions) -> Result<Self> {
        let client = server.admin_client()?;
        let (state_dir, tmp) = match &opts.state_dir {
            Some(d) => (d.clone(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix(&format!("fake-kubelet-{node_name}-"))
                    .tempdir()
                    .map_err(|source| Error::Io {
                        what: "creating the kubelet state directory".into(),
                        source,
                    })?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        std::fs::create_dir_all(&state_dir).map_err(|source| Error::Io {
            what: format!("creating {}", state_dir.display()),
            source,
        })?;
        if let Runtime::Runc(r) = &opts.runtime
            && let Some(why) = r.unavailable()
        {
            return Err(Error::Config(format!("kubelet {node_name}: {why}")));
        }
        let ctx = Ctx {
            node: node_name.to_string(),
            client: client.clone(),
            opts,
            state_dir: state_dir.clone(),
            server_url: server.url(),
            ca_pem: server.ca_pem().map(str::to_string),
            shared: server.shared().clone(),
            pids: Pids::default(),
        };
        node::register(&ctx).await?;
        let tasks = vec![
            tokio::spawn(node::heartbeat(ctx.clone())),
            tokio::spawn(pods::run(ctx.clone())),
            tokio::spawn(jobs::run(ctx.clone())),
        ];
        Ok(Self {
            node: node_name.to_string(),
            state_dir,
            runc: matches!(ctx.opts.runtime, Runtime::Runc(_)),
            pids: ctx.pids,
            tasks,
            client,
            _tmp: tmp,
        })
    }

    /// The node name.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// Directory of one pod (by uid): working directory, `kubeconfig`, `logs/`.
    pub fn pod_dir(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        pod_dir(&self.state_dir, namespace, name, uid)
    }

    /// Everything the pod's first container wrote to stdout/stderr (newest pod of that name).
    pub fn logs(&self, namespace: &str, name: &str) -> String {
        pod_logs(&self.state_dir, namespace, name)
    }

    /// The network namespace (`/var/run/netns/NAME`) of the newest pod with this name, when
    /// its sandbox has one.
    pub fn netns_path(&self, namespace: &str, name: &str) -> Option<PathBuf> {
        let dir = newest_dir(&self.state_dir, namespace, name)?;
        std::fs::read_to_string(dir.join("netns"))
            .ok()
            .map(PathBuf::from)
    }

    /// Stop like a lost node: kill every container, stop the tasks, mark the node NotReady.
    pub async fn stop(mut self) -> Result<()> {
        for t in &self.tasks {
            t.abort();
        }
        self.tasks.clear();
        kill_all(&self.pids);
        node::mark_not_ready(&self.client, &self.node).await
    }
}
