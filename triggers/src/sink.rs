//! Where captures go: [`CaptureSink`] (one seam), implemented for Kubernetes by [`KubeSink`]
//! through kube-rs `Api<PacketCapture>`, so the same code runs against the test API server and
//! a real cluster.

use std::fmt;

use futures::future::BoxFuture;
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use nightcap_api::{PacketCapture, TriggerRef, capture::STOP_ANNOTATION};
use tracing::{debug, warn};

use crate::error::{Error, Result};

/// Field manager of every write.
pub const FIELD_MANAGER: &str = "nightcap-triggers";

/// Result of a create.
#[derive(Debug, Clone)]
pub enum CreateResult {
    /// Created; the object as the API server returned it.
    Created(Box<PacketCapture>),
    /// A capture with that name exists (the dedup).
    AlreadyExists,
}

/// Creates, stops and deletes captures.
pub trait CaptureSink: Send + Sync + fmt::Debug + 'static {
    /// Creates `capture` (name and namespace set). `origin` goes to `status.trigger`.
    fn create(
        &self,
        capture: PacketCapture,
        origin: TriggerRef,
    ) -> BoxFuture<'_, Result<CreateResult>>;

    /// Asks a capture to stop early (the stop annotation). `Ok(false)`: it does not exist.
    fn stop<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Deletes a capture (history limits). `Ok(false)`: it did not exist.
    fn delete<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<bool>>;
}

/// [`CaptureSink`] on the Kubernetes API.
#[derive(Clone)]
pub struct KubeSink {
    client: Client,
}

impl fmt::Debug for KubeSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeSink").finish_non_exhaustive()
    }
}

impl KubeSink {
    /// A sink using `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    fn api(&self, namespace: &str) -> Api<PacketCapture> {
        Api::namespaced(self.client.clone(), namespace)
    }
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl CaptureSink for KubeSink {
    fn create(
        &self,
        capture: PacketCapture,
        origin: TriggerRef,
    ) -> BoxFuture<'_, Result<CreateResult>> {
        Box::pin(async move {
            let namespace = capture.metadata.namespace.clone().unwrap_or_default();
            let name = capture.metadata.name.clone().unwrap_or_default();
            let api = self.api(&namespace);
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PostParams::default()
            };
            match api.create(&pp, &capture).await {
                Ok(created) => {
                    // status is ignored on create (status subresource); record the origin
                    // without delaying the caller.
                    tokio::spawn(async move {
                        let patch = serde_json::json!({"status": {"trigger": origin}});
                        let pp = PatchParams {
                            field_manager: Some(FIELD_MANAGER.to_owned()),
                            ..PatchParams::default()
                        };
                        let res = api.patch_status(&name, &pp, &Patch::Merge(&patch)).await;
                        if let Err(error) = res {
                            debug!(%namespace, %name, %error, "Could not record status.trigger.");
                        }
                    });
                    Ok(CreateResult::Created(Box::new(created)))
                }
                Err(kube::Error::Api(s)) if s.is_already_exists() => {
                    Ok(CreateResult::AlreadyExists)
                }
                Err(e) => Err(Error::Kube(e)),
            }
        })
    }

    fn stop<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let patch = serde_json::json!({"metadata": {"annotations": {STOP_ANNOTATION: reason}}});
            let pp = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            match self
                .api(namespace)
                .patch(name, &pp, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if not_found(&e) => Ok(false),
                Err(e) => Err(Error::Kube(e)),
            }
        })
    }

    fn delete<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            match self
                .api(namespace)
                .delete(name, &DeleteParams::background())
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if not_found(&e) => Ok(false),
                Err(e) => {
                    warn!(%namespace, %name, error = %e, "Could not delete capture.");
                    Err(Error::Kube(e))
                }
            }
        })
    }
}
