//! Configuration of the NATS source (`nats:` in the triggers configuration file).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default events handled at the same time per subscription or consumer.
pub const fn default_concurrency() -> usize {
    64
}
/// Default JetStream deliveries before a message is given up on.
pub const fn default_max_deliver() -> i64 {
    5
}
/// Default JetStream ack wait: redelivery when no ack arrives within it.
pub const fn default_ack_wait_seconds() -> u64 {
    30
}
/// Default delay before a failed message is redelivered (negative ack).
pub const fn default_retry_delay_seconds() -> u64 {
    5
}
/// Default unacknowledged messages in flight per consumer.
pub const fn default_max_ack_pending() -> i64 {
    1000
}

fn default_name() -> String {
    "nightcap-triggers".to_owned()
}

/// NATS connection and what to read from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URLs (`nats://nats:4222`, `tls://nats:4222`). The client reconnects by itself and
    /// also learns the cluster's other servers.
    pub servers: Vec<String>,
    /// Client name the server shows. Default: `nightcap-triggers`.
    #[serde(default = "default_name")]
    pub name: String,
    /// Credentials (at most one method).
    #[serde(default)]
    pub auth: NatsAuth,
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<NatsTls>,
    /// Core NATS subscriptions (at most once: messages sent while nightcap is down are lost; use
    /// JetStream for alerts that must not be lost).
    #[serde(default)]
    pub subscriptions: Vec<Subscription>,
    /// JetStream durable pull consumers (at least once, acknowledged after the capture exists).
    #[serde(default)]
    pub consumers: Vec<Consumer>,
    /// Events handled at the same time per subscription or consumer. Default: 64.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

/// NATS credentials; set at most one method.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NatsAuth {
    /// File with a token (`--auth` of nats-server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// User name; the password comes from `passwordFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// File with the password of `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// File with an NKey seed (`SU...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (JWT and NKey seed, decentralised auth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
}

/// TLS towards NATS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NatsTls {
    /// PEM file with CA certificates to trust (in addition to none: only these are trusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (mutual TLS), with `keyFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `certFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Refuse to talk to a server without TLS. Default: false (`tls://` URLs require it anyway).
    #[serde(default)]
    pub required: bool,
}

/// A core NATS subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subscription {
    /// Subject (wildcards `*` and `>` allowed), e.g. `alerts.>`.
    pub subject: String,
    /// Queue group, so that replicas share the messages instead of each getting every one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_group: Option<String>,
}

/// A JetStream durable pull consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Consumer {
    /// Stream name.
    pub stream: String,
    /// Durable consumer name (created or updated at start; shared by replicas).
    pub durable: String,
    /// Only these subjects of the stream. Default: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter_subjects: Vec<String>,
    /// Deliveries before a message that keeps failing is given up on (logged, counted as poison
    /// and terminated). Default: 5.
    #[serde(default = "default_max_deliver")]
    pub max_deliver: i64,
    /// Seconds the server waits for an ack before redelivering. Default: 30.
    #[serde(default = "default_ack_wait_seconds")]
    pub ack_wait_seconds: u64,
    /// Seconds before a message that failed transiently is redelivered. Default: 5.
    #[serde(default = "default_retry_delay_seconds")]
    pub retry_delay_seconds: u64,
    /// Unacknowledged messages in flight. Default: 1000.
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: i64,
    /// Create the stream when it does not exist. Default: the stream must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_stream: Option<StreamSpec>,
}

/// A stream nightcap may create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamSpec {
    /// Subjects the stream stores.
    pub subjects: Vec<String>,
    /// Keep messages in memory instead of files. Default: false.
    #[serde(default)]
    pub memory: bool,
    /// Drop messages older than this. Default: kept until acknowledged limits apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u64>,
}

impl NatsConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: String| {
            Err(Error::ConfigInvalid {
                field: format!("nats.{field}"),
                message,
            })
        };
        if self.servers.is_empty() {
            return bad(
                "servers",
                "list at least one server URL (nats://host:4222)".into(),
            );
        }
        let a = &self.auth;
        let methods = [
            a.token_file.is_some(),
            a.user.is_some() || a.password_file.is_some(),
            a.nkey_seed_file.is_some(),
            a.credentials_file.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return bad(
                "auth",
                "set one of tokenFile, user+passwordFile, nkeySeedFile, credentialsFile".into(),
            );
        }
        if a.user.is_some() != a.password_file.is_some() {
            return bad("auth", "user and passwordFile go together".into());
        }
        if let Some(t) = &self.tls
            && t.cert_file.is_some() != t.key_file.is_some()
        {
            return bad("tls", "certFile and keyFile go together".into());
        }
        if self.subscriptions.is_empty() && self.consumers.is_empty() {
            return bad(
                "subscriptions",
                "nothing to read: add subscriptions and/or consumers".into(),
            );
        }
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1".into());
        }
        for (i, c) in self.consumers.iter().enumerate() {
            if c.max_deliver < 1 {
                return bad(
                    &format!("consumers[{i}].maxDeliver"),
                    "must be at least 1".into(),
                );
            }
            if c.ack_wait_seconds == 0 {
                return bad(
                    &format!("consumers[{i}].ackWaitSeconds"),
                    "must be at least 1".into(),
                );
            }
        }
        Ok(())
    }
}
