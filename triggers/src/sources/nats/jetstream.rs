//! JetStream durable pull consumers: at least once, acknowledged only after the capture exists
//! or the event was refused for good.
//!
//! Per message: parse → engine → ack. A payload that cannot be parsed is poison: logged,
//! counted and terminated at once (redelivering it cannot help). A transient failure (API
//! server down) is negatively acknowledged with a delay and redelivered, up to `maxDeliver`
//! deliveries; on the last one it is logged, counted as poison and terminated. Because capture
//! names are deterministic, a redelivery of a message whose capture was created before a crash
//! is deduplicated, never doubled.

use std::time::Duration;

use async_nats::{
    Client,
    jetstream::{
        self, AckKind, Message,
        consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
        stream::{self, StorageType},
    },
};
use futures::TryStreamExt;
use tracing::{error, info, warn};

use super::{Consumer, Handled, NatsSource, backoff};
use crate::{
    decision::Decision,
    error::{Error, Result},
    event::EventSource,
};

/// What to tell the server about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// Handled for good.
    Ack,
    /// Failed transiently: redeliver after the delay.
    Nak(Duration),
    /// Poison: never redeliver.
    Term(String),
}

impl NatsSource {
    /// Decides what a delivered message deserves (without acknowledging it).
    pub async fn process(&self, msg: &Message, c: &Consumer) -> (Ack, Vec<Decision>) {
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
        let source = EventSource::JetStream {
            subject: msg.subject.to_string(),
        };
        let metrics = self.engine().reporter().metrics().clone();
        match self.handle(&msg.payload, source).await {
            Handled::BadPayload(e) => {
                metrics.poison();
                warn!(
                    stream = %c.stream, consumer = %c.durable, subject = %msg.subject, error = %e,
                    "Poison message: the payload cannot be read; terminating it."
                );
                (Ack::Term(e.to_string()), Vec::new())
            }
            Handled::Decided(d) if d.iter().all(Decision::is_final) => (Ack::Ack, d),
            Handled::Decided(d) if delivered >= c.max_deliver => {
                metrics.poison();
                let why = d
                    .iter()
                    .filter(|d| !d.is_final())
                    .map(|d| d.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                error!(
                    stream = %c.stream, consumer = %c.durable, subject = %msg.subject, delivered,
                    "Poison message: still failing after maxDeliver deliveries, giving up: {why}."
                );
                (Ack::Term(why), d)
            }
            Handled::Decided(d) => (Ack::Nak(Duration::from_secs(c.retry_delay_seconds)), d),
        }
    }

    /// Sends the acknowledgement.
    pub async fn acknowledge(&self, msg: &Message, ack: &Ack) {
        let metrics = self.engine().reporter().metrics().clone();
        let (kind, res) = match ack {
            Ack::Ack => ("ack", msg.ack().await),
            Ack::Nak(d) => ("nak", msg.ack_with(AckKind::Nak(Some(*d))).await),
            Ack::Term(_) => ("term", msg.ack_with(AckKind::Term).await),
        };
        metrics.jetstream_ack(kind);
        if let Err(error) = res {
            // The server redelivers after ackWait; the dedup makes that harmless.
            warn!(%error, kind, "Could not acknowledge a JetStream message.");
        }
    }

    /// Sets up the stream (if asked) and the durable consumer.
    pub async fn consumer(&self, client: &Client, c: &Consumer) -> Result<PullConsumer> {
        let js = jetstream::new(client.clone());
        let err = |what, source: async_nats::Error| Error::JetStream {
            stream: c.stream.clone(),
            consumer: c.durable.clone(),
            what,
            source,
        };
        let stream = match &c.create_stream {
            Some(spec) => js
                .get_or_create_stream(stream::Config {
                    name: c.stream.clone(),
                    subjects: spec.subjects.clone(),
                    storage: if spec.memory {
                        StorageType::Memory
                    } else {
                        StorageType::File
                    },
                    max_age: spec
                        .max_age_seconds
                        .map(Duration::from_secs)
                        .unwrap_or_default(),
                    ..stream::Config::default()
                })
                .await
                .map_err(|e| err("create stream", Box::new(e)))?,
            None => js
                .get_stream(&c.stream)
                .await
                .map_err(|e| err("get stream (create it, or set createStream)", Box::new(e)))?,
        };
        stream
            .create_consumer(pull::Config {
                durable_name: Some(c.durable.clone()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(c.ack_wait_seconds),
                max_deliver: c.max_deliver,
                filter_subjects: c.filter_subjects.clone(),
                max_ack_pending: c.max_ack_pending,
                ..pull::Config::default()
            })
            .await
            .map_err(|e| err("create or update consumer", Box::new(e)))
    }

    /// Consumes until the message stream fails; each message is processed and acknowledged.
    pub async fn consume(&self, client: &Client, c: &Consumer) -> Result<()> {
        let consumer = self.consumer(client, c).await?;
        let err = |what, source: async_nats::Error| Error::JetStream {
            stream: c.stream.clone(),
            consumer: c.durable.clone(),
            what,
            source,
        };
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.concurrency)
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| err("pull messages", Box::new(e)))?;
        info!(stream = %c.stream, consumer = %c.durable, "Consuming from JetStream.");
        messages
            .map_err(|e| err("message stream", Box::new(e)))
            .try_for_each_concurrent(self.concurrency, |msg| async move {
                let (ack, _) = self.process(&msg, c).await;
                self.acknowledge(&msg, &ack).await;
                Ok(())
            })
            .await
    }

    /// Consumes forever, setting the consumer up again (with backoff) after failures such as a
    /// server restart.
    pub async fn run_consumer(&self, client: Client, c: &Consumer) -> Result<()> {
        let mut attempt = 0;
        loop {
            let started = tokio::time::Instant::now();
            match self.consume(&client, c).await {
                Ok(()) => {
                    warn!(stream = %c.stream, consumer = %c.durable, "JetStream message stream ended; setting it up again.")
                }
                Err(e) => warn!(error = %e, "JetStream consumer failed; setting it up again."),
            }
            if started.elapsed() > Duration::from_secs(60) {
                attempt = 0;
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }
}

/// The consumer's state on the server (pending, redelivered, ack floor).
pub async fn consumer_info(
    client: &Client,
    stream_name: &str,
    durable: &str,
) -> std::result::Result<jetstream::consumer::Info, async_nats::Error> {
    let js = jetstream::new(client.clone());
    let mut consumer: PullConsumer = js
        .get_stream(stream_name)
        .await?
        .get_consumer(durable)
        .await?;
    Ok(consumer.info().await?.clone())
}
