//! sluice-policy: the traffic policy engine of the sluice edge.
//!
//! A [`TrafficPolicy`] is the YAML model of one cloud endpoint's
//! `on_tcp_connect` rules (`expressions`; `restrict-ips`, `deny`,
//! `close-connection`, `forward-internal`, `log`, `set-vars`, `terminate-tls`), in
//! the shape of ngrok's Traffic Policy, and for HTTP endpoints its
//! `on_http_request` and `on_http_response` rules (CEL `expressions`, header,
//! URL, rate-limit and response actions: [`HttpPhases`]). It is validated while it is parsed,
//! so every error names a line, a column and the offending value, also when
//! the policy is embedded in a larger document. [`TrafficPolicy::compile`]
//! turns it into a [`CompiledPolicy`]: one immutable lookup table per
//! address family whose segments map straight to a precomputed outcome,
//! so [`CompiledPolicy::evaluate`] is one lookup, without allocation or
//! lock, whatever the number of rules and CIDRs; expressions that test the
//! client address are folded into the same table, and the rules from the first
//! one the address cannot decide run per connection
//! ([`CompiledPolicy::evaluate_conn`], with what a [`ConnInfo`] tells). [`PolicyHandle`] publishes
//! compiled policies to worker threads with `arc-swap`.
//!
//! ```
//! use sluice_policy::{Outcome, TrafficPolicy};
//!
//! let policy = TrafficPolicy::from_yaml(r#"
//! on_tcp_connect:
//!   - name: office
//!     actions:
//!       - type: restrict-ips
//!         config:
//!           allow: [203.0.113.0/24]
//!           deny: [203.0.113.7/32]
//!       - type: forward-internal
//!         config:
//!           url: tcp://db.internal:5432
//! "#).unwrap();
//! let compiled = policy.compile().unwrap();
//! let d = compiled.evaluate("203.0.113.9:40000".parse().unwrap());
//! assert_eq!(d.target().unwrap().host(), "db.internal");
//! let d = compiled.evaluate("203.0.113.7:40000".parse().unwrap());
//! assert_eq!(d.outcome(), Outcome::Deny);
//! assert_eq!(d.why().cidr().unwrap().to_string(), "203.0.113.7/32");
//! ```
//!
//! Modules: `model` (types), `parse` (YAML and validation), `url`
//! ([`InternalUrl`]), `cidr` ([`Cidr`] normalisation), `intervals` (CIDR
//! sets to merged intervals), `search`, `indexed`, `table4`, `table6` (the
//! lookup tables), `compile`, `compiled` (evaluation), `verdict` (the
//! precomputed outcomes and [`Cause`]), `decision`, `handle`; for
//! `on_tcp_connect` expressions `guard` (the shapes folded into the table),
//! `program` (the rules as steps, run while compiling and per connection) and
//! `conn_eval` (the per-connection run, log events); for the HTTP
//! phases `http_model`, `http_parse`, `http_eval`, `expr` (CEL) and
//! `rate_limit`; `restrict` holds what both kinds of phase restrict with;
//! `tls_action` the `terminate-tls` config and the rustls configuration it makes.
//! Design notes and benchmark figures: `docs/policy.md`.

#![warn(missing_docs)]

mod cidr;
mod compile;
mod compiled;
mod conn_eval;
mod decision;
mod endpoint_policy;
mod error;
mod expr;
mod guard;
mod handle;
mod http_eval;
mod http_model;
mod http_parse;
mod indexed;
mod intervals;
mod key;
mod log_vars;
mod model;
mod parse;
mod program;
mod rate_limit;
mod restrict;
mod scope;
mod search;
mod table4;
mod table6;
mod tls_action;
mod url;
mod verdict;

pub use cidr::Cidr;
pub use compiled::{BuildStats, CompiledPolicy};
pub use conn_eval::{ConnInfo, LogEvent, NoConnInfo};
pub use decision::{Decision, Outcome, Why};
pub use endpoint_policy::EndpointPolicy;
pub use error::PolicyError;
pub use expr::{Expression, Template};
pub use handle::{PolicyHandle, PolicyReader, SwapReport};
pub use http_eval::{
    Answer, Conn, Effects, HttpLog, HttpPhases, Refusal, RequestVerdict, ResponseVerdict, Resume,
};
pub use http_model::{
    AddHeaders, CustomResponse, HttpAction, HttpDeny, HttpForward, HttpRule, OnError, RateLimit,
    RemoveHeaders, UrlRewrite,
};
pub use model::{
    Action, ForwardInternal, Log, MtlsStrategy, Pem, RestrictIps, Rule, SetVars, TerminateTls,
    TlsVersion, TrafficPolicy, VarValue,
};
pub use scope::{Facts, Scope};
pub use url::{InternalUrl, Scheme};
pub use verdict::Cause;
