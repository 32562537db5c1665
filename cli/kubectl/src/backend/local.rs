//! The one-host backend: the read/write API of `nightcap local`'s gateway
//! (`/v1/namespaces/{ns}/packetcaptures…`, Kubernetes `Status` errors, bearer token).

use reqwest::{Method, RequestBuilder};
use serde::{Serialize, de::DeserializeOwned};

use super::{EventView, Items, missing};
use crate::{
    args::ConnArgs,
    error::{Error, Result, from_response},
    gateway::Gateway,
};

/// `nightcap local` at `--server`.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    base: String,
    token: String,
    http: reqwest::Client,
    /// The namespace verbs act in (`-n`, else `default`).
    pub namespace: String,
}

impl LocalBackend {
    /// A backend for `url` with the token of `--token`.
    pub fn new(url: &str, conn: &ConnArgs) -> Result<Self> {
        let token = conn
            .token
            .clone()
            .ok_or_else(|| missing("--token (with --server)"))?;
        Ok(Self {
            base: url.trim_end_matches('/').to_string(),
            token,
            http: crate::http_client()?,
            namespace: conn.namespace.clone().unwrap_or_else(|| "default".into()),
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T> {
        let resp = req
            .send()
            .await
            .map_err(|e| Error::transport(format!("connecting to {}", self.base), e))?;
        let code = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| Error::transport(format!("reading from {}", self.base), e))?;
        if !(200..300).contains(&code) {
            return Err(from_response(code, &body));
        }
        serde_json::from_slice(&body)
            .map_err(|e| Error::transport(format!("decoding the answer of {}", self.base), e))
    }

    pub(super) async fn list<T: DeserializeOwned>(
        &self,
        plural: &str,
        ns: Option<&str>,
        sel: Option<&str>,
    ) -> Result<Vec<T>> {
        let path = match ns {
            Some(ns) => format!("/v1/namespaces/{ns}/{plural}"),
            None => format!("/v1/{plural}"),
        };
        let mut req = self.request(Method::GET, &path);
        if let Some(s) = sel {
            req = req.query(&[("labelSelector", s)]);
        }
        Ok(self.send::<Items<T>>(req).await?.items)
    }

    pub(super) async fn get<T: DeserializeOwned>(&self, ns: &str, name: &str) -> Result<T> {
        let path = format!("/v1/namespaces/{ns}/packetcaptures/{name}");
        self.send(self.request(Method::GET, &path)).await
    }

    pub(super) async fn create<T: Serialize + DeserializeOwned>(&self, pc: &T) -> Result<T> {
        let ns = serde_json::to_value(pc)
            .ok()
            .and_then(|v| v["metadata"]["namespace"].as_str().map(String::from))
            .unwrap_or_else(|| self.namespace.clone());
        let path = format!("/v1/namespaces/{ns}/packetcaptures");
        self.send(self.request(Method::POST, &path).json(pc)).await
    }

    pub(super) async fn stop<T: DeserializeOwned>(
        &self,
        ns: &str,
        name: &str,
        reason: &str,
    ) -> Result<T> {
        let path = format!("/v1/namespaces/{ns}/packetcaptures/{name}/stop");
        let body = serde_json::json!({ "reason": reason });
        self.send(self.request(Method::POST, &path).json(&body))
            .await
    }

    pub(super) async fn delete(&self, ns: &str, name: &str, keep_files: bool) -> Result<()> {
        let path = format!("/v1/namespaces/{ns}/packetcaptures/{name}");
        let mut req = self.request(Method::DELETE, &path);
        if keep_files {
            req = req.query(&[("keepFiles", "true")]);
        }
        self.send::<serde_json::Value>(req).await.map(|_| ())
    }

    pub(super) async fn events(&self, ns: &str, name: &str) -> Result<Vec<EventView>> {
        let path = format!("/v1/namespaces/{ns}/packetcaptures/{name}/events");
        let list: Items<k8s_openapi::api::core::v1::Event> =
            self.send(self.request(Method::GET, &path)).await?;
        Ok(list
            .items
            .into_iter()
            .map(|e| EventView {
                type_: e.type_.unwrap_or_default(),
                reason: e.reason.unwrap_or_default(),
                message: e.message.unwrap_or_default(),
                count: e.count.unwrap_or(1),
                last: e
                    .last_timestamp
                    .or(e.first_timestamp)
                    .map(|t| t.0)
                    .or(e.event_time.map(|t| t.0)),
            })
            .collect())
    }

    /// The host's gateway is the server itself (or `--gateway`).
    pub(super) fn gateway(&self, conn: &ConnArgs) -> Gateway {
        let base = conn.gateway.clone().unwrap_or_else(|| self.base.clone());
        Gateway::new(base, self.token.clone(), None)
    }
}
