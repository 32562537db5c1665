//! A local port forwarded to a gateway pod through the API server (`pods/portforward`, one
//! WebSocket per connection, like `kubectl port-forward`).

use std::net::SocketAddr;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::ListParams};
use tokio::{net::TcpListener, task::JoinHandle};
use tracing::{debug, warn};

use crate::{
    error::{Error, Result},
    gateway::{POD_SELECTOR, SYSTEM_NAMESPACE},
};

/// Port of the gateway container when its pod names none (`nightcap gateway --listen`'s).
pub const DEFAULT_GATEWAY_PORT: u16 = 8080;

/// A listening local port; dropping it stops forwarding.
#[derive(Debug)]
pub struct PortForward {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PortForward {
    /// Forwards a local port to a running gateway pod in `nightcap-system`.
    pub async fn to_gateway(client: Client) -> Result<Self> {
        let pods: Api<Pod> = Api::namespaced(client, SYSTEM_NAMESPACE);
        let list = pods
            .list(&ListParams::default().labels(POD_SELECTOR))
            .await
            .map_err(|e| no_gateway(&format!("listing gateway pods failed ({e})")))?;
        let (pod, port) = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .find_map(|p| Some((p.metadata.name.clone()?, gateway_port(p))))
            .ok_or_else(|| no_gateway("no gateway pod is running"))?;
        Self::to_pod(pods, pod, port).await
    }

    /// Forwards a local port to `port` of `pod`.
    pub async fn to_pod(pods: Api<Pod>, pod: String, port: u16) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| Error::io("127.0.0.1:0", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("127.0.0.1:0", e))?;
        debug!(%pod, port, local = %addr, "Port-forwarding to the gateway.");
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let _ = conn.set_nodelay(true);
                let pods = pods.clone();
                let pod = pod.clone();
                tokio::spawn(async move {
                    let mut fwd = match pods.portforward(&pod, &[port]).await {
                        Ok(f) => f,
                        Err(e) => return warn!(%pod, error = %e, "Port-forward failed."),
                    };
                    let Some(mut upstream) = fwd.take_stream(port) else {
                        return;
                    };
                    if let Err(e) = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await {
                        debug!(error = %e, "Forwarded connection ended.");
                    }
                    drop(upstream);
                    let _ = fwd.join().await;
                });
            }
        });
        Ok(Self { addr, task })
    }

    /// The local address to connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The container port named `http`, else the first one declared, else 8080.
fn gateway_port(pod: &Pod) -> u16 {
    let ports: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .collect();
    ports
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .or(ports.first())
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(DEFAULT_GATEWAY_PORT)
}

fn no_gateway(why: &str) -> Error {
    Error::Config(format!(
        "no gateway found: {why}. Pass --gateway URL (or set NIGHTCAP_GATEWAY), or ask for \
         `get,list pods` and `create pods/portforward` in {SYSTEM_NAMESPACE} so the plugin can \
         port-forward"
    ))
}
