//! What a public connection's `on_tcp_connect` expressions may read beyond its client
//! address ([`PublicConn`]: the edge's address it reached, the SNI of a `tls://`
//! endpoint's ClientHello, the client's country from the operator's database), each
//! found only when an expression of the endpoint's policy reads it ([`ForwardedConn`]
//! for one arriving over a peer link: its country only); and a policy's decision on a
//! connection with the events of the `log` actions it reached written ([`decide`]),
//! for the cloud endpoint's policy and an agent endpoint's alike.

use std::net::{IpAddr, SocketAddr};

use sluice_policy::{CompiledPolicy, ConnInfo, Decision};

use crate::sni::{peek_sni, SniPeek};

/// One public connection, as policies see it.
pub(super) struct PublicConn<'a, F: Fn() -> SocketAddr> {
    /// The edge's address the client connected to (a `getsockname` when the endpoint
    /// listens on a wildcard address: asked for only when needed).
    pub(super) server: F,
    /// The bytes already read from the client: a `tls://` endpoint's ClientHello.
    pub(super) hello: &'a [u8],
}

impl<F: Fn() -> SocketAddr> ConnInfo for PublicConn<'_, F> {
    fn server(&self) -> Option<SocketAddr> {
        Some((self.server)())
    }

    fn sni(&self) -> Option<String> {
        match peek_sni(self.hello) {
            Ok(SniPeek::Found(name)) => Some(name.into_owned()),
            _ => None,
        }
    }

    fn country_code(&self, ip: IpAddr) -> Option<String> {
        crate::geo::country_code(ip)
    }
}

/// A connection another edge of the fleet accepted and forwards over a peer link:
/// its client address (and so its country) is known here, not the rest.
pub(super) struct ForwardedConn;

impl ConnInfo for ForwardedConn {
    fn country_code(&self, ip: IpAddr) -> Option<String> {
        crate::geo::country_code(ip)
    }
}

/// `policy`'s decision on `client`'s connection to `endpoint`, the events of the `log`
/// actions it reached written (rate limited like the edge's other per-connection logs).
pub(super) fn decide<'p>(
    endpoint: &str,
    policy_of: &str,
    policy: &'p CompiledPolicy,
    client: SocketAddr,
    info: &dyn ConnInfo,
) -> Decision<'p> {
    let decision = policy.evaluate_conn(client, info);
    if decision.has_logs() {
        write_log_events(endpoint, policy_of, policy, &decision, client, info);
    }
    decision
}

fn write_log_events(
    endpoint: &str,
    policy_of: &str,
    policy: &CompiledPolicy,
    decision: &Decision<'_>,
    client: SocketAddr,
    info: &dyn ConnInfo,
) {
    for event in policy.log_events(decision, client, info) {
        super::policy_log::write(
            endpoint,
            policy_of,
            client,
            "on_tcp_connect",
            event.rule,
            event.rule_name,
            event.metadata,
        );
    }
}
