//! The gateway: where capture files come from. Found by `--gateway`/`NIGHTCAP_GATEWAY`, else the
//! address the install publishes (ConfigMap `nightcap-gateway` in `nightcap-system`, key `url`,
//! or its `nightcap.dev/gateway-url` annotation); when none answers, a port-forward through the
//! API server to a running gateway pod, as `kubectl port-forward` does.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use serde::Deserialize;
use tracing::debug;

use crate::{
    error::{Error, Result, from_response},
    portforward::PortForward,
};

/// Namespace of the nightcap install.
pub const SYSTEM_NAMESPACE: &str = "nightcap-system";
/// ConfigMap (and annotation) that publishes the gateway's URL.
pub const URL_CONFIGMAP: &str = "nightcap-gateway";
/// Annotation on that ConfigMap with the URL (the `url` key wins).
pub const URL_ANNOTATION: &str = "nightcap.dev/gateway-url";
/// Labels of the gateway's pods.
pub const POD_SELECTOR: &str =
    "app.kubernetes.io/name=nightcap,app.kubernetes.io/component=gateway";

/// One file of a capture, as the gateway lists it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteFile {
    /// Object key.
    pub key: String,
    /// Node that captured it.
    pub node: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Hex SHA-256, when recorded.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Packets, when recorded.
    #[serde(default)]
    pub packets: Option<u64>,
    /// Pre-signed GET URL.
    pub url: String,
}

#[derive(Debug, Deserialize)]
struct FilesResponse {
    files: Vec<RemoteFile>,
}

/// A share link.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    /// The URL.
    pub url: String,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
}

/// A reachable gateway with the caller's token.
#[derive(Debug)]
pub struct Gateway {
    /// Base URL, without a trailing `/`.
    pub base: String,
    token: String,
    http: reqwest::Client,
    _forward: Option<PortForward>,
}

impl Gateway {
    /// A gateway at `base`; `forward` keeps a port-forward alive as long as the gateway.
    pub fn new(base: String, token: String, forward: Option<PortForward>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: crate::http_client().unwrap_or_default(),
            _forward: forward,
        }
    }

    /// The HTTP client (pre-signed URLs need no token).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn capture_url(&self, ns: &str, name: &str, rest: &str) -> String {
        format!(
            "{}/v1/namespaces/{ns}/packetcaptures/{name}/{rest}",
            self.base
        )
    }

    async fn send(&self, req: reqwest::RequestBuilder, ns: &str) -> Result<reqwest::Response> {
        let resp =
            req.bearer_auth(&self.token).send().await.map_err(|e| {
                Error::transport(format!("connecting to the gateway {}", self.base), e)
            })?;
        let code = resp.status().as_u16();
        if (200..300).contains(&code) {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        Err(from_response(code, &body).with_files_hint(ns))
    }

    /// The capture's files, each with a URL valid for `expires`.
    pub async fn files(&self, ns: &str, name: &str, expires: &str) -> Result<Vec<RemoteFile>> {
        let req = self
            .http
            .get(self.capture_url(ns, name, "files"))
            .query(&[("expires", expires)]);
        let resp = self.send(req, ns).await?;
        let list: FilesResponse = resp
            .json()
            .await
            .map_err(|e| Error::transport("decoding the gateway's file list", e))?;
        Ok(list.files)
    }

    /// files.zip, streamed.
    pub async fn zip(&self, ns: &str, name: &str) -> Result<reqwest::Response> {
        self.send(self.http.get(self.capture_url(ns, name, "files.zip")), ns)
            .await
    }

    /// A share link valid for `expires`.
    pub async fn link(&self, ns: &str, name: &str, expires: &str) -> Result<Link> {
        let req = self
            .http
            .post(self.capture_url(ns, name, "links"))
            .query(&[("expires", expires)]);
        self.send(req, ns)
            .await?
            .json()
            .await
            .map_err(|e| Error::transport("decoding the share link", e))
    }
}

/// Finds a gateway for a cluster (see the module docs for the order).
pub async fn discover(client: &Client, flag: Option<&str>, token: String) -> Result<Gateway> {
    if let Some(url) = flag {
        return Ok(Gateway::new(url.to_string(), token, None));
    }
    if let Some(url) = published_url(client).await {
        if healthy(&url).await {
            return Ok(Gateway::new(url, token, None));
        }
        debug!(%url, "Published gateway URL does not answer; port-forwarding.");
    }
    let forward = PortForward::to_gateway(client.clone()).await?;
    let base = format!("http://{}", forward.local_addr());
    Ok(Gateway::new(base, token, Some(forward)))
}

/// The URL the install publishes, if the caller may read it.
async fn published_url(client: &Client) -> Option<String> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), SYSTEM_NAMESPACE)
        .get_opt(URL_CONFIGMAP)
        .await
        .map_err(|e| debug!(error = %e, "Cannot read the gateway ConfigMap."))
        .ok()??;
    cm.data
        .as_ref()
        .and_then(|d| d.get("url").cloned())
        .or_else(|| cm.metadata.annotations?.get(URL_ANNOTATION).cloned())
}

async fn healthy(url: &str) -> bool {
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
    else {
        return false;
    };
    http.get(format!("{}/healthz", url.trim_end_matches('/')))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}
