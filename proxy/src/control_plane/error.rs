//! Errors of control-plane operations, in the categories the admin API turns into
//! status codes.

use crate::state::StoreError;

/// What kind of failure (maps to an HTTP status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is invalid (400).
    BadRequest,
    /// No such object (404).
    NotFound,
    /// It clashes with another object (409).
    Conflict,
    /// The object is declared in edge.yml and read-only here (403).
    Static,
    /// Something failed inside (500).
    Internal,
    /// The shared state cannot be reached; nothing changed (503).
    Unavailable,
}

/// A failed operation: kind, a stable machine-readable code, a message for people.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PlaneError {
    /// Category.
    pub kind: ErrorKind,
    /// Stable code (`invalid_policy`, `not_found`, `port_in_use`, …).
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
}

impl PlaneError {
    /// A new error.
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
        }
    }

    /// 404 for an object id.
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            ErrorKind::NotFound,
            "not_found",
            format!("no {what} with id {id}"),
        )
    }

    /// 403 for an object from edge.yml.
    pub fn static_object(what: &str, id: &str) -> Self {
        Self::new(
            ErrorKind::Static,
            "static_object",
            format!("{what} {id} is declared in edge.yml; edit the file and reload instead"),
        )
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, code, message)
    }
}

impl From<StoreError> for PlaneError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self::new(ErrorKind::Conflict, "write_conflict", m),
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "admin write refused: shared state unavailable");
                Self::new(ErrorKind::Unavailable, "state_unavailable", e.to_string())
            }
            StoreError::Failed(_) => {
                tracing::error!(error = %e, "state store failed");
                Self::new(ErrorKind::Internal, "store_failed", e.to_string())
            }
        }
    }
}
