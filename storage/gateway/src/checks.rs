//! What every request is checked for before a handler touches storage.
//!
//! Order of checks on every capture endpoint, so that existence never leaks:
//! 1. bearer token present and valid → else 401;
//! 2. namespace and name are valid Kubernetes names → else 400 (before any storage call);
//! 3. the caller may `get packetcaptures/files` in the namespace → else 403, whether or not the
//!    capture exists;
//! 4. the capture exists → else 404.

use std::time::Duration;

use axum::{
    Json,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use nightcap_api::quantity::{format_duration, parse_duration};
use nightcap_storage::{
    CaptureFileInfo,
    layout::{check_capture, check_namespace},
};
use serde::Deserialize;
use tracing::{info, warn};

use crate::{
    GatewayState,
    auth::{Access, Caller},
    captures::CaptureRecord,
    error::Error,
    sign::LinkError,
};

/// An error response: status and a Kubernetes `Status` JSON body (`kind`, `status`,
/// `message`, `reason`, `code`), plus `error` with the message, so kubectl-minded clients and
/// plain scripts read it alike.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// A failure of a dependency (store, API server): logged, 502 or 503.
    pub fn internal(e: impl Into<Error>) -> Self {
        let e = e.into();
        warn!(error = %e, "Request failed.");
        let status = match e {
            Error::Kube { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let reason = match self.status {
            StatusCode::BAD_REQUEST => "BadRequest",
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::NOT_FOUND => "NotFound",
            StatusCode::CONFLICT => "AlreadyExists",
            StatusCode::UNPROCESSABLE_ENTITY => "Invalid",
            StatusCode::PAYLOAD_TOO_LARGE => "RequestEntityTooLarge",
            StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
            _ => "InternalError",
        };
        let body = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": self.message,
            "reason": reason,
            "code": self.status.as_u16(),
            "error": self.message,
        });
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// `?expires=` on files and links: seconds (`900`) or a duration (`15m`, `2h`).
#[derive(Debug, Default, Deserialize)]
pub struct ExpiresQuery {
    expires: Option<String>,
}

pub(crate) fn parse_expires(
    q: &ExpiresQuery,
    default: Duration,
    max: Duration,
) -> ApiResult<Duration> {
    let Some(raw) = q.expires.as_deref() else {
        return Ok(default);
    };
    let d = raw
        .parse::<u64>()
        .map(Duration::from_secs)
        .or_else(|_| parse_duration(raw))
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("expires={raw:?} is not a duration; use seconds (900) or 15m, 2h, 1d"),
            )
        })?;
    if d < Duration::from_secs(1) || d > max {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "expires={raw:?} is out of range; use 1s to {}",
                format_duration(max)
            ),
        ));
    }
    Ok(d)
}

fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    let unauthorized = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "send a bearer token: Authorization: Bearer <token>",
        )
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unauthorized)?;
    let (scheme, token) = value.split_once(' ').ok_or_else(unauthorized)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(unauthorized());
    }
    Ok(token)
}

/// Step 1 of the module docs: the caller of a request (401 without a valid bearer token).
pub async fn caller(access: &dyn Access, headers: &HeaderMap) -> ApiResult<Caller> {
    let token = bearer(headers)?;
    access
        .authenticate(token)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "the bearer token is not valid (expired, revoked or unknown)",
            )
        })
}

/// Steps 1–4 of the module docs.
pub(crate) async fn authorize(
    state: &GatewayState,
    headers: &HeaderMap,
    ns: &str,
    name: &str,
) -> ApiResult<CaptureRecord> {
    let caller = caller(state.access.as_ref(), headers).await?;
    for check in [check_namespace(ns), check_capture(name)] {
        check.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    }
    let allowed = state
        .access
        .may_read_files(&caller, ns, name)
        .await
        .map_err(ApiError::internal)?;
    if !allowed {
        info!(user = %caller.name, namespace = %ns, name = %name, "Denied.");
        return Err(forbidden(ns));
    }
    lookup(state, ns, name).await
}

/// The 403 of a caller without `get packetcaptures/files` in `ns`.
pub fn forbidden(ns: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "you may not get packetcaptures/files (group nightcap.dev) in namespace {ns:?}; \
             ask for a Role granting it"
        ),
    )
}

pub(crate) async fn lookup(state: &GatewayState, ns: &str, name: &str) -> ApiResult<CaptureRecord> {
    state
        .captures
        .get(ns, name)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("packetcapture {ns}/{name} not found"),
            )
        })
}

pub(crate) async fn list(
    state: &GatewayState,
    ns: &str,
    name: &str,
    rec: &CaptureRecord,
) -> ApiResult<Vec<CaptureFileInfo>> {
    state
        .lister
        .capture_files(ns, name, rec.uid.as_deref(), rec.status.as_ref())
        .await
        .map_err(ApiError::internal)
}

pub(crate) fn link_error(e: LinkError) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expires(raw: Option<&str>) -> Result<Duration, StatusCode> {
        let q = ExpiresQuery {
            expires: raw.map(str::to_string),
        };
        let week = Duration::from_secs(7 * 24 * 3600);
        parse_expires(&q, Duration::from_secs(900), week).map_err(|e| e.status)
    }

    #[test]
    fn expires_takes_seconds_or_the_one_duration_grammar() {
        let ok = [
            (None, 900),
            (Some("1"), 1),
            (Some("900"), 900),
            (Some("604800"), 604_800),
            (Some("15m"), 900),
            (Some("1h30m"), 5400),
            (Some("7d"), 604_800),
        ];
        for (raw, secs) in ok {
            assert_eq!(expires(raw), Ok(Duration::from_secs(secs)), "{raw:?}");
        }
        let bad = [
            "0", "0s", "500ms", "8d", "604801", "soon", "-5", "1day", "2 hours", "15min", "",
        ];
        for raw in bad {
            assert_eq!(expires(Some(raw)), Err(StatusCode::BAD_REQUEST), "{raw:?}");
        }
    }

    #[test]
    fn out_of_range_names_the_limit_in_the_grammar() {
        let q = ExpiresQuery {
            expires: Some("8d".into()),
        };
        let err = parse_expires(
            &q,
            Duration::from_secs(900),
            Duration::from_secs(7 * 86_400),
        )
        .expect_err("above the maximum");
        assert!(err.message.contains("use 1s to 168h"), "{}", err.message);
    }
}
