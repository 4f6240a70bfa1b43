//! YAML parsing with validation during deserialization.
//!
//! Every check runs inside the `Deserialize` impl of the node it is about, so
//! the YAML deserializer attaches that node's line and column to the error,
//! also when the policy is embedded in a larger document (the edge config's
//! `traffic_policy:`). "No reachable decision" is checked when the rule list
//! ends, so it points at the list. Unreachable rules and actions are not
//! errors (see [`TrafficPolicy::unreachable`]). [`TrafficPolicy::validate`]
//! runs the same checks on a policy built in code.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use std::collections::BTreeMap;

use crate::expr::{Expression, Template};
use crate::http_model::{HttpAction, HttpRule};
use crate::log_vars::Vars;
use crate::model::{
    Action, ForwardInternal, Log, RestrictIps, Rule, SetVars, TerminateTls, TrafficPolicy,
};
use crate::tls_action::RawTerminateTls;
use crate::{Cidr, InternalUrl, PolicyError};

/// Most `log` actions in one `on_tcp_connect` (each is a bit of a verdict).
pub(crate) const MAX_LOG_ACTIONS: usize = 64;

impl TrafficPolicy {
    /// Parses and validates a policy document (`on_tcp_connect: [...]`).
    ///
    /// The resource budget is raised over serde-saphyr's defaults so that
    /// lists of a few million CIDRs parse; other limits stay.
    pub fn from_yaml(text: &str) -> Result<TrafficPolicy, PolicyError> {
        let options = serde_saphyr::options! {
            budget: serde_saphyr::budget! {
                max_nodes: 8_000_000,
                max_events: 20_000_000,
            },
        };
        Ok(serde_saphyr::from_str_with_options(text, options)?)
    }

    /// Checks the invariants that parsing enforces, for a policy built in
    /// code: at least one action per rule, a reachable decision (some rule
    /// has `deny` or `forward-internal`), and non-empty `restrict-ips`.
    pub fn validate(&self) -> Result<(), PolicyError> {
        validate(self).map_err(PolicyError::Invalid)
    }

    /// Warnings (not errors): rules and actions that can never run because
    /// an earlier one always decides.
    pub fn unreachable(&self) -> Vec<String> {
        unreachable(self)
    }
}

// ---- TrafficPolicy ----------------------------------------------------------

/// The phases, by their keys (`on_` and the event).
#[derive(Deserialize)]
#[serde(field_identifier)]
enum PolicyField {
    #[serde(rename = "on_tcp_connect")]
    TcpConnect,
    #[serde(rename = "on_http_request")]
    HttpRequest,
    #[serde(rename = "on_http_response")]
    HttpResponse,
}

/// The phases' rule lists, each deserialized with its own validation.
struct TcpRules(Vec<Rule>);
pub(crate) struct HttpRequestRules(pub(crate) Vec<HttpRule>);
pub(crate) struct HttpResponseRules(pub(crate) Vec<HttpRule>);

impl<'de> Deserialize<'de> for TcpRules {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        rules(d).map(TcpRules)
    }
}
impl<'de> Deserialize<'de> for HttpRequestRules {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::http_parse::request_rules(d).map(HttpRequestRules)
    }
}
impl<'de> Deserialize<'de> for HttpResponseRules {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::http_parse::response_rules(d).map(HttpResponseRules)
    }
}

impl<'de> Deserialize<'de> for TrafficPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TrafficPolicy;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a traffic policy (on_tcp_connect, on_http_request, on_http_response)")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<TrafficPolicy, M::Error> {
                let mut policy = TrafficPolicy::default();
                let mut seen = [false; 3];
                // Where `on_tcp_connect` is, for the error when nothing decides.
                let mut tcp_at: Option<serde_saphyr::Location> = None;
                while let Some(field) = map.next_key::<PolicyField>()? {
                    let (i, name) = match field {
                        PolicyField::TcpConnect => (0, "on_tcp_connect"),
                        PolicyField::HttpRequest => (1, "on_http_request"),
                        PolicyField::HttpResponse => (2, "on_http_response"),
                    };
                    if std::mem::replace(&mut seen[i], true) {
                        return Err(de::Error::duplicate_field(name));
                    }
                    match field {
                        PolicyField::TcpConnect => {
                            let rules = map.next_value::<serde_saphyr::Spanned<TcpRules>>()?;
                            tcp_at = Some(rules.referenced);
                            policy.on_tcp_connect = rules.value.0;
                        }
                        PolicyField::HttpRequest => {
                            policy.on_http_request = map.next_value::<HttpRequestRules>()?.0;
                        }
                        PolicyField::HttpResponse => {
                            policy.on_http_response = map.next_value::<HttpResponseRules>()?.0;
                        }
                    }
                }
                check_decision(&policy).map_err(|e| {
                    de::Error::custom(match tcp_at {
                        Some(at) => format!("line {} column {}: {e}", at.line(), at.column()),
                        None => e,
                    })
                })?;
                Ok(policy)
            }
        }
        d.deserialize_map(V)
    }
}

/// Some rule decides: `on_tcp_connect` for every connection, or an `on_http_request`
/// action that forwards or answers.
fn check_decision(p: &TrafficPolicy) -> Result<(), String> {
    if p.decides_at_connect() {
        return Ok(());
    }
    if p.on_http_request.is_empty() && p.on_http_response.is_empty() {
        return Err(no_decision_message(&p.on_tcp_connect));
    }
    let http_decides = p.on_http_request.iter().any(|rule| {
        rule.actions.iter().any(|a| {
            matches!(
                a,
                HttpAction::ForwardInternal(_)
                    | HttpAction::Deny(_)
                    | HttpAction::CustomResponse(_)
            )
        })
    });
    if http_decides {
        return Ok(());
    }
    Err(
        "no reachable decision: neither `on_tcp_connect` nor `on_http_request` has a \
         `forward-internal`, `deny` or `custom-response` action, so no request could ever \
         be answered; add a rule that forwards"
            .to_owned(),
    )
}

pub(crate) fn rules<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Rule>, D::Error> {
    struct Rules;
    impl<'de> Visitor<'de> for Rules {
        type Value = Vec<Rule>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of rules")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Rule>, A::Error> {
            let mut out: Vec<Rule> = Vec::new();
            while let Some(raw) = seq.next_element::<RawRule>()? {
                out.push(Rule {
                    name: raw.name,
                    expressions: raw.expressions,
                    actions: raw.actions,
                });
            }
            check_log_count(&out).map_err(de::Error::custom)?;
            Ok(out)
        }
    }
    d.deserialize_seq(Rules)
}

fn unreachable_rule_reason(index: usize, rule: &Rule) -> String {
    let decider = rule
        .actions
        .iter()
        .find(|a| a.always_decides())
        .map(Action::describe)
        .unwrap_or_default();
    format!(
        "{} always decides (it has {decider}), so no later rule can run",
        rule.describe(index)
    )
}

fn no_decision_message(rules: &[Rule]) -> String {
    format!(
        "no reachable decision: none of the {} rule(s) in `on_tcp_connect` has a `deny`, `close-connection` or \
         `forward-internal` action, so no connection could ever be forwarded; \
         end the policy with a rule that forwards or denies",
        rules.len()
    )
}

// ---- Rule -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "expressions")]
    expressions: Vec<Expression>,
    #[serde(deserialize_with = "actions")]
    actions: Vec<Action>,
}

/// A rule's `expressions`: CEL compiled, and the shapes that test the client address
/// or country checked (a bad CIDR in one is refused here, with its place).
fn expressions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Expression>, D::Error> {
    let out = Vec::<Expression>::deserialize(d)?;
    for e in &out {
        crate::guard::classify(e)
            .map_err(|why| de::Error::custom(format!("expression `{}`: {why}", e.as_str())))?;
    }
    Ok(out)
}

fn check_log_count(rules: &[Rule]) -> Result<(), String> {
    let logs = rules
        .iter()
        .flat_map(|r| &r.actions)
        .filter(|a| matches!(a, Action::Log(_)))
        .count();
    if logs > MAX_LOG_ACTIONS {
        return Err(format!(
            "{logs} `log` actions in `on_tcp_connect`: at most {MAX_LOG_ACTIONS}"
        ));
    }
    Ok(())
}

fn actions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Action>, D::Error> {
    struct Actions;
    impl<'de> Visitor<'de> for Actions {
        type Value = Vec<Action>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of actions")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Action>, A::Error> {
            let mut out: Vec<Action> = Vec::new();
            while let Some(a) = seq.next_element::<Action>()? {
                out.push(a);
            }
            if out.is_empty() {
                return Err(de::Error::custom(
                    "empty `actions`: a rule needs at least one action",
                ));
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Actions)
}

#[derive(Deserialize, Clone, Copy)]
#[serde(field_identifier, rename_all = "lowercase")]
enum ActionField {
    Type,
    Config,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ActionType {
    RestrictIps,
    Deny,
    ForwardInternal,
    CloseConnection,
    Log,
    SetVars,
    TerminateTls,
}

impl<'de> Deserialize<'de> for ActionType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "restrict-ips" => Ok(ActionType::RestrictIps),
            "deny" => Ok(ActionType::Deny),
            "forward-internal" => Ok(ActionType::ForwardInternal),
            "close-connection" => Ok(ActionType::CloseConnection),
            "log" => Ok(ActionType::Log),
            "set-vars" => Ok(ActionType::SetVars),
            "terminate-tls" => Ok(ActionType::TerminateTls),
            _ => Err(de::Error::custom(format!(
                "unknown action type `{name}` (on_tcp_connect supports `restrict-ips`, \
                 `deny`, `forward-internal`, `close-connection`, `log`, `set-vars`, \
                 `terminate-tls`)"
            ))),
        }
    }
}

/// A config read before its `type:` (buffered field by field so locations stay).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnyConfig {
    enforce: Option<bool>,
    allow: Option<Vec<Cidr>>,
    deny: Option<Vec<Cidr>>,
    url: Option<InternalUrl>,
    metadata: Option<BTreeMap<String, Template>>,
    vars: Option<Vars>,
    min_version: Option<crate::tls_action::VersionText>,
    max_version: Option<crate::tls_action::VersionText>,
    server_certificate: Option<String>,
    server_private_key: Option<String>,
    mutual_tls_certificate_authorities: Option<Vec<String>>,
    mutual_tls_verification_strategy: Option<String>,
}

impl AnyConfig {
    /// The names of the fields present, in declaration order.
    fn present(&self) -> Vec<&'static str> {
        [
            (self.enforce.is_some(), "enforce"),
            (self.allow.is_some(), "allow"),
            (self.deny.is_some(), "deny"),
            (self.url.is_some(), "url"),
            (self.metadata.is_some(), "metadata"),
            (self.vars.is_some(), "vars"),
            (self.min_version.is_some(), "min_version"),
            (self.max_version.is_some(), "max_version"),
            (self.server_certificate.is_some(), "server_certificate"),
            (self.server_private_key.is_some(), "server_private_key"),
            (
                self.mutual_tls_certificate_authorities.is_some(),
                "mutual_tls_certificate_authorities",
            ),
            (
                self.mutual_tls_verification_strategy.is_some(),
                "mutual_tls_verification_strategy",
            ),
        ]
        .into_iter()
        .filter_map(|(present, name)| present.then_some(name))
        .collect()
    }
}

enum ReadConfig {
    Restrict(RestrictIps),
    Forward(ForwardInternal),
    Log(Log),
    SetVars(SetVars),
    Tls(Box<TerminateTls>),
    Empty,
    Any(Box<AnyConfig>),
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ActionVisitor)
    }
}

struct ActionVisitor;

impl<'de> Visitor<'de> for ActionVisitor {
    type Value = Action;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an action with `type` and `config`")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Action, M::Error> {
        let mut kind: Option<ActionType> = None;
        let mut config: Option<ReadConfig> = None;
        while let Some(field) = map.next_key::<ActionField>()? {
            match field {
                ActionField::Type => {
                    if kind.is_some() {
                        return Err(de::Error::duplicate_field("type"));
                    }
                    kind = Some(map.next_value()?);
                }
                ActionField::Config => {
                    if config.is_some() {
                        return Err(de::Error::duplicate_field("config"));
                    }
                    config = Some(match kind {
                        Some(ActionType::RestrictIps) => ReadConfig::Restrict(map.next_value()?),
                        Some(ActionType::ForwardInternal) => ReadConfig::Forward(map.next_value()?),
                        Some(ActionType::Deny | ActionType::CloseConnection) => {
                            map.next_value::<Option<DenyConfig>>()?;
                            ReadConfig::Empty
                        }
                        Some(ActionType::Log) => ReadConfig::Log(map.next_value()?),
                        Some(ActionType::SetVars) => ReadConfig::SetVars(map.next_value()?),
                        Some(ActionType::TerminateTls) => {
                            ReadConfig::Tls(Box::new(map.next_value()?))
                        }
                        None => ReadConfig::Any(Box::new(map.next_value()?)),
                    });
                }
            }
        }
        let kind = kind.ok_or_else(|| de::Error::missing_field("type"))?;
        let config = match config {
            Some(ReadConfig::Any(any)) => from_any(kind, *any).map_err(de::Error::custom)?,
            Some(other) => other,
            None => ReadConfig::Empty,
        };
        match (kind, config) {
            (ActionType::RestrictIps, ReadConfig::Restrict(r)) => Ok(Action::RestrictIps(r)),
            (ActionType::ForwardInternal, ReadConfig::Forward(f)) => {
                Ok(Action::ForwardInternal(f))
            }
            (ActionType::Deny, _) => Ok(Action::Deny),
            (ActionType::CloseConnection, _) => Ok(Action::CloseConnection),
            (ActionType::Log, ReadConfig::Log(l)) => Ok(Action::Log(l)),
            (ActionType::Log, _) => Ok(Action::Log(Log::default())),
            (ActionType::SetVars, ReadConfig::SetVars(v)) => Ok(Action::SetVars(v)),
            (ActionType::TerminateTls, ReadConfig::Tls(t)) => Ok(Action::TerminateTls(*t)),
            (ActionType::TerminateTls, _) => Err(de::Error::custom(
                "`terminate-tls` needs a `config` with `server_certificate` and \
                 `server_private_key` (PEM text or absolute paths)",
            )),
            (ActionType::SetVars, _) => Err(de::Error::custom(
                "`set-vars` needs a `config` with `vars`, e.g. `vars: [{office: true}]`",
            )),
            (ActionType::RestrictIps, _) => Err(de::Error::custom(
                "`restrict-ips` needs a `config` with `allow` and/or `deny` CIDRs",
            )),
            (ActionType::ForwardInternal, _) => Err(de::Error::custom(
                "`forward-internal` needs a `config` with a `url`, e.g. `url: tcp://db.internal:5432`",
            )),
        }
    }
}

fn from_any(kind: ActionType, any: AnyConfig) -> Result<ReadConfig, String> {
    let (name, allowed): (&str, &[&str]) = match kind {
        ActionType::RestrictIps => ("restrict-ips", &["enforce", "allow", "deny"]),
        ActionType::ForwardInternal => ("forward-internal", &["url"]),
        ActionType::Log => ("log", &["metadata"]),
        ActionType::SetVars => ("set-vars", &["vars"]),
        ActionType::TerminateTls => (
            "terminate-tls",
            &[
                "min_version",
                "max_version",
                "server_certificate",
                "server_private_key",
                "mutual_tls_certificate_authorities",
                "mutual_tls_verification_strategy",
            ],
        ),
        ActionType::Deny => ("deny", &[]),
        ActionType::CloseConnection => ("close-connection", &[]),
    };
    if let Some(field) = any.present().into_iter().find(|f| !allowed.contains(f)) {
        return Err(if allowed.is_empty() {
            format!("`{name}` takes no config fields")
        } else {
            format!("unknown field `{field}` in the config of `{name}`")
        });
    }
    match kind {
        ActionType::RestrictIps => {
            let r = RestrictIps {
                enforce: any.enforce.unwrap_or(true),
                allow: any.allow.unwrap_or_default(),
                deny: any.deny.unwrap_or_default(),
            };
            r.check()?;
            Ok(ReadConfig::Restrict(r))
        }
        ActionType::ForwardInternal => any
            .url
            .map(|url| ReadConfig::Forward(ForwardInternal { url }))
            .ok_or_else(|| "missing field `url`".to_owned()),
        ActionType::Log => Ok(ReadConfig::Log(Log {
            metadata: any.metadata.unwrap_or_default(),
        })),
        ActionType::SetVars => any
            .vars
            .map(|v| ReadConfig::SetVars(SetVars { vars: v.0 }))
            .ok_or_else(|| "missing field `vars`".to_owned()),
        ActionType::TerminateTls => RawTerminateTls {
            min_version: any.min_version,
            max_version: any.max_version,
            server_certificate: any.server_certificate,
            server_private_key: any.server_private_key,
            mutual_tls_certificate_authorities: any.mutual_tls_certificate_authorities,
            mutual_tls_verification_strategy: any.mutual_tls_verification_strategy,
        }
        .check()
        .map(|t| ReadConfig::Tls(Box::new(t))),
        ActionType::Deny | ActionType::CloseConnection => Ok(ReadConfig::Empty),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyConfig {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestrictIps {
    #[serde(default = "yes")]
    enforce: bool,
    #[serde(default)]
    allow: Vec<Cidr>,
    #[serde(default)]
    deny: Vec<Cidr>,
}

fn yes() -> bool {
    true
}

impl<'de> Deserialize<'de> for RestrictIps {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawRestrictIps::deserialize(d)?;
        let r = RestrictIps {
            enforce: raw.enforce,
            allow: raw.allow,
            deny: raw.deny,
        };
        r.check().map_err(de::Error::custom)?;
        Ok(r)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForward {
    url: InternalUrl,
}

impl<'de> Deserialize<'de> for ForwardInternal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ForwardInternal {
            url: RawForward::deserialize(d)?.url,
        })
    }
}

// ---- validation of policies built in code -----------------------------------

/// The same checks as parsing, for a [`TrafficPolicy`] built in code.
fn validate(p: &TrafficPolicy) -> Result<(), String> {
    for (i, rule) in p.on_tcp_connect.iter().enumerate() {
        if rule.actions.is_empty() {
            return Err(format!(
                "{}: a rule needs at least one action",
                rule.describe(i)
            ));
        }
        for action in &rule.actions {
            if let Action::RestrictIps(r) = action {
                r.check()
                    .map_err(|e| format!("{}: {e}", rule.describe(i)))?;
            }
        }
    }
    check_log_count(&p.on_tcp_connect)?;
    crate::http_parse::validate(&p.on_http_request, crate::http_parse::Phase::Request)?;
    crate::http_parse::validate(&p.on_http_response, crate::http_parse::Phase::Response)?;
    check_decision(p)
}

/// Rules and actions that can never run (after one that always decides).
/// Not errors: a trailing `deny` rule after a rule that already decides is
/// a common belt-and-braces habit. `sluice config check` prints these.
fn unreachable(p: &TrafficPolicy) -> Vec<String> {
    let mut out = Vec::new();
    let mut decided: Option<String> = None;
    for (i, rule) in p.on_tcp_connect.iter().enumerate() {
        if let Some(why) = &decided {
            out.push(format!("{} can never run: {why}", rule.describe(i)));
            continue;
        }
        let mut after: Option<&Action> = None;
        for (j, action) in rule.actions.iter().enumerate() {
            if let Some(prev) = after {
                out.push(format!(
                    "{}, action {} ({}) can never run: the earlier action {} always decides",
                    rule.describe(i),
                    j + 1,
                    action.describe(),
                    prev.describe()
                ));
            } else if action.always_decides() {
                after = Some(action);
            }
        }
        if rule.always_decides() {
            decided = Some(unreachable_rule_reason(i, rule));
        }
    }
    out
}
