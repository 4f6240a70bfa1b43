//! An agent endpoint's `traffic_policy` at the edge ([`BoundPolicy`]): sent with the
//! agent's Bind as JSON, compiled when the bind arrives (a broken one refuses the
//! bind), kept with the URL's pool (every member must carry the same one), and
//! enforced on each connection the route phase hands to the pool, local or arriving
//! over a peer link ([`BoundPolicy::check`]).

use std::net::SocketAddr;

use sluice_policy::{CompiledPolicy, ConnInfo, EndpointPolicy, InternalUrl, Why};

/// A pool's traffic policy.
pub struct BoundPolicy {
    /// As the agent sent it: what pool members are compared by.
    pub json: String,
    /// The internal URL it guards (named in its `log` lines).
    pub url: String,
    /// Its rules, then a forward to the URL itself.
    pub compiled: CompiledPolicy,
}

impl std::fmt::Debug for BoundPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BoundPolicy").field(&self.json).finish()
    }
}

/// Policies are the same when their texts are.
impl PartialEq for BoundPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}
impl Eq for BoundPolicy {}

impl BoundPolicy {
    /// The policy a Bind carries for `url` (`None` when it carries none).
    pub fn from_bind(json: &str, url: &InternalUrl) -> Result<Option<BoundPolicy>, String> {
        if json.is_empty() {
            return Ok(None);
        }
        let policy = EndpointPolicy::from_yaml(json).map_err(|e| e.to_string())?;
        let compiled = policy.compile_for(url).map_err(|e| e.to_string())?;
        Ok(Some(BoundPolicy {
            json: json.to_owned(),
            url: url.to_string(),
            compiled,
        }))
    }

    /// Whether the policy lets `client`'s connection through to the endpoint (else
    /// the rule that refused it); the `log` actions it reached are written either way.
    pub fn check(
        &self,
        endpoint: &str,
        client: SocketAddr,
        facts: &dyn ConnInfo,
    ) -> Result<(), Why<'_>> {
        let decision =
            super::conn_facts::decide(endpoint, &self.url, &self.compiled, client, facts);
        match decision.is_allowed() {
            true => Ok(()),
            false => Err(decision.why()),
        }
    }
}
