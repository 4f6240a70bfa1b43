//! How current a read is: every `GET` under `/v1` of an edge on a shared state (etcd)
//! carries the state's freshness in headers, so a client reading through an edge that
//! lost etcd knows the answer may be stale and by how much.
//!
//! - `Sluice-State-Following`: `true` while this edge's watch is up (its answers are
//!   current to within the watch's delay, milliseconds on a LAN), `false` otherwise.
//! - `Sluice-State-Revision`: the shared revision the answer reflects.
//! - `Sluice-State-Lag-Revisions`: changes etcd has shown that are not applied here yet.
//! - `Sluice-State-Contact-Age-Ms`: milliseconds since etcd last answered (absent
//!   until it has answered once): with `following: false`, any change made elsewhere
//!   since then may be missing from the answer.
//! - `Sluice-State-Queued-Events`: audit events recorded here while etcd was away
//!   and not stored yet, so not in `/v1/events` (absent when none).
//! - `Sluice-State-Loaded`: `false` while the shared state has never been loaded (the
//!   edge then knows only edge.yml's objects).
//!
//! A local store (SQLite, memory) is written only by this edge and is always current:
//! its answers carry none of these.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method},
    middleware::Next,
    response::Response,
};

use crate::{control_plane::ControlPlane, state::StoreStatus};

/// Adds the freshness headers to the answer of a read.
pub async fn state_headers(
    State(plane): State<Arc<ControlPlane>>,
    request: Request,
    next: Next,
) -> Response {
    let read = request.method() == Method::GET;
    let mut response = next.run(request).await;
    if read {
        let status = plane.state_status().store;
        if status.backend == "etcd" {
            add(response.headers_mut(), &status);
        }
    }
    response
}

fn add(headers: &mut HeaderMap, status: &StoreStatus) {
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    put("sluice-state-loaded", status.loaded.to_string());
    put("sluice-state-following", status.following.to_string());
    put("sluice-state-revision", status.revision.to_string());
    put(
        "sluice-state-lag-revisions",
        status.lag_revisions.to_string(),
    );
    if status.queued_events > 0 {
        put(
            "sluice-state-queued-events",
            status.queued_events.to_string(),
        );
    }
    if let Some(age) = status.last_contact_age_ms {
        put("sluice-state-contact-age-ms", age.to_string());
    }
}
