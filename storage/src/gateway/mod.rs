//! `nightcap gateway`: file listing with pre-signed URLs, streamed files.zip and share links,
//! namespace-scoped (DESIGN.md §5).
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /v1/namespaces/{ns}/packetcaptures/{name}/files?expires=15m` | JSON list with one pre-signed GET URL per file |
//! | `GET /v1/namespaces/{ns}/packetcaptures/{name}/files.zip` | every file plus `manifest.json`, streamed |
//! | `POST /v1/namespaces/{ns}/packetcaptures/{name}/links?expires=24h` | a share link (HMAC token) to files.zip |
//! | `GET /v1/share/{token}/files.zip` | files.zip for a share link, no cluster token |
//! | `GET /v1/objects/{key}?expires=…&signature=…` | one object, for stores that cannot pre-sign |
//! | `GET /healthz` | liveness |
//!
//! The gateway must never answer differently for a capture that does not exist and one the
//! caller may not read (both 403), never touch storage before names are validated and access is
//! granted, and never sign a URL for longer than `--max-expiry` (≤ 7 days).

pub mod auth;
pub mod captures;
pub mod handlers;
pub mod sign;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Router,
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::{
    config::{Store, StoreConfig},
    error::{Error, Result},
    list::Lister,
};
use auth::Access;
use captures::Captures;
use sign::SigningKey;

/// SigV4 pre-signed URLs live at most 7 days.
pub const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 3600);

/// Tunables of a gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Base URL clients reach the gateway at (for share links and gateway-signed URLs), without
    /// a trailing `/`.
    pub public_url: String,
    /// Expiry of file URLs when `?expires=` is not given.
    pub default_expiry: Duration,
    /// Expiry of share links when `?expires=` is not given.
    pub link_default_expiry: Duration,
    /// Longest expiry a caller may ask for (≤ 7 days).
    pub max_expiry: Duration,
    /// How files.zip reads objects (range size, read-ahead).
    pub zip: crate::archive::ZipOptions,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            default_expiry: Duration::from_secs(15 * 60),
            link_default_expiry: Duration::from_secs(24 * 3600),
            max_expiry: MAX_PRESIGN,
            zip: crate::archive::ZipOptions::default(),
        }
    }
}

/// Everything a request handler needs.
pub struct GatewayState {
    /// The store with its prefix and signer.
    pub store: Store,
    /// Lists capture files.
    pub lister: Lister,
    /// Authentication and authorisation.
    pub access: Arc<dyn Access>,
    /// Capture existence and status.
    pub captures: Arc<dyn Captures>,
    /// Signs share links and gateway object URLs.
    pub key: SigningKey,
    /// Tunables.
    pub options: GatewayOptions,
    /// The clock (injected so tests can move time).
    pub clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
}

impl std::fmt::Debug for GatewayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayState")
            .field("store", &self.store)
            .field("access", &self.access)
            .field("captures", &self.captures)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl GatewayState {
    /// A state with the wall clock; validates the options.
    pub fn new(
        store: Store,
        access: Arc<dyn Access>,
        captures: Arc<dyn Captures>,
        key: SigningKey,
        mut options: GatewayOptions,
    ) -> Result<Self> {
        if options.max_expiry > MAX_PRESIGN {
            return Err(Error::GatewayConfig {
                reason: "max expiry is above 7 days, the SigV4 limit; lower --max-expiry".into(),
            });
        }
        if options.default_expiry > options.max_expiry
            || options.link_default_expiry > options.max_expiry
        {
            return Err(Error::GatewayConfig {
                reason: "default expiries must not exceed --max-expiry".into(),
            });
        }
        options.public_url = options.public_url.trim_end_matches('/').to_string();
        // Stores without attributes (local files) answer every HEAD with nothing new.
        let lister = Lister::new(store.store.clone(), store.prefix.clone())
            .with_attributes(store.backend != "local");
        Ok(Self {
            store,
            lister,
            access,
            captures,
            key,
            options,
            clock: Arc::new(Utc::now),
        })
    }

    /// Replaces the clock.
    pub fn with_clock(mut self, clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>) -> Self {
        self.clock = clock;
        self
    }
}

/// The gateway's routes.
pub fn router(state: Arc<GatewayState>) -> Router {
    let capture = "/v1/namespaces/{ns}/packetcaptures/{name}";
    Router::new()
        .route(&format!("{capture}/files"), get(handlers::files))
        .route(&format!("{capture}/files.zip"), get(handlers::files_zip))
        .route(&format!("{capture}/links"), post(handlers::create_link))
        .route("/v1/share/{token}/files.zip", get(handlers::shared_zip))
        .route("/v1/objects/{*key}", get(handlers::object))
        .route("/healthz", get(handlers::healthz))
        .with_state(state)
}

/// How callers are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// TokenReview + SubjectAccessReview; captures are PacketCapture objects.
    Kubernetes,
    /// A static token file; captures are what the store holds.
    TokenFile,
}

/// `nightcap gateway` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Address to listen on (plain HTTP; terminate TLS in front, e.g. at the Ingress).
    #[arg(long, env = "NIGHTCAP_GATEWAY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Store URL: s3://bucket/prefix (AWS_* variables), file:///dir, gs://…, az://….
    #[arg(long, env = "NIGHTCAP_STORE", conflicts_with = "store_config")]
    pub store: Option<String>,
    /// Store configuration file (YAML StoreConfig; see runbooks/downloads.md).
    #[arg(long, env = "NIGHTCAP_STORE_CONFIG")]
    pub store_config: Option<PathBuf>,
    /// Authentication mode.
    #[arg(
        long,
        env = "NIGHTCAP_GATEWAY_AUTH",
        value_enum,
        default_value = "kubernetes"
    )]
    pub auth: AuthMode,
    /// Token file for `--auth token-file`.
    #[arg(
        long,
        env = "NIGHTCAP_GATEWAY_TOKEN_FILE",
        required_if_eq("auth", "token-file")
    )]
    pub token_file: Option<PathBuf>,
    /// Accepted token audiences for TokenReview (repeat; empty: the API server's default).
    #[arg(
        long = "audience",
        env = "NIGHTCAP_GATEWAY_AUDIENCES",
        value_delimiter = ','
    )]
    pub audiences: Vec<String>,
    /// File with the HMAC key for share links and gateway URLs (≥ 32 bytes). Without it a random
    /// key is used and links die with the process. Rotate the file to revoke every link.
    #[arg(long, env = "NIGHTCAP_GATEWAY_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// Public base URL of the gateway (share links, gateway-signed URLs).
    #[arg(
        long,
        env = "NIGHTCAP_GATEWAY_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub public_url: String,
    /// Default expiry of file URLs.
    #[arg(long, env = "NIGHTCAP_GATEWAY_DEFAULT_EXPIRY", default_value = "15m", value_parser = humantime::parse_duration)]
    pub default_expiry: Duration,
    /// Default expiry of share links.
    #[arg(long, env = "NIGHTCAP_GATEWAY_LINK_EXPIRY", default_value = "24h", value_parser = humantime::parse_duration)]
    pub link_expiry: Duration,
    /// Longest expiry a caller may ask for (at most 7d).
    #[arg(long, env = "NIGHTCAP_GATEWAY_MAX_EXPIRY", default_value = "7d", value_parser = humantime::parse_duration)]
    pub max_expiry: Duration,
    /// How often to delete files of captures past `ttlSecondsAfterFinished` (Kubernetes mode;
    /// 0 turns retention off).
    #[arg(long, env = "NIGHTCAP_RETENTION_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub retention_interval: Duration,
    /// files.zip reads objects in ranged GETs of this many bytes …
    #[arg(long, env = "NIGHTCAP_GATEWAY_ZIP_RANGE_BYTES", default_value_t = 16 << 20)]
    pub zip_range_bytes: u64,
    /// … this many started at a time per download (about 1 MiB of memory each).
    #[arg(long, env = "NIGHTCAP_GATEWAY_ZIP_PARALLEL", default_value_t = 4)]
    pub zip_parallel: usize,
}

/// Runs the gateway until the process is stopped.
pub async fn run(args: GatewayArgs) -> Result<()> {
    let mut config = match (&args.store, &args.store_config) {
        (Some(url), _) => StoreConfig::from_url(url)?,
        (None, Some(path)) => {
            let raw = std::fs::read_to_string(path).map_err(|source| Error::LocalIo {
                path: path.clone(),
                source,
            })?;
            serde_yaml::from_str(&raw).map_err(|e| Error::InvalidConfig {
                reason: format!("{}: {e}", path.display()),
            })?
        }
        (None, None) => {
            return Err(Error::GatewayConfig {
                reason: "no store: pass --store URL or --store-config FILE".into(),
            });
        }
    };
    let key = match &args.signing_key_file {
        Some(p) => SigningKey::from_file(p)?,
        None => {
            warn!(
                "No --signing-key-file; using a random key. Share links end when the gateway restarts."
            );
            SigningKey::random()
        }
    };
    let options = GatewayOptions {
        public_url: args.public_url.clone(),
        default_expiry: args.default_expiry,
        link_default_expiry: args.link_expiry,
        max_expiry: args.max_expiry,
        zip: crate::archive::ZipOptions {
            range_bytes: args.zip_range_bytes,
            parallel: args.zip_parallel,
            force_zip64: false,
        },
    };
    let (access, captures, client): (Arc<dyn Access>, Arc<dyn Captures>, _) = match args.auth {
        AuthMode::Kubernetes => {
            let client = kube::Client::try_default()
                .await
                .map_err(|source| Error::Kube {
                    what: "connecting (in-cluster or kubeconfig)".into(),
                    source,
                })?;
            config = resolve_secret_credentials(config, &client).await?;
            (
                Arc::new(auth::KubernetesAccess::new(
                    client.clone(),
                    args.audiences.clone(),
                )),
                Arc::new(captures::KubernetesCaptures::new(client.clone())),
                Some(client),
            )
        }
        AuthMode::TokenFile => {
            let path = args
                .token_file
                .as_ref()
                .ok_or_else(|| Error::GatewayConfig {
                    reason: "--auth token-file needs --token-file".into(),
                })?;
            let store = config.open()?;
            (
                Arc::new(auth::TokenFileAccess::from_file(path)?),
                Arc::new(captures::StoredCaptures::new(store.store, store.prefix)),
                None,
            )
        }
    };
    let store = config.open()?;
    if let Some(client) = client.filter(|_| !args.retention_interval.is_zero()) {
        tokio::spawn(retention_loop(
            client,
            store.clone(),
            args.retention_interval,
        ));
    }
    let state = GatewayState::new(store, access, captures, key, options)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Error::GatewayConfig {
            reason: format!("cannot listen on {}: {e}", args.listen),
        })?;
    info!(listen = %args.listen, auth = ?args.auth, "Gateway listening.");
    axum::serve(listener, router(Arc::new(state)))
        .await
        .map_err(|e| Error::GatewayConfig {
            reason: format!("server stopped: {e}"),
        })
}

mod background;
pub use background::{resolve_secret_credentials, retention_loop};

/// [`run`] on a new multi-threaded tokio runtime (for the CLI's synchronous `main`).
pub fn run_blocking(args: GatewayArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::GatewayConfig {
            reason: format!("cannot start the async runtime: {e}"),
        })?;
    rt.block_on(run(args))
}
