//! `/metrics` (Prometheus), `/healthz` (the process serves) and `/readyz` (triggers and
//! captures are loaded).

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::net::TcpListener;

use crate::{
    error::{Error, Result},
    ledger::SharedLedger,
    metrics::Metrics,
    rules::TriggerSet,
};

#[derive(Debug, Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    ledger: Arc<SharedLedger>,
    triggers: Arc<TriggerSet>,
}

/// The admin routes.
pub fn router(
    metrics: Arc<Metrics>,
    ledger: Arc<SharedLedger>,
    triggers: Arc<TriggerSet>,
) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<AdminState>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    s.metrics.encode(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<AdminState>| async move {
                if s.ledger.is_ready() && s.triggers.is_ready() {
                    (StatusCode::OK, "ready").into_response()
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "loading triggers and captures",
                    )
                        .into_response()
                }
            }),
        )
        .with_state(AdminState {
            metrics,
            ledger,
            triggers,
        })
}

/// Serves the admin routes on `addr`.
pub async fn serve(addr: SocketAddr, router: Router) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    axum::serve(listener, router)
        .await
        .map_err(|source| Error::Serve { addr, source })
}
