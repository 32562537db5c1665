//! Opening a [`StoreConfig`]: from a URL and the `AWS_*` variables, and into a [`Store`].

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use object_store::{
    ObjectStore, aws::AmazonS3Builder, azure::MicrosoftAzureBuilder,
    gcp::GoogleCloudStorageBuilder, local::LocalFileSystem, memory::InMemory, path::Path,
};

use super::{LocalConfig, MemoryConfig, S3Config, S3Credentials, Store, StoreConfig, UrlConfig};
use crate::{
    error::{Error, Result},
    layout::KeyPrefix,
};

impl StoreConfig {
    /// Builds a configuration from a URL, reading `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, `AWS_REGION` (or `AWS_DEFAULT_REGION`), `AWS_ENDPOINT_URL` (or
    /// `AWS_ENDPOINT`) and `AWS_ALLOW_HTTP` from the process environment for `s3://` URLs.
    ///
    /// Accepted: `file:///dir`, `memory:///prefix`, `s3://bucket/prefix`, `gs://…`, `az://…`,
    /// `abfs[s]://…`, `https://….blob.core.windows.net/…`.
    pub fn from_url(url: &str) -> Result<Self> {
        Self::from_url_with_env(url, |name| std::env::var(name).ok())
    }

    /// [`StoreConfig::from_url`] with the environment passed in.
    pub fn from_url_with_env(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| Error::InvalidConfig {
            reason: format!(
                "{url:?} is not a URL ({e}); use file:///dir, s3://bucket/prefix, gs://bucket/…"
            ),
        })?;
        let path_prefix = parsed.path().trim_matches('/').to_string();
        match parsed.scheme() {
            "file" => {
                if parsed.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err(Error::InvalidConfig {
                        reason: format!(
                            "{url:?}: file URLs take no host; use file:///absolute/dir"
                        ),
                    });
                }
                Ok(Self::Local(LocalConfig {
                    path: PathBuf::from(parsed.path()),
                    prefix: String::new(),
                }))
            }
            "memory" => Ok(Self::Memory(MemoryConfig {
                prefix: path_prefix,
            })),
            "s3" | "s3a" => {
                let bucket = parsed.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
                    Error::InvalidConfig {
                        reason: format!("{url:?} names no bucket; use s3://bucket/prefix"),
                    }
                })?;
                let endpoint = env("AWS_ENDPOINT_URL").or_else(|| env("AWS_ENDPOINT"));
                let allow_http = env("AWS_ALLOW_HTTP")
                    .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1"));
                let unsigned_payload = env("AWS_UNSIGNED_PAYLOAD")
                    .map(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1"));
                let path_style = env("AWS_VIRTUAL_HOSTED_STYLE_REQUEST")
                    .map(|v| !matches!(v.to_ascii_lowercase().as_str(), "true" | "1"));
                let credentials = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                    (Some(access_key_id), Some(secret_access_key)) => S3Credentials::Static {
                        access_key_id,
                        secret_access_key,
                        session_token: env("AWS_SESSION_TOKEN"),
                    },
                    _ => S3Credentials::Env,
                };
                Ok(Self::S3(S3Config {
                    bucket: bucket.to_string(),
                    prefix: path_prefix,
                    region: env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")),
                    endpoint,
                    path_style,
                    allow_http,
                    unsigned_payload,
                    credentials,
                }))
            }
            "gs" | "az" | "adl" | "azure" | "abfs" | "abfss" | "https" => {
                Ok(Self::Url(UrlConfig {
                    url: url.to_string(),
                    options: BTreeMap::new(),
                }))
            }
            other => Err(Error::InvalidConfig {
                reason: format!(
                    "unsupported store scheme {other:?} in {url:?}; use file, s3, gs, az, abfss or memory"
                ),
            }),
        }
    }

    /// Opens the store: `(object store, key prefix)`.
    pub fn build(&self) -> Result<(Arc<dyn ObjectStore>, KeyPrefix)> {
        let opened = self.open()?;
        Ok((opened.store, opened.prefix))
    }

    /// Opens the store with its signer.
    pub fn open(&self) -> Result<Store> {
        match self {
            Self::S3(c) => open_s3(c),
            Self::Local(c) => {
                std::fs::create_dir_all(&c.path).map_err(|source| Error::LocalIo {
                    path: c.path.clone(),
                    source,
                })?;
                let fs = LocalFileSystem::new_with_prefix(&c.path)
                    .map_err(|source| Error::OpenStore {
                        backend: "local",
                        source,
                    })?
                    .with_automatic_cleanup(true);
                Ok(Store {
                    store: Arc::new(fs),
                    prefix: KeyPrefix::new(&c.prefix)?,
                    signer: None,
                    backend: "local",
                })
            }
            Self::Memory(c) => Ok(Store {
                store: Arc::new(InMemory::new()),
                prefix: KeyPrefix::new(&c.prefix)?,
                signer: None,
                backend: "memory",
            }),
            Self::Url(c) => open_url(c),
        }
    }
}

fn open_s3(c: &S3Config) -> Result<Store> {
    let mut b = match &c.credentials {
        S3Credentials::Env => AmazonS3Builder::from_env(),
        _ => AmazonS3Builder::new(),
    };
    b = b
        .with_bucket_name(&c.bucket)
        .with_region(c.region.as_deref().unwrap_or("us-east-1"))
        .with_allow_http(c.allow_http)
        .with_unsigned_payload(c.unsigned_payload())
        .with_virtual_hosted_style_request(!c.path_style.unwrap_or(c.endpoint.is_some()));
    if let Some(endpoint) = &c.endpoint {
        b = b.with_endpoint(endpoint);
    }
    match &c.credentials {
        S3Credentials::Env => {}
        S3Credentials::Secret { name, .. } => {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "credentials come from the Secret {name:?}, which has not been read yet; \
                     call gateway::resolve_secret_credentials first"
                ),
            });
        }
        S3Credentials::WebIdentity {
            role_arn,
            token_file,
        } => {
            use object_store::aws::AmazonS3ConfigKey as K;
            b = b
                .with_config(K::RoleArn, role_arn)
                .with_config(K::WebIdentityTokenFile, token_file);
        }
        S3Credentials::Static {
            access_key_id,
            secret_access_key,
            session_token,
        } => {
            b = b
                .with_access_key_id(access_key_id)
                .with_secret_access_key(secret_access_key);
            if let Some(t) = session_token {
                b = b.with_token(t);
            }
        }
    }
    let s3 = Arc::new(b.build().map_err(|source| Error::OpenStore {
        backend: "s3",
        source,
    })?);
    Ok(Store {
        store: s3.clone(),
        prefix: KeyPrefix::new(&c.prefix)?,
        signer: Some(s3),
        backend: "s3",
    })
}

fn open_url(c: &UrlConfig) -> Result<Store> {
    let parsed = url::Url::parse(&c.url).map_err(|e| Error::InvalidConfig {
        reason: format!("{:?} is not a URL: {e}", c.url),
    })?;
    let bad_option = |k: &str, e: object_store::Error| Error::InvalidConfig {
        reason: format!("option {k:?} for {}: {e}", c.url),
    };
    let is_gcs = parsed.scheme() == "gs";
    // For gs:// and az:// the host is the bucket/container and the path the prefix; for abfss
    // and https the container is part of the authority or the first path segment.
    let prefix = match parsed.scheme() {
        "gs" | "az" | "adl" | "azure" => parsed.path().trim_matches('/').to_string(),
        _ => {
            let path = parsed.path().trim_matches('/');
            if parsed.scheme() == "https" {
                path.split_once('/')
                    .map(|(_, p)| p.to_string())
                    .unwrap_or_default()
            } else {
                path.to_string()
            }
        }
    };
    let base = c.url.as_str();
    if is_gcs {
        let mut b = GoogleCloudStorageBuilder::from_env().with_url(base);
        for (k, v) in &c.options {
            b = b.with_config(k.parse().map_err(|e| bad_option(k, e))?, v);
        }
        let gcs = Arc::new(b.build().map_err(|source| Error::OpenStore {
            backend: "gcs",
            source,
        })?);
        return Ok(Store {
            store: gcs.clone(),
            prefix: KeyPrefix::new(&prefix)?,
            signer: Some(gcs),
            backend: "gcs",
        });
    }
    let mut b = MicrosoftAzureBuilder::from_env().with_url(base);
    for (k, v) in &c.options {
        b = b.with_config(k.parse().map_err(|e| bad_option(k, e))?, v);
    }
    let az = Arc::new(b.build().map_err(|source| Error::OpenStore {
        backend: "azure",
        source,
    })?);
    Ok(Store {
        store: az.clone(),
        prefix: KeyPrefix::new(&prefix)?,
        signer: Some(az),
        backend: "azure",
    })
}

/// The object store path of a validated key string.
pub fn key_path(key: &str) -> Path {
    Path::from_iter(key.split('/'))
}
