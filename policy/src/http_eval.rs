//! Running the HTTP phases: [`HttpPhases`] (built with the compiled policy, holding
//! each `restrict-ips` as a compiled table and each `rate-limit`'s counters) and its
//! two entry points, [`HttpPhases::on_request`] and [`HttpPhases::on_response`].
//!
//! A phase runs its rules in order; a rule whose expressions all hold runs its actions
//! in order. Header and URL actions change the request (or response) in place, and
//! later expressions see the change. The first action that answers (`deny`,
//! `custom-response`, a failed `restrict-ips` or `rate-limit`) or forwards ends the
//! phase. A forward remembers where it stopped ([`Resume`]), so a `forward-internal`
//! with `on_error: continue` whose target cannot take the request goes on from the
//! next action. `close-connection` ends the phase with no answer at all; `log` and
//! `set-vars` go on (what they did is in [`Effects`] and in later expressions'
//! `vars.*`).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use http::{header::HeaderValue, HeaderName, StatusCode};

use crate::{
    expr::Template,
    http_model::{HttpAction, HttpRule, OnError},
    log_vars::VarValue,
    rate_limit::SlidingWindow,
    restrict::RestrictIps,
    scope::{Facts, Scope, Var},
    InternalUrl, PolicyError, TrafficPolicy,
};

/// Whether a client address passes one `restrict-ips` (a compiled lookup table, made
/// by the caller: compile.rs).
pub(crate) type Passes = Box<dyn Fn(std::net::IpAddr) -> bool + Send + Sync>;

/// The HTTP phases of a compiled policy.
#[derive(Debug, Default)]
pub struct HttpPhases {
    request: Vec<Compiled>,
    response: Vec<Compiled>,
    reads_geo: bool,
}

#[derive(Debug)]
struct Compiled {
    rule: HttpRule,
    /// Per action: what it needs at run time beyond its config.
    state: Vec<State>,
}

enum State {
    None,
    Restrict(Passes),
    Limit(SlidingWindow),
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::None => f.write_str("None"),
            State::Restrict(_) => f.write_str("Restrict(table)"),
            State::Limit(l) => write!(f, "Limit({l:?})"),
        }
    }
}

/// Where a phase stopped, to go on from (the action after a forward).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    rule: usize,
    action: usize,
}

/// The connection a request came on.
#[derive(Clone, Copy, Debug)]
pub struct Conn<'a> {
    /// The client.
    pub client: SocketAddr,
    /// The address it connected to.
    pub server: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The client's country from the edge's database, when the policy reads it
    /// ([`HttpPhases::reads_country`]) and the database knows the address.
    pub country: Option<&'a str>,
}

/// What a phase did besides its verdict: restrictions with `enforce: false` the client
/// failed (to log, not refuse), and the `log` actions it reached.
#[derive(Debug, Default)]
pub struct Effects {
    /// Rules whose `restrict-ips` (with `enforce: false`) would have refused.
    pub would_deny: Vec<String>,
    /// `log` actions reached, in order.
    pub logs: Vec<HttpLog>,
}

/// One `log` action a request (or response) reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLog {
    /// `on_http_request` or `on_http_response`.
    pub phase: &'static str,
    /// The rule's place in its phase (0-based).
    pub rule: usize,
    /// The rule's `name`.
    pub rule_name: Option<String>,
    /// Its metadata, `${...}` filled in, in key order.
    pub metadata: Vec<(String, String)>,
}

/// What `on_http_request` decided.
#[derive(Debug)]
pub enum RequestVerdict<'p> {
    /// Answer the client with this, not the upstream.
    Answer(Answer),
    /// Send the request to `url`; when it cannot be and `on_error` is `Continue`, call
    /// [`HttpPhases::on_request`] again from `resume`.
    Forward {
        /// The internal endpoint.
        url: &'p InternalUrl,
        /// What a failure to reach it does.
        on_error: OnError,
        /// Where the phase goes on.
        resume: Resume,
    },
    /// No action answered or forwarded: the connection's target (from
    /// `on_tcp_connect`) takes the request, if it has one.
    Pass,
    /// `close-connection`: close the client's connection without an answer.
    Close {
        /// The rule, as `rule 2 ("name")`.
        rule: String,
    },
}

/// What `on_http_response` decided.
#[derive(Debug)]
pub enum ResponseVerdict {
    /// Send the upstream's response (its headers as the actions changed them).
    Send,
    /// Answer with this instead.
    Answer(Answer),
    /// `close-connection`: close the client's connection without an answer.
    Close {
        /// The rule, as `rule 2 ("name")`.
        rule: String,
    },
}

/// A response the policy gives instead of the upstream's.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Its body.
    pub body: String,
    /// Why: a refusal (the edge's error code goes with it), or `None` for a
    /// `custom-response`.
    pub refusal: Option<Refusal>,
    /// The rule that answered, as `rule 2 ("name")`.
    pub rule: String,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `restrict-ips`.
    Restricted,
    /// `deny`.
    Denied,
    /// `rate-limit`.
    RateLimited,
}

impl HttpPhases {
    /// The phases of `policy`, each `restrict-ips` made a table by `restrict`.
    pub(crate) fn build(
        policy: &TrafficPolicy,
        restrict: &dyn Fn(&RestrictIps) -> Result<Passes, PolicyError>,
    ) -> Result<HttpPhases, PolicyError> {
        let reads_geo = policy
            .on_http_request
            .iter()
            .chain(&policy.on_http_response)
            .any(reads_geo);
        Ok(HttpPhases {
            request: compile_rules(&policy.on_http_request, restrict)?,
            response: compile_rules(&policy.on_http_response, restrict)?,
            reads_geo,
        })
    }

    /// Whether an expression or template reads `conn.geo` (the caller then looks the
    /// client's country up and puts it in [`Conn::country`]).
    pub fn reads_country(&self) -> bool {
        self.reads_geo
    }

    /// Whether the policy has any HTTP rule.
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }

    /// Whether it has `on_http_response` rules (the request's head is then kept for
    /// them).
    pub fn has_response_rules(&self) -> bool {
        !self.response.is_empty()
    }

    /// Runs `on_http_request` on `request` from `from` (the start: `Resume::default()`),
    /// changing it as its actions say; what else it did goes to `effects`.
    pub fn on_request<'p>(
        &'p self,
        request: &mut http::request::Parts,
        conn: Conn<'_>,
        from: Resume,
        effects: &mut Effects,
    ) -> RequestVerdict<'p> {
        let now = Instant::now();
        let mut scope = LazyScope::default();
        for (r, compiled) in self.request.iter().enumerate().skip(from.rule) {
            let first = if r == from.rule { from.action } else { 0 };
            if first == 0 && !applies(&compiled.rule, &mut scope, request, None, conn) {
                continue;
            }
            for (a, action) in compiled.rule.actions.iter().enumerate().skip(first) {
                let state = &compiled.state[a];
                let rule = || describe(&compiled.rule, r);
                match action {
                    HttpAction::RestrictIps(ri) => {
                        if let State::Restrict(passes) = state {
                            if !passes(conn.client.ip()) {
                                if ri.enforce {
                                    return RequestVerdict::Answer(refusal(
                                        StatusCode::FORBIDDEN,
                                        Refusal::Restricted,
                                        rule(),
                                    ));
                                }
                                effects.would_deny.push(rule());
                            }
                        }
                    }
                    HttpAction::Deny(d) => {
                        return RequestVerdict::Answer(refusal(
                            StatusCode::from_u16(d.status_code).unwrap_or(StatusCode::FORBIDDEN),
                            Refusal::Denied,
                            rule(),
                        ))
                    }
                    HttpAction::ForwardInternal(f) => {
                        return RequestVerdict::Forward {
                            url: &f.url,
                            on_error: f.on_error,
                            resume: Resume {
                                rule: r,
                                action: a + 1,
                            },
                        }
                    }
                    HttpAction::AddHeaders(h) => {
                        let values = render_all(&h.headers, &mut scope, request, None, conn);
                        for (name, value) in values {
                            request.headers.insert(name, value);
                        }
                        scope.reset();
                    }
                    HttpAction::RemoveHeaders(h) => {
                        for name in &h.headers {
                            request.headers.remove(name);
                        }
                        scope.reset();
                    }
                    HttpAction::CustomResponse(c) => {
                        return RequestVerdict::Answer(Answer {
                            status: StatusCode::from_u16(c.status_code).unwrap_or(StatusCode::OK),
                            headers: render_all(&c.headers, &mut scope, request, None, conn),
                            body: c.body.render(|| scope.get(request, None, conn)),
                            refusal: None,
                            rule: rule(),
                        });
                    }
                    HttpAction::UrlRewrite(u) => {
                        rewrite(request, &u.from, &u.to);
                        scope.reset();
                    }
                    HttpAction::CloseConnection => return RequestVerdict::Close { rule: rule() },
                    HttpAction::Log(l) => {
                        let at = Place::new("on_http_request", &compiled.rule, r);
                        let logged = log(&l.metadata, at, &mut scope, request, None, conn);
                        effects.logs.push(logged);
                    }
                    HttpAction::SetVars(v) => {
                        set_vars(&v.vars, &mut scope, request, None, conn);
                    }
                    HttpAction::RateLimit(l) => {
                        if let State::Limit(window) = state {
                            let scope = scope.get(request, None, conn);
                            let key: Vec<String> = l
                                .bucket_key
                                .iter()
                                .map(|k| k.text(scope).unwrap_or_default())
                                .collect();
                            if let Err(wait) = window.admit(&key.join("\u{1f}"), now) {
                                let mut answer = refusal(
                                    StatusCode::TOO_MANY_REQUESTS,
                                    Refusal::RateLimited,
                                    rule(),
                                );
                                answer.headers.push((
                                    http::header::RETRY_AFTER,
                                    HeaderValue::from(retry_after(wait)),
                                ));
                                return RequestVerdict::Answer(answer);
                            }
                        }
                    }
                }
            }
        }
        RequestVerdict::Pass
    }

    /// Runs `on_http_response` on `response` (to `request`, as it was sent upstream):
    /// headers changed in place, or an answer to give instead, or no answer at all.
    pub fn on_response(
        &self,
        request: &http::request::Parts,
        response: &mut http::response::Parts,
        conn: Conn<'_>,
        effects: &mut Effects,
    ) -> ResponseVerdict {
        let mut scope = LazyScope::default();
        for (r, compiled) in self.response.iter().enumerate() {
            if !applies(&compiled.rule, &mut scope, request, Some(response), conn) {
                continue;
            }
            for action in &compiled.rule.actions {
                match action {
                    HttpAction::AddHeaders(h) => {
                        let values =
                            render_all(&h.headers, &mut scope, request, Some(response), conn);
                        for (name, value) in values {
                            response.headers.insert(name, value);
                        }
                        scope.reset();
                    }
                    HttpAction::RemoveHeaders(h) => {
                        for name in &h.headers {
                            response.headers.remove(name);
                        }
                        scope.reset();
                    }
                    HttpAction::CustomResponse(c) => {
                        return ResponseVerdict::Answer(Answer {
                            status: StatusCode::from_u16(c.status_code).unwrap_or(StatusCode::OK),
                            headers: render_all(
                                &c.headers,
                                &mut scope,
                                request,
                                Some(response),
                                conn,
                            ),
                            body: c.body.render(|| scope.get(request, Some(response), conn)),
                            refusal: None,
                            rule: describe(&compiled.rule, r),
                        });
                    }
                    HttpAction::Deny(d) => {
                        return ResponseVerdict::Answer(refusal(
                            StatusCode::from_u16(d.status_code).unwrap_or(StatusCode::FORBIDDEN),
                            Refusal::Denied,
                            describe(&compiled.rule, r),
                        ))
                    }
                    HttpAction::CloseConnection => {
                        return ResponseVerdict::Close {
                            rule: describe(&compiled.rule, r),
                        }
                    }
                    HttpAction::Log(l) => {
                        let at = Place::new("on_http_response", &compiled.rule, r);
                        let logged =
                            log(&l.metadata, at, &mut scope, request, Some(response), conn);
                        effects.logs.push(logged);
                    }
                    HttpAction::SetVars(v) => {
                        set_vars(&v.vars, &mut scope, request, Some(response), conn);
                    }
                    // Refused by parsing and validation.
                    HttpAction::RestrictIps(_)
                    | HttpAction::ForwardInternal(_)
                    | HttpAction::UrlRewrite(_)
                    | HttpAction::RateLimit(_) => {}
                }
            }
        }
        ResponseVerdict::Send
    }
}

fn compile_rules(
    rules: &[HttpRule],
    restrict: &dyn Fn(&RestrictIps) -> Result<Passes, PolicyError>,
) -> Result<Vec<Compiled>, PolicyError> {
    rules
        .iter()
        .map(|rule| {
            let state = rule
                .actions
                .iter()
                .map(|action| {
                    Ok(match action {
                        HttpAction::RestrictIps(r) => State::Restrict(restrict(r)?),
                        HttpAction::RateLimit(l) => {
                            State::Limit(SlidingWindow::new(l.capacity, l.rate))
                        }
                        _ => State::None,
                    })
                })
                .collect::<Result<_, PolicyError>>()?;
            Ok(Compiled {
                rule: rule.clone(),
                state,
            })
        })
        .collect()
}

/// The CEL scope of the request (or response) being run: built when an expression
/// first needs it, dropped when an action changes what it was built from; and the
/// phase's variables (`set-vars`).
#[derive(Default)]
struct LazyScope {
    scope: Option<Scope>,
    vars: Vec<(String, Var)>,
}

impl LazyScope {
    fn get(
        &mut self,
        request: &http::request::Parts,
        response: Option<&http::response::Parts>,
        conn: Conn<'_>,
    ) -> &Scope {
        let vars = &self.vars;
        self.scope.get_or_insert_with(|| {
            Scope::new(&Facts {
                client: conn.client,
                server: conn.server,
                scheme: conn.scheme,
                request,
                response,
                country: conn.country,
                vars,
            })
        })
    }

    fn reset(&mut self) {
        self.scope = None;
    }
}

/// Where a `log` action is: its phase and rule.
struct Place {
    phase: &'static str,
    rule: usize,
    rule_name: Option<String>,
}

impl Place {
    fn new(phase: &'static str, rule: &HttpRule, index: usize) -> Place {
        Place {
            phase,
            rule: index,
            rule_name: rule.name.clone(),
        }
    }
}

/// A `log` action's event, its metadata rendered.
fn log(
    metadata: &std::collections::BTreeMap<String, Template>,
    at: Place,
    scope: &mut LazyScope,
    request: &http::request::Parts,
    response: Option<&http::response::Parts>,
    conn: Conn<'_>,
) -> HttpLog {
    let metadata = metadata
        .iter()
        .map(|(k, t)| (k.clone(), t.render(|| scope.get(request, response, conn))))
        .collect();
    HttpLog {
        phase: at.phase,
        rule: at.rule,
        rule_name: at.rule_name,
        metadata,
    }
}

/// A `set-vars` action: each value computed in the scope as it was, then set.
fn set_vars(
    vars: &std::collections::BTreeMap<String, VarValue>,
    scope: &mut LazyScope,
    request: &http::request::Parts,
    response: Option<&http::response::Parts>,
    conn: Conn<'_>,
) {
    let values: Vec<(String, Var)> = vars
        .iter()
        .map(|(name, value)| {
            let v = match value {
                VarValue::Bool(b) => Var::Bool(*b),
                VarValue::Int(i) => Var::Int(*i),
                VarValue::Text(t) => Var::Text(t.render(|| scope.get(request, response, conn))),
            };
            (name.clone(), v)
        })
        .collect();
    for (name, v) in values {
        match scope.vars.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = v,
            None => scope.vars.push((name, v)),
        }
    }
    scope.reset();
}

/// Whether a rule's expressions or templates read `conn.geo`.
fn reads_geo(rule: &HttpRule) -> bool {
    let templates = |headers: &[(http::HeaderName, Template)]| {
        headers.iter().any(|(_, t)| t.as_str().contains("geo"))
    };
    rule.expressions.iter().any(|e| e.as_str().contains("geo"))
        || rule.actions.iter().any(|a| match a {
            HttpAction::AddHeaders(h) => templates(&h.headers),
            HttpAction::CustomResponse(c) => {
                templates(&c.headers) || c.body.as_str().contains("geo")
            }
            HttpAction::RateLimit(l) => l.bucket_key.iter().any(|e| e.as_str().contains("geo")),
            HttpAction::Log(l) => l.metadata.values().any(|t| t.as_str().contains("geo")),
            HttpAction::SetVars(v) => v
                .vars
                .values()
                .any(|x| matches!(x, VarValue::Text(t) if t.as_str().contains("geo"))),
            _ => false,
        })
}

fn applies(
    rule: &HttpRule,
    scope: &mut LazyScope,
    request: &http::request::Parts,
    response: Option<&http::response::Parts>,
    conn: Conn<'_>,
) -> bool {
    if rule.expressions.is_empty() {
        return true;
    }
    let scope = scope.get(request, response, conn);
    rule.expressions.iter().all(|e| e.holds(scope))
}

/// Header values filled in for this request; a value that renders to something a
/// header cannot hold is left out.
fn render_all(
    headers: &[(HeaderName, Template)],
    scope: &mut LazyScope,
    request: &http::request::Parts,
    response: Option<&http::response::Parts>,
    conn: Conn<'_>,
) -> Vec<(HeaderName, HeaderValue)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let text = value.render(|| scope.get(request, response, conn));
            HeaderValue::from_str(&text).ok().map(|v| (name.clone(), v))
        })
        .collect()
}

/// The first match of `from` in the request's path and query replaced by `to`; a
/// result that is not a path (`/…`) leaves the request as it was.
fn rewrite(request: &mut http::request::Parts, from: &regex::Regex, to: &str) {
    let current = request
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let replaced = from.replace(&current, to);
    if replaced == current || !replaced.starts_with('/') {
        return;
    }
    let Ok(path) = replaced.parse::<http::uri::PathAndQuery>() else {
        return;
    };
    let mut parts = request.uri.clone().into_parts();
    parts.path_and_query = Some(path);
    if let Ok(uri) = http::Uri::from_parts(parts) {
        request.uri = uri;
    }
}

fn refusal(status: StatusCode, why: Refusal, rule: String) -> Answer {
    Answer {
        status,
        headers: Vec::new(),
        body: String::new(),
        refusal: Some(why),
        rule,
    }
}

fn retry_after(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

fn describe(rule: &HttpRule, index: usize) -> String {
    match &rule.name {
        Some(n) => format!("rule {} (`{n}`)", index + 1),
        None => format!("rule {}", index + 1),
    }
}
