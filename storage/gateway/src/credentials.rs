//! Store credentials from a Kubernetes Secret (`credentials: {source: secret, …}`).

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use nightcap_storage::{
    Error as StorageError,
    config::{S3Credentials, StoreConfig},
};

use crate::error::{Error, Result};

/// Replaces `credentials: {source: secret, …}` by the keys read from that Secret (in its
/// namespace, or the client's default namespace). Other configurations pass through.
pub async fn resolve_secret_credentials(
    config: StoreConfig,
    client: &kube::Client,
) -> Result<StoreConfig> {
    let StoreConfig::S3(mut s3) = config else {
        return Ok(config);
    };
    let S3Credentials::Secret {
        name,
        namespace,
        access_key_id_key,
        secret_access_key_key,
        session_token_key,
    } = &s3.credentials
    else {
        return Ok(StoreConfig::S3(s3));
    };
    let ns = namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = api.get(name).await.map_err(|source| Error::Kube {
        what: format!("get secret {ns}/{name} (store credentials)"),
        source,
    })?;
    let data = secret.data.unwrap_or_default();
    let field = |k: &str| {
        data.get(k)
            .map(|v| String::from_utf8_lossy(&v.0).trim().to_string())
    };
    let missing = |k: &str| StorageError::InvalidConfig {
        reason: format!("secret {ns}/{name} has no data key {k:?}"),
    };
    s3.credentials = S3Credentials::Static {
        access_key_id: field(access_key_id_key).ok_or_else(|| missing(access_key_id_key))?,
        secret_access_key: field(secret_access_key_key)
            .ok_or_else(|| missing(secret_access_key_key))?,
        session_token: field(session_token_key),
    };
    Ok(StoreConfig::S3(s3))
}
