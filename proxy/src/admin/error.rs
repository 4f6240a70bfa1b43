//! API errors: a status code and a body `{"error": {"code": …, "message": …}}`.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};

use crate::control_plane::{ErrorKind, PlaneError};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// Any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<PlaneError> for ApiError {
    fn from(e: PlaneError) -> Self {
        let status = match e.kind {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Static => StatusCode::FORBIDDEN,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.code, e.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body =
            serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        if self.code == "invalid_policy" {
            if let Some((line, column)) = line_and_column(&self.message) {
                body["error"]["line"] = line.into();
                body["error"]["column"] = column.into();
            }
        }
        (self.status, Json(body)).into_response()
    }
}

/// `line L column C` as the policy engine writes it.
fn line_and_column(message: &str) -> Option<(u64, u64)> {
    let rest = &message[message.find("line ")? + 5..];
    let (line, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("column ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.parse().ok()?, column.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_line_and_column() {
        assert_eq!(
            super::line_and_column("invalid traffic policy: line 4 column 11: bad CIDR"),
            Some((4, 11))
        );
        assert_eq!(super::line_and_column("no position"), None);
    }
}
