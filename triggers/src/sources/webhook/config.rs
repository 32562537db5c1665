//! Configuration of the webhook source (`webhook:` in the triggers configuration file).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

/// Default listen address: all interfaces, port 8080.
pub const fn default_listen() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080)
}

/// Default body size limit: 1 MiB (an Alertmanager notification with hundreds of alerts fits).
pub const fn default_max_body_bytes() -> usize {
    1 << 20
}

/// Default header for HMAC signatures.
pub const DEFAULT_SIGNATURE_HEADER: &str = "X-Nightcap-Signature";

fn default_signature_header() -> String {
    DEFAULT_SIGNATURE_HEADER.to_owned()
}

/// The HTTP webhook: `POST /hooks/alertmanager[/...]` (Alertmanager webhook payload v4) and
/// `POST /hooks/capture[/...]` (capture requests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookConfig {
    /// Address to listen on. Default: `0.0.0.0:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// File with the bearer token callers send as `Authorization: Bearer <token>` (what
    /// Alertmanager's `http_config.authorization.credentials_file` sends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    /// File with the HMAC-SHA256 secret. Callers sign the raw body and send
    /// `sha256=<hex>` in [`signature_header`](Self::signature_header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret_file: Option<PathBuf>,
    /// Header with the HMAC signature. Default: `X-Nightcap-Signature`.
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    /// Largest accepted request body in bytes; larger bodies get 413. Default: 1 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Accept requests without a token or signature. Only for a listener that an authenticating
    /// proxy guards. Default: false (the webhook refuses to start without credentials).
    #[serde(default)]
    pub allow_unauthenticated: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            bearer_token_file: None,
            hmac_secret_file: None,
            signature_header: default_signature_header(),
            max_body_bytes: default_max_body_bytes(),
            allow_unauthenticated: false,
        }
    }
}
