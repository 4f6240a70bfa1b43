//! The `traffic policy log` line, what a policy's `log` action writes in every phase
//! (`on_tcp_connect` once per connection, `on_http_request` and `on_http_response`
//! per request), with one set of fields: `endpoint`, `policy` (whose policy wrote it:
//! [`ENDPOINT_POLICY`] for the cloud endpoint's own, else the internal URL of the agent
//! endpoint whose `traffic_policy` it is), `client`, `phase`, `rule` (its number in the
//! phase, from 1), `rule_name` (empty when it has none) and `metadata` (a JSON object,
//! `${...}` filled in). Rate limited like the edge's other lines an outsider can
//! trigger.

use std::net::SocketAddr;

/// The `policy` field of a line the cloud endpoint's own policy wrote.
pub(super) const ENDPOINT_POLICY: &str = "endpoint";

/// Writes one `log` action's event. `on_tcp_connect` lines and the HTTP phases' are
/// rate limited apart, so a flood of requests does not hide connections' lines; the
/// metadata is rendered only for a line that is written.
pub(super) fn write<K: Into<String>>(
    endpoint: &str,
    policy: &str,
    client: SocketAddr,
    phase: &'static str,
    rule: usize,
    rule_name: Option<&str>,
    metadata: impl IntoIterator<Item = (K, String)>,
) {
    macro_rules! line {
        () => {
            crate::log_throttled!(
                info,
                endpoint,
                policy,
                %client,
                phase,
                rule = rule + 1,
                rule_name = rule_name.unwrap_or_default(),
                metadata = %object(metadata),
                "traffic policy log"
            )
        };
    }
    if phase == "on_tcp_connect" {
        line!()
    } else {
        line!()
    }
}

/// The metadata as one JSON object.
fn object<K: Into<String>>(metadata: impl IntoIterator<Item = (K, String)>) -> serde_json::Value {
    serde_json::Value::Object(
        metadata
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect(),
    )
}
