//! `nightcap scheduler`: flags, the metrics/health endpoint, leader election, the controller.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use kube::{Client, runtime::reflector::Store};
use nightcap_api::{
    PacketCapture,
    quantity::{parse_duration, parse_size},
};
use tokio::sync::watch;
use tracing::info;

use crate::{
    Error, Result,
    controller::{self, ControllerSettings},
    job::{CaptureAttach, JobConfig},
    leader::{LeaderElector, LeaseSettings, run_while_leader},
    metrics::Metrics,
    own_image::{CaptureImage, ImageSource, OwnPodArgs},
    plan::{PlanConfig, Planner},
};

/// Arguments of `nightcap scheduler`.
#[derive(Debug, Clone, clap::Args)]
pub struct SchedulerArgs {
    /// Address of `/metrics` (Prometheus) and `/healthz`.
    #[arg(long, env = "NIGHTCAP_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
    /// Gather watch events this long before planning (coalesces bursts).
    #[arg(long, env = "NIGHTCAP_DEBOUNCE", default_value = "50ms", value_parser = parse_duration)]
    pub debounce: Duration,
    /// Capture Job settings.
    #[command(flatten)]
    pub jobs: JobArgs,
    /// Planner settings.
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Leader election settings.
    #[command(flatten)]
    pub leader: LeaderArgs,
    /// The scheduler's own Pod (its image is the default capture image).
    #[command(flatten)]
    pub own_pod: OwnPodArgs,
}

/// How capture Jobs look.
#[derive(Debug, Clone, clap::Args)]
pub struct JobArgs {
    /// Image of capture Jobs (default: the scheduler's own, see --pod-name).
    #[arg(long, env = "NIGHTCAP_CAPTURE_IMAGE")]
    pub capture_image: Option<String>,
    /// imagePullPolicy of capture Jobs (default: the own image's, else unset).
    #[arg(long, env = "NIGHTCAP_CAPTURE_IMAGE_PULL_POLICY")]
    pub capture_image_pull_policy: Option<String>,
    /// Path of the nightcap binary in the image.
    #[arg(long, env = "NIGHTCAP_CAPTURE_PROGRAM", default_value = "nightcap")]
    pub capture_program: String,
    /// Service account of capture pods.
    #[arg(
        long,
        env = "NIGHTCAP_CAPTURE_SERVICE_ACCOUNT",
        default_value = "nightcap-capture"
    )]
    pub capture_service_account: String,
    /// Secret with the default store's settings (`spec.storage: NAME`: SECRET-NAME).
    #[arg(
        long,
        env = "NIGHTCAP_STORAGE_SECRET",
        default_value = "nightcap-storage"
    )]
    pub storage_secret: String,
    /// Size limit of each capture pod's spool (files not uploaded yet), e.g. 1Gi.
    #[arg(long, env = "NIGHTCAP_SPOOL_SIZE", default_value = "1Gi", value_parser = parse_size)]
    pub spool_size: u64,
    /// Pod restarts before a capture Job fails.
    #[arg(long, env = "NIGHTCAP_JOB_BACKOFF_LIMIT", default_value_t = 3)]
    pub job_backoff_limit: i32,
    /// How long finished Job objects stay (not the files).
    #[arg(long, env = "NIGHTCAP_JOB_TTL", default_value = "1h", value_parser = parse_duration)]
    pub job_ttl: Duration,
    /// Time a capture pod gets after SIGTERM to upload its last file.
    #[arg(long, env = "NIGHTCAP_JOB_TERMINATION_GRACE", default_value = "60s", value_parser = parse_duration)]
    pub job_termination_grace: Duration,
    /// Run every capture Job in this namespace (default: the capture's own).
    #[arg(long, env = "NIGHTCAP_JOB_NAMESPACE")]
    pub job_namespace: Option<String>,
    /// priorityClassName of capture pods.
    #[arg(long, env = "NIGHTCAP_CAPTURE_PRIORITY_CLASS")]
    pub capture_priority_class: Option<String>,
    /// RUST_LOG of capture pods.
    #[arg(long, env = "NIGHTCAP_CAPTURE_LOG")]
    pub capture_log: Option<String>,
    /// Mount path of the spool emptyDir in capture pods.
    #[arg(long, env = "NIGHTCAP_CAPTURE_SPOOL_DIR", default_value = crate::job::SPOOL_DIR)]
    pub capture_spool_dir: String,
    /// Capture pods on the node's interface (host) or in pod netns (netns).
    #[arg(long, env = "NIGHTCAP_CAPTURE_ATTACH", value_enum, default_value_t = CaptureAttach::Host)]
    pub capture_attach: CaptureAttach,
}

/// Planner tunables.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// Keep a node's Job this long after its last selected pod left.
    #[arg(long, env = "NIGHTCAP_PODS_GONE_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub pods_gone_grace: Duration,
    /// Keep a Job on a NotReady node this long.
    #[arg(long, env = "NIGHTCAP_NODE_NOT_READY_GRACE", default_value = "60s", value_parser = parse_duration)]
    pub node_not_ready_grace: Duration,
    /// Longest accepted capture window.
    #[arg(long, env = "NIGHTCAP_MAX_WINDOW", default_value = "24h", value_parser = parse_duration)]
    pub max_window: Duration,
    /// Time a capture Job gets to stop by itself before it is deleted.
    #[arg(long, env = "NIGHTCAP_STOP_GRACE", default_value = "60s", value_parser = parse_duration)]
    pub stop_grace: Duration,
}

/// Leader election.
#[derive(Debug, Clone, clap::Args)]
pub struct LeaderArgs {
    /// Name of the Lease.
    #[arg(
        long,
        env = "NIGHTCAP_LEASE_NAME",
        default_value = "nightcap-scheduler"
    )]
    pub lease_name: String,
    /// Namespace of the Lease (the scheduler's namespace).
    #[arg(
        long,
        env = "NIGHTCAP_LEASE_NAMESPACE",
        default_value = "nightcap-system"
    )]
    pub lease_namespace: String,
    /// How long a Lease that is not renewed stays valid (longest takeover).
    #[arg(long, env = "NIGHTCAP_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// This replica's identity in the Lease (default: the host name).
    #[arg(long, env = "NIGHTCAP_IDENTITY")]
    pub identity: Option<String>,
    /// Act without leader election (exactly one replica must run).
    #[arg(long, env = "NIGHTCAP_NO_LEADER_ELECTION")]
    pub no_leader_election: bool,
}

impl SchedulerArgs {
    /// Where the capture image comes from (an error if nothing names one).
    pub fn capture_image_source(&self) -> Result<ImageSource> {
        ImageSource::from_args(
            self.jobs.capture_image.as_deref(),
            self.jobs.capture_image_pull_policy.as_deref(),
            &self.own_pod,
        )
    }

    /// The capture Job settings, with the resolved capture image.
    pub fn job_config(&self, image: CaptureImage) -> JobConfig {
        let j = &self.jobs;
        JobConfig {
            image: image.image,
            image_pull_policy: image.pull_policy,
            program: j.capture_program.clone(),
            service_account: j.capture_service_account.clone(),
            storage_secret: j.storage_secret.clone(),
            spool_bytes: j.spool_size,
            backoff_limit: j.job_backoff_limit,
            ttl_seconds_after_finished: i32::try_from(j.job_ttl.as_secs()).unwrap_or(i32::MAX),
            termination_grace_period_seconds: i64::try_from(j.job_termination_grace.as_secs())
                .unwrap_or(i64::MAX),
            namespace: j.job_namespace.clone(),
            priority_class_name: j.capture_priority_class.clone(),
            log_filter: j.capture_log.clone(),
            spool_dir: j.capture_spool_dir.clone(),
            exit_when_idle: Some(self.plan.pods_gone_grace),
            attach: j.capture_attach,
            ..JobConfig::default()
        }
    }

    /// The planner settings.
    pub fn plan_config(&self) -> PlanConfig {
        PlanConfig {
            pods_gone_grace: self.plan.pods_gone_grace,
            node_not_ready_grace: self.plan.node_not_ready_grace,
            max_window: self.plan.max_window,
            stop_grace: self.plan.stop_grace,
        }
    }

    fn identity(&self) -> String {
        self.leader
            .identity
            .clone()
            .unwrap_or_else(nightcap_sys::host_name)
    }
}

/// Runs the scheduler until SIGINT or SIGTERM (the caller has set up logging).
pub fn run_blocking(args: SchedulerArgs) -> Result<()> {
    nightcap_process::block_on("scheduler", async {
        run(args, nightcap_process::shutdown_signal()).await
    })?
}

/// Runs the scheduler until `shutdown` completes.
pub async fn run(
    args: SchedulerArgs,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    let image_source = args.capture_image_source()?;
    let client = Client::try_default().await.map_err(Error::Client)?;
    let capture_image = image_source.resolve(&client).await?;
    let metrics = Arc::new(Metrics::new());
    let (captures_tx, captures_rx) = watch::channel(None);
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|source| Error::Serve {
            addr: args.metrics_addr,
            source,
        })?;
    info!(addr = %listener.local_addr().map_or(args.metrics_addr, |a| a), "Serving /metrics and /healthz.");
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_handler))
        .with_state((metrics.clone(), captures_rx));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "The metrics endpoint stopped.");
        }
    });
    let settings = ControllerSettings {
        planner: Planner::new(args.plan_config()),
        jobs: args.job_config(capture_image),
        instance: Some(args.identity()),
        debounce: args.debounce,
    };
    let clock: controller::Clock = Arc::new(jiff::Timestamp::now);
    if args.leader.no_leader_election {
        metrics.set_leader(true);
        controller::run(
            client,
            settings,
            metrics,
            clock,
            Some(Arc::new(captures_tx)),
            shutdown,
        )
        .await;
        return Ok(());
    }
    let elector = LeaderElector::new(
        client.clone(),
        LeaseSettings {
            name: args.leader.lease_name.clone(),
            namespace: args.leader.lease_namespace.clone(),
            identity: args.identity(),
            lease_duration: args.leader.lease_duration,
        },
    );
    let captures_tx = Arc::new(captures_tx);
    run_while_leader(elector, metrics.clone(), shutdown, move |stop| {
        let (client, settings, metrics, clock) = (
            client.clone(),
            settings.clone(),
            metrics.clone(),
            clock.clone(),
        );
        let captures_tx = captures_tx.clone();
        async move {
            let stop = async move {
                let _ = stop.await;
            };
            controller::run(client, settings, metrics, clock, Some(captures_tx), stop).await;
        }
    })
    .await
}

type MetricsState = (Arc<Metrics>, watch::Receiver<Option<Store<PacketCapture>>>);

async fn metrics_handler(
    State((metrics, captures)): State<MetricsState>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let list = captures
        .borrow()
        .as_ref()
        .map(Store::state)
        .unwrap_or_default();
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        metrics.encode(&list),
    )
}
