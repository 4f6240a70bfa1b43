//! Bearer API keys: `Authorization: Bearer KEY`, hashed and compared in constant time
//! with every configured `sha256:` hash. A request without a valid key gets 401 and an
//! audit event (at most a few per second are stored, so a flood cannot fill the log).

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use axum::{
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{error::ApiError, routes::AppState};
use crate::{state::NewEvent, token::TokenHash};

/// Audit events about failed admin authentications stored per second, at most.
const AUTH_FAILURE_EVENTS_PER_SEC: u64 = 5;

/// The accepted key hashes.
pub struct ApiKeys {
    hashes: Vec<TokenHash>,
    failures_this_second: AtomicU64,
}

/// Who made a request: `api:` and the first hex digits of the key's hash.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

impl ApiKeys {
    /// Keys from the config.
    pub fn new(hashes: Vec<TokenHash>) -> Self {
        Self {
            hashes,
            failures_this_second: AtomicU64::new(0),
        }
    }

    fn check(&self, key: &str) -> Option<Actor> {
        let hash = TokenHash::find(key, self.hashes.iter().map(|h| (h, h)))?;
        Some(Actor(format!("api:{}", &hash.to_string()[7..15])))
    }

    /// Whether this failure may be stored (a per-second budget).
    fn may_record_failure(&self) -> bool {
        let second = crate::state::now_ms() as u64 / 1000;
        let packed = self.failures_this_second.load(Ordering::Relaxed);
        let (at, count) = (packed >> 16, packed & 0xffff);
        let next = if at == second {
            (second << 16) | (count + 1)
        } else {
            (second << 16) | 1
        };
        self.failures_this_second.store(next, Ordering::Relaxed);
        at != second || count < AUTH_FAILURE_EVENTS_PER_SEC
    }
}

/// Middleware: lets requests with a valid key through, with their [`Actor`].
pub async fn require_key(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let key = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let actor = key.and_then(|k| state.keys.check(k));
    match actor {
        Some(actor) => {
            req.extensions_mut().insert(actor);
            next.run(req).await
        }
        None => {
            let reason = if key.is_none() {
                "missing bearer key"
            } else {
                "unknown API key"
            };
            tracing::warn!(path = %req.uri().path(), %reason, "admin API: authentication failed");
            if state.keys.may_record_failure() {
                state.plane.record(NewEvent::now(
                    "admin.auth_failed",
                    "admin",
                    req.uri().path(),
                    serde_json::json!({ "method": req.method().as_str(), "reason": reason }),
                ));
            }
            let mut resp =
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", reason).into_response();
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            resp
        }
    }
}
