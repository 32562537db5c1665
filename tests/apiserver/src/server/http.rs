//! Request entry point: path parsing, authentication, authorisation, dispatch.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

use super::{Shared, discovery, portforward, resource, reviews};
use crate::{
    policy::{Attributes, Policy, UserInfo},
    resources::ResourceType,
    status::{ApiError, ApiResult},
};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// Query parameters (last value wins).
pub(crate) type Query = HashMap<String, String>;

/// A parsed resource path.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub rt: Arc<ResourceType>,
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

enum Route {
    Version,
    Health,
    Api,
    Apis,
    Group(String),
    GroupVersion(String, String),
    Resource(Target),
}

/// Everything a handler needs about the request.
#[derive(Debug)]
pub(crate) struct Req {
    pub method: Method,
    pub query: Query,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    pub user: UserInfo,
}

impl Req {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1"))
    }
    pub fn accept(&self) -> &str {
        self.headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    /// The field manager: `?fieldManager=` or the User-Agent's product name, like the real server.
    pub fn manager(&self) -> String {
        if let Some(m) = self.q("fieldManager") {
            return m.to_string();
        }
        let ua = self
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        ua.split('/').next().unwrap_or("unknown").to_string()
    }
}

async fn handle(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    if let Some((ns, name)) = portforward::matches(parts.uri.path()) {
        let user = match authenticate(
            &sh.policy(),
            &parts.headers,
            sh.opts.anonymous_user.as_deref(),
        ) {
            Ok(u) => u,
            Err(e) => return e.into_response(),
        };
        let query: Query =
            axum::extract::Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
                .map(|q| q.0)
                .unwrap_or_default();
        return portforward::handle(&sh, &user, &mut parts, &ns, &name, &query)
            .unwrap_or_else(IntoResponse::into_response);
    }
    let body = match axum::body::to_bytes(body, 32 << 20).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!("reading the request body: {e}"),
            )
            .into_response();
        }
    };
    let query: Query = axum::extract::Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let policy = sh.policy();
    let user = match authenticate(&policy, &parts.headers, sh.opts.anonymous_user.as_deref()) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let path = parts.uri.path().to_string();
    let req = Req {
        method: parts.method,
        query,
        headers: parts.headers,
        body,
        user,
    };
    match dispatch(&sh, &policy, &path, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn authenticate(
    policy: &Policy,
    headers: &HeaderMap,
    anonymous_as: Option<&str>,
) -> ApiResult<UserInfo> {
    let Some(h) = headers.get(header::AUTHORIZATION) else {
        let as_user = anonymous_as
            .and_then(|u| policy.token_of(u))
            .and_then(|t| policy.authenticate(t));
        return Ok(as_user.unwrap_or_else(Policy::anonymous));
    };
    let token = h
        .to_str()
        .ok()
        .and_then(|s| s.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    policy
        .authenticate(token)
        .ok_or_else(ApiError::unauthorized)
}

fn parse(path: &str, sh: &Shared) -> ApiResult<Route> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let nf = || ApiError::path_not_found(path);
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["healthz" | "livez" | "readyz", ..] => return Ok(Route::Health),
        ["api"] => return Ok(Route::Api),
        ["apis"] => return Ok(Route::Apis),
        ["apis", g] => return Ok(Route::Group(g.to_string())),
        ["api", v] => return Ok(Route::GroupVersion(String::new(), v.to_string())),
        ["apis", g, v] => return Ok(Route::GroupVersion(g.to_string(), v.to_string())),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(nf()),
    };
    let namespaced_path = rest.first() == Some(&"namespaces")
        && rest.len() >= 3
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
    let (ns, rest) = if namespaced_path {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.is_empty() || rest.len() > 3 {
        return Err(nf());
    }
    let rt = sh
        .store
        .read()
        .registry
        .find(group, version, rest[0])
        .ok_or_else(nf)?;
    if ns.is_some() && !rt.namespaced {
        return Err(nf());
    }
    let sub = rest.get(2).map(|s| s.to_string());
    match sub.as_deref() {
        None => {}
        Some("status") if rt.status_subresource => {}
        Some(_) => return Err(nf()),
    }
    Ok(Route::Resource(Target {
        rt,
        ns,
        name: rest.get(1).map(|s| s.to_string()),
        sub,
    }))
}

pub(crate) fn json_response(code: u16, body: &Value, warnings: &[String]) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warnings {
        let text = format!("299 - {:?}", w.replace('"', "'"));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

fn verb(method: &Method, target: &Target, req: &Req) -> ApiResult<&'static str> {
    let named = target.name.is_some();
    Ok(match *method {
        Method::GET if named => "get",
        Method::GET if req.flag("watch") => "watch",
        Method::GET => "list",
        Method::POST if !named => "create",
        Method::PUT if named => "update",
        Method::PATCH if named => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method})"
            )));
        }
    })
}

pub(crate) fn authorize(
    policy: &Policy,
    user: &UserInfo,
    a: &Attributes,
    target: Option<&Target>,
) -> ApiResult<()> {
    if policy.authorize(&user.name, &user.groups, a).is_ok() {
        return Ok(());
    }
    let who = format!("User {:?}", user.name);
    let Some(t) = target else {
        return Err(ApiError::forbidden(
            format!(
                "forbidden: {who} cannot {} path {:?}",
                a.verb,
                a.non_resource_path.clone().unwrap_or_default()
            ),
            json!({}),
        ));
    };
    let res = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {:?}", a.namespace)
    };
    let prefix = match &t.name {
        Some(n) => format!("{} {n:?} is forbidden", t.rt.qualified()),
        None => format!("{} is forbidden", t.rt.qualified()),
    };
    let mut details = json!({"group": t.rt.group, "kind": t.rt.plural});
    if let Some(n) = &t.name {
        details["name"] = json!(n);
    }
    Err(ApiError::forbidden(
        format!(
            "{prefix}: {who} cannot {} resource {res:?} in API group {:?} {scope}",
            a.verb, a.group
        ),
        details,
    ))
}

async fn dispatch(sh: &Arc<Shared>, policy: &Policy, path: &str, req: Req) -> ApiResult<Response> {
    let route = parse(path, sh)?;
    let Route::Resource(target) = route else {
        let a = Attributes {
            verb: "get".into(),
            non_resource_path: Some(path.to_string()),
            ..Attributes::default()
        };
        authorize(policy, &req.user, &a, None)?;
        if req.method != Method::GET {
            return Err(ApiError::method_not_allowed(format!(
                "{} is not allowed on {path}",
                req.method
            )));
        }
        return Ok(match route {
            Route::Version => json_response(200, &discovery::version(), &[]),
            Route::Health => {
                let mut r = Response::new(Body::from("ok"));
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                r
            }
            Route::Api => discovery::core_versions(sh, &req),
            Route::Apis => discovery::groups(sh, &req),
            Route::Group(g) => discovery::group(sh, &g)?,
            Route::GroupVersion(g, v) => discovery::group_version(sh, &g, &v)?,
            Route::Resource(_) => return Err(ApiError::internal("unreachable route")),
        });
    };
    let verb = verb(&req.method, &target, &req)?;
    let attrs = Attributes {
        verb: verb.to_string(),
        group: target.rt.group.clone(),
        resource: target.rt.plural.clone(),
        subresource: target.sub.clone().unwrap_or_default(),
        namespace: target.ns.clone().unwrap_or_default(),
        name: target.name.clone().unwrap_or_default(),
        non_resource_path: None,
    };
    authorize(policy, &req.user, &attrs, Some(&target))?;
    if target.rt.builtin.is_some_and(|b| b.is_review()) {
        if verb != "create" {
            return Err(ApiError::method_not_allowed(format!(
                "{} only supports create",
                target.rt.qualified()
            )));
        }
        return reviews::create(policy, &target, &req);
    }
    match verb {
        "get" => resource::get(sh, &target, &req),
        "list" => resource::list(sh, &target, &req),
        "watch" => resource::watch(sh, &target, &req),
        "create" => resource::create(sh, &target, &req),
        "update" => resource::update(sh, &target, &req),
        "patch" => resource::patch(sh, &target, &req),
        "delete" => resource::delete(sh, &target, &req),
        _ => resource::delete_collection(sh, &target, &req),
    }
}
