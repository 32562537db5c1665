//! nightcap-gateway: `nightcap gateway` — file listing with pre-signed URLs, streamed files.zip
//! and share links, namespace-scoped (DESIGN.md §5).
//!
//! The gateway is a crate of its own rather than a cargo feature of `nightcap-storage`: it is
//! the only part that needs an HTTP server (axum), a Kubernetes client (TokenReview,
//! SubjectAccessReview, PacketCaptures, Secrets) and the HMAC and zip machinery of downloads.
//! As a crate, the storage core that the capture job links cannot reach those dependencies at
//! all — no feature unification in a workspace build or a test can turn them back on — and the
//! gateway's Kubernetes errors live in the gateway's own [`Error`]. The crate sits on top of
//! `nightcap-storage` (layout, stores, listing, retention sweep) and only `cli` depends on it.
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

pub mod archive;
mod args;
pub mod auth;
pub mod captures;
mod checks;
mod credentials;
pub mod error;
pub mod handlers;
mod retention;
mod run;
pub mod sign;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use nightcap_storage::{Lister, Store};

pub use args::{AuthMode, GatewayArgs};
use auth::Access;
use captures::Captures;
pub use credentials::resolve_secret_credentials;
pub use error::{Error, Result};
pub use retention::retention_loop;
pub use run::{run, run_blocking};
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
    pub zip: archive::ZipOptions,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            default_expiry: Duration::from_secs(15 * 60),
            link_default_expiry: Duration::from_secs(24 * 3600),
            max_expiry: MAX_PRESIGN,
            zip: archive::ZipOptions::default(),
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
            return Err(Error::Config {
                reason: "max expiry is above 7 days, the SigV4 limit; lower --max-expiry".into(),
            });
        }
        if options.default_expiry > options.max_expiry
            || options.link_default_expiry > options.max_expiry
        {
            return Err(Error::Config {
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
