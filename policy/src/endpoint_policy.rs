//! [`EndpointPolicy`]: the `traffic_policy` of an agent endpoint (ngrok's agent file
//! allows one on each endpoint), enforced at the edge on every connection (and, on an
//! `http://` endpoint, every request) that reaches the endpoint, after the cloud
//! endpoint's policy sent it there. It cannot forward (the connection is already on its
//! way to this endpoint): `on_tcp_connect` restricts, closes, logs and sets variables;
//! `on_http_request` and `on_http_response` (`http://` endpoints only) also answer,
//! rewrite, add and remove headers and rate-limit. A connection no rule closes goes on
//! to the endpoint. Compiled as a policy whose last `on_tcp_connect` rule forwards to
//! the endpoint itself ([`EndpointPolicy::compile_for`]).

use std::fmt;

use serde::{
    de::{self, Deserializer, MapAccess, Visitor},
    Deserialize, Serialize,
};

use crate::{
    http_model::{HttpAction, HttpRule},
    model::{Action, ForwardInternal, Rule, TrafficPolicy},
    parse::{HttpRequestRules, HttpResponseRules},
    CompiledPolicy, InternalUrl, PolicyError,
};

/// An agent endpoint's policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EndpointPolicy {
    /// Rules run in order on every connection to the endpoint.
    pub on_tcp_connect: Vec<Rule>,
    /// Rules run in order on every request to an `http://` endpoint.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_http_request: Vec<HttpRule>,
    /// Rules run in order on every response of an `http://` endpoint.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_http_response: Vec<HttpRule>,
}

impl EndpointPolicy {
    /// Parses and checks a policy document (YAML or JSON).
    pub fn from_yaml(text: &str) -> Result<EndpointPolicy, PolicyError> {
        Ok(serde_saphyr::from_str(text)?)
    }

    /// The policy enforced for connections to `url`: these rules, then one that
    /// forwards to `url` (so "allowed" is a forward to it, anything else a refusal).
    pub fn compile_for(&self, url: &InternalUrl) -> Result<CompiledPolicy, PolicyError> {
        let has_http = !self.on_http_request.is_empty() || !self.on_http_response.is_empty();
        if has_http && !url.scheme().is_http() {
            return Err(PolicyError::Invalid(format!(
                "`on_http_request`/`on_http_response` on `{url}`: HTTP rules run on http:// and https:// endpoints only"
            )));
        }
        let mut rules = self.on_tcp_connect.clone();
        rules.push(Rule {
            name: Some("to the endpoint".to_owned()),
            expressions: Vec::new(),
            actions: vec![Action::ForwardInternal(ForwardInternal {
                url: url.clone(),
            })],
        });
        TrafficPolicy {
            on_tcp_connect: rules,
            on_http_request: self.on_http_request.clone(),
            on_http_response: self.on_http_response.clone(),
        }
        .compile()
    }
}

/// Why an action cannot be in an agent endpoint's policy, if it cannot.
fn refused(action: &Action) -> Option<&'static str> {
    match action {
        Action::ForwardInternal(_) => Some(
            "`forward-internal` cannot run in an agent endpoint's policy: the connection \
             is already on its way to this endpoint (forward from the edge's cloud endpoint)",
        ),
        Action::TerminateTls(_) => Some(
            "`terminate-tls` in an agent endpoint's policy would send the private key to \
             the edge: the agent ends TLS itself with the endpoint's `agent_tls_termination` \
             (server_certificate, server_private_key, mutual_tls_certificate_authorities), \
             and the key never leaves this host",
        ),
        _ => None,
    }
}

impl<'de> Deserialize<'de> for EndpointPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EndpointPolicy;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an agent endpoint's traffic policy (on_tcp_connect, on_http_request, \
                     on_http_response)",
                )
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<EndpointPolicy, M::Error> {
                let mut policy = EndpointPolicy::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "on_tcp_connect" => {
                            policy.on_tcp_connect = map.next_value::<Rules>()?.0;
                        }
                        "on_http_request" => {
                            let rules = map.next_value::<HttpRequestRules>()?.0;
                            for (i, rule) in rules.iter().enumerate() {
                                if rule
                                    .actions
                                    .iter()
                                    .any(|a| matches!(a, HttpAction::ForwardInternal(_)))
                                {
                                    return Err(de::Error::custom(format!(
                                        "on_http_request rule {}: `forward-internal` cannot \
                                         run in an agent endpoint's policy: the request is \
                                         already on its way to this endpoint (forward from the \
                                         edge's cloud endpoint)",
                                        i + 1
                                    )));
                                }
                            }
                            policy.on_http_request = rules;
                        }
                        "on_http_response" => {
                            policy.on_http_response = map.next_value::<HttpResponseRules>()?.0;
                        }
                        other => {
                            return Err(de::Error::unknown_field(
                                other,
                                &["on_tcp_connect", "on_http_request", "on_http_response"],
                            ))
                        }
                    }
                }
                Ok(policy)
            }
        }
        d.deserialize_map(V)
    }
}

/// `on_tcp_connect` of an agent endpoint, checked for what it cannot do.
struct Rules(Vec<Rule>);

impl<'de> Deserialize<'de> for Rules {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let rules = crate::parse::rules(d)?;
        for (i, rule) in rules.iter().enumerate() {
            if let Some(why) = rule.actions.iter().find_map(refused) {
                return Err(de::Error::custom(format!("{}: {why}", rule.describe(i))));
            }
        }
        Ok(Rules(rules))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_policy_restricts_and_what_passes_goes_to_the_endpoint() {
        let p = EndpointPolicy::from_yaml(
            "on_tcp_connect:\n  - actions:\n      - type: restrict-ips\n        config: { allow: [10.0.0.0/8] }\n  - expressions: [\"conn.client_port < 1024\"]\n    actions: [{ type: close-connection }]\n",
        )
        .unwrap();
        let url = InternalUrl::parse("tcp://db.internal:5432").unwrap();
        let c = p.compile_for(&url).unwrap();
        let to = |client: &str| c.evaluate(client.parse().unwrap()).target().cloned();
        assert_eq!(to("10.1.2.3:40000"), Some(url.clone()));
        assert_eq!(to("192.0.2.1:40000"), None);
        assert_eq!(to("10.1.2.3:80"), None);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(EndpointPolicy::from_yaml(&json).unwrap(), p);
    }

    #[test]
    fn what_an_endpoint_policy_cannot_do_is_refused() {
        let err = |y: &str| EndpointPolicy::from_yaml(y).unwrap_err().to_string();
        assert!(err("on_tcp_connect:\n  - actions:\n      - type: forward-internal\n        config: { url: tcp://x.internal:1 }\n")
            .contains("already on its way"));
        assert!(err("on_http_request:\n  - actions:\n      - type: forward-internal\n        config: { url: http://x.internal }\n")
            .contains("already on its way"));
        // HTTP rules need an http:// endpoint.
        let http = EndpointPolicy::from_yaml(
            "on_http_request:\n  - actions:\n      - type: deny\n        config: { status_code: 401 }\n",
        )
        .unwrap();
        let tcp = InternalUrl::parse("tcp://db.internal:5432").unwrap();
        assert!(http
            .compile_for(&tcp)
            .unwrap_err()
            .to_string()
            .contains("http:// and https:// endpoints only"));
        let web = InternalUrl::parse("http://web.internal").unwrap();
        let compiled = http.compile_for(&web).unwrap();
        assert!(!compiled.http().is_empty());
        let json = serde_json::to_string(&http).unwrap();
        assert_eq!(EndpointPolicy::from_yaml(&json).unwrap(), http);
        assert!(err("on_tcp_conect: []\n").contains("on_tcp_conect"));
        // No decision is needed: an empty policy lets everything through.
        assert!(EndpointPolicy::from_yaml("on_tcp_connect: []\n").is_ok());
    }
}
