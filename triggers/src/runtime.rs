//! Assembly: the parts of the triggers component wired together and running as tasks.
//! [`start`] is what `nightcap triggers` runs; integration tests and the benchmark call it
//! directly (with a test API server client, `127.0.0.1:0` listeners and a manual clock).

use std::{net::SocketAddr, sync::Arc};

use futures::future::select_all;
use kube::Client;
use tokio::{net::TcpListener, task::JoinHandle};
use tracing::error;

use crate::{
    clock::SharedClock,
    config::Config,
    engine::{Engine, EngineLimits},
    error::{Error, Result},
    ledger::SharedLedger,
    metrics::Metrics,
    payload::ParseOptions,
    report::{self, Reporter, WriterOptions},
    rules::TriggerSet,
    sink::KubeSink,
    sources::{
        cron::{CronController, KubeScheduleStatus},
        nats::{self, NatsSource},
        webhook::{Auth, Webhook},
    },
    watch,
};

/// The running component; dropping it stops every task.
#[derive(Debug)]
pub struct Running {
    /// The rule engine.
    pub engine: Engine,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The ledger.
    pub ledger: Arc<SharedLedger>,
    /// The trigger set.
    pub triggers: Arc<TriggerSet>,
    /// Where the webhook listens (the bound address when the configuration said port 0).
    pub webhook_addr: Option<SocketAddr>,
    /// The NATS connection, if configured.
    pub nats: Option<async_nats::Client>,
    tasks: Vec<(&'static str, JoinHandle<Result<()>>)>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for (_, t) in &self.tasks {
            t.abort();
        }
    }
}

impl Running {
    /// Waits until a task ends (they run forever unless something fails) and returns why.
    pub async fn wait(mut self) -> Result<()> {
        if self.tasks.is_empty() {
            return Ok(());
        }
        let tasks = std::mem::take(&mut self.tasks);
        let (names, handles): (Vec<_>, Vec<_>) = tasks.into_iter().unzip();
        let (res, i, rest) = select_all(handles).await;
        for t in rest {
            t.abort();
        }
        match res {
            Ok(Ok(())) => {
                error!(task = names[i], "A triggers task ended unexpectedly.");
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(join) => Err(Error::Runtime(std::io::Error::other(format!(
                "task {} failed: {join}",
                names[i]
            )))),
        }
    }
}

fn spawn<F>(tasks: &mut Vec<(&'static str, JoinHandle<Result<()>>)>, name: &'static str, f: F)
where
    F: Future<Output = Result<()>> + Send + 'static,
{
    tasks.push((name, tokio::spawn(f)));
}

/// Starts every configured source against the cluster `client` talks to.
pub async fn start(
    client: Client,
    config: Config,
    clock: SharedClock,
    writer: WriterOptions,
) -> Result<Running> {
    config.validate()?;
    let metrics = Arc::new(Metrics::new());
    let (reporter, rx) = Reporter::new(metrics.clone());
    let ledger = Arc::new(SharedLedger::default());
    let triggers = Arc::new(TriggerSet::default());
    let mut tasks = Vec::new();
    let c = client.clone();
    spawn(&mut tasks, "event-writer", async move {
        report::run_writer(c, rx, writer).await;
        Ok(())
    });
    let (c, l) = (client.clone(), ledger.clone());
    spawn(&mut tasks, "capture-watch", async move {
        watch::watch_captures(c, l).await;
        Ok(())
    });
    let (c, t, r) = (client.clone(), triggers.clone(), reporter.clone());
    spawn(&mut tasks, "trigger-watch", async move {
        watch::watch_triggers(c, t, r).await;
        Ok(())
    });
    let sink = Arc::new(KubeSink::new(client.clone()));
    let limits = EngineLimits {
        per_namespace: config.limits.max_concurrent_per_namespace,
        cluster: config.limits.max_concurrent_cluster,
    };
    let engine = Engine::new(
        triggers.clone(),
        ledger.clone(),
        sink.clone(),
        reporter.clone(),
        clock.clone(),
        limits,
    );
    let parse = ParseOptions {
        namespace_label: config.namespace_label.clone(),
    };
    let mut webhook_addr = None;
    if let Some(w) = &config.webhook {
        let auth = Auth::from_config(w)?;
        let listener = TcpListener::bind(w.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: w.listen,
                source,
            })?;
        webhook_addr = listener.local_addr().ok();
        let hook = Webhook::new(engine.clone(), auth, parse.clone(), w.max_body_bytes);
        spawn(&mut tasks, "webhook", hook.serve_on(listener));
    }
    let mut nats_client = None;
    if let Some(n) = &config.nats {
        let nc = nats::connect(n).await?;
        let source = NatsSource::new(engine.clone(), parse.clone(), n.concurrency);
        for sub in n.subscriptions.clone() {
            let (s, nc) = (source.clone(), nc.clone());
            spawn(&mut tasks, "nats-subscription", async move {
                s.run_subscription(nc, &sub).await
            });
        }
        for consumer in n.consumers.clone() {
            let (s, nc) = (source.clone(), nc.clone());
            spawn(&mut tasks, "jetstream-consumer", async move {
                s.run_consumer(nc, &consumer).await
            });
        }
        nats_client = Some(nc);
    }
    if config.cron.enabled {
        let cron = CronController::new(
            Arc::new(KubeScheduleStatus::new(client.clone())),
            sink,
            ledger.clone(),
            reporter,
            clock,
            config.cron.clone(),
        );
        spawn(&mut tasks, "cron", async move {
            cron.run(client).await;
            Ok(())
        });
    }
    Ok(Running {
        engine,
        metrics,
        ledger,
        triggers,
        webhook_addr,
        nats: nats_client,
        tasks,
    })
}
