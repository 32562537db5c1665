//! One configuration type for a store, and how to open it.
//!
//! ```yaml
//! type: s3                        # S3, MinIO, R2, Ceph RGW, …
//! bucket: captures
//! prefix: prod                    # optional key prefix
//! region: eu-west-1               # optional; default us-east-1
//! endpoint: http://minio:9000     # optional; for S3-compatible stores
//! pathStyle: true                 # optional; default true with an endpoint, else false
//! allowHttp: true                 # optional; needed for a plain-http endpoint
//! credentials: {source: env}      # env | secret {name, …} | webIdentity {roleArn, tokenFile}
//! ```
//! or `{type: local, path: /var/lib/nightcap}`, `{type: memory}`, or
//! `{type: url, url: "gs://bucket/prefix", options: {…}}` for GCS and Azure.
//! [`StoreConfig::from_url`] builds one from a URL and the usual `AWS_*` variables.

use std::{collections::BTreeMap, fmt, path::PathBuf, sync::Arc};

use object_store::{ObjectStore, signer::Signer};
use serde::{Deserialize, Serialize};

use crate::layout::KeyPrefix;

mod open;
pub use open::key_path;

/// Where capture files are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum StoreConfig {
    /// An S3-compatible store.
    S3(S3Config),
    /// A directory on the local file system (local mode, tests).
    Local(LocalConfig),
    /// Process memory (tests).
    Memory(MemoryConfig),
    /// Any store object_store opens from a URL: `gs://bucket/prefix`, `az://container/prefix`,
    /// `abfss://…`, `https://account.blob.core.windows.net/container/prefix`.
    Url(UrlConfig),
}

/// An S3-compatible bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket.
    #[serde(default)]
    pub prefix: String,
    /// Region. Default: `us-east-1` (what S3-compatible stores expect when unsure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint URL of an S3-compatible store (`http://minio.minio:9000`). Default: AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`). Default: true with an `endpoint`, else false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// Allow a plain-http endpoint. Default: false.
    #[serde(default)]
    pub allow_http: bool,
    /// Send request bodies unsigned (`UNSIGNED-PAYLOAD` in SigV4). Default: yes over HTTPS,
    /// where TLS already protects the bytes and signing them would hash every uploaded byte
    /// with SHA-256 once more (as much CPU as the capture's own SHA-256); no over plain http,
    /// where the signature is all that protects them. See [`S3Config::unsigned_payload`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsigned_payload: Option<bool>,
    /// Where credentials come from. Default: the environment.
    #[serde(default)]
    pub credentials: S3Credentials,
}

impl S3Config {
    /// Whether request bodies go unsigned: [`S3Config::unsigned_payload`] if set, else whether
    /// the endpoint is HTTPS (AWS itself when no endpoint is set).
    pub fn unsigned_payload(&self) -> bool {
        self.unsigned_payload.unwrap_or_else(|| {
            self.endpoint.as_deref().is_none_or(|e| {
                e.get(..8)
                    .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
            })
        })
    }
}

/// Where S3 credentials come from.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "camelCase", deny_unknown_fields)]
pub enum S3Credentials {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, web identity variables,
    /// instance metadata — the AWS SDK chain, read when the store is opened.
    #[default]
    Env,
    /// A Kubernetes Secret in the component's namespace (resolve with
    /// [`crate::gateway::resolve_secret_credentials`] before opening).
    #[serde(rename_all = "camelCase")]
    Secret {
        /// Secret name.
        name: String,
        /// Secret namespace. Default: the component's namespace.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        /// Data key of the access key id. Default: `AWS_ACCESS_KEY_ID`.
        #[serde(default = "default_access_key_id_key")]
        access_key_id_key: String,
        /// Data key of the secret access key. Default: `AWS_SECRET_ACCESS_KEY`.
        #[serde(default = "default_secret_access_key_key")]
        secret_access_key_key: String,
        /// Data key of an optional session token. Default: `AWS_SESSION_TOKEN`.
        #[serde(default = "default_session_token_key")]
        session_token_key: String,
    },
    /// AssumeRoleWithWebIdentity (EKS IRSA / pod identity tokens).
    #[serde(rename_all = "camelCase")]
    WebIdentity {
        /// Role to assume.
        role_arn: String,
        /// Projected service account token file.
        token_file: String,
    },
    /// Keys held in memory (from [`StoreConfig::from_url_with_env`] or a resolved Secret); never
    /// written to a file.
    #[serde(skip)]
    Static {
        /// Access key id.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: String,
        /// Session token.
        session_token: Option<String>,
    },
}

fn default_access_key_id_key() -> String {
    "AWS_ACCESS_KEY_ID".into()
}
fn default_secret_access_key_key() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}
fn default_session_token_key() -> String {
    "AWS_SESSION_TOKEN".into()
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env => f.write_str("Env"),
            Self::Secret {
                name, namespace, ..
            } => f
                .debug_struct("Secret")
                .field("name", name)
                .field("namespace", namespace)
                .finish_non_exhaustive(),
            Self::WebIdentity {
                role_arn,
                token_file,
            } => f
                .debug_struct("WebIdentity")
                .field("role_arn", role_arn)
                .field("token_file", token_file)
                .finish(),
            Self::Static { access_key_id, .. } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"<redacted>")
                .finish_non_exhaustive(),
        }
    }
}

/// A local directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalConfig {
    /// Root directory (created if missing).
    pub path: PathBuf,
    /// Key prefix under the root.
    #[serde(default)]
    pub prefix: String,
}

/// An in-memory store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemoryConfig {
    /// Key prefix.
    #[serde(default)]
    pub prefix: String,
}

/// A store opened from a URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlConfig {
    /// `gs://bucket/prefix`, `az://container/prefix`, `abfs[s]://…`, `https://….blob.core.windows.net/…`.
    pub url: String,
    /// object_store configuration keys (`google_service_account`, `azure_storage_account_name`, …).
    /// Credentials otherwise come from the provider's usual environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// An opened store: the object store, the validated key prefix, and a URL signer when the
/// backend can pre-sign (S3, GCS, Azure; not local or memory).
#[derive(Clone)]
pub struct Store {
    /// The object store.
    pub store: Arc<dyn ObjectStore>,
    /// The key prefix every capture key starts with.
    pub prefix: KeyPrefix,
    /// Pre-signs URLs, when the backend supports it.
    pub signer: Option<Arc<dyn Signer>>,
    /// Backend name for messages and metrics (`s3`, `local`, `memory`, `gcs`, `azure`).
    pub backend: &'static str,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix)
            .field("signer", &self.signer.is_some())
            .field("backend", &self.backend)
            .finish()
    }
}

#[cfg(test)]
mod tests;
