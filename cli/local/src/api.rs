//! The capture API of `nightcap local`, served beside the gateway's file endpoints with the same
//! token checks, so people and the kubectl plugin (`--server`) work against one host as they do
//! against a cluster. Objects are the same JSON as in the Kubernetes API; errors are `Status`
//! objects.
//!
//! | endpoint | needs |
//! |---|---|
//! | `GET /v1/packetcaptures` | read, lists the namespaces the token may read |
//! | `GET /v1/namespaces/{ns}/packetcaptures[?labelSelector=app=web]` | read |
//! | `GET /v1/namespaces/{ns}/packetcaptures/{name}` | read |
//! | `GET /v1/namespaces/{ns}/packetcaptures/{name}/events` | read |
//! | `GET /v1/namespaces/{ns}/capturetriggers`, `…/captureschedules` | read |
//! | `POST /v1/namespaces/{ns}/packetcaptures` (a PacketCapture, JSON or YAML) | edit |
//! | `POST /v1/namespaces/{ns}/packetcaptures/{name}/stop` (`{"reason": "…"}`) | edit |
//! | `DELETE /v1/namespaces/{ns}/packetcaptures/{name}[?keepFiles=true]` | edit |
//!
//! Order of checks as on the file endpoints: token (401), names (400), rights in the
//! namespace (403, whether or not the object exists), then existence (404).

mod selector;

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path as UrlPath, Query, State as AxState},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use jiff::Timestamp;
use kube::ResourceExt;
use nightcap_api::{
    PacketCapture,
    validation::{ValidationOptions, validate_packet_capture},
};
use nightcap_gateway::{
    auth::{Access, Caller},
    handlers::{ApiError, ApiResult, caller, forbidden},
};
use nightcap_storage::layout::{check_capture, check_namespace};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::info;

use crate::{
    config::LocalConfig,
    state::{CaptureOrigin, Created, State, StoredEvent},
};

/// What the handlers share.
pub(crate) struct ApiState {
    pub state: Arc<State>,
    pub access: Arc<dyn Access>,
    pub config: watch::Receiver<Arc<LocalConfig>>,
}

/// The routes.
pub(crate) fn router(s: Arc<ApiState>) -> Router {
    let ns = "/v1/namespaces/{ns}";
    Router::new()
        .route("/v1/packetcaptures", get(list_all))
        .route(&format!("{ns}/packetcaptures"), get(list).post(create))
        .route(
            &format!("{ns}/packetcaptures/{{name}}"),
            get(read).delete(delete),
        )
        .route(&format!("{ns}/packetcaptures/{{name}}/stop"), post(stop))
        .route(&format!("{ns}/packetcaptures/{{name}}/events"), get(events))
        .route(&format!("{ns}/capturetriggers"), get(triggers))
        .route(&format!("{ns}/captureschedules"), get(schedules))
        .with_state(s)
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
}

fn internal(e: crate::Error) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn not_found(kind: &str, ns: &str, name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("{kind} {name:?} not found in namespace {ns:?}"),
    )
}

/// 401, 400 and 403 checks of a request in `ns` (`edit`: a write).
async fn allowed(s: &ApiState, headers: &HeaderMap, ns: &str, edit: bool) -> ApiResult<Caller> {
    let who = caller(s.access.as_ref(), headers).await?;
    check_namespace(ns).map_err(bad)?;
    let ok = if edit {
        s.access.may_edit(&who, ns).await
    } else {
        s.access.may_read_files(&who, ns, "").await
    }
    .map_err(ApiError::internal)?;
    if !ok {
        info!(user = %who.name, namespace = %ns, edit, "Denied.");
        return Err(if edit {
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "you may not create, stop or delete packetcaptures in namespace {ns:?}; \
                     the token needs `edit: true` for it"
                ),
            )
        } else {
            forbidden(ns)
        });
    }
    Ok(who)
}

fn list_of(kind: &str, items: Vec<Value>) -> Json<Value> {
    Json(json!({
        "apiVersion": format!("{}/{}", nightcap_api::GROUP, nightcap_api::VERSION),
        "kind": format!("{kind}List"),
        "metadata": {},
        "items": items,
    }))
}

/// An object as the Kubernetes API shows it: with its `apiVersion` and `kind`.
fn typed(kind: &str, object: &impl serde::Serialize) -> Value {
    let mut v = serde_json::to_value(object).unwrap_or(Value::Null);
    v["apiVersion"] = json!(format!("{}/{}", nightcap_api::GROUP, nightcap_api::VERSION));
    v["kind"] = json!(kind);
    v
}

fn object(pc: &PacketCapture) -> Value {
    typed("PacketCapture", pc)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    label_selector: Option<String>,
}

async fn list_all(
    AxState(s): AxState<Arc<ApiState>>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let who = caller(s.access.as_ref(), &headers).await?;
    let sel = selector::parse(q.label_selector.as_deref().unwrap_or("")).map_err(bad)?;
    let mut items = Vec::new();
    for pc in s.state.captures(None).map_err(internal)? {
        let ns = pc.namespace().unwrap_or_default();
        let readable = s
            .access
            .may_read_files(&who, &ns, "")
            .await
            .map_err(ApiError::internal)?;
        if readable && sel.matches(pc.labels()) {
            items.push(object(&pc));
        }
    }
    Ok(list_of("PacketCapture", items))
}

async fn list(
    AxState(s): AxState<Arc<ApiState>>,
    UrlPath(ns): UrlPath<String>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    allowed(&s, &headers, &ns, false).await?;
    let sel = selector::parse(q.label_selector.as_deref().unwrap_or("")).map_err(bad)?;
    let items = s
        .state
        .captures(Some(&ns))
        .map_err(internal)?
        .iter()
        .filter(|pc| sel.matches(pc.labels()))
        .map(object)
        .collect();
    Ok(list_of("PacketCapture", items))
}

async fn read(
    AxState(s): AxState<Arc<ApiState>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    allowed(&s, &headers, &ns, false).await?;
    check_capture(&name).map_err(bad)?;
    let pc = s.state.capture(&ns, &name).map_err(internal)?;
    let pc = pc.ok_or_else(|| not_found("packetcapture", &ns, &name))?;
    Ok(Json(object(&pc)))
}

async fn create(
    AxState(s): AxState<Arc<ApiState>>,
    UrlPath(ns): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let who = allowed(&s, &headers, &ns, true).await?;
    let text = std::str::from_utf8(&body).map_err(|_| bad("the body is not UTF-8"))?;
    // JSON is YAML: one parser takes both.
    let mut pc: PacketCapture = serde_yaml::from_str(text)
        .map_err(|e| bad(format!("the body is not a PacketCapture: {e}")))?;
    match pc.metadata.namespace.as_deref() {
        None => pc.metadata.namespace = Some(ns.clone()),
        Some(n) if n == ns => {}
        Some(n) => {
            return Err(bad(format!(
                "the object's namespace {n:?} does not match the request's {ns:?}"
            )));
        }
    }
    let now = Timestamp::now();
    let opts = ValidationOptions {
        now: Some(now),
        ..ValidationOptions::default()
    };
    validate_packet_capture(&pc, &opts).map_err(|errs| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "PacketCapture {:?} is invalid: {errs}",
                pc.metadata.name.as_deref().unwrap_or_default()
            ),
        )
    })?;
    pc.status = None;
    let name = pc.name_any();
    match s
        .state
        .create_capture(pc, CaptureOrigin::Api, now)
        .map_err(internal)?
    {
        Created::Created(pc) => {
            info!(user = %who.name, capture = %format!("{ns}/{name}"), "Created a capture.");
            Ok((StatusCode::CREATED, Json(object(&pc))))
        }
        Created::AlreadyExists => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("packetcapture {name:?} already exists in namespace {ns:?}"),
        )),
    }
}

#[derive(Debug, Default, Deserialize)]
struct StopBody {
    reason: Option<String>,
}

async fn stop(
    AxState(s): AxState<Arc<ApiState>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let who = allowed(&s, &headers, &ns, true).await?;
    check_capture(&name).map_err(bad)?;
    let b: StopBody = if body.is_empty() {
        StopBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| bad(format!("the body: {e}")))?
    };
    let reason = b
        .reason
        .unwrap_or_else(|| format!("stopped by {}", who.name));
    let pc = s
        .state
        .request_stop(&ns, &name, &reason)
        .map_err(internal)?
        .ok_or_else(|| not_found("packetcapture", &ns, &name))?;
    info!(user = %who.name, capture = %format!("{ns}/{name}"), "Asked a capture to stop.");
    Ok(Json(object(&pc)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteQuery {
    #[serde(default)]
    keep_files: bool,
}

async fn delete(
    AxState(s): AxState<Arc<ApiState>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    Query(q): Query<DeleteQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let who = allowed(&s, &headers, &ns, true).await?;
    check_capture(&name).map_err(bad)?;
    s.state
        .request_delete(&ns, &name, !q.keep_files, Timestamp::now())
        .map_err(internal)?
        .ok_or_else(|| not_found("packetcapture", &ns, &name))?;
    info!(user = %who.name, capture = %format!("{ns}/{name}"), keep_files = q.keep_files, "Deleting a capture.");
    Ok(Json(json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Success",
        "details": {"name": name, "kind": "packetcaptures"},
    })))
}

async fn events(
    AxState(s): AxState<Arc<ApiState>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    allowed(&s, &headers, &ns, false).await?;
    check_capture(&name).map_err(bad)?;
    let items: Vec<Value> = s
        .state
        .events(&ns, "PacketCapture", &name)
        .map_err(internal)?
        .iter()
        .map(event)
        .collect();
    Ok(Json(
        json!({"apiVersion": "v1", "kind": "EventList", "items": items}),
    ))
}

/// A stored Event as a core/v1 Event.
fn event(e: &StoredEvent) -> Value {
    json!({
        "type": e.event_type,
        "reason": e.reason,
        "message": e.message,
        "count": e.count,
        "firstTimestamp": e.first.to_string(),
        "lastTimestamp": e.last.to_string(),
        "involvedObject": {"kind": e.kind, "namespace": e.namespace, "name": e.name},
        "related": e.related,
        "metadata": {"namespace": e.namespace},
    })
}

async fn triggers(
    AxState(s): AxState<Arc<ApiState>>,
    UrlPath(ns): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    allowed(&s, &headers, &ns, false).await?;
    let config = s.config.borrow().clone();
    let items = config
        .triggers
        .iter()
        .filter(|t| t.namespace().as_deref() == Some(ns.as_str()))
        .map(|t| typed("CaptureTrigger", t))
        .collect();
    Ok(list_of("CaptureTrigger", items))
}

async fn schedules(
    AxState(s): AxState<Arc<ApiState>>,
    UrlPath(ns): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    allowed(&s, &headers, &ns, false).await?;
    let config = s.config.borrow().clone();
    let items = crate::triggers::schedules(&s.state, &config)
        .iter()
        .filter(|t| t.namespace().as_deref() == Some(ns.as_str()))
        .map(|t| typed("CaptureSchedule", t.as_ref()))
        .collect();
    Ok(list_of("CaptureSchedule", items))
}
