//! CEL in HTTP rules, as ngrok's Traffic Policy writes it: a rule's `expressions`
//! ([`Expression`], all must be true for its actions to run) and `${...}` in header
//! values and response bodies ([`Template`]), evaluated by cel-rust's interpreter over
//! the variables of one request ([`Facts`]): `req.method`, `req.url.path`, `req.headers`,
//! `conn.client_ip`, `res.status_code`, … (the full list is in docs/policy.md), plus
//! ngrok's `inCidrRange(ip, cidr)` and `inCidrRanges(ip, [cidr, …])`.
//!
//! Expressions compile when the policy is parsed (a syntax error names the expression);
//! an expression whose evaluation fails (a missing header indexed, a type mismatch)
//! counts as false, as a rule that does not apply.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use cel::{objects::Key, Context, ExecutionError, Program, Value};
use serde::{Serialize, Serializer};

use crate::Cidr;

/// One CEL expression, compiled.
#[derive(Clone)]
pub struct Expression {
    source: String,
    program: Arc<Program>,
}

impl Expression {
    /// Compiles `source`; the error is the parser's, with a caret under the problem.
    pub fn parse(source: &str) -> Result<Expression, String> {
        let program =
            Program::compile(source).map_err(|e| format!("invalid expression `{source}`: {e}"))?;
        Ok(Expression {
            source: source.to_owned(),
            program: Arc::new(program),
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Its syntax tree (macros expanded).
    pub(crate) fn tree(&self) -> &cel::IdedExpr {
        self.program.expression()
    }

    /// Whether it holds in `scope` (an error or a value that is not a bool: no).
    pub fn holds(&self, scope: &Scope) -> bool {
        matches!(self.program.execute(&scope.ctx), Ok(Value::Bool(true)))
    }

    /// Its value in `scope` as text (a list's items joined by `,`); `None` when it fails.
    pub fn text(&self, scope: &Scope) -> Option<String> {
        self.program.execute(&scope.ctx).ok().map(|v| display(&v))
    }
}

impl PartialEq for Expression {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}
impl Eq for Expression {}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expression({:?})", self.source)
    }
}

impl Serialize for Expression {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// Text with `${expression}` parts, filled in per request (`X-Client: ${conn.client_ip}`).
#[derive(Clone)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Clone)]
enum Part {
    Text(String),
    Expr(Expression),
}

impl Template {
    /// Splits `source` into text and `${...}` expressions (each compiled).
    pub fn parse(source: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let inner = &rest[start + 2..];
            let end = closing_brace(inner)
                .ok_or_else(|| format!("`{source}`: `${{` without its closing `}}`"))?;
            parts.push(Part::Expr(Expression::parse(inner[..end].trim())?));
            rest = &inner[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template {
            source: source.to_owned(),
            parts,
        })
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether it has any `${...}` (else it is the same text for every request).
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// The text in the scope `scope` gives (asked for only when the template has
    /// expressions); an expression that fails gives the empty string.
    pub fn render<'s>(&self, scope: impl FnOnce() -> &'s Scope) -> String {
        if let [Part::Text(t)] = self.parts.as_slice() {
            return t.clone();
        }
        if self.parts.is_empty() {
            return String::new();
        }
        let scope = scope();
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Expr(e) => out.push_str(&e.text(scope).unwrap_or_default()),
            }
        }
        out
    }
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}
impl Eq for Template {}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// The index of the `}` closing an expression that starts at `text[0]` (braces of map
/// literals and quoted strings skipped).
fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if let Some(q) = quote {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                _ if c == q => quote = None,
                _ => {}
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// A value as text: strings as they are, lists joined by `,`.
fn display(value: &Value) -> String {
    match value {
        Value::String(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        Value::List(items) => items.iter().map(display).collect::<Vec<_>>().join(","),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    }
}

/// What expressions may read of one request (and, in `on_http_response`, its response).
pub struct Facts<'a> {
    /// The client and the address it connected to.
    pub client: SocketAddr,
    /// The edge's address the client connected to.
    pub server: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The request (after the actions that ran before: a rewritten URL, added headers).
    pub request: &'a http::request::Parts,
    /// The response, in `on_http_response`.
    pub response: Option<&'a http::response::Parts>,
    /// The client's country (`conn.geo.country_code`), when the policy reads it and
    /// the edge knows it.
    pub country: Option<&'a str>,
    /// What `set-vars` set so far in this phase (`vars.*`).
    pub(crate) vars: &'a [(String, Var)],
}

/// The variables of one request (or response) bound for CEL, with the standard library
/// and ngrok's functions: built once per phase and reused by every expression until an
/// action changes the request.
pub struct Scope {
    ctx: Context<'static, 'static>,
}

/// The standard library, shared by every scope.
static ENV: std::sync::LazyLock<Arc<cel::Env>> =
    std::sync::LazyLock::new(|| Arc::new(cel::Env::stdlib()));

impl Scope {
    /// Binds `conn`, `req` and (in `on_http_response`) `res` from `facts`.
    pub fn new(facts: &Facts<'_>) -> Scope {
        let mut ctx = Context::with_env(ENV.clone());
        add_functions(&mut ctx);
        ctx.add_variable_from_value("conn", facts.conn());
        ctx.add_variable_from_value("req", facts.req());
        if let Some(response) = facts.response {
            ctx.add_variable_from_value("res", res(response));
        }
        ctx.add_variable_from_value("vars", vars_map(facts.vars));
        Scope { ctx }
    }
}

/// What `on_tcp_connect` expressions may read of a connection (`conn.*`), and the
/// variables `set-vars` set so far (`vars.*`).
#[derive(Default)]
pub(crate) struct ConnFacts {
    pub(crate) client: Option<SocketAddr>,
    pub(crate) server: Option<SocketAddr>,
    pub(crate) sni: Option<String>,
    pub(crate) country: Option<String>,
    pub(crate) vars: Vec<(String, Var)>,
}

/// A variable's value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Var {
    Bool(bool),
    Int(i64),
    Text(String),
}

impl Scope {
    /// Binds `conn` (`client_ip`, `client_port`, `server_ip`, `server_port`,
    /// `tls.sni`, `geo.country_code`; what is unknown is absent) and `vars`.
    pub(crate) fn connection(facts: &ConnFacts) -> Scope {
        let mut ctx = Context::with_env(ENV.clone());
        add_functions(&mut ctx);
        let mut conn: HashMap<Key, Value> = HashMap::new();
        if let Some(c) = facts.client {
            conn.insert(key("client_ip"), c.ip().to_string().into());
            conn.insert(key("client_port"), i64::from(c.port()).into());
        }
        if let Some(s) = facts.server {
            conn.insert(key("server_ip"), s.ip().to_string().into());
            conn.insert(key("server_port"), i64::from(s.port()).into());
        }
        let mut tls: HashMap<Key, Value> = HashMap::new();
        if let Some(sni) = &facts.sni {
            tls.insert(key("sni"), sni.clone().into());
        }
        conn.insert(key("tls"), tls.into());
        let mut geo: HashMap<Key, Value> = HashMap::new();
        if let Some(code) = &facts.country {
            geo.insert(key("country_code"), code.clone().into());
        }
        conn.insert(key("geo"), geo.into());
        ctx.add_variable_from_value("conn", conn);
        ctx.add_variable_from_value("vars", vars_map(&facts.vars));
        Scope { ctx }
    }
}

/// `vars.*` for CEL.
fn vars_map(vars: &[(String, Var)]) -> HashMap<Key, Value> {
    vars.iter()
        .map(|(name, v)| {
            let value = match v {
                Var::Bool(b) => Value::Bool(*b),
                Var::Int(i) => Value::Int(*i),
                Var::Text(t) => t.clone().into(),
            };
            (key(name), value)
        })
        .collect()
}

fn add_functions(ctx: &mut Context<'static, 'static>) {
    ctx.add_function("inCidrRange", |ip: Arc<String>, cidr: Arc<String>| {
        in_ranges(&ip, std::slice::from_ref(&cidr))
    })
    .expect("inCidrRange is not a standard function");
    ctx.add_function(
        "inCidrRanges",
        |ip: Arc<String>, cidrs: Arc<Vec<Value>>| -> Result<bool, ExecutionError> {
            let cidrs: Vec<Arc<String>> = cidrs
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(ExecutionError::function_error(
                        "inCidrRanges",
                        format!("expected a list of CIDR strings, found {other:?}"),
                    )),
                })
                .collect::<Result<_, _>>()?;
            in_ranges(&ip, &cidrs)
        },
    )
    .expect("inCidrRanges is not a standard function");
}

fn in_ranges(ip: &str, cidrs: &[Arc<String>]) -> Result<bool, ExecutionError> {
    let ip: IpAddr = ip.parse().map_err(|_| {
        ExecutionError::function_error("inCidrRange", format!("`{ip}` is not an IP address"))
    })?;
    for cidr in cidrs {
        let cidr: Cidr = cidr
            .parse()
            .map_err(|e| ExecutionError::function_error("inCidrRange", e))?;
        if cidr.contains(ip) {
            return Ok(true);
        }
    }
    Ok(false)
}

impl Facts<'_> {
    fn conn(&self) -> HashMap<Key, Value> {
        let mut geo: HashMap<Key, Value> = HashMap::new();
        if let Some(code) = self.country {
            geo.insert(key("country_code"), code.to_owned().into());
        }
        map([
            ("client_ip", self.client.ip().to_string().into()),
            ("client_port", i64::from(self.client.port()).into()),
            ("server_ip", self.server.ip().to_string().into()),
            ("server_port", i64::from(self.server.port()).into()),
            ("geo", geo.into()),
        ])
    }

    fn req(&self) -> HashMap<Key, Value> {
        let r = self.request;
        let host = r
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| r.uri.authority().map(|a| a.as_str()))
            .unwrap_or_default()
            .to_owned();
        let path = r.uri.path().to_owned();
        let query = r.uri.query().unwrap_or_default().to_owned();
        let raw = format!(
            "{}://{host}{}",
            self.scheme,
            r.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        let mut params: HashMap<Key, Vec<Value>> = HashMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params.entry(key(k)).or_default().push(v.into());
        }
        let url = map([
            ("scheme", self.scheme.into()),
            ("host", host.clone().into()),
            ("path", path.into()),
            ("query", query.into()),
            ("raw", raw.into()),
        ]);
        map([
            ("method", r.method.as_str().into()),
            ("host", host.into()),
            ("version", format!("{:?}", r.version).into()),
            ("url", url.into()),
            ("headers", headers(&r.headers).into()),
            ("query_params", lists(params).into()),
            (
                "content_length",
                r.headers
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse::<i64>().ok())
                    .unwrap_or(0)
                    .into(),
            ),
        ])
    }
}

fn res(response: &http::response::Parts) -> HashMap<Key, Value> {
    map([
        ("status_code", i64::from(response.status.as_u16()).into()),
        ("headers", headers(&response.headers).into()),
    ])
}

/// Header names in lower case, each with the list of its values.
fn headers(headers: &http::HeaderMap) -> HashMap<Key, Value> {
    let mut out: HashMap<Key, Vec<Value>> = HashMap::new();
    for (name, value) in headers {
        out.entry(key(name.as_str())).or_default().push(
            String::from_utf8_lossy(value.as_bytes())
                .into_owned()
                .into(),
        );
    }
    lists(out)
}

fn lists(m: HashMap<Key, Vec<Value>>) -> HashMap<Key, Value> {
    m.into_iter()
        .map(|(k, v)| (k, Value::List(Arc::new(v))))
        .collect()
}

fn key(name: &str) -> Key {
    Key::String(Arc::new(name.to_owned()))
}

fn map<const N: usize>(entries: [(&str, Value); N]) -> HashMap<Key, Value> {
    entries.into_iter().map(|(k, v)| (key(k), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts_for(req: &http::request::Parts) -> Facts<'_> {
        Facts {
            client: "203.0.113.7:40000".parse().unwrap(),
            server: "127.0.0.1:8080".parse().unwrap(),
            scheme: "https",
            request: req,
            response: None,
            country: None,
            vars: &[],
        }
    }

    fn request() -> http::request::Parts {
        http::Request::builder()
            .method("POST")
            .uri("/api/v2/orders?limit=5&tag=a&tag=b")
            .header("host", "api.example.com")
            .header("x-team", "billing")
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn expressions_read_the_request_and_the_connection() {
        let req = request();
        let scope = Scope::new(&facts_for(&req));
        for (source, expected) in [
            ("req.method == 'POST'", true),
            ("req.url.path.startsWith('/api/')", true),
            ("req.url.path.matches('^/api/v[0-9]+/')", true),
            ("req.url.query == 'limit=5&tag=a&tag=b'", true),
            ("req.query_params['tag'] == ['a', 'b']", true),
            ("req.host == 'api.example.com'", true),
            (
                "req.url.raw == 'https://api.example.com/api/v2/orders?limit=5&tag=a&tag=b'",
                true,
            ),
            (
                "'x-team' in req.headers && req.headers['x-team'][0] == 'billing'",
                true,
            ),
            ("'x-other' in req.headers", false),
            ("req.headers['x-other'][0] == 'x'", false),
            (
                "conn.client_ip == '203.0.113.7' && conn.client_port == 40000",
                true,
            ),
            ("inCidrRange(conn.client_ip, '203.0.113.0/24')", true),
            (
                "inCidrRanges(conn.client_ip, ['10.0.0.0/8', '192.168.0.0/16'])",
                false,
            ),
            ("inCidrRange(conn.client_ip, 'not a cidr')", false),
            ("req.method", false),
        ] {
            let e = Expression::parse(source).unwrap();
            assert_eq!(e.holds(&scope), expected, "{source}");
        }
    }

    #[test]
    fn templates_fill_in_expressions_and_keep_the_text() {
        let req = request();
        let scope = Scope::new(&facts_for(&req));
        let t = Template::parse(
            "client=${conn.client_ip} path=${req.url.path}; tags=${req.query_params['tag']}",
        )
        .unwrap();
        assert_eq!(
            t.render(|| &scope),
            "client=203.0.113.7 path=/api/v2/orders; tags=a,b"
        );
        assert!(!t.is_constant());
        let m = Template::parse("${ {'a': 'x'}['a'] }!").unwrap();
        assert_eq!(m.render(|| &scope), "x!");
        let plain = Template::parse("just text").unwrap();
        assert!(plain.is_constant());
        assert_eq!(plain.render(|| unreachable!("no expression")), "just text");
    }

    #[test]
    fn a_broken_expression_is_refused_with_where_it_broke() {
        let e = Expression::parse("req.method ==").unwrap_err();
        assert!(e.contains("req.method =="), "{e}");
        let t = Template::parse("x ${conn.client_ip").unwrap_err();
        assert!(t.contains("closing"), "{t}");
    }

    #[test]
    fn the_response_is_there_in_the_response_phase() {
        let req = request();
        let res = http::Response::builder()
            .status(503)
            .header("retry-after", "3")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let scope = Scope::new(&Facts {
            response: Some(&res),
            ..facts_for(&req)
        });
        let e = Expression::parse("res.status_code >= 500 && res.headers['retry-after'][0] == '3'")
            .unwrap();
        assert!(e.holds(&scope));
    }
}
