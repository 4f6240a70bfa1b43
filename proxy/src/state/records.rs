//! The objects the control plane stores, as plain data (serialised as the admin API
//! shows them).

use serde::{Deserialize, Serialize};

/// A cloud endpoint created through the admin API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointRecord {
    /// `ep_…`.
    pub id: String,
    /// `tcp://ADDR:PORT` or `tls://HOST`.
    pub url: String,
    /// Free text.
    pub description: String,
    /// The traffic policy as given (YAML or JSON text; JSON is YAML).
    pub traffic_policy: String,
    /// Idle timeout of forwarded connections in seconds (0: none).
    pub idle_timeout_secs: u64,
    /// Seconds an upstream may take to start its response, as given (None: the
    /// default; HTTP endpoints only).
    #[serde(default)]
    pub response_timeout_secs: Option<u64>,
    /// The reservation the endpoint's port came from, if any.
    pub reserved_addr_id: Option<String>,
    /// Most connections at once (None: unlimited).
    pub max_connections: Option<usize>,
    /// Most connections per client IP (None: the edge-wide default).
    pub max_connections_per_ip: Option<u32>,
    /// TLS the edge terminates for this endpoint: its certificate and key files (paths
    /// on the edge host), if any.
    pub terminate_tls: Option<TlsPaths>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// Milliseconds since the epoch.
    pub updated_at: i64,
}

/// A certificate chain and its key, as PEM files on the edge host.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    /// PEM certificate chain (absolute path).
    pub cert: String,
    /// PEM private key (absolute path).
    pub key: String,
}

/// A reserved TCP address: one port or a range on one IP.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReservedAddr {
    /// `ra_…`.
    pub id: String,
    /// Listening IP (`0.0.0.0`, `::`, `127.0.0.1`, …).
    pub ip: String,
    /// First port of the range.
    pub port_start: u16,
    /// Last port of the range (= `port_start` for one port).
    pub port_end: u16,
    /// Free text.
    pub description: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
}

/// A service user created through the admin API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserRecord {
    /// `usr_…`.
    pub id: String,
    /// Unique name, shown in logs.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Deactivated users cannot connect; their sessions end.
    pub active: bool,
    /// Milliseconds since the epoch.
    pub created_at: i64,
}

/// An authtoken: only its hash is kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    /// `tok_…`.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Free text.
    pub description: String,
    /// `sha256:…` of the secret.
    #[serde(skip)]
    pub hash: String,
    /// `bind:PATTERN` rules; empty: may bind anything.
    pub acl: Vec<String>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// Last successful agent authentication.
    pub last_used_at: Option<i64>,
    /// Set once revoked; revoked tokens authenticate nobody.
    pub revoked_at: Option<i64>,
}

/// The owner of an internal URL.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UrlOwnerRecord {
    /// The internal URL, canonical (`tcp://db.internal:5432`).
    pub url: String,
    /// The owning service user (`usr_…` or `static:NAME`).
    pub user_id: String,
    /// How it came to own it: `first_bind`, `api` (`config` ones are not stored).
    pub source: String,
    /// Milliseconds since the epoch.
    pub assigned_at: i64,
}

/// An audit event about to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Milliseconds since the epoch.
    pub at: i64,
    /// `endpoint.created`, `session.started`, `token.revoked`, …
    pub kind: String,
    /// Who did it: `api:<key prefix>`, `config`, `user:<id>`, `edge`.
    pub actor: String,
    /// What it was done to (an object id or URL).
    pub subject: String,
    /// Details (old and new values, reasons).
    pub detail: serde_json::Value,
}

impl NewEvent {
    /// An event stamped now.
    pub fn now(
        kind: &str,
        actor: &str,
        subject: impl Into<String>,
        detail: serde_json::Value,
    ) -> Self {
        Self {
            at: crate::clock::wall_ms(),
            kind: kind.to_string(),
            actor: actor.to_string(),
            subject: subject.into(),
            detail,
        }
    }
}

/// A stored audit event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    /// Increasing id (paging cursor).
    pub id: i64,
    /// Milliseconds since the epoch.
    pub at: i64,
    /// Event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Who did it.
    pub actor: String,
    /// What it was done to.
    pub subject: String,
    /// Details.
    pub detail: serde_json::Value,
    /// The edge that recorded it (in a fleet sharing its state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge: Option<String>,
}

/// Which audit events to return.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only these types (prefix match with a trailing `*`, e.g. `session.*`); empty: all.
    pub kinds: Vec<String>,
    /// At or after (ms).
    pub since: Option<i64>,
    /// At or before (ms).
    pub until: Option<i64>,
    /// Only ids below this (paging).
    pub before_id: Option<i64>,
    /// Most events returned.
    pub limit: usize,
}

impl EventQuery {
    /// Whether `e` passes the type and time filters (not the id cursor or the limit).
    pub fn matches(&self, e: &EventRecord) -> bool {
        self.since.is_none_or(|t| e.at >= t)
            && self.until.is_none_or(|t| e.at <= t)
            && (self.kinds.is_empty()
                || self.kinds.iter().any(|k| match k.strip_suffix('*') {
                    Some(prefix) => e.kind.starts_with(prefix),
                    None => e.kind == *k,
                }))
    }
}
