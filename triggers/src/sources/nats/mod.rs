//! The NATS source: core subscriptions (at most once; a request with a reply subject gets the
//! decisions back) and JetStream durable pull consumers (at least once, see [`jetstream`]).
//! Messages are Alertmanager webhook payloads or capture requests (told apart by shape).
//!
//! The client reconnects by itself; subscriptions survive reconnects, and a JetStream consumer
//! whose message stream fails is set up again with backoff.

pub mod config;
pub mod jetstream;

use std::{sync::Arc, time::Duration};

use async_nats::{Client, ConnectOptions, Event};
use futures::StreamExt;
use tracing::{info, warn};

pub use config::{Consumer, NatsAuth, NatsConfig, NatsTls, StreamSpec, Subscription};

use crate::{
    decision::Decision,
    engine::Engine,
    error::{Error, Result},
    event::EventSource,
    payload::{self, ParseOptions},
};

fn read(path: &std::path::Path, what: &'static str) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
        .map_err(|source| Error::SecretRead {
            what,
            path: path.to_owned(),
            source,
        })
}

/// Connects with the configured credentials and TLS. The first connection is retried in the
/// background (the call returns at once), later ones reconnect forever.
pub async fn connect(cfg: &NatsConfig) -> Result<Client> {
    cfg.validate()?;
    let a = &cfg.auth;
    let mut opts = if let Some(p) = &a.credentials_file {
        ConnectOptions::with_credentials_file(p)
            .await
            .map_err(|source| Error::SecretRead {
                what: "NATS credentials",
                path: p.clone(),
                source,
            })?
    } else {
        ConnectOptions::new()
    };
    if let Some(p) = &a.token_file {
        opts = opts.token(read(p, "NATS token")?);
    }
    if let (Some(user), Some(p)) = (&a.user, &a.password_file) {
        opts = opts.user_and_password(user.clone(), read(p, "NATS password")?);
    }
    if let Some(p) = &a.nkey_seed_file {
        opts = opts.nkey(read(p, "NATS NKey seed")?);
    }
    if let Some(t) = &cfg.tls {
        if let Some(ca) = &t.ca_file {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        opts = opts.require_tls(t.required);
    }
    let servers = cfg.servers.join(",");
    let opts = opts
        .name(&cfg.name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                Event::Connected => info!("Connected to NATS."),
                Event::Disconnected => warn!("Disconnected from NATS; reconnecting."),
                other => warn!(event = %other, "NATS connection event."),
            }
        });
    let addrs: Vec<async_nats::ServerAddr> = cfg
        .servers
        .iter()
        .map(|s| s.parse())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e: std::io::Error| Error::ConfigInvalid {
            field: "nats.servers".into(),
            message: format!("{servers:?}: {e}"),
        })?;
    opts.connect(addrs)
        .await
        .map_err(|source| Error::NatsConnect {
            servers,
            source: Box::new(source),
        })
}

/// Turns NATS messages into events for the engine.
#[derive(Debug, Clone)]
pub struct NatsSource {
    engine: Engine,
    parse: Arc<ParseOptions>,
    concurrency: usize,
}

/// What became of one message.
#[derive(Debug)]
pub enum Handled {
    /// The payload was refused (malformed JSON, unknown fields, wrong version).
    BadPayload(Error),
    /// Decisions for its events.
    Decided(Vec<Decision>),
}

impl NatsSource {
    /// A source feeding `engine`.
    pub fn new(engine: Engine, parse: ParseOptions, concurrency: usize) -> Self {
        Self {
            engine,
            parse: Arc::new(parse),
            concurrency: concurrency.max(1),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Parses a message body and runs its events through the engine.
    pub async fn handle(&self, body: &[u8], source: EventSource) -> Handled {
        let kind = source.kind();
        let metrics = self.engine.reporter().metrics();
        let now = self.engine.clock().now();
        match payload::parse_any(body, &source, now, &self.parse) {
            Err(e) => {
                metrics.rejected_payload(kind);
                Handled::BadPayload(e)
            }
            Ok(events) => {
                metrics.received(kind, events.len() as u64);
                Handled::Decided(self.engine.handle(&events).await)
            }
        }
    }

    /// Reads a core subscription until the client closes. A message with a reply subject gets
    /// `{"decisions": [...]}` or `{"error": "..."}` back.
    pub async fn run_subscription(&self, client: Client, sub: &Subscription) -> Result<()> {
        let subscriber = match &sub.queue_group {
            Some(q) => client.queue_subscribe(sub.subject.clone(), q.clone()).await,
            None => client.subscribe(sub.subject.clone()).await,
        }
        .map_err(|source| Error::NatsSubscribe {
            subject: sub.subject.clone(),
            source: Box::new(source),
        })?;
        info!(subject = %sub.subject, queue_group = ?sub.queue_group, "Subscribed to NATS.");
        subscriber
            .for_each_concurrent(self.concurrency, |msg| {
                let client = client.clone();
                async move {
                    let source = EventSource::Nats {
                        subject: msg.subject.to_string(),
                    };
                    let reply = match self.handle(&msg.payload, source).await {
                        Handled::BadPayload(e) => {
                            warn!(subject = %msg.subject, error = %e, "Refused a NATS message.");
                            serde_json::json!({"error": e.to_string()})
                        }
                        Handled::Decided(d) => serde_json::json!({"decisions": d}),
                    };
                    if let Some(to) = msg.reply {
                        let body = serde_json::to_vec(&reply).unwrap_or_default();
                        if let Err(error) = client.publish(to, body.into()).await {
                            warn!(%error, "Could not reply to a NATS request.");
                        }
                    }
                }
            })
            .await;
        Ok(())
    }
}

/// Backoff between attempts to set a consumer up again: 1 s doubling to 30 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(5)).min(Duration::from_secs(30))
}
