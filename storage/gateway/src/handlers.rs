//! The gateway's HTTP endpoints. Each one passes [`crate::checks`] before it reads storage.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    body::Body,
    extract::{Path as UrlPath, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use nightcap_storage::{
    CaptureFileInfo, CaptureKey, Error as StorageError,
    config::key_path,
    layout::{check_capture, check_namespace},
    meta::CONTENT_TYPE,
};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use tracing::info;

pub use crate::checks::{ApiError, ApiResult, ExpiresQuery, caller, forbidden};
use crate::{
    GatewayState,
    archive::{ArchiveEntry, zip_stream_with},
    captures::CaptureRecord,
    checks::{authorize, link_error, list, lookup, parse_expires},
    sign::ShareClaims,
};

/// One file in the `files` response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    #[serde(flatten)]
    info: CaptureFileInfo,
    /// Pre-signed GET URL for this one object.
    url: String,
}

/// The `files` response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FilesResponse {
    namespace: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
    /// When the URLs stop working.
    expires_at: DateTime<Utc>,
    files: Vec<FileEntry>,
}

/// `GET /v1/namespaces/{ns}/packetcaptures/{name}/files`
pub async fn files(
    State(state): State<Arc<GatewayState>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    Query(q): Query<ExpiresQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<FilesResponse>> {
    let rec = authorize(&state, &headers, &ns, &name).await?;
    let expires = parse_expires(&q, state.options.default_expiry, state.options.max_expiry)?;
    let infos = list(&state, &ns, &name, &rec).await?;
    let now = (state.clock)();
    let expires_at = now + chrono::Duration::from_std(expires).unwrap_or_default();
    let mut files = Vec::with_capacity(infos.len());
    for info in infos {
        let url = sign_url(&state, &info.key, expires, expires_at).await?;
        files.push(FileEntry { info, url });
    }
    Ok(Json(FilesResponse {
        namespace: ns,
        name,
        uid: rec.uid,
        expires_at,
        files,
    }))
}

async fn sign_url(
    state: &GatewayState,
    key: &str,
    expires: Duration,
    expires_at: DateTime<Utc>,
) -> ApiResult<String> {
    if let Some(signer) = &state.store.signer {
        let path = key_path(key);
        let url = signer
            .signed_url(object_store::signer::Method::GET, &path, expires)
            .await
            .map_err(|source| {
                ApiError::internal(StorageError::SignFailed {
                    key: key.to_string(),
                    source,
                })
            })?;
        return Ok(url.to_string());
    }
    let exp = expires_at.timestamp();
    let sig = state.key.sign_object(key, exp);
    Ok(format!(
        "{}/v1/objects/{key}?expires={exp}&signature={sig}",
        state.options.public_url
    ))
}

/// Query of a gateway-signed object URL.
#[derive(Debug, Deserialize)]
pub struct ObjectQuery {
    expires: i64,
    signature: String,
}

/// `GET /v1/objects/{*key}?expires=…&signature=…` (stores that cannot pre-sign).
pub async fn object(
    State(state): State<Arc<GatewayState>>,
    UrlPath(key): UrlPath<String>,
    Query(q): Query<ObjectQuery>,
) -> ApiResult<Response> {
    let now = (state.clock)().timestamp();
    state
        .key
        .verify_object(&key, q.expires, &q.signature, now)
        .map_err(link_error)?;
    let parsed = CaptureKey::parse(&state.store.prefix, &key)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let got = state
        .store
        .store
        .get(&parsed.to_path(&state.store.prefix))
        .await
        .map_err(|e| match e {
            object_store::Error::NotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, format!("{key} no longer exists"))
            }
            source => ApiError::internal(StorageError::ReadFailed {
                key: key.clone(),
                source,
            }),
        })?;
    let size = got.meta.size;
    let body = Body::from_stream(got.into_stream().map_err(std::io::Error::other));
    Ok((
        [
            (header::CONTENT_TYPE, CONTENT_TYPE.to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", parsed.file_name()),
            ),
        ],
        body,
    )
        .into_response())
}

/// `GET /v1/namespaces/{ns}/packetcaptures/{name}/files.zip`
pub async fn files_zip(
    State(state): State<Arc<GatewayState>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let rec = authorize(&state, &headers, &ns, &name).await?;
    zip_response(&state, &ns, &name, &rec).await
}

/// The manifest inside files.zip.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    namespace: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
    generated_at: DateTime<Utc>,
    files: Vec<ManifestFile<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestFile<'a> {
    /// Name of the entry in the zip.
    path: String,
    #[serde(flatten)]
    info: &'a CaptureFileInfo,
}

async fn zip_response(
    state: &GatewayState,
    ns: &str,
    name: &str,
    rec: &CaptureRecord,
) -> ApiResult<Response> {
    let infos = list(state, ns, name, rec).await?;
    let many_uids = infos.iter().any(|i| i.parsed.uid != infos[0].parsed.uid);
    let entry_name = |i: &CaptureFileInfo| {
        if many_uids {
            format!("{}/{}/{}", i.parsed.uid, i.node, i.parsed.file_name())
        } else {
            format!("{}/{}", i.node, i.parsed.file_name())
        }
    };
    let now = (state.clock)();
    let manifest = Manifest {
        namespace: ns,
        name,
        uid: rec.uid.as_deref(),
        generated_at: now,
        files: infos
            .iter()
            .map(|info| ManifestFile {
                path: entry_name(info),
                info,
            })
            .collect(),
    };
    let manifest = Bytes::from(
        serde_json::to_vec_pretty(&manifest)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
    );
    let mut entries = vec![ArchiveEntry {
        name: "manifest.json".into(),
        location: None,
        size: manifest.len() as u64,
        inline: manifest,
        modified: now,
    }];
    entries.extend(infos.iter().map(|i| ArchiveEntry {
        name: entry_name(i),
        location: Some(key_path(&i.key)),
        inline: Bytes::new(),
        size: i.bytes,
        modified: i.last_modified,
    }));
    info!(namespace = %ns, name = %name, files = infos.len(), "Streaming files.zip.");
    let body = Body::from_stream(zip_stream_with(
        state.store.store.clone(),
        entries,
        state.options.zip,
    ));
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{ns}-{name}.zip\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// The `links` response.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkResponse {
    /// The share link (files.zip without a cluster token).
    pub url: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// `POST /v1/namespaces/{ns}/packetcaptures/{name}/links?expires=…`
pub async fn create_link(
    State(state): State<Arc<GatewayState>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    Query(q): Query<ExpiresQuery>,
    headers: HeaderMap,
) -> ApiResult<(StatusCode, Json<LinkResponse>)> {
    let rec = authorize(&state, &headers, &ns, &name).await?;
    let expires = parse_expires(
        &q,
        state.options.link_default_expiry,
        state.options.max_expiry,
    )?;
    let expires_at = (state.clock)() + chrono::Duration::from_std(expires).unwrap_or_default();
    let token = state.key.share_token(&ShareClaims {
        ns: ns.clone(),
        name: name.clone(),
        uid: rec.uid,
        exp: expires_at.timestamp(),
    });
    info!(namespace = %ns, name = %name, expires_at = %expires_at, "Created a share link.");
    Ok((
        StatusCode::CREATED,
        Json(LinkResponse {
            url: format!("{}/v1/share/{token}/files.zip", state.options.public_url),
            expires_at,
        }),
    ))
}

/// `GET /v1/share/{token}/files.zip`
pub async fn shared_zip(
    State(state): State<Arc<GatewayState>>,
    UrlPath(token): UrlPath<String>,
) -> ApiResult<Response> {
    let now = (state.clock)().timestamp();
    let claims = state.key.verify_share(&token, now).map_err(link_error)?;
    // Signed by us, but checked again: names reach storage paths.
    for check in [check_namespace(&claims.ns), check_capture(&claims.name)] {
        check.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    }
    let rec = lookup(&state, &claims.ns, &claims.name).await?;
    if claims.uid.is_some() && claims.uid != rec.uid {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "packetcapture {}/{} was re-created since the link was made",
                claims.ns, claims.name
            ),
        ));
    }
    zip_response(&state, &claims.ns, &claims.name, &rec).await
}

/// `GET /healthz`
pub async fn healthz() -> &'static str {
    "ok"
}
