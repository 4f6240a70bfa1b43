//! YAML of the HTTP phases, validated while it is read so every error names its line
//! and column: rules (`name`, `expressions`, `actions`), each action's `type` and
//! `config` (read field by field whatever their order, then checked against the
//! action's type), CEL compiled, header names, status codes, regexes and durations
//! checked. Which actions a phase allows is checked when its list ends.

use std::{collections::BTreeMap, fmt, time::Duration};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::{
    expr::{Expression, Template},
    http_model::{
        AddHeaders, CustomResponse, HttpAction, HttpDeny, HttpForward, HttpRule, OnError,
        RateLimit, RemoveHeaders, UrlRewrite,
    },
    log_vars::{Log, SetVars, Vars},
    restrict::RestrictIps,
    Cidr, InternalUrl,
};

/// Which phase a rule list belongs to.
#[derive(Clone, Copy)]
pub(crate) enum Phase {
    Request,
    Response,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Request => "on_http_request",
            Phase::Response => "on_http_response",
        }
    }

    fn allows(self, action: &HttpAction) -> bool {
        match self {
            Phase::Request => true,
            Phase::Response => matches!(
                action,
                HttpAction::AddHeaders(_)
                    | HttpAction::RemoveHeaders(_)
                    | HttpAction::CustomResponse(_)
                    | HttpAction::Deny(_)
                    | HttpAction::CloseConnection
                    | HttpAction::Log(_)
                    | HttpAction::SetVars(_)
            ),
        }
    }
}

pub(crate) fn request_rules<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HttpRule>, D::Error> {
    d.deserialize_seq(Rules(Phase::Request))
}

pub(crate) fn response_rules<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HttpRule>, D::Error> {
    d.deserialize_seq(Rules(Phase::Response))
}

struct Rules(Phase);

impl<'de> Visitor<'de> for Rules {
    type Value = Vec<HttpRule>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of rules")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<HttpRule>, A::Error> {
        let mut out = Vec::new();
        while let Some(raw) = seq.next_element::<RawRule>()? {
            if let Some(action) = raw.actions.iter().find(|a| !self.0.allows(a)) {
                return Err(de::Error::custom(format!(
                    "`{}` cannot run in `{}` (it takes add-headers, remove-headers, \
                     custom-response and deny)",
                    action.type_name(),
                    self.0.name()
                )));
            }
            out.push(HttpRule {
                name: raw.name,
                expressions: raw.expressions,
                actions: raw.actions,
            });
        }
        Ok(out)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    expressions: Vec<Expression>,
    #[serde(deserialize_with = "actions")]
    actions: Vec<HttpAction>,
}

fn actions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HttpAction>, D::Error> {
    let out = Vec::<HttpAction>::deserialize(d)?;
    if out.is_empty() {
        return Err(de::Error::custom(
            "empty `actions`: a rule needs at least one action",
        ));
    }
    Ok(out)
}

impl<'de> Deserialize<'de> for Expression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Expression::parse(&text).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Template::parse(&text).map_err(de::Error::custom)
    }
}

/// A header name, checked and lower-cased.
struct Name(http::HeaderName);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        http::HeaderName::from_bytes(text.as_bytes())
            .map(Name)
            .map_err(|_| de::Error::custom(format!("`{text}` is not a valid header name")))
    }
}

/// `headers:` as a map (add-headers, custom-response) or a list (remove-headers).
enum Headers {
    Map(Vec<(http::HeaderName, Template)>),
    List(Vec<http::HeaderName>),
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Headers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of header names to values, or a list of header names")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Headers, M::Error> {
                let mut out = Vec::new();
                while let Some((Name(name), value)) = map.next_entry::<Name, Template>()? {
                    if value.is_constant() && http::HeaderValue::from_str(value.as_str()).is_err() {
                        return Err(de::Error::custom(format!(
                            "the value of `{name}` is not a valid header value"
                        )));
                    }
                    out.push((name, value));
                }
                Ok(Headers::Map(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Headers, A::Error> {
                let mut out = Vec::new();
                while let Some(Name(name)) = seq.next_element::<Name>()? {
                    out.push(name);
                }
                Ok(Headers::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A status code within `range`.
fn status(code: u16, range: std::ops::RangeInclusive<u16>) -> Result<u16, String> {
    if range.contains(&code) {
        Ok(code)
    } else {
        Err(format!(
            "status_code {code} is out of range ({}–{})",
            range.start(),
            range.end()
        ))
    }
}

/// `60s`, `1m`, `500ms`, `1h`.
fn duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration (e.g. `60s`, `1m`, `500ms`, `1h`)");
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(format!("`{text}`: the window must be longer than zero"));
    }
    Ok(d)
}

/// Every field any HTTP action's config may have, read before the type is checked.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    enforce: Option<bool>,
    allow: Option<Vec<Cidr>>,
    deny: Option<Vec<Cidr>>,
    status_code: Option<u16>,
    url: Option<InternalUrl>,
    on_error: Option<OnError>,
    binding: Option<String>,
    headers: Option<Headers>,
    body: Option<Template>,
    content: Option<Template>,
    from: Option<String>,
    to: Option<String>,
    name: Option<String>,
    algorithm: Option<String>,
    capacity: Option<u32>,
    rate: Option<String>,
    bucket_key: Option<Vec<Expression>>,
    metadata: Option<BTreeMap<String, Template>>,
    vars: Option<Vars>,
}

impl<'de> Deserialize<'de> for OnError {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "halt" => Ok(OnError::Halt),
            "continue" => Ok(OnError::Continue),
            other => Err(de::Error::custom(format!(
                "on_error `{other}`: expected `halt` or `continue`"
            ))),
        }
    }
}

impl RawConfig {
    /// The names of the fields that are set, for "unknown field" checks.
    fn set_fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut note = |set: bool, name| {
            if set {
                out.push(name)
            }
        };
        note(self.enforce.is_some(), "enforce");
        note(self.allow.is_some(), "allow");
        note(self.deny.is_some(), "deny");
        note(self.status_code.is_some(), "status_code");
        note(self.url.is_some(), "url");
        note(self.on_error.is_some(), "on_error");
        note(self.binding.is_some(), "binding");
        note(self.headers.is_some(), "headers");
        note(self.body.is_some(), "body");
        note(self.content.is_some(), "content");
        note(self.from.is_some(), "from");
        note(self.to.is_some(), "to");
        note(self.name.is_some(), "name");
        note(self.algorithm.is_some(), "algorithm");
        note(self.capacity.is_some(), "capacity");
        note(self.rate.is_some(), "rate");
        note(self.bucket_key.is_some(), "bucket_key");
        note(self.metadata.is_some(), "metadata");
        note(self.vars.is_some(), "vars");
        out
    }
}

const TYPES: &str = "restrict-ips, deny, forward-internal, add-headers, remove-headers, \
                     custom-response, url-rewrite, rate-limit, close-connection, log, set-vars";

/// The action of type `kind` from its config.
fn build(kind: &str, c: RawConfig) -> Result<HttpAction, String> {
    let allowed: &[&str] = match kind {
        "restrict-ips" => &["enforce", "allow", "deny"],
        "deny" => &["status_code"],
        "forward-internal" => &["url", "on_error", "binding"],
        "add-headers" | "remove-headers" => &["headers"],
        "custom-response" => &["status_code", "body", "content", "headers"],
        "url-rewrite" => &["from", "to"],
        "rate-limit" => &["name", "algorithm", "capacity", "rate", "bucket_key"],
        "close-connection" => &[],
        "log" => &["metadata"],
        "set-vars" => &["vars"],
        _ => {
            return Err(format!(
                "unknown action type `{kind}` (HTTP phases support {TYPES})"
            ))
        }
    };
    if let Some(field) = c.set_fields().into_iter().find(|f| !allowed.contains(f)) {
        return Err(format!("unknown field `{field}` in the config of `{kind}`"));
    }
    let need = |what: &str| format!("`{kind}` needs `{what}` in its config");
    Ok(match kind {
        "restrict-ips" => {
            let r = RestrictIps {
                enforce: c.enforce.unwrap_or(true),
                allow: c.allow.unwrap_or_default(),
                deny: c.deny.unwrap_or_default(),
            };
            r.check()?;
            HttpAction::RestrictIps(r)
        }
        "deny" => HttpAction::Deny(HttpDeny {
            status_code: status(c.status_code.unwrap_or(403), 400..=599)?,
        }),
        "forward-internal" => {
            if let Some(binding) = c.binding.filter(|b| b != "internal") {
                return Err(format!(
                    "binding `{binding}`: forward-internal reaches internal endpoints only \
                     (`binding: internal`)"
                ));
            }
            let url = c.url.ok_or_else(|| need("url"))?;
            if !url.scheme().is_http() {
                return Err(format!(
                    "`{url}`: an HTTP phase forwards to http:// or https:// internal \
                     endpoints (a tcp:// or tls:// one is reached from on_tcp_connect)"
                ));
            }
            HttpAction::ForwardInternal(HttpForward {
                url,
                on_error: c.on_error.unwrap_or(OnError::Halt),
            })
        }
        "add-headers" => match c.headers {
            Some(Headers::Map(headers)) => HttpAction::AddHeaders(AddHeaders { headers }),
            Some(Headers::List(_)) => {
                return Err("`add-headers` takes `headers` as a map of name: value".to_owned())
            }
            None => return Err(need("headers")),
        },
        "remove-headers" => match c.headers {
            Some(Headers::List(headers)) => HttpAction::RemoveHeaders(RemoveHeaders { headers }),
            Some(Headers::Map(_)) => {
                return Err("`remove-headers` takes `headers` as a list of names".to_owned())
            }
            None => return Err(need("headers")),
        },
        "custom-response" => {
            let headers = match c.headers {
                Some(Headers::Map(h)) => h,
                Some(Headers::List(_)) => {
                    return Err(
                        "`custom-response` takes `headers` as a map of name: value".to_owned()
                    )
                }
                None => Vec::new(),
            };
            let body = match (c.body, c.content) {
                (Some(_), Some(_)) => {
                    return Err(
                        "`custom-response`: `body` and `content` are the same; give one".to_owned(),
                    )
                }
                (Some(b), None) | (None, Some(b)) => b,
                (None, None) => Template::parse("").expect("the empty template"),
            };
            HttpAction::CustomResponse(CustomResponse {
                status_code: status(c.status_code.unwrap_or(200), 100..=599)?,
                body,
                headers,
            })
        }
        "url-rewrite" => {
            let from = c.from.ok_or_else(|| need("from"))?;
            let to = c.to.ok_or_else(|| need("to"))?;
            let from = regex::Regex::new(&from)
                .map_err(|e| format!("`from`: `{from}` is not a valid regular expression: {e}"))?;
            HttpAction::UrlRewrite(UrlRewrite { from, to })
        }
        "rate-limit" => {
            if let Some(a) = c.algorithm.filter(|a| a != "sliding_window") {
                return Err(format!(
                    "algorithm `{a}`: rate-limit supports `sliding_window`"
                ));
            }
            let capacity = c.capacity.ok_or_else(|| need("capacity"))?;
            if capacity == 0 {
                return Err("`capacity: 0` would refuse every request; use `deny`".to_owned());
            }
            let rate = duration(&c.rate.ok_or_else(|| need("rate"))?)?;
            let bucket_key = match c.bucket_key {
                Some(keys) if !keys.is_empty() => keys,
                _ => vec![Expression::parse("conn.client_ip").expect("a valid expression")],
            };
            HttpAction::RateLimit(RateLimit {
                name: c.name,
                capacity,
                rate,
                bucket_key,
            })
        }
        "close-connection" => HttpAction::CloseConnection,
        "log" => HttpAction::Log(Log {
            metadata: c.metadata.unwrap_or_default(),
        }),
        "set-vars" => HttpAction::SetVars(SetVars {
            vars: c
                .vars
                .ok_or_else(|| "`set-vars` needs `vars`, e.g. `vars: [{office: true}]`".to_owned())?
                .0,
        }),
        _ => unreachable!("checked above"),
    })
}

impl<'de> Deserialize<'de> for HttpAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HttpAction;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an action with `type` and `config`")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<HttpAction, M::Error> {
                let mut kind: Option<String> = None;
                let mut config: Option<RawConfig> = None;
                while let Some(field) = map.next_key::<String>()? {
                    match field.as_str() {
                        "type" if kind.is_some() => return Err(de::Error::duplicate_field("type")),
                        "type" => kind = Some(map.next_value()?),
                        "config" if config.is_some() => {
                            return Err(de::Error::duplicate_field("config"))
                        }
                        "config" => {
                            config =
                                Some(map.next_value::<Option<RawConfig>>()?.unwrap_or_default())
                        }
                        other => return Err(de::Error::unknown_field(other, &["type", "config"])),
                    }
                }
                let kind = kind.ok_or_else(|| de::Error::missing_field("type"))?;
                build(&kind, config.unwrap_or_default()).map_err(de::Error::custom)
            }
        }
        d.deserialize_map(V)
    }
}

/// The same checks as parsing, for HTTP rules built in code.
pub(crate) fn validate(rules: &[HttpRule], phase: Phase) -> Result<(), String> {
    for (i, rule) in rules.iter().enumerate() {
        if rule.actions.is_empty() {
            return Err(format!(
                "{} rule {}: a rule needs at least one action",
                phase.name(),
                i + 1
            ));
        }
        for action in &rule.actions {
            if !phase.allows(action) {
                return Err(format!(
                    "{} rule {}: `{}` cannot run there",
                    phase.name(),
                    i + 1,
                    action.type_name()
                ));
            }
            if let HttpAction::RestrictIps(r) = action {
                r.check()?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(duration("0s").is_err());
        assert!(duration("soon").is_err());
        assert!(duration("10").is_err());
        assert!(duration("10 days").is_err());
    }
}
