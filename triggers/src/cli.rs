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
}

/// Runs `nightcap triggers` until a task fails (an error) or SIGINT/SIGTERM (`Ok`).
pub fn run(args: TriggersArgs) -> Result<()> {
    let config = Config::load(&args.config)?;
    let shutdown = nightcap_process::shutdown_signal();
    nightcap_process::runtime("triggers")
        .map_err(|e| Error::Runtime(std::io::Error::other(e.to_string())))?
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
                () = shutdown => {
                    info!("Shutting down on signal.");
                    Ok(())
                }
            }
        })
}
