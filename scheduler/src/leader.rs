//! Leader election on a `coordination.k8s.io/v1` Lease: of all scheduler replicas exactly one
//! acts. The holder renews the Lease; the others watch it and take over when it has not changed
//! for the lease duration (measured on their own monotonic clock, so clock skew between nodes
//! does not matter). A leader that cannot renew stops acting before its Lease can expire.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::{Error, Result, metrics::Metrics};

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a Lease that is not renewed stays valid.
    pub lease_duration: Duration,
}

impl LeaseSettings {
    /// Renew this often while leading.
    pub fn renew_interval(&self) -> Duration {
        self.lease_duration / 3
    }

    /// Stop acting when the last successful renewal is this old (before others may take over).
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
    }

    /// Try to acquire this often while standing by.
    pub fn retry_interval(&self) -> Duration {
        (self.lease_duration / 5).max(Duration::from_millis(200))
    }
}

/// One replica's view of the Lease.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The last Lease record seen (holder, renew time, resourceVersion) and when it was seen.
    observed: Option<(String, Instant)>,
}

fn micro_now() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl LeaderElector {
    /// An elector for `settings`.
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
        }
    }

    fn seconds(&self) -> i32 {
        i32::try_from(self.settings.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// Acquires the Lease if it is free or expired, renews it if held. True while leading.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let lease_ref = format!("{}/{}", self.settings.namespace, self.settings.name);
        let kube = |action: &str| {
            let action = format!("{action} Lease {lease_ref}");
            move |source| Error::Kube { action, source }
        };
        let me = self.settings.identity.clone();
        let Some(mut lease) = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(kube("reading"))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(self.seconds()),
                    acquire_time: Some(micro_now()),
                    renew_time: Some(micro_now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(kube("creating")(e)),
            };
        };
        self.observe(&lease);
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let duration = spec
            .lease_duration_seconds
            .map_or(self.settings.lease_duration, |s| {
                Duration::from_secs(s.max(0) as u64)
            });
        let seen_at = self
            .observed
            .as_ref()
            .map_or_else(Instant::now, |(_, at)| *at);
        let expired = holder.is_empty() || seen_at.elapsed() > duration;
        if holder != me && !expired {
            return Ok(false);
        }
        let taking_over = holder != me;
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(me),
            lease_duration_seconds: Some(self.seconds()),
            acquire_time: if taking_over {
                Some(micro_now())
            } else {
                spec.acquire_time
            },
            renew_time: Some(micro_now()),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(taking_over)),
            ..spec
        });
        // The resourceVersion in `lease` makes this a compare-and-swap: of two replicas taking
        // over at once, one gets 409 Conflict.
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                self.observe(&updated);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(kube("updating")(e)),
        }
    }

    fn observe(&mut self, lease: &Lease) {
        let spec = lease.spec.as_ref();
        let record = format!(
            "{:?}/{:?}/{:?}",
            spec.and_then(|s| s.holder_identity.as_ref()),
            spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            lease.metadata.resource_version
        );
        if self.observed.as_ref().map(|(r, _)| r) != Some(&record) {
            self.observed = Some((record, Instant::now()));
        }
    }

    /// Gives the Lease up (on shutdown) so another replica takes over at once.
    pub async fn release(&mut self) -> Result<()> {
        let action = format!(
            "releasing Lease {}/{}",
            self.settings.namespace, self.settings.name
        );
        let Some(mut lease) = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|source| Error::Kube {
                action: action.clone(),
                source,
            })?
        else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            ..spec
        });
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(source) => Err(Error::Kube { action, source }),
        }
    }
}

/// Runs `work` only while this replica leads; stops it when leadership is lost (and stands by
/// again) and when `shutdown` completes (then releases the Lease). `work` gets a future that
/// completes when it must stop.
pub async fn run_while_leader<W, F>(
    mut elector: LeaderElector,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
    mut work: W,
) -> Result<()>
where
    W: FnMut(oneshot::Receiver<()>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(shutdown);
    let settings = elector.settings.clone();
    loop {
        // Standing by.
        loop {
            match elector.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => warn!(%error, "Leader election failed; retrying."),
            }
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(settings.retry_interval()) => {}
            }
        }
        info!(identity = %settings.identity, lease = %settings.name, "Became the leader.");
        metrics.set_leader(true);
        let (stop_tx, stop_rx) = oneshot::channel();
        let mut task = tokio::spawn(work(stop_rx));
        let mut renewed = Instant::now();
        let mut task_done = false;
        let shutting_down = loop {
            tokio::select! {
                () = &mut shutdown => break true,
                _ = &mut task => {
                    warn!("The controller stopped on its own; giving up leadership.");
                    task_done = true;
                    break false;
                }
                () = tokio::time::sleep(settings.renew_interval()) => {
                    match elector.try_acquire_or_renew().await {
                        Ok(true) => renewed = Instant::now(),
                        Ok(false) => {
                            warn!("Another replica holds the Lease; stopping.");
                            break false;
                        }
                        Err(error) if renewed.elapsed() < settings.renew_deadline() => {
                            warn!(%error, "Lease renewal failed; retrying.");
                        }
                        Err(error) => {
                            warn!(%error, "Lease renewal failed past the deadline; stopping.");
                            break false;
                        }
                    }
                }
            }
        };
        let _ = stop_tx.send(());
        debug!("Stopping the controller.");
        if !task_done
            && tokio::time::timeout(settings.renew_deadline(), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
        metrics.set_leader(false);
        debug!(shutting_down, "Controller stopped.");
        if shutting_down {
            if let Err(error) = elector.release().await {
                warn!(%error, "Could not release the Lease; another replica takes over when it expires.");
            }
            return Ok(());
        }
        // Lost the lease: the next standby round reads it afresh.
        elector.observed = None;
    }
}
