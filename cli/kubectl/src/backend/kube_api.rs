//! The cluster backend: PacketCaptures, triggers, schedules and Events through the API server.

use std::fmt::Debug;

use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use nightcap_api::{PacketCapture, capture::STOP_ANNOTATION};
use serde::de::DeserializeOwned;

use super::EventView;
use crate::{
    args::ConnArgs,
    error::{Error, Result},
    gateway::{self, Gateway},
    kubeconfig,
};

/// A cluster reached with the user's kubeconfig.
#[derive(Clone)]
pub struct KubeBackend {
    /// The client.
    pub client: Client,
    /// The namespace verbs act in.
    pub namespace: String,
    config: Box<kube::Config>,
}

impl std::fmt::Debug for KubeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeBackend")
            .field("cluster", &self.config.cluster_url)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl KubeBackend {
    /// Connects with the kubeconfig the flags name.
    pub async fn connect(conn: &ConnArgs) -> Result<Self> {
        let loaded = kubeconfig::load(conn).await?;
        let client = Client::try_from(loaded.config.clone()).map_err(|e| {
            Error::Config(format!("cannot build a client from the kubeconfig: {e}"))
        })?;
        Ok(Self {
            client,
            namespace: loaded.namespace,
            config: Box::new(loaded.config),
        })
    }

    fn api<K>(&self, ns: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match ns {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    pub(super) async fn list(
        &self,
        ns: Option<&str>,
        sel: Option<&str>,
    ) -> Result<Vec<PacketCapture>> {
        self.list_any(ns, sel).await
    }

    pub(super) async fn list_any<K>(&self, ns: Option<&str>, sel: Option<&str>) -> Result<Vec<K>>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
        K::DynamicType: Default,
    {
        let mut lp = ListParams::default();
        if let Some(s) = sel {
            lp = lp.labels(s);
        }
        Ok(self.api::<K>(ns).list(&lp).await?.items)
    }

    pub(super) async fn get(&self, ns: &str, name: &str) -> Result<PacketCapture> {
        Ok(self.api::<PacketCapture>(Some(ns)).get(name).await?)
    }

    pub(super) async fn create(&self, pc: &PacketCapture) -> Result<PacketCapture> {
        let ns = pc.metadata.namespace.as_deref().unwrap_or(&self.namespace);
        let pp = PostParams {
            field_manager: Some("kubectl-nightcap".into()),
            ..PostParams::default()
        };
        Ok(self.api::<PacketCapture>(Some(ns)).create(&pp, pc).await?)
    }

    pub(super) async fn stop(&self, ns: &str, name: &str, reason: &str) -> Result<PacketCapture> {
        let patch = serde_json::json!({"metadata": {"annotations": {STOP_ANNOTATION: reason}}});
        let pp = PatchParams {
            field_manager: Some("kubectl-nightcap".into()),
            ..PatchParams::default()
        };
        Ok(self
            .api::<PacketCapture>(Some(ns))
            .patch(name, &pp, &Patch::Merge(&patch))
            .await?)
    }

    pub(super) async fn delete(&self, ns: &str, name: &str) -> Result<()> {
        self.api::<PacketCapture>(Some(ns))
            .delete(name, &DeleteParams::default())
            .await?;
        Ok(())
    }

    pub(super) async fn events(&self, ns: &str, name: &str) -> Result<Vec<EventView>> {
        let events = self
            .api::<Event>(Some(ns))
            .list(&ListParams::default())
            .await?;
        Ok(events
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("PacketCapture") && r.name.as_deref() == Some(name)
                })
            })
            .map(|e| EventView {
                type_: e.type_.unwrap_or_default(),
                reason: e.reason.unwrap_or_default(),
                message: e.note.unwrap_or_default(),
                count: e
                    .series
                    .as_ref()
                    .map(|s| s.count)
                    .or(e.deprecated_count)
                    .unwrap_or(1),
                last: e
                    .series
                    .map(|s| s.last_observed_time.0)
                    .or(e.event_time.map(|t| t.0))
                    .or(e.deprecated_last_timestamp.map(|t| t.0))
                    .or(e.metadata.creation_timestamp.map(|t| t.0)),
            })
            .collect())
    }

    pub(super) fn changes<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxStream<'a, Result<PacketCapture>> {
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        watcher(self.api::<PacketCapture>(Some(ns)), cfg)
            .default_backoff()
            .applied_objects()
            .map_err(|e| Error::transport("watching the capture", e))
            .boxed()
    }

    pub(super) async fn gateway(&self, conn: &ConnArgs) -> Result<Gateway> {
        let token = match &conn.token {
            Some(t) => t.clone(),
            None => kubeconfig::bearer_token(&self.config.auth_info).await?,
        };
        gateway::discover(&self.client, conn.gateway.as_deref(), token).await
    }
}
