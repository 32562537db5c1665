//! Running the gateway: flags to a [`GatewayState`], the retention loop, the HTTP server.

use std::sync::Arc;

use nightcap_storage::{Error as StorageError, StoreConfig};
use tracing::{info, warn};

use crate::{
    AuthMode, GatewayArgs, GatewayOptions, GatewayState, Result,
    archive::ZipOptions,
    auth::{Access, KubernetesAccess, TokenFileAccess},
    captures::{Captures, KubernetesCaptures, StoredCaptures},
    error::Error,
    resolve_secret_credentials, retention_loop, router,
    sign::SigningKey,
};

/// Runs the gateway until the process is stopped.
pub async fn run(args: GatewayArgs) -> Result<()> {
    let mut config = match (&args.store, &args.store_config) {
        (Some(url), _) => StoreConfig::from_url(url)?,
        (None, Some(path)) => {
            let raw = std::fs::read_to_string(path).map_err(|source| StorageError::LocalIo {
                path: path.clone(),
                source,
            })?;
            serde_yaml::from_str(&raw).map_err(|e| StorageError::InvalidConfig {
                reason: format!("{}: {e}", path.display()),
            })?
        }
        (None, None) => {
            return Err(Error::Config {
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
        zip: ZipOptions {
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
                Arc::new(KubernetesAccess::new(
                    client.clone(),
                    args.audiences.clone(),
                )),
                Arc::new(KubernetesCaptures::new(client.clone())),
                Some(client),
            )
        }
        AuthMode::TokenFile => {
            let path = args.token_file.as_ref().ok_or_else(|| Error::Config {
                reason: "--auth token-file needs --token-file".into(),
            })?;
            let store = config.open()?;
            (
                Arc::new(TokenFileAccess::from_file(path)?),
                Arc::new(StoredCaptures::new(store.store, store.prefix)),
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
        .map_err(|e| Error::Config {
            reason: format!("cannot listen on {}: {e}", args.listen),
        })?;
    info!(listen = %args.listen, auth = ?args.auth, "Gateway listening.");
    axum::serve(listener, router(Arc::new(state)))
        .await
        .map_err(|e| Error::Config {
            reason: format!("server stopped: {e}"),
        })
}

/// [`run`] on the shared runtime of `nightcap-process` (for the CLI's synchronous `main`,
/// which has installed logging already).
pub fn run_blocking(args: GatewayArgs) -> Result<()> {
    nightcap_process::block_on("gateway", run(args))?
}
