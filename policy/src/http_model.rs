//! The HTTP phases of a policy, `on_http_request` and `on_http_response`: their
//! [`HttpRule`]s and [`HttpAction`]s in ngrok's Traffic Policy shape, as plain data
//! (parsed and validated in `http_parse.rs`, run in `http_eval.rs`).

use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::{
    expr::{Expression, Template},
    log_vars::{Log, SetVars},
    restrict::RestrictIps,
    InternalUrl,
};

/// One rule of an HTTP phase: its actions run, in order, on a request (or response)
/// for which every one of its `expressions` holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HttpRule {
    /// Shown in logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// CEL; all must hold (none: the rule applies to everything).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expressions: Vec<Expression>,
    /// Run in order; one that answers or forwards ends the phase.
    pub actions: Vec<HttpAction>,
}

/// One action of an HTTP rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "config", rename_all = "kebab-case")]
pub enum HttpAction {
    /// A client outside `allow` or inside `deny` gets 403 (or is only logged when
    /// `enforce` is false).
    RestrictIps(RestrictIps),
    /// Answer with `status_code` (403 by default).
    Deny(HttpDeny),
    /// Send the request to an internal endpoint.
    ForwardInternal(HttpForward),
    /// Set request (or response) headers.
    AddHeaders(AddHeaders),
    /// Remove request (or response) headers.
    RemoveHeaders(RemoveHeaders),
    /// Answer with this response instead of the upstream's.
    CustomResponse(CustomResponse),
    /// Rewrite the request's path and query.
    UrlRewrite(UrlRewrite),
    /// Answer 429 past `capacity` requests per `rate` per bucket.
    RateLimit(RateLimit),
    /// Close the client's connection without an answer (an HTTP/2 client's stream is
    /// reset).
    CloseConnection,
    /// Log an event with this metadata and go on.
    Log(Log),
    /// Set variables later expressions and templates read as `vars.NAME`, and go on.
    SetVars(SetVars),
}

impl HttpAction {
    /// The `type:` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            HttpAction::RestrictIps(_) => "restrict-ips",
            HttpAction::Deny(_) => "deny",
            HttpAction::ForwardInternal(_) => "forward-internal",
            HttpAction::AddHeaders(_) => "add-headers",
            HttpAction::RemoveHeaders(_) => "remove-headers",
            HttpAction::CustomResponse(_) => "custom-response",
            HttpAction::UrlRewrite(_) => "url-rewrite",
            HttpAction::RateLimit(_) => "rate-limit",
            HttpAction::CloseConnection => "close-connection",
            HttpAction::Log(_) => "log",
            HttpAction::SetVars(_) => "set-vars",
        }
    }

    /// Whether this action decides every request that reaches it (answers it, or
    /// forwards it with `on_error: halt`).
    pub fn always_decides(&self) -> bool {
        match self {
            HttpAction::Deny(_) | HttpAction::CustomResponse(_) | HttpAction::CloseConnection => {
                true
            }
            HttpAction::ForwardInternal(f) => f.on_error == OnError::Halt,
            _ => false,
        }
    }
}

/// Config of `deny` in an HTTP phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HttpDeny {
    /// The status answered (400–599).
    pub status_code: u16,
}

/// What a `forward-internal` whose target cannot take the request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Answer with the edge's error page (the default).
    Halt,
    /// Go on with the next action.
    Continue,
}

/// Config of `forward-internal` in an HTTP phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HttpForward {
    /// The internal endpoint (`http://NAME.internal`).
    pub url: InternalUrl,
    /// When no member of `url` can take the request.
    pub on_error: OnError,
}

/// Config of `add-headers`: name (lower case) and value, in the order written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddHeaders {
    /// Header names and value templates.
    pub headers: Vec<(http::HeaderName, Template)>,
}

/// Config of `remove-headers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoveHeaders {
    /// Header names.
    pub headers: Vec<http::HeaderName>,
}

/// Config of `custom-response`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomResponse {
    /// The status (100–599; 200 by default).
    pub status_code: u16,
    /// The body (`${...}` filled in).
    pub body: Template,
    /// Response headers.
    pub headers: Vec<(http::HeaderName, Template)>,
}

/// Config of `url-rewrite`: the first match of `from` in the request's path and query
/// (`/path?query`) replaced by `to` (`$1`, `${name}` for its groups).
#[derive(Clone, Debug)]
pub struct UrlRewrite {
    /// The pattern.
    pub from: regex::Regex,
    /// The replacement.
    pub to: String,
}

impl PartialEq for UrlRewrite {
    fn eq(&self, other: &Self) -> bool {
        self.from.as_str() == other.from.as_str() && self.to == other.to
    }
}
impl Eq for UrlRewrite {}

/// Config of `rate-limit` (the sliding window algorithm): at most `capacity` requests
/// per `rate` for each bucket, a bucket being the values of `bucket_key` (by default
/// the client's address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Shown in logs.
    pub name: Option<String>,
    /// Requests allowed per window.
    pub capacity: u32,
    /// The window.
    pub rate: Duration,
    /// CEL expressions whose values name the bucket.
    pub bucket_key: Vec<Expression>,
}

fn headers_map<S: Serializer>(
    headers: &[(http::HeaderName, Template)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(headers.len()))?;
    for (name, value) in headers {
        m.serialize_entry(name.as_str(), value)?;
    }
    m.end()
}

impl Serialize for AddHeaders {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(serialize_with = "headers_map")]
            headers: &'a [(http::HeaderName, Template)],
        }
        Out {
            headers: &self.headers,
        }
        .serialize(s)
    }
}

impl Serialize for RemoveHeaders {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            headers: Vec<&'a str>,
        }
        Out {
            headers: self.headers.iter().map(|h| h.as_str()).collect(),
        }
        .serialize(s)
    }
}

impl Serialize for CustomResponse {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            status_code: u16,
            body: &'a Template,
            #[serde(
                serialize_with = "headers_map",
                skip_serializing_if = "<[_]>::is_empty"
            )]
            headers: &'a [(http::HeaderName, Template)],
        }
        Out {
            status_code: self.status_code,
            body: &self.body,
            headers: &self.headers,
        }
        .serialize(s)
    }
}

impl Serialize for UrlRewrite {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            from: &'a str,
            to: &'a str,
        }
        Out {
            from: self.from.as_str(),
            to: &self.to,
        }
        .serialize(s)
    }
}

impl Serialize for RateLimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            name: &'a Option<String>,
            algorithm: &'static str,
            capacity: u32,
            rate: String,
            bucket_key: &'a [Expression],
        }
        Out {
            name: &self.name,
            algorithm: "sliding_window",
            capacity: self.capacity,
            rate: format!("{}s", self.rate.as_secs_f64()),
            bucket_key: &self.bucket_key,
        }
        .serialize(s)
    }
}
