//! Bearer API keys: `Authorization: Bearer KEY`, hashed and compared in constant time
//! with every configured `sha256:` hash. A request without a valid key gets 401; a
//! client that sent too many wrong keys gets 429 with `Retry-After` for a while, its
//! key not even checked ([`super::backoff`]). Every failure is logged (throttled) with
//! the client's address, and audited as `admin.auth_failed`: at most one stored event
//! per client per back-off window, counting the failures it covers.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex, MutexGuard,
    },
    time::Instant,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{
    backoff::{AuthFailures, BackoffSettings, Client},
    error::ApiError,
};
use crate::{control_plane::ControlPlane, state::NewEvent, token::TokenHash};

/// The accepted key hashes.
pub struct ApiKeys {
    hashes: Vec<TokenHash>,
}

/// Who made a request: `api:` and the first hex digits of the key's hash.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

impl ApiKeys {
    /// Keys from the config.
    pub fn new(hashes: Vec<TokenHash>) -> Self {
        Self { hashes }
    }

    fn check(&self, key: &str) -> Option<Actor> {
        let hash = TokenHash::find(key, self.hashes.iter().map(|h| (h, h)))?;
        Some(Actor(format!("api:{}", &hash.to_string()[7..15])))
    }
}

/// The keys, the failures per client, and counters for `/metrics`.
pub struct Guard {
    keys: ApiKeys,
    failures: Mutex<AuthFailures>,
    /// Requests refused for a missing or wrong key.
    pub failed: AtomicU64,
    /// Requests refused with 429 during a hold-off.
    pub held_off: AtomicU64,
}

impl Guard {
    /// `keys`, nobody failed yet.
    pub fn new(keys: ApiKeys, backoff: BackoffSettings) -> Self {
        Self {
            keys,
            failures: Mutex::new(AuthFailures::new(backoff)),
            failed: AtomicU64::new(0),
            held_off: AtomicU64::new(0),
        }
    }

    fn failures(&self) -> MutexGuard<'_, AuthFailures> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores the audit summaries now due and forgets quiet clients.
    pub fn sweep(&self, plane: &ControlPlane) {
        let due = self.failures().sweep(Instant::now());
        for (client, failures) in due {
            plane.record(NewEvent::now(
                "admin.auth_failed",
                "admin",
                client.to_string(),
                serde_json::json!({ "client": client.to_string(), "failures": failures, "summary": true }),
            ));
        }
    }
}

/// What [`require_key`] works with: the keys and failures, and the control plane that
/// stores its `admin.auth_failed` events.
#[derive(Clone)]
pub struct KeyCheck {
    /// Keys, failures per client, counters.
    pub guard: Arc<Guard>,
    /// Where failures are audited.
    pub plane: Arc<ControlPlane>,
}

/// Middleware: lets requests with a valid key through, with their [`Actor`].
pub async fn require_key(
    State(state): State<KeyCheck>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let guard = &state.guard;
    let now = Instant::now();
    let held = guard.failures().held(Client::of(peer.ip()), now);
    if let Some(left) = held {
        guard.held_off.fetch_add(1, Relaxed);
        let retry_after = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        crate::log_throttled!(info, client = %peer, path = %req.uri().path(), retry_after,
            "admin API: request refused, client held off after wrong keys");
        return too_many(retry_after);
    }
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_key);
    if let Some(actor) = key.and_then(|k| guard.keys.check(k)) {
        guard.failures().success(peer.ip());
        req.extensions_mut().insert(actor);
        return next.run(req).await;
    }
    guard.failed.fetch_add(1, Relaxed);
    let reason = if key.is_none() {
        "missing bearer key"
    } else {
        "unknown API key"
    };
    let failure = guard.failures().failure(peer.ip(), key.is_some(), now);
    crate::log_throttled!(warn, client = %peer, path = %req.uri().path(), %reason,
        "admin API: authentication failed");
    if let Some(hold) = failure.held_for {
        crate::log_throttled!(warn, client = %peer, hold_secs = hold.as_secs_f64(),
            "admin API: client held off after repeated wrong keys");
    }
    if let Some(failures) = failure.audit {
        state.plane.record(NewEvent::now(
            "admin.auth_failed",
            "admin",
            failure.client.to_string(),
            serde_json::json!({
                "client": failure.client.to_string(),
                "failures": failures,
                "method": req.method().as_str(),
                "path": req.uri().path(),
                "reason": reason,
            }),
        ));
    }
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", reason).into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// 429 with `Retry-After` (whole seconds, rounded up).
fn too_many(secs: u64) -> Response {
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_auth_failures",
        format!("too many wrong API keys from this address; retry after {secs} s"),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

/// The key of an `Authorization: Bearer KEY` value; the scheme is case-insensitive
/// (RFC 9110 §11.1), so `bearer KEY` and `BEARER KEY` count too.
fn bearer_key(value: &str) -> Option<&str> {
    let (scheme, key) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

#[cfg(test)]
mod bearer_tests {
    #[test]
    fn the_scheme_is_case_insensitive_and_the_key_exact() {
        assert_eq!(super::bearer_key("Bearer k1"), Some("k1"));
        assert_eq!(super::bearer_key("bearer k1"), Some("k1"));
        assert_eq!(super::bearer_key("BEARER  k1 "), Some("k1"));
        assert_eq!(super::bearer_key("Basic k1"), None);
        assert_eq!(super::bearer_key("Bearerk1"), None);
    }
}
