//! The Kubernetes controller: a kube-rs `Controller` over PacketCaptures that owns the capture
//! Jobs and watches Pods and Nodes. `reconcile` reads the caches into facts ([`facts`]), calls
//! the planner, and hands the actions to the executor (`execute`); it decides nothing itself.

mod execute;
pub mod facts;
pub(crate) mod watch;

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Node, Pod},
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller,
        controller::{Action as Requeue, Config as ControllerConfig},
        events::{Recorder, Reporter},
        finalizer::{self, Event as Finalizer},
        reflector::Store,
        watcher,
    },
};
use nightcap_api::PacketCapture;
use tracing::{Instrument, debug, info_span, warn};

use crate::{
    Error, Result,
    job::JobConfig,
    labels::FINALIZER,
    metrics::Metrics,
    plan::{Action, Planner},
};

/// Requeue when the plan asks for nothing sooner (a safety net; watches trigger the rest).
const DEFAULT_REQUEUE: Duration = Duration::from_secs(300);
/// Requeue after an error.
const ERROR_REQUEUE: Duration = Duration::from_secs(5);
/// Requeue while a deleted capture's Jobs are still stopping.
const CLEANUP_REQUEUE: Duration = Duration::from_secs(2);

/// The clock the planner is given (injectable for tests).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// What every reconcile needs.
pub struct Context {
    /// API client.
    pub client: Client,
    /// The planner.
    pub planner: Planner,
    /// How capture Jobs look.
    pub jobs: JobConfig,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Events recorder.
    pub recorder: Recorder,
    /// The clock.
    pub clock: Clock,
    /// True once the pod, node and Job caches hold their initial lists.
    caches_ready: tokio::sync::watch::Receiver<bool>,
    pod_cache: Store<Pod>,
    node_cache: Store<Node>,
    job_cache: Store<Job>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("planner", &self.planner)
            .finish_non_exhaustive()
    }
}

/// Settings of [`run`].
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// The planner.
    pub planner: Planner,
    /// How capture Jobs look.
    pub jobs: JobConfig,
    /// Reporting instance in Events (the pod name).
    pub instance: Option<String>,
    /// How long to gather triggers before a reconcile (coalesces bursts of pod events).
    pub debounce: Duration,
}

/// Runs the controller until `shutdown` completes. `captures_out` receives the capture cache
/// (the metrics endpoint reads it).
pub async fn run(
    client: Client,
    settings: ControllerSettings,
    metrics: Arc<Metrics>,
    clock: Clock,
    captures_out: Option<Arc<tokio::sync::watch::Sender<Option<Store<PacketCapture>>>>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let job_api: Api<Job> = match &settings.jobs.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (pod_cache, pods) = watch::reflected(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        watch::trim_pod,
    );
    let (node_cache, nodes) = watch::reflected(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        watch::trim_node,
    );
    let (job_cache, jobs) = watch::reflected(
        job_api,
        watcher::Config::default().labels(&watch::job_selector()),
        watch::trim_job,
    );
    let (capture_cache, captures) = watch::reflected(
        Api::<PacketCapture>::all(client.clone()),
        watcher::Config::default(),
        watch::trim_capture,
    );
    if let Some(tx) = captures_out {
        let _ = tx.send(Some(capture_cache.clone()));
    }
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "nightcap-scheduler".into(),
            instance: settings.instance.clone(),
        },
    );
    let caches_ready = announce_ready(pod_cache.clone(), node_cache.clone(), job_cache.clone());
    let ctx = Arc::new(Context {
        client,
        planner: settings.planner,
        jobs: settings.jobs,
        metrics,
        recorder,
        clock,
        caches_ready,
        pod_cache,
        node_cache,
        job_cache,
    });
    let for_pods = capture_cache.clone();
    let for_nodes = capture_cache.clone();
    Controller::for_stream(captures, capture_cache)
        .with_config(ControllerConfig::default().debounce(settings.debounce))
        .watches_stream(pods, move |pod| watch::captures_for_pod(&for_pods, &pod))
        .watches_stream(nodes, move |node| {
            watch::captures_for_node(&for_nodes, &node)
        })
        .watches_stream(jobs, |job| watch::capture_for_job(&job))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                debug!(%error, "Reconcile ended with an error.");
            }
        })
        .await;
}

/// A channel that turns true once every cache holds its initial list (closed, if a cache's
/// watch ends first).
///
/// One task waits on the caches and reconciles wait on the channel: kube's
/// `Store::wait_until_ready` wakes only the task that polled it last, so when many reconciles
/// waited on a cache still loading (10k pods are listed in pages while the captures are already
/// known), all but one stayed asleep for good and their captures were never planned again.
fn announce_ready(
    pods: Store<Pod>,
    nodes: Store<Node>,
    jobs: Store<Job>,
) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if pods.wait_until_ready().await.is_ok()
            && nodes.wait_until_ready().await.is_ok()
            && jobs.wait_until_ready().await.is_ok()
        {
            let _ = tx.send(true);
        }
    });
    rx
}

/// Plans one capture and applies the plan, behind the finalizer.
pub async fn reconcile(capture: Arc<PacketCapture>, ctx: Arc<Context>) -> Result<Requeue> {
    let started = Instant::now();
    let ns = capture.namespace().unwrap_or_default();
    let span = info_span!(
        "reconcile",
        namespace = %ns,
        name = %capture.name_any(),
        uid = %capture.uid().unwrap_or_default()
    );
    let result = async {
        ctx.caches_ready
            .clone()
            .wait_for(|ready| *ready)
            .await
            .map_err(|_| Error::CacheClosed("pods, nodes or jobs"))?;
        let api: Api<PacketCapture> = Api::namespaced(ctx.client.clone(), &ns);
        if capture.finalizers().is_empty() && capture.metadata.deletion_timestamp.is_none() {
            return add_first_finalizer(&api, &capture).await;
        }
        finalizer::finalizer(&api, FINALIZER, capture, |event| async {
            match event {
                Finalizer::Apply(c) => ctx.plan_and_apply(&c).await.map(|(requeue, _)| requeue),
                Finalizer::Cleanup(c) => match ctx.plan_and_apply(&c).await? {
                    (_, true) => Ok(Requeue::await_change()),
                    (_, false) => Err(Error::CleanupPending),
                },
            }
        })
        .await
        .or_else(|e| match e {
            // Another pass removed it and the capture is gone: done.
            finalizer::Error::RemoveFinalizer(kube::Error::Api(s)) if s.code == 404 => {
                Ok(Requeue::await_change())
            }
            e => Err(Error::Finalizer(Box::new(e))),
        })
    }
    .instrument(span)
    .await;
    ctx.metrics.reconciled(started.elapsed().as_secs_f64());
    result
}

/// Adds the finalizer to a capture that has none. kube's helper guards this case with a JSON
/// Patch `test` of a missing path against `null`, which only lenient servers accept (RFC 6902
/// says it fails); guarding with the resourceVersion works on every server.
async fn add_first_finalizer(api: &Api<PacketCapture>, capture: &PacketCapture) -> Result<Requeue> {
    let name = capture.name_any();
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": capture.resource_version()},
        {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
    ]))
    .map_err(|source| Error::Serialize {
        what: "the finalizer patch",
        source,
    })?;
    match api
        .patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
    {
        // A newer version exists: its watch event plans again.
        Ok(_) => Ok(Requeue::await_change()),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => Ok(Requeue::await_change()),
        Err(source) => Err(Error::Kube {
            action: format!("adding the finalizer to PacketCapture {name}"),
            source,
        }),
    }
}

fn error_policy(capture: Arc<PacketCapture>, error: &Error, ctx: Arc<Context>) -> Requeue {
    if error.is_cleanup_pending() {
        return Requeue::requeue(CLEANUP_REQUEUE);
    }
    ctx.metrics.reconcile_failed(error.kind());
    warn!(
        namespace = %capture.namespace().unwrap_or_default(),
        name = %capture.name_any(),
        %error,
        "Reconcile failed; retrying."
    );
    Requeue::requeue(ERROR_REQUEUE)
}

impl Context {
    /// The planner's view of the world for `capture`, its plan, and the plan applied. Returns
    /// the requeue and whether the finalizer may go.
    pub async fn plan_and_apply(&self, capture: &PacketCapture) -> Result<(Requeue, bool)> {
        let facts =
            facts::Facts::gather(capture, &self.pod_cache, &self.node_cache, &self.job_cache);
        let now = (self.clock)();
        let actions = self
            .planner
            .plan(capture, &facts.targets, &facts.nodes, &facts.jobs, now);
        debug!(actions = actions.len(), "Planned.");
        let released = actions
            .iter()
            .any(|a| matches!(a, Action::ReleaseFinalizer));
        let requeue = self.apply(capture, actions).await?;
        Ok((
            requeue.map_or(Requeue::requeue(DEFAULT_REQUEUE), Requeue::requeue),
            released,
        ))
    }
}
