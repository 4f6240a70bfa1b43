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

use crate::http_model::{HttpAction, HttpRule};
use crate::model::{Action, ForwardInternal, RestrictIps, Rule, TrafficPolicy};
use crate::{Cidr, InternalUrl, PolicyError};

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
struct HttpRequestRules(Vec<HttpRule>);
struct HttpResponseRules(Vec<HttpRule>);

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

fn rules<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Rule>, D::Error> {
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
                    actions: raw.actions,
                });
            }
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
        "no reachable decision: none of the {} rule(s) in `on_tcp_connect` has a `deny` or \
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
    #[serde(deserialize_with = "actions")]
    actions: Vec<Action>,
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
}

impl<'de> Deserialize<'de> for ActionType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "restrict-ips" => Ok(ActionType::RestrictIps),
            "deny" => Ok(ActionType::Deny),
            "forward-internal" => Ok(ActionType::ForwardInternal),
            _ => Err(de::Error::custom(format!(
                "unknown action type `{name}` (on_tcp_connect supports `restrict-ips`, \
                 `deny`, `forward-internal`)"
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
}

enum ReadConfig {
    Restrict(RestrictIps),
    Forward(ForwardInternal),
    Empty,
    Any(AnyConfig),
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
                        Some(ActionType::Deny) => {
                            map.next_value::<Option<DenyConfig>>()?;
                            ReadConfig::Empty
                        }
                        None => ReadConfig::Any(map.next_value()?),
                    });
                }
            }
        }
        let kind = kind.ok_or_else(|| de::Error::missing_field("type"))?;
        let config = match config {
            Some(ReadConfig::Any(any)) => from_any(kind, any).map_err(de::Error::custom)?,
            Some(other) => other,
            None => ReadConfig::Empty,
        };
        match (kind, config) {
            (ActionType::RestrictIps, ReadConfig::Restrict(r)) => Ok(Action::RestrictIps(r)),
            (ActionType::ForwardInternal, ReadConfig::Forward(f)) => {
                Ok(Action::ForwardInternal(f))
            }
            (ActionType::Deny, _) => Ok(Action::Deny),
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
    let misplaced =
        |field: &str, ty: &str| format!("unknown field `{field}` in the config of `{ty}`");
    match kind {
        ActionType::RestrictIps => {
            if any.url.is_some() {
                return Err(misplaced("url", "restrict-ips"));
            }
            let r = RestrictIps {
                enforce: any.enforce.unwrap_or(true),
                allow: any.allow.unwrap_or_default(),
                deny: any.deny.unwrap_or_default(),
            };
            r.check()?;
            Ok(ReadConfig::Restrict(r))
        }
        ActionType::ForwardInternal => {
            for (present, f) in [
                (any.enforce.is_some(), "enforce"),
                (any.allow.is_some(), "allow"),
                (any.deny.is_some(), "deny"),
            ] {
                if present {
                    return Err(misplaced(f, "forward-internal"));
                }
            }
            any.url
                .map(|url| ReadConfig::Forward(ForwardInternal { url }))
                .ok_or_else(|| "missing field `url`".to_owned())
        }
        ActionType::Deny => {
            if any.enforce.is_some()
                || any.allow.is_some()
                || any.deny.is_some()
                || any.url.is_some()
            {
                return Err("`deny` takes no config fields".to_owned());
            }
            Ok(ReadConfig::Empty)
        }
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
