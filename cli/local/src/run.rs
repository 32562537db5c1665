//! Assembly: the configuration checked, the state opened, the store opened, then every
//! component started as a task of one runtime; the executor's end ends the process.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{Router, http::header, routing::get};
use nightcap_gateway::{
    GatewayOptions, GatewayState,
    auth::{Access, TokenFile, TokenFileAccess},
    captures::{CaptureRecord, Captures},
    sign::SigningKey,
};
use nightcap_storage::{Store, StoreConfig};
use nightcap_triggers::{
    Engine, EngineLimits, Metrics, SystemClock,
    ledger::SharedLedger,
    payload::ParseOptions,
    report::Reporter,
    rules::{CompiledTrigger, TriggerSet},
    sources::{
        cron::{CronConfig, CronController},
        nats::{self, NatsSource},
        webhook::{Auth, Webhook},
    },
};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tracing::{error, info, warn};

use crate::{
    Error, LocalArgs, Result,
    api::{self, ApiState},
    config::{GatewayConfig, LocalConfig},
    executor::{self, ExecutorOptions},
    retention,
    state::State,
    triggers::{self as local_triggers, StateScheduleStatus, StateSink},
};

/// The default state directory: `/var/lib/nightcap` as root, else the user's state directory.
fn default_state_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/nightcap");
    }
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("nightcap")
}

pub(crate) async fn run(args: LocalArgs) -> Result<i32> {
    let config = Arc::new(LocalConfig::load(&args.config)?);
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let state = Arc::new(State::open(&state_dir)?);
    let store = StoreConfig::from_url(&config.output)
        .and_then(|c| c.open())
        .map_err(|e| Error::Config(format!("{}: output: {e}", args.config.display())))?;
    let program = match &args.capture_program {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| Error::Config(format!("cannot find the nightcap binary: {e}")))?,
    };
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| state_dir.join("work"));
    std::fs::create_dir_all(work_dir.join("jobs")).map_err(|source| Error::Io {
        what: format!("cannot create {}", work_dir.display()),
        source,
    })?;
    let keep_running = args.watch || config.serves();
    if config.captures.is_empty() && !keep_running && state.captures(None)?.is_empty() {
        return Err(Error::Config(format!(
            "{} has no captures and nothing that makes them (add captures, triggers or \
             schedules, or pass --watch to wait for them)",
            args.config.display()
        )));
    }
    let (config_tx, config_rx) = watch::channel(config.clone());
    let mut tasks = JoinSet::new();
    let metrics = start_triggers(&mut tasks, &state, &config, config_rx.clone()).await?;
    if let Some(g) = &config.gateway {
        let app = gateway(
            g,
            &state,
            &state_dir,
            store.clone(),
            config_rx.clone(),
            metrics,
        )?;
        let listener = bind(g.listen, "gateway").await?;
        info!(listen = %listener.local_addr().map_or(g.listen, |a| a), "Gateway listening (files, capture API, /metrics, /healthz).");
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                error!(error = %e, "The gateway stopped.");
            }
        });
    }
    tasks.spawn(retention::retention_loop(
        state.clone(),
        store.clone(),
        args.retention_interval,
    ));
    info!(state = %state.path().display(), "State opened.");
    let opts = ExecutorOptions {
        config_path: args.config.clone(),
        program,
        work_dir,
        status_file: args.status_file.clone(),
        pods_gone_grace: args.pods_gone_grace,
        kill_after: args.kill_after,
        keep_running,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    tasks.spawn(async move {
        nightcap_process::shutdown_signal().await;
        let _ = stop_tx.send(());
        nightcap_process::shutdown_signal().await;
        let _ = kill_tx.send(());
    });
    let code = executor::run(
        opts,
        state,
        store,
        config_tx,
        async {
            let _ = stop_rx.await;
        },
        async {
            let _ = kill_rx.await;
        },
    )
    .await;
    tasks.abort_all();
    Ok(code)
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Io {
        what: format!("cannot listen on {addr} ({what})"),
        source,
    })
}

/// Compiles the configured triggers; the file was checked, so a failure here is a regular
/// expression the validation could not see.
fn compile(config: &LocalConfig) -> Result<Vec<Arc<CompiledTrigger>>> {
    let mut out = Vec::new();
    for (i, t) in config.triggers.iter().enumerate() {
        let c = CompiledTrigger::compile(Arc::new(t.clone()))
            .map_err(|e| Error::Config(format!("triggers[{i}]: {e}")))?;
        out.push(Arc::new(c));
    }
    Ok(out)
}

/// Starts the rule engine with its sources (webhook, NATS, cron) on the state.
async fn start_triggers(
    tasks: &mut JoinSet<()>,
    state: &Arc<State>,
    config: &LocalConfig,
    config_rx: watch::Receiver<Arc<LocalConfig>>,
) -> Result<Arc<Metrics>> {
    let metrics = Arc::new(Metrics::new());
    let (reporter, notes) = Reporter::new(metrics.clone());
    tasks.spawn(local_triggers::write_events(state.clone(), notes));
    let ledger = Arc::new(SharedLedger::default());
    tasks.spawn(local_triggers::feed_ledger(state.clone(), ledger.clone()));
    let set = Arc::new(TriggerSet::default());
    set.replace(compile(config)?);
    set.set_ready();
    let (s, mut rx) = (set.clone(), config_rx.clone());
    tasks.spawn(async move {
        while rx.changed().await.is_ok() {
            let cfg = rx.borrow().clone();
            match compile(&cfg) {
                Ok(c) => s.replace(c),
                Err(error) => warn!(%error, "Keeping the previous triggers."),
            }
        }
    });
    let sink = Arc::new(StateSink::new(state.clone()));
    let clock: nightcap_triggers::SharedClock = Arc::new(SystemClock);
    let engine = Engine::new(
        set,
        ledger.clone(),
        sink.clone(),
        reporter.clone(),
        clock.clone(),
        EngineLimits {
            per_namespace: config.limits.max_concurrent_per_namespace,
            cluster: config.limits.max_concurrent_cluster,
        },
    );
    let parse = ParseOptions {
        namespace_label: config.namespace_label.clone(),
    };
    if let Some(w) = &config.webhook {
        let auth = Auth::from_config(w)?;
        let listener = bind(w.listen, "webhook").await?;
        info!(listen = %listener.local_addr().map_or(w.listen, |a| a), "Webhook listening (/hooks/alertmanager, /hooks/capture).");
        let hook = Webhook::new(engine.clone(), auth, parse.clone(), w.max_body_bytes);
        tasks.spawn(async move {
            if let Err(error) = hook.serve_on(listener).await {
                error!(%error, "The webhook stopped.");
            }
        });
    }
    if let Some(n) = &config.nats {
        let nc = nats::connect(n).await?;
        let source = NatsSource::new(engine.clone(), parse.clone(), n.concurrency);
        for sub in n.subscriptions.clone() {
            let (s, nc) = (source.clone(), nc.clone());
            tasks.spawn(async move {
                if let Err(error) = s.run_subscription(nc, &sub).await {
                    error!(%error, "A NATS subscription stopped.");
                }
            });
        }
        for consumer in n.consumers.clone() {
            let (s, nc) = (source.clone(), nc.clone());
            tasks.spawn(async move {
                if let Err(error) = s.run_consumer(nc, &consumer).await {
                    error!(%error, "A JetStream consumer stopped.");
                }
            });
        }
    }
    let cron = CronController::new(
        Arc::new(StateScheduleStatus {
            state: state.clone(),
        }),
        sink,
        ledger,
        reporter,
        clock,
        CronConfig::default(),
    );
    let changes = local_triggers::schedule_changes(state.clone(), config_rx.clone());
    let (st, cfg) = (state.clone(), config_rx);
    tasks.spawn(cron.run_on(
        move || local_triggers::schedules(&st, &cfg.borrow()),
        changes,
    ));
    Ok(metrics)
}

/// [`Captures`] of the gateway on the state: a capture exists while its record does.
#[derive(Debug)]
struct StateCaptures {
    state: Arc<State>,
}

#[async_trait::async_trait]
impl Captures for StateCaptures {
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> nightcap_gateway::Result<Option<CaptureRecord>> {
        let pc =
            self.state
                .capture(namespace, name)
                .map_err(|e| nightcap_gateway::Error::Config {
                    reason: e.to_string(),
                })?;
        Ok(pc.map(|pc| CaptureRecord {
            uid: pc.metadata.uid,
            status: pc.status,
        }))
    }
}

/// The share-link key of this state directory (created on first use, 0600), so links survive
/// restarts.
fn signing_key(state_dir: &std::path::Path) -> Result<SigningKey> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let path = state_dir.join("share-key");
    if !path.exists() {
        let mut bytes = [0u8; 32];
        getrandom(&mut bytes)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| Error::Io {
                what: format!("cannot create {}", path.display()),
                source,
            })?;
        f.write_all(hex(&bytes).as_bytes())
            .map_err(|source| Error::Io {
                what: format!("cannot write {}", path.display()),
                source,
            })?;
    }
    Ok(SigningKey::from_file(&path)?)
}

fn getrandom(buf: &mut [u8]) -> Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|source| Error::Io {
            what: "cannot read /dev/urandom".into(),
            source,
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The gateway's routes with the capture API and `/metrics`.
fn gateway(
    g: &GatewayConfig,
    state: &Arc<State>,
    state_dir: &std::path::Path,
    store: Store,
    config: watch::Receiver<Arc<LocalConfig>>,
    metrics: Arc<Metrics>,
) -> Result<Router> {
    let mut tokens = g.tokens.clone();
    if let Some(path) = &g.tokens_file {
        let raw = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: format!("cannot read {}", path.display()),
            source,
        })?;
        let file: TokenFile = serde_yaml::from_str(&raw)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        tokens.extend(file.tokens);
    }
    let access: Arc<dyn Access> = Arc::new(TokenFileAccess::new(TokenFile { tokens })?);
    let duration = |v: &Option<String>, default: Duration| {
        v.as_deref()
            .map_or(Ok(default), nightcap_api::quantity::parse_duration)
            .map_err(|e| Error::Config(format!("gateway: {e}")))
    };
    let options = GatewayOptions {
        public_url: g
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", g.listen)),
        default_expiry: duration(&g.default_expiry, Duration::from_secs(15 * 60))?,
        max_expiry: duration(&g.max_expiry, nightcap_gateway::MAX_PRESIGN)?,
        ..GatewayOptions::default()
    };
    let captures = Arc::new(StateCaptures {
        state: state.clone(),
    });
    let gw = GatewayState::new(
        store,
        access.clone(),
        captures,
        signing_key(state_dir)?,
        options,
    )?;
    let api = api::router(Arc::new(ApiState {
        state: state.clone(),
        access,
        config,
    }));
    let metrics = Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.encode(),
                )
            }
        }),
    );
    Ok(nightcap_gateway::router(Arc::new(gw))
        .merge(api)
        .merge(metrics))
}
