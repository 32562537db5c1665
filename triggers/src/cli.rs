//! `nightcap triggers`: arguments and the entry point.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use tracing::info;

use crate::{
    admin,
    clock::SystemClock,
    config::Config,
    error::{Error, Result},
    report::WriterOptions,
    runtime,
};

/// Run the trigger sources (webhook, NATS, cron) and the rule engine.
#[derive(Debug, Clone, clap::Args)]
pub struct TriggersArgs {
    /// Configuration file (YAML): sources and limits. See runbooks/triggers.md.
    #[arg(long, env = "NIGHTCAP_TRIGGERS_CONFIG")]
    pub config: PathBuf,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "NIGHTCAP_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
    /// Log filter (tracing EnvFilter syntax, e.g. `info,nightcap_triggers=debug`).
    #[arg(long, env = "NIGHTCAP_LOG", default_value = "info")]
    pub log: String,
    /// Log as JSON lines.
    #[arg(long, env = "NIGHTCAP_LOG_JSON")]
    pub log_json: bool,
}

/// Runs `nightcap triggers` until a task fails.
pub fn run(args: TriggersArgs) -> Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(&args.log).map_err(|e| Error::ConfigInvalid {
            field: "--log".into(),
            message: e.to_string(),
        })?;
    let fmt = tracing_subscriber::fmt().with_env_filter(filter);
    // Another component may have installed a subscriber already; keep it.
    let _ = if args.log_json {
        fmt.json().try_init()
    } else {
        fmt.try_init()
    };
    let config = Config::load(&args.config)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?
        .block_on(async move {
            let client = kube::Client::try_default().await?;
            let running = runtime::start(
                client,
                config,
                Arc::new(SystemClock),
                WriterOptions::default(),
            )
            .await?;
            let router = admin::router(
                running.metrics.clone(),
                running.ledger.clone(),
                running.triggers.clone(),
            );
            info!(metrics = %args.metrics_addr, webhook = ?running.webhook_addr, "nightcap triggers started.");
            tokio::select! {
                r = admin::serve(args.metrics_addr, router) => r,
                r = running.wait() => r,
            }
        })
}
