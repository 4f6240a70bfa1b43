//! The variables CEL expressions read (`conn.*`, `req.*`, `res.*`, `vars.*`), built
//! lazily. A [`Scope`] keeps what it was made from (the addresses, the request's method,
//! URI, version and headers, the response's status and headers); each variable is built
//! the first time an expression reads it, and kept for the others of the phase.
//!
//! cel-rust resolves a dotted name longest prefix first (`req.url.path`, then `req.url`,
//! then `req`), so `req.url.path` is answered with that one string: the maps of headers
//! and query parameters, and the whole `req` map, are built only for an expression that
//! reads them. ngrok's `inCidrRange`/`inCidrRanges` are registered once per thread, in
//! the root context every evaluation runs under.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, OnceLock},
};

use cel::{
    common::value::{CowVal, Val},
    context::VariableResolver,
    objects::Key,
    Context, ExecutionError, Program, ResolveResult, Value,
};

use crate::Cidr;

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

/// The variables of one request (or response, or connection) for CEL.
pub struct Scope {
    vars: Variables,
}

/// What a scope was made from, and each variable once built.
struct Variables {
    conn: ConnData,
    req: Option<ReqData>,
    res: Option<ResData>,
    set: Vec<(String, Var)>,
    built: [OnceLock<Option<Box<dyn Val>>>; NAMES.len()],
}

struct ConnData {
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
    /// `conn.tls` (on_tcp_connect): the SNI, when there is one.
    tls: Option<Option<String>>,
    country: Option<String>,
}

struct ReqData {
    scheme: String,
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
}

struct ResData {
    status: u16,
    headers: http::HeaderMap,
}

/// The names the scope answers, whole or dotted.
const NAMES: [&str; 26] = [
    "conn",
    "conn.client_ip",
    "conn.client_port",
    "conn.server_ip",
    "conn.server_port",
    "conn.tls",
    "conn.tls.sni",
    "conn.geo",
    "conn.geo.country_code",
    "req",
    "req.method",
    "req.host",
    "req.version",
    "req.url",
    "req.url.scheme",
    "req.url.host",
    "req.url.path",
    "req.url.query",
    "req.url.raw",
    "req.headers",
    "req.query_params",
    "req.content_length",
    "res",
    "res.status_code",
    "res.headers",
    "vars",
];

thread_local! {
    /// The standard library and ngrok's functions: the parent of every evaluation.
    static ROOT: Context<'static, 'static> = {
        let mut ctx = Context::with_env(Arc::new(cel::Env::stdlib()));
        add_functions(&mut ctx);
        ctx
    };
}

impl Scope {
    /// The scope of one request (with its response in `on_http_response`).
    pub fn new(facts: &Facts<'_>) -> Scope {
        let r = facts.request;
        Scope::of(
            ConnData {
                client: Some(facts.client),
                server: Some(facts.server),
                tls: None,
                country: facts.country.map(str::to_owned),
            },
            Some(ReqData {
                scheme: facts.scheme.to_owned(),
                method: r.method.clone(),
                uri: r.uri.clone(),
                version: r.version,
                headers: r.headers.clone(),
            }),
            facts.response.map(|res| ResData {
                status: res.status.as_u16(),
                headers: res.headers.clone(),
            }),
            facts.vars.to_vec(),
        )
    }

    /// The scope of a connection (`on_tcp_connect`): `conn` (`client_ip`,
    /// `client_port`, `server_ip`, `server_port`, `tls.sni`, `geo.country_code`; what
    /// is unknown is absent) and `vars`.
    pub(crate) fn connection(facts: &ConnFacts) -> Scope {
        Scope::of(
            ConnData {
                client: facts.client,
                server: facts.server,
                tls: Some(facts.sni.clone()),
                country: facts.country.clone(),
            },
            None,
            None,
            facts.vars.clone(),
        )
    }

    fn of(
        conn: ConnData,
        req: Option<ReqData>,
        res: Option<ResData>,
        set: Vec<(String, Var)>,
    ) -> Scope {
        Scope {
            vars: Variables {
                conn,
                req,
                res,
                set,
                built: Default::default(),
            },
        }
    }

    /// Runs `program` over this scope's variables.
    pub(crate) fn run(&self, program: &Program) -> ResolveResult {
        ROOT.with(|root| {
            let root: &Context<'_, '_> = root;
            let mut ctx = root.new_inner_scope();
            ctx.set_variable_resolver(&self.vars);
            program.execute(&ctx)
        })
    }
}

impl VariableResolver for Variables {
    fn resolve<'b>(&'b self, name: &str) -> Option<CowVal<'b, 'b>> {
        let i = NAMES.iter().position(|n| *n == name)?;
        let built = self.built[i].get_or_init(|| {
            let value = self.build(NAMES[i])?;
            Some(value.try_into().expect("plain values convert"))
        });
        built.as_deref().map(CowVal::Borrowed)
    }
}

impl Variables {
    /// The value of `name` (`None`: absent here).
    fn build(&self, name: &str) -> Option<Value> {
        let (root, rest) = name.split_once('.').unwrap_or((name, ""));
        match root {
            "conn" => self.conn.get(rest),
            "req" => self.req.as_ref()?.get(rest),
            "res" => self.res.as_ref()?.get(rest),
            "vars" => Some(vars_map(&self.set).into()),
            _ => None,
        }
    }
}

impl ConnData {
    fn get(&self, field: &str) -> Option<Value> {
        let c = self.client;
        let s = self.server;
        Some(match field {
            "" => {
                let mut conn: HashMap<Key, Value> = HashMap::new();
                for f in [
                    "client_ip",
                    "client_port",
                    "server_ip",
                    "server_port",
                    "geo",
                ] {
                    if let Some(v) = self.get(f) {
                        conn.insert(key(f), v);
                    }
                }
                if self.tls.is_some() {
                    conn.insert(key("tls"), self.get("tls")?);
                }
                conn.into()
            }
            "client_ip" => c?.ip().to_string().into(),
            "client_port" => i64::from(c?.port()).into(),
            "server_ip" => s?.ip().to_string().into(),
            "server_port" => i64::from(s?.port()).into(),
            "tls" => {
                let mut tls: HashMap<Key, Value> = HashMap::new();
                if let Some(sni) = self.tls.as_ref()? {
                    tls.insert(key("sni"), sni.clone().into());
                }
                tls.into()
            }
            "tls.sni" => self.tls.as_ref()?.as_ref()?.clone().into(),
            "geo" => {
                let mut geo: HashMap<Key, Value> = HashMap::new();
                if let Some(code) = &self.country {
                    geo.insert(key("country_code"), code.clone().into());
                }
                geo.into()
            }
            "geo.country_code" => self.country.clone()?.into(),
            _ => return None,
        })
    }
}

impl ReqData {
    fn host(&self) -> String {
        self.headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| self.uri.authority().map(|a| a.as_str()))
            .unwrap_or_default()
            .to_owned()
    }

    fn get(&self, field: &str) -> Option<Value> {
        Some(match field {
            "" => {
                let fields = [
                    "method",
                    "host",
                    "version",
                    "url",
                    "headers",
                    "query_params",
                    "content_length",
                ];
                let map: HashMap<Key, Value> = fields
                    .into_iter()
                    .filter_map(|f| Some((key(f), self.get(f)?)))
                    .collect();
                map.into()
            }
            "method" => self.method.as_str().into(),
            "host" | "url.host" => self.host().into(),
            "version" => format!("{:?}", self.version).into(),
            "url" => {
                let fields = ["scheme", "host", "path", "query", "raw"];
                let map: HashMap<Key, Value> = fields
                    .into_iter()
                    .filter_map(|f| Some((key(f), self.get(&format!("url.{f}"))?)))
                    .collect();
                map.into()
            }
            "url.scheme" => self.scheme.clone().into(),
            "url.path" => self.uri.path().into(),
            "url.query" => self.uri.query().unwrap_or_default().into(),
            "url.raw" => format!(
                "{}://{}{}",
                self.scheme,
                self.host(),
                self.uri.path_and_query().map_or("/", |p| p.as_str())
            )
            .into(),
            "headers" => headers(&self.headers).into(),
            "query_params" => {
                let query = self.uri.query().unwrap_or_default();
                let mut params: HashMap<Key, Vec<Value>> = HashMap::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    params.entry(key(k)).or_default().push(v.into());
                }
                lists(params).into()
            }
            "content_length" => self
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<i64>().ok())
                .unwrap_or(0)
                .into(),
            _ => return None,
        })
    }
}

impl ResData {
    fn get(&self, field: &str) -> Option<Value> {
        Some(match field {
            "" => {
                let map: HashMap<Key, Value> = ["status_code", "headers"]
                    .into_iter()
                    .filter_map(|f| Some((key(f), self.get(f)?)))
                    .collect();
                map.into()
            }
            "status_code" => i64::from(self.status).into(),
            "headers" => headers(&self.headers).into(),
            _ => return None,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> http::request::Parts {
        http::Request::builder()
            .method("GET")
            .uri("/api/v2/orders?limit=5&tag=a&tag=b")
            .header("host", "api.example.com")
            .header("x-team", "billing")
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn holds(scope: &Scope, source: &str) -> bool {
        let program = Program::compile(source).unwrap();
        matches!(scope.run(&program), Ok(Value::Bool(true)))
    }

    #[test]
    fn dotted_names_and_whole_maps_read_the_same_request() {
        let req = request();
        let scope = Scope::new(&Facts {
            client: "203.0.113.7:40000".parse().unwrap(),
            server: "127.0.0.1:8080".parse().unwrap(),
            scheme: "https",
            request: &req,
            response: None,
            country: Some("NL"),
            vars: &[],
        });
        for source in [
            // Answered by one name each...
            "req.url.path == '/api/v2/orders'",
            "req.method == 'GET' && req.host == 'api.example.com'",
            "req.url.raw == 'https://api.example.com/api/v2/orders?limit=5&tag=a&tag=b'",
            "req.query_params['tag'] == ['a', 'b']",
            "conn.client_ip == '203.0.113.7' && conn.server_port == 8080",
            "conn.geo.country_code == 'NL'",
            // ...and by the maps they sit in.
            "req['url']['path'] == '/api/v2/orders'",
            "req.url['query'] == 'limit=5&tag=a&tag=b'",
            "size(req.headers) == 2 && 'x-team' in req.headers",
            "has(req.url.path) && !has(req.url.fragment)",
            "conn['geo'] == {'country_code': 'NL'}",
            "size(conn) == 5",
            "size(req) == 7",
        ] {
            assert!(holds(&scope, source), "{source}");
        }
        // What is not there is an error (false), as before.
        assert!(!holds(&scope, "res.status_code == 200"));
        assert!(!holds(&scope, "req.nothing == 1"));
    }

    #[test]
    fn a_connection_without_sni_or_country_has_neither() {
        let scope = Scope::connection(&ConnFacts {
            client: Some("192.0.2.1:5000".parse().unwrap()),
            ..Default::default()
        });
        assert!(holds(&scope, "conn.client_port == 5000"));
        assert!(holds(&scope, "conn.tls == {} && conn.geo == {}"));
        assert!(!holds(&scope, "conn.tls.sni == 'a'"));
        assert!(!holds(&scope, "has(conn.tls.sni)"));
        assert!(!holds(&scope, "conn.server_ip == '127.0.0.1'"));
        assert!(holds(&scope, "!has(conn.server_ip)"));
    }
}
