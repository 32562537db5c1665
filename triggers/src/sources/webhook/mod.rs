//! The webhook source: an axum server taking Alertmanager notifications (payload version 4,
//! unchanged, so an Alertmanager `webhook_configs` entry works as is) on
//! `POST /hooks/alertmanager[/...]` and capture requests on `POST /hooks/capture[/...]`.
//!
//! Responses: 202 with every decision and the captures created or deduplicated; 400 with a
//! precise message for a bad payload; 401 without valid credentials; 413 for a body over the
//! limit; 503 when a capture could not be created for a transient reason (Alertmanager retries
//! 5xx), with the decisions made so far.

mod auth;
pub mod config;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::post,
};
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::{info, warn};

pub use auth::{Auth, Denied, sign};
pub use config::WebhookConfig;

use crate::{
    decision::{Decision, Outcome},
    engine::Engine,
    error::{Error, Result},
    event::EventSource,
    payload::{self, ParseOptions},
};

/// Shared state of the webhook handlers.
#[derive(Debug, Clone)]
pub struct Webhook {
    engine: Engine,
    auth: Arc<Auth>,
    parse: Arc<ParseOptions>,
    max_body_bytes: usize,
}

/// The response body of a handled request.
#[derive(Debug, Serialize)]
pub struct Accepted {
    /// `namespace/name` of the captures that exist for the events (created or deduplicated).
    pub captures: Vec<String>,
    /// Every decision.
    pub decisions: Vec<Decision>,
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (
        code,
        Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

#[derive(Clone, Copy)]
enum Kind {
    Alertmanager,
    Capture,
}

impl Kind {
    const fn endpoint(self) -> &'static str {
        match self {
            Self::Alertmanager => "alertmanager",
            Self::Capture => "capture",
        }
    }
}

impl Webhook {
    /// Webhook state over an engine.
    pub fn new(engine: Engine, auth: Auth, parse: ParseOptions, max_body_bytes: usize) -> Self {
        Self {
            engine,
            auth: Arc::new(auth),
            parse: Arc::new(parse),
            max_body_bytes,
        }
    }

    /// The routes.
    pub fn router(self) -> Router {
        let limit = self.max_body_bytes;
        Router::new()
            .route("/hooks/alertmanager", post(alertmanager))
            .route("/hooks/alertmanager/{*rest}", post(alertmanager))
            .route("/hooks/capture", post(capture))
            .route("/hooks/capture/{*rest}", post(capture))
            .fallback(|| async {
                error(
                    StatusCode::NOT_FOUND,
                    "unknown path; POST to /hooks/alertmanager or /hooks/capture",
                )
            })
            .layer(DefaultBodyLimit::max(limit))
            .with_state(self)
    }

    /// Binds `addr` and serves until the future is dropped.
    pub async fn serve(self, addr: SocketAddr) -> Result<()> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        self.serve_on(listener).await
    }

    /// Serves on a bound listener.
    pub async fn serve_on(self, listener: TcpListener) -> Result<()> {
        let addr = listener.local_addr().map_err(|source| Error::Serve {
            addr: ([0, 0, 0, 0], 0).into(),
            source,
        })?;
        info!(%addr, "Webhook listening on /hooks/alertmanager and /hooks/capture.");
        axum::serve(listener, self.router())
            .await
            .map_err(|source| Error::Serve { addr, source })
    }

    async fn handle(
        &self,
        kind: Kind,
        uri: &Uri,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Response {
        let metrics = self.engine.reporter().metrics().clone();
        let response = self.respond(kind, uri, headers, body).await;
        metrics.webhook_request(kind.endpoint(), response.status().as_u16());
        response
    }

    async fn respond(
        &self,
        kind: Kind,
        uri: &Uri,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Response {
        let body = match body {
            Ok(b) => b,
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the body is larger than {} bytes (webhook.maxBodyBytes)",
                        self.max_body_bytes
                    ),
                );
            }
            Err(r) => return error(r.status(), r.body_text()),
        };
        if let Err(denied) = self.auth.check(headers, &body) {
            let mut resp = error(StatusCode::UNAUTHORIZED, denied.to_string());
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return resp;
        }
        let source = EventSource::Webhook {
            path: uri.path().to_owned(),
        };
        let now = self.engine.clock().now();
        let metrics = self.engine.reporter().metrics();
        let events = match kind {
            Kind::Alertmanager => payload::parse_alertmanager(&body, &source, now, &self.parse),
            Kind::Capture => {
                payload::parse_capture_request(&body, &source, now, &self.parse).map(|e| vec![e])
            }
        };
        let events = match events {
            Ok(e) => e,
            Err(e) => {
                metrics.rejected_payload("webhook");
                warn!(path = uri.path(), error = %e, "Refused a webhook payload.");
                return error(StatusCode::BAD_REQUEST, e.to_string());
            }
        };
        metrics.received("webhook", events.len() as u64);
        let decisions = self.engine.handle(&events).await;
        let mut captures: Vec<String> = decisions
            .iter()
            .filter(|d| matches!(d.decision, Outcome::Created | Outcome::Deduplicated))
            .filter_map(|d| d.capture.as_ref().map(|c| format!("{}/{c}", d.namespace)))
            .collect();
        captures.sort();
        captures.dedup();
        let code = if decisions.iter().all(Decision::is_final) {
            StatusCode::ACCEPTED
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (
            code,
            Json(Accepted {
                captures,
                decisions,
            }),
        )
            .into_response()
    }
}

async fn alertmanager(
    State(w): State<Webhook>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    w.handle(Kind::Alertmanager, &uri, &headers, body).await
}

async fn capture(
    State(w): State<Webhook>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    w.handle(Kind::Capture, &uri, &headers, body).await
}
