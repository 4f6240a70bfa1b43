//! Routes and handlers: parse the request (bad JSON is a 400 with the parser's
//! message), call the control plane, answer JSON with the conventional status.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Query, State},
    http::StatusCode,
    middleware,
    response::{IntoResponse, Response},
    routing::get,
    Extension, Json, Router,
};
use serde::{de::DeserializeOwned, Deserialize};

use super::{
    app_state::AppState,
    auth::{require_key, Actor, Guard, KeyCheck},
    console::{self, history::SharedHistory},
    error::ApiError,
    freshness::state_headers,
    MAX_BODY,
};
use crate::{
    control_plane::{page_by, ControlPlane, Page},
    http_thread::ConnStats,
    state::EventQuery,
};

type St = State<Arc<AppState>>;
type ApiResult = Result<Response, ApiError>;

/// The whole API.
pub fn router(
    guard: Arc<Guard>,
    plane: Arc<ControlPlane>,
    conns: Arc<ConnStats>,
    history: SharedHistory,
) -> Router {
    let keys = KeyCheck {
        guard: guard.clone(),
        plane: plane.clone(),
    };
    let state = Arc::new(AppState {
        guard,
        plane: plane.clone(),
        conns,
        history,
    });
    let v1 = Router::new()
        .route("/endpoints", get(list_endpoints).post(create_endpoint))
        .route(
            "/endpoints/{id}",
            get(get_endpoint)
                .patch(update_endpoint)
                .delete(delete_endpoint),
        )
        .route("/reserved_addrs", get(list_reserved).post(create_reserved))
        .route(
            "/reserved_addrs/{id}",
            axum::routing::delete(delete_reserved),
        )
        .route("/service_users", get(list_users).post(create_user))
        .route(
            "/service_users/{id}",
            get(get_user).patch(update_user).delete(delete_user),
        )
        .route(
            "/service_users/{id}/authtokens",
            get(list_tokens).post(create_token),
        )
        .route(
            "/service_users/{id}/authtokens/{token_id}",
            axum::routing::delete(revoke_token),
        )
        .route("/internal_urls", get(list_owners))
        .route(
            "/internal_urls/{url}",
            get(get_owner).put(assign_owner).delete(release_owner),
        )
        .route("/sessions", get(list_sessions))
        .route("/routes", get(list_routes))
        .route("/events", get(list_events))
        .route("/state", get(state_status))
        .merge(console::api())
        .route_layer(middleware::from_fn_with_state(plane, state_headers))
        .route_layer(middleware::from_fn_with_state(keys.clone(), require_key));
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(keys, require_key));
    Router::new()
        .merge(metrics)
        .merge(console::pages())
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .nest("/v1", v1)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(middleware::map_response(json_rejections))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Answers axum makes by itself (a body over [`MAX_BODY`]: 413) get the documented
/// JSON error shape like every other error.
async fn json_rejections(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE if !is_json => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request bodies are limited to {MAX_BODY} bytes"),
        )
        .into_response(),
        _ => response,
    }
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("request body: {e}"),
        )
    })
}

fn ok<T: serde::Serialize>(status: StatusCode, value: T) -> ApiResult {
    Ok((status, Json(value)).into_response())
}

/// `?limit=&after=` on lists.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Paging {
    limit: Option<usize>,
    after: Option<String>,
}

impl Paging {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(100).clamp(1, 1000)
    }
}

fn paging(
    q: Result<Query<Paging>, axum::extract::rejection::QueryRejection>,
) -> Result<Paging, ApiError> {
    q.map(|Query(p)| p)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))
}

async fn metrics(State(s): St) -> Response {
    let mut text = crate::metrics::edge::render(s.plane.edge());
    text.push_str(&crate::metrics::state::render(&s.plane.state_status()));
    text.push_str(&crate::metrics::fleet::render(&s.plane.edge().peers));
    text.push_str(&super::metrics::render(&s.conns, &s.guard));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::prometheus::CONTENT_TYPE,
        )],
        text,
    )
        .into_response()
}

async fn ready(State(s): St) -> Response {
    if s.plane.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let edge = s.plane.edge();
        let why = if edge.leaving.load(std::sync::atomic::Ordering::Acquire) {
            "leaving: this edge is shutting down\n"
        } else if !edge.peers.ready() {
            "fleet: the peer key or the other edges' routes are not loaded yet\n"
        } else {
            "state store unavailable\n"
        };
        (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
    }
}

async fn list_endpoints(
    State(s): St,
    q: Result<Query<Paging>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let p = paging(q)?;
    let all = s.plane.list_endpoints()?;
    ok(
        StatusCode::OK,
        page_by(all, |e| e.id.clone(), p.after.as_deref(), p.limit()),
    )
}

async fn get_endpoint(State(s): St, Path(id): Path<String>) -> ApiResult {
    ok(StatusCode::OK, s.plane.get_endpoint(&id)?)
}

async fn create_endpoint(State(s): St, Extension(a): Extension<Actor>, body: Bytes) -> ApiResult {
    ok(
        StatusCode::CREATED,
        s.plane.create_endpoint(&a.0, parse(&body)?)?,
    )
}

async fn update_endpoint(
    State(s): St,
    Extension(a): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    ok(
        StatusCode::OK,
        s.plane.update_endpoint(&a.0, &id, parse(&body)?)?,
    )
}

async fn delete_endpoint(
    State(s): St,
    Extension(a): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult {
    s.plane.delete_endpoint(&a.0, &id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_reserved(
    State(s): St,
    q: Result<Query<Paging>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let p = paging(q)?;
    ok(
        StatusCode::OK,
        page_by(
            s.plane.list_reserved()?,
            |r| r.id.clone(),
            p.after.as_deref(),
            p.limit(),
        ),
    )
}

async fn create_reserved(State(s): St, Extension(a): Extension<Actor>, body: Bytes) -> ApiResult {
    ok(
        StatusCode::CREATED,
        s.plane.create_reserved(&a.0, parse(&body)?)?,
    )
}

async fn delete_reserved(
    State(s): St,
    Extension(a): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult {
    s.plane.delete_reserved(&a.0, &id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_users(
    State(s): St,
    q: Result<Query<Paging>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let p = paging(q)?;
    ok(
        StatusCode::OK,
        page_by(
            s.plane.list_users()?,
            |u| u.user.id.clone(),
            p.after.as_deref(),
            p.limit(),
        ),
    )
}

async fn get_user(State(s): St, Path(id): Path<String>) -> ApiResult {
    ok(StatusCode::OK, s.plane.get_user(&id)?)
}

async fn create_user(State(s): St, Extension(a): Extension<Actor>, body: Bytes) -> ApiResult {
    ok(
        StatusCode::CREATED,
        s.plane.create_user(&a.0, parse(&body)?)?,
    )
}

async fn update_user(
    State(s): St,
    Extension(a): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    ok(
        StatusCode::OK,
        s.plane.update_user(&a.0, &id, parse(&body)?)?,
    )
}

async fn delete_user(
    State(s): St,
    Extension(a): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult {
    s.plane.delete_user(&a.0, &id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_tokens(
    State(s): St,
    Path(id): Path<String>,
    q: Result<Query<Paging>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let p = paging(q)?;
    ok(
        StatusCode::OK,
        page_by(
            s.plane.list_tokens(&id)?,
            |t| t.id.clone(),
            p.after.as_deref(),
            p.limit(),
        ),
    )
}

async fn create_token(
    State(s): St,
    Extension(a): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    ok(
        StatusCode::CREATED,
        s.plane.create_token(&a.0, &id, parse(&body)?)?,
    )
}

async fn revoke_token(
    State(s): St,
    Extension(a): Extension<Actor>,
    Path((id, token_id)): Path<(String, String)>,
) -> ApiResult {
    ok(StatusCode::OK, s.plane.revoke_token(&a.0, &id, &token_id)?)
}

async fn list_owners(State(s): St) -> ApiResult {
    let items = s.plane.list_owners();
    ok(StatusCode::OK, Page { items, next: None })
}

/// `{url}` is the internal URL, percent-encoded (`tcp%3A%2F%2Fdb.internal%3A5432`).
async fn get_owner(State(s): St, Path(url): Path<String>) -> ApiResult {
    ok(StatusCode::OK, s.plane.get_owner(&url)?)
}

async fn assign_owner(
    State(s): St,
    Extension(a): Extension<Actor>,
    Path(url): Path<String>,
    body: Bytes,
) -> ApiResult {
    let (view, created) = s.plane.assign_owner(&a.0, &url, parse(&body)?)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    ok(status, view)
}

async fn release_owner(
    State(s): St,
    Extension(a): Extension<Actor>,
    Path(url): Path<String>,
) -> ApiResult {
    s.plane.release_owner(&a.0, &url)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn state_status(State(s): St) -> ApiResult {
    ok(StatusCode::OK, s.plane.state_status())
}

/// `?edge=ID`: one edge's sessions only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionParams {
    edge: Option<String>,
}

async fn list_sessions(
    State(s): St,
    q: Result<Query<SessionParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(p) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let items = s.plane.fleet_sessions(p.edge.as_deref());
    ok(StatusCode::OK, Page { items, next: None })
}

async fn list_routes(State(s): St) -> ApiResult {
    let items = s.plane.fleet_routes();
    ok(StatusCode::OK, Page { items, next: None })
}

/// `?type=a,b*&since=MS&until=MS&before=ID&limit=N`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventParams {
    #[serde(rename = "type")]
    kinds: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    before: Option<i64>,
    limit: Option<usize>,
}

async fn list_events(
    State(s): St,
    q: Result<Query<EventParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(p) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let query = EventQuery {
        kinds: p
            .kinds
            .map(|k| {
                k.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        since: p.since,
        until: p.until,
        before_id: p.before,
        limit: limit + 1,
    };
    let mut items = s.plane.events(&query)?;
    let next = (items.len() > limit).then(|| items[limit - 1].id.to_string());
    items.truncate(limit);
    ok(StatusCode::OK, Page { items, next })
}
