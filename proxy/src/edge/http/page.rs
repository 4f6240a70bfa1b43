//! The responses the edge itself gives on an `http://` endpoint: an error page in plain
//! text with its status and a `Sluice-Error-Code` header (as ngrok's
//! `ngrok-error-code`), so a client or its operator can tell the edge's refusals from
//! the upstream's own answers.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::{header, Response, StatusCode};

use super::stall::Flowing;

/// A body: the client's request or the upstream's response, on its way through, or one
/// of the edge's pages.
pub type Body = Either<Flowing, Full<Bytes>>;

/// The header naming why the edge answered itself.
pub const ERROR_CODE_HEADER: &str = "sluice-error-code";

/// Why the edge answered a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The request names no host.
    NoHost,
    /// No endpoint serves the host.
    NoEndpoint,
    /// The endpoint's traffic policy denied the client.
    Denied,
    /// Over the endpoint's connection limits.
    OverLimit,
    /// No agent session serves the policy's target.
    AgentOffline,
    /// No pool member could connect the upstream.
    UpstreamUnreachable,
    /// The upstream's answer was not a valid HTTP response.
    UpstreamFailed,
    /// The upstream did not start its response in time.
    UpstreamTimeout,
    /// A `rate-limit` of the endpoint's policy refused the request.
    RateLimited,
    /// The endpoint's policy forwards only some requests, and not this one.
    NoRoute,
}

impl Code {
    /// The code in the header and the page.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::NoHost => "ERR_SLUICE_NO_HOST",
            Code::NoEndpoint => "ERR_SLUICE_NO_ENDPOINT",
            Code::Denied => "ERR_SLUICE_DENIED",
            Code::OverLimit => "ERR_SLUICE_OVER_LIMIT",
            Code::AgentOffline => "ERR_SLUICE_AGENT_OFFLINE",
            Code::UpstreamUnreachable => "ERR_SLUICE_UPSTREAM_UNREACHABLE",
            Code::UpstreamFailed => "ERR_SLUICE_UPSTREAM_FAILED",
            Code::UpstreamTimeout => "ERR_SLUICE_UPSTREAM_TIMEOUT",
            Code::RateLimited => "ERR_SLUICE_RATE_LIMITED",
            Code::NoRoute => "ERR_SLUICE_NO_ROUTE",
        }
    }

    /// Its status.
    pub fn status(self) -> StatusCode {
        match self {
            Code::NoHost => StatusCode::BAD_REQUEST,
            Code::NoEndpoint => StatusCode::NOT_FOUND,
            Code::Denied => StatusCode::FORBIDDEN,
            Code::OverLimit | Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::NoRoute => StatusCode::NOT_FOUND,
            Code::AgentOffline | Code::UpstreamUnreachable | Code::UpstreamFailed => {
                StatusCode::BAD_GATEWAY
            }
            Code::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// What the page says.
    fn message(self) -> &'static str {
        match self {
            Code::NoHost => "the request names no host",
            Code::NoEndpoint => "no endpoint serves this host",
            Code::Denied => "access denied by the endpoint's traffic policy",
            Code::OverLimit => "too many concurrent requests for this endpoint",
            Code::AgentOffline => {
                "the service behind this endpoint is offline (no agent serves it)"
            }
            Code::UpstreamUnreachable => {
                "the agent could not reach the service behind this endpoint"
            }
            Code::UpstreamFailed => {
                "the service behind this endpoint did not answer with a valid HTTP response"
            }
            Code::UpstreamTimeout => "the service behind this endpoint did not answer in time",
            Code::RateLimited => "too many requests: the endpoint's rate limit was reached",
            Code::NoRoute => "no rule of the endpoint's traffic policy forwards this request",
        }
    }
}

/// The edge's page for `code`.
pub fn error(code: Code) -> Response<Body> {
    error_with_status(code, code.status())
}

/// The response a rule of the endpoint's policy gave: a `custom-response` as written,
/// a refusal as the edge's page for it (with the rule's status and headers, such as
/// `Retry-After`).
pub fn policy_answer(answer: sluice_policy::Answer) -> Response<Body> {
    let mut response = match answer.refusal {
        None => {
            let mut r = Response::new(Either::Right(Full::new(Bytes::from(answer.body))));
            *r.status_mut() = answer.status;
            r
        }
        Some(sluice_policy::Refusal::RateLimited) => {
            error_with_status(Code::RateLimited, answer.status)
        }
        Some(_) => error_with_status(Code::Denied, answer.status),
    };
    for (name, value) in answer.headers {
        response.headers_mut().insert(name, value);
    }
    response
}

fn error_with_status(code: Code, status: StatusCode) -> Response<Body> {
    let text = format!(
        "{} {}\n{}\n",
        status.as_u16(),
        code.message(),
        code.as_str()
    );
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(text))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        ERROR_CODE_HEADER,
        header::HeaderValue::from_static(code.as_str()),
    );
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[test]
    fn a_page_has_its_status_code_header_and_a_plain_body() {
        let page = error(Code::Denied);
        assert_eq!(page.status(), StatusCode::FORBIDDEN);
        assert_eq!(page.headers()[ERROR_CODE_HEADER], "ERR_SLUICE_DENIED");
        let Either::Right(body) = page.into_body() else {
            panic!("an edge page")
        };
        let bytes = futures_lite_block_on(body.collect()).unwrap().to_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with("403 access denied"), "{text}");
        assert!(text.contains("ERR_SLUICE_DENIED"), "{text}");
    }

    fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
        crate::runtime::block_on(crate::runtime::Driver::Legacy, || f).unwrap()
    }
}
