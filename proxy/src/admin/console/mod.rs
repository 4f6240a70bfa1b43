//! The operator console: a read-only web page on the admin listener (`/console`).
//!
//! The page itself (`index.html`, `app.js`, `app.css`, compiled into the binary: it
//! works on an edge without internet) holds no data and is served without a key; it
//! asks for the API key in a login form, keeps it in the browser tab's
//! `sessionStorage`, and reads everything through the keyed API: `/v1/console/*`
//! (here) and the existing `/v1/sessions` and `/v1/events`, polling every few seconds.
//! The script builds the page with DOM text nodes only (never HTML from data), and the
//! page's Content-Security-Policy allows no inline script, so names, URLs and metadata
//! from agents and admins show as text.

pub mod history;
mod views;

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};

pub use history::{History, SharedHistory};

use super::{app_state::AppState, error::ApiError};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// No script but the console's own file, no inline code, no framing, nothing fetched
/// from anywhere but this listener.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The page and its files (no key needed: they hold no data).
pub fn pages() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/console",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/console/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
}

/// The data the page reads, under `/v1` (behind the key check there).
pub fn api() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console/overview", get(overview))
        .route("/console/endpoints/{id}", get(endpoint))
        .route("/console/pools", get(pools))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn history(s: &AppState) -> std::sync::MutexGuard<'_, History> {
    s.history.lock().unwrap_or_else(|p| p.into_inner())
}

async fn overview(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let page = views::overview(&s.plane, &history(&s))?;
    Ok((StatusCode::OK, Json(page)).into_response())
}

async fn endpoint(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let page = views::endpoint(&s.plane, &history(&s), &id)?;
    Ok((StatusCode::OK, Json(page)).into_response())
}

async fn pools(State(s): State<Arc<AppState>>) -> Response {
    (StatusCode::OK, Json(views::pools(&s.plane))).into_response()
}
