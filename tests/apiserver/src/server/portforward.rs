//! `pods/portforward`: the WebSocket port-forward kube-rs and kubectl speak
//! (`v4.channel.k8s.io`). One connection forwards the ports in `?ports=`; each port has a data
//! channel (2i) and an error channel (2i+1), whose first frame carries the port (u16, little
//! endian). The server connects to the pod's IP (`status.podIP`, as the kubelet does inside the
//! pod's network namespace; pods without one get 127.0.0.1). Authorised as `create
//! pods/portforward`, like the real server.

use std::{net::IpAddr, sync::Arc};

use axum::{body::Body, response::Response};
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, handshake::derive_accept_key, protocol::Role},
};

use super::{
    Shared,
    http::{Target, authorize},
};
use crate::{
    policy::{Attributes, UserInfo},
    status::{ApiError, ApiResult},
};

/// The subprotocol served (kube-rs offers v5 and v4; v4 is what port-forward needs).
const PROTOCOL: &str = "v4.channel.k8s.io";

/// `(namespace, pod)` when `path` is a pod's portforward subresource.
pub(crate) fn matches(path: &str) -> Option<(String, String)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", name, "portforward"] => {
            Some((ns.to_string(), name.to_string()))
        }
        _ => None,
    }
}

/// Authorises, checks the pod and the upgrade request, answers 101 and forwards in the
/// background.
pub(crate) fn handle(
    sh: &Arc<Shared>,
    user: &UserInfo,
    parts: &mut Parts,
    ns: &str,
    name: &str,
    query: &super::http::Query,
) -> ApiResult<Response> {
    let rt = sh
        .store
        .read()
        .registry
        .find("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods are not served"))?;
    let attrs = Attributes {
        verb: "create".into(),
        group: String::new(),
        resource: "pods".into(),
        subresource: "portforward".into(),
        namespace: ns.to_string(),
        name: name.to_string(),
        non_resource_path: None,
    };
    let target = Target {
        rt: rt.clone(),
        ns: Some(ns.to_string()),
        name: Some(name.to_string()),
        sub: Some("portforward".into()),
    };
    authorize(&sh.policy(), user, &attrs, Some(&target))?;
    let pod = sh
        .store
        .read()
        .get(&rt.key(), ns, name)
        .ok_or_else(|| ApiError::not_found(&rt, name))?;
    if pod["status"]["phase"] != "Running" {
        return Err(ApiError::new(
            400,
            "BadRequest",
            format!("pod {name} is not running and cannot be port-forwarded"),
        ));
    }
    let ip: IpAddr = pod["status"]["podIP"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let ports: Vec<u16> = query
        .get("ports")
        .map(|p| p.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_default();
    if ports.len() != 1 {
        return Err(ApiError::new(
            400,
            "BadRequest",
            "exactly one port is supported in ?ports=",
        ));
    }
    let key = websocket_key(&parts.headers)?;
    let on_upgrade = parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| ApiError::new(400, "BadRequest", "the connection cannot be upgraded"))?;
    let port = ports[0];
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                forward(ws, ip, port).await;
            }
            Err(e) => tracing::debug!(error = %e, "Port-forward upgrade failed."),
        }
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(PROTOCOL),
    );
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .map_err(|e| ApiError::internal(e.to_string()))?,
    );
    Ok(resp)
}

fn websocket_key(headers: &HeaderMap) -> ApiResult<String> {
    let protocols = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !protocols.split(',').any(|p| p.trim() == PROTOCOL) {
        return Err(ApiError::new(
            400,
            "BadRequest",
            format!("port-forward needs the WebSocket subprotocol {PROTOCOL}"),
        )
        .with_details(json!({})));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
        .ok_or_else(|| ApiError::new(400, "BadRequest", "missing Sec-WebSocket-Key"))
}

/// Bridges the WebSocket's data channel 0 and a TCP connection to `ip:port`.
async fn forward<S>(ws: WebSocketStream<S>, ip: IpAddr, port: u16)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    let [lo, hi] = port.to_le_bytes();
    for ch in [0u8, 1] {
        if tx.send(Message::binary(vec![ch, lo, hi])).await.is_err() {
            return;
        }
    }
    let tcp = match TcpStream::connect((ip, port)).await {
        Ok(s) => s,
        Err(e) => {
            let mut msg = vec![1u8];
            msg.extend(format!("error forwarding port {port} to pod: {e}").into_bytes());
            let _ = tx.send(Message::binary(msg)).await;
            let _ = tx.send(Message::Close(None)).await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut read, mut write) = tcp.into_split();
    let up = async {
        while let Some(Ok(msg)) = rx.next().await {
            let data = match msg {
                Message::Binary(b) if b.first() == Some(&0) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            if write.write_all(&data[1..]).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match read.read(&mut buf[1..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf[0] = 0;
                    if tx.send(Message::binary(buf[..=n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = tx.send(Message::Close(None)).await;
    };
    futures::future::join(up, down).await;
}
