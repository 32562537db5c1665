//! Kubernetes mode of `nightcap capture` (`--capture NS/NAME --node N`), what a capture Job
//! runs: capture the selected pods of one PacketCapture on one node, following them while they
//! come and go, and report into `status.nodes[N]` of the capture.
//!
//! The spec comes from `status.acceptedSpec` (the spec the capture started with; an edited spec
//! is ignored). Pods are watched with the field selector `spec.nodeName=N`; each selected
//! Running pod is attached through its pod IP — with `--attach host` (the capture Job's
//! default) on the node's interface carrying it, with `--attach netns` inside the namespace
//! holding it — and detached when it leaves; a pod recreated on the node (new UID or IP, new
//! network namespace) is attached again. Only `status.nodes[N]` is written (merge patch on the
//! status subresource); phase and conditions belong to the scheduler.
//!
//! A refused permission (a capability the Job does not grant) cannot go away by retrying: the
//! process reports `Failed` with the error (which names the capability) into
//! `status.nodes[N].message`, logs it, and exits non-zero.

mod local;
mod pods;
mod report;
mod stop;

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, reflector, watcher},
};
use nightcap_api::{
    PacketCapture, PacketCaptureSpec, quantity::parse_duration, validation::DEFAULT_DURATION,
};
use nightcap_storage::StoreConfig;
use tracing::{debug, info, warn};

use crate::{
    Capture, CaptureArgs, CaptureOptions, Error, Result, engine::FileIdentity, options, output,
};

/// How often attachments are retried and the status is refreshed.
const TICK: Duration = Duration::from_secs(1);

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

fn kube_err(what: &str) -> impl FnOnce(kube::Error) -> Error + '_ {
    move |e| invalid(format!("{what}: {e}"))
}

/// Runs the Kubernetes mode until SIGTERM/SIGINT or the end of the capture window.
pub(crate) fn run(args: &CaptureArgs) -> Result<()> {
    if args.kube.capture_file.is_some() {
        return local::run(args);
    }
    let capture = args.kube.capture.clone().unwrap_or_default();
    let (namespace, name) = capture
        .split_once('/')
        .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| invalid(format!("--capture must be NAMESPACE/NAME, is {capture:?}")))?;
    let node = args
        .node
        .clone()
        .ok_or_else(|| invalid("--capture needs --node (the node this Job runs on)"))?;
    if !args.netns.is_empty()
        || !args.pod_ip.is_empty()
        || args.interface.is_some()
        || args.filter.is_some()
    {
        return Err(invalid(
            "--capture takes its targets and filter from the PacketCapture; drop --netns, \
             --pod-ip, --interface and --filter",
        ));
    }
    let runtime = crate::runtime(args.spool_direct_io)?;
    runtime.block_on(follow(args, namespace, name, &node))
}

/// The spec the capture started with and the time left in its window.
fn accepted(pc: &PacketCapture, now: jiff::Timestamp) -> (PacketCaptureSpec, Option<Duration>) {
    let status = pc.status.as_ref();
    let spec = status
        .and_then(|s| s.accepted_spec.clone())
        .unwrap_or_else(|| pc.spec.clone());
    let start = spec
        .start_time
        .as_ref()
        .or_else(|| status.and_then(|s| s.start_time.as_ref()))
        .map(|t| t.0);
    let end = match (&spec.end_time, start) {
        (Some(end), _) => Some(end.0),
        (None, Some(start)) => {
            let length = spec
                .duration
                .as_deref()
                .and_then(|d| parse_duration(d).ok())
                .unwrap_or(DEFAULT_DURATION);
            let ms = i64::try_from(length.as_millis()).unwrap_or(i64::MAX);
            jiff::Timestamp::from_millisecond(start.as_millisecond().saturating_add(ms)).ok()
        }
        (None, None) => None, // not started by the scheduler: run until stopped
    };
    let left = end.map(|e| {
        Duration::from_millis(u64::try_from(e.as_millisecond() - now.as_millisecond()).unwrap_or(0))
    });
    (spec, left)
}

async fn follow(args: &CaptureArgs, namespace: &str, name: &str, node: &str) -> Result<()> {
    let client = Client::try_default().await.map_err(kube_err(
        "cannot reach the Kubernetes API (in a pod, or set KUBECONFIG)",
    ))?;
    let captures: Api<PacketCapture> = Api::namespaced(client.clone(), namespace);
    let pc = captures.get(name).await.map_err(kube_err(&format!(
        "cannot read PacketCapture {namespace}/{name}"
    )))?;
    let uid = pc.uid().unwrap_or_default();
    if let Some(want) = &args.uid
        && *want != uid
    {
        return Err(invalid(format!(
            "PacketCapture {namespace}/{name} has uid {uid}, not {want}: it was deleted and \
             recreated; this Job belongs to the old one"
        )));
    }
    let (spec, window) = accepted(&pc, jiff::Timestamp::now());
    if window.is_some_and(|w| w.is_zero()) {
        info!("The capture window is over; nothing to capture.");
        return Ok(());
    }
    let identity = FileIdentity {
        namespace: namespace.into(),
        capture: name.into(),
        uid: uid.clone(),
        node: node.into(),
    };
    let opts = options::from_spec(args, &spec, identity, window)?;
    // Before anything is captured, so a signal from the first moment on closes and uploads.
    let shutdown = nightcap_process::shutdown_signal();
    tokio::pin!(shutdown);
    let (capture, lister) = match start(args, opts).await? {
        (Ok(capture), lister) => (capture, lister),
        (Err(error), lister) => {
            let mut reporter =
                report::Reporter::new(report::Sink::Api(Box::new(captures)), &pc, node, lister);
            return Err(fail(&mut reporter, error).await);
        }
    };
    let mut idle =
        stop::IdleTimer::new(args.kube.exit_when_idle.filter(|_| spec.selector.is_some()));
    let mut own = watcher(
        captures.clone(),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff()
    .boxed();
    let mut reporter =
        report::Reporter::new(report::Sink::Api(Box::new(captures)), &pc, node, lister);
    let mut targets = pods::Targets::new(capture.clone(), namespace, &spec, args.attach);
    targets.attach_node_level().await;

    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let (cache, writer) = reflector::store();
    let mut events = watcher(
        pods,
        watcher::Config::default().fields(&format!("spec.nodeName={node}")),
    )
    .default_backoff()
    .reflect(writer)
    .touched_objects()
    .boxed();
    let mut tick = tokio::time::interval(TICK);
    info!(capture = %format!("{namespace}/{name}"), %node, "Following the capture's pods on this node.");
    loop {
        tokio::select! {
            () = &mut shutdown => {
                info!("Shutdown signal: closing and uploading the open file.");
                break;
            }
            event = events.next() => match event {
                Some(Ok(_)) => targets.sync(&cache.state()).await,
                Some(Err(error)) => warn!(%error, "Pod watch failed; retrying."),
                None => break,
            },
            event = own.next() => {
                let why = match event {
                    Some(Ok(watcher::Event::Apply(pc) | watcher::Event::InitApply(pc))) => {
                        stop::stop_requested(&pc, &uid)
                    }
                    Some(Ok(watcher::Event::Delete(_))) => Some("the PacketCapture was deleted".into()),
                    Some(Ok(_)) => None,
                    Some(Err(error)) => {
                        warn!(%error, "Capture watch failed; retrying.");
                        None
                    }
                    None => Some("the capture watch ended".into()),
                };
                if let Some(why) = why {
                    info!(reason = %why, "Stopping: closing and uploading the open file.");
                    break;
                }
            },
            _ = tick.tick() => {
                if capture.is_finished() {
                    break;
                }
                if idle.expired(targets.capturing(), std::time::Instant::now()) {
                    info!("No selected pod on this node for the idle limit; stopping.");
                    break;
                }
                if futures::FutureExt::now_or_never(cache.wait_until_ready()).is_some() {
                    targets.sync(&cache.state()).await;
                }
                if targets.fatal().is_some() {
                    break;
                }
                reporter.report(&capture, &targets, false).await;
            }
        }
    }
    drop((events, own));
    wind_up(capture, targets, reporter).await
}

/// Opens the store and starts the capture; also returns a lister of the store for reports
/// (also when the capture could not start, so the failure can be reported).
async fn start(
    args: &CaptureArgs,
    opts: CaptureOptions,
) -> Result<(Result<Arc<Capture>>, nightcap_storage::Lister)> {
    let config = StoreConfig::from_url(&args.output)?;
    let (store, uploader) = output::open(&args.output, &config, options::upload(args)?).await?;
    let lister = nightcap_storage::Lister::new(store.store.clone(), store.prefix.clone());
    let capture = Capture::start(opts, uploader, store.store, store.prefix).map(Arc::new);
    Ok((capture, lister))
}

/// Reports a capture that cannot run into the node's status entry and the log; returns the
/// error for the exit code.
async fn fail(reporter: &mut report::Reporter, error: Error) -> Error {
    // A refused permission already names the capability and how to grant it.
    let message = format!("Cannot capture: {error}.");
    tracing::error!(%error, "Cannot capture; reporting Failed and exiting.");
    reporter.failed(message).await;
    error
}

/// Stops capturing, uploads the last files while reporting Uploading, reports Finished and
/// prints the summary line.
async fn wind_up(
    capture: Arc<Capture>,
    targets: pods::Targets,
    mut reporter: report::Reporter,
) -> Result<()> {
    capture.stop();
    let fatal = targets.fatal().map(str::to_owned);
    // Upload first, report while the upload runs: a pod being deleted may be cut short.
    let pods = targets.pods();
    drop(targets);
    let capture = Arc::try_unwrap(capture)
        .map_err(|_| invalid("the capture is still in use at shutdown (a bug)"))?;
    let (summary, ()) = tokio::join!(capture.finish(), reporter.uploading(pods));
    let summary = summary?;
    if let Some(fatal) = fatal {
        // Files captured before (other targets) are uploaded; the node still failed.
        return Err(fail(&mut reporter, invalid(fatal)).await);
    }
    debug!("Uploads done; reporting Finished.");
    reporter.finished(&summary).await;
    output::finish(&summary, "a restarted capture uploads them")
}
