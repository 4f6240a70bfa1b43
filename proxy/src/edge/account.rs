//! The account phase: the one place where what happened to a public connection (an
//! [`Outcome`] of one of the phases in edge/pipeline.rs, or an [`Unrouted`] refusal on
//! the `tls://` port) becomes a log line, an edge-wide count ([`EdgeStats`]) and the
//! endpoint's own count ([`super::stats::EndpointStats`]). Lines an outsider can
//! trigger at will (refusals, cuts) are rate limited per kind (`log_throttled!`, one
//! throttle per arm below); the endpoint counters are the
//! `sluice_edge_connections_total{outcome=…}` samples.
//!
//! Nothing here does I/O beyond logging; the phases act (reset the client, park a
//! channel) and hand over a value.

use std::net::SocketAddr;

use sluice_policy::Why;

use super::{
    conn_limits::LimitHit, denials::Refusal, open::NoMember, stats::EdgeStats,
    tls_port::HelloError, LiveEndpoint,
};
use crate::io::{splice::PumpError, PumpStats};

/// What a phase of one public connection came to.
pub enum Outcome<'a> {
    /// Admit: over `max_connections` or `max_connections_per_ip`; reset.
    OverLimit(LimitHit),
    /// Admit: the traffic policy denied the client; reset.
    Denied(Why<'a>),
    /// Route: the agent endpoint's own traffic policy denied the client; reset.
    DeniedAtEndpoint {
        /// The internal URL.
        target: &'a str,
        /// Its rule that denied.
        why: Why<'a>,
    },
    /// Admit: forwarded, although an `enforce: false` restriction would have denied.
    WouldDeny(Why<'a>),
    /// Route: no agent session serves the policy's target; closed.
    NoAgent {
        /// The internal URL.
        target: &'a str,
    },
    /// The client's TLS handshake with the edge (`terminate_tls`) failed; closed.
    TlsHandshakeFailed {
        /// Why.
        reason: String,
    },
    /// Open: no pool member could take the stream; reset.
    NoMember {
        /// The internal URL.
        target: &'a str,
        /// How many were tried, and the last failure.
        failure: NoMember,
    },
    /// Open: the agent connected the upstream; the pump starts.
    Forwarded {
        /// Members that failed first.
        failovers: usize,
        /// From accept to now.
        open_latency: std::time::Duration,
    },
    /// Pump: the stream ended.
    Ended(StreamEnd),
}

/// How a forwarded stream ended.
pub enum StreamEnd {
    /// Both directions ended cleanly.
    Closed(PumpStats),
    /// One side failed (the other was reset).
    Failed(PumpError),
    /// No byte moved for the endpoint's idle timeout.
    IdleTimeout,
    /// The agent session carrying it was kicked (token revoked, user deactivated).
    Cut {
        /// The session.
        session: u64,
    },
}

/// One public connection, as its outcomes are accounted for.
pub struct Conn<'a> {
    /// Edge-wide counters.
    pub edge: &'a EdgeStats,
    /// The endpoint that accepted it.
    pub endpoint: &'a LiveEndpoint,
    /// The client.
    pub peer: SocketAddr,
}

impl Conn<'_> {
    /// Logs and counts `outcome`.
    pub fn account(&self, outcome: Outcome<'_>) {
        let (endpoint, peer) = (self.endpoint, self.peer);
        let stats = &endpoint.stats;
        match outcome {
            Outcome::OverLimit(hit) => {
                crate::log_throttled!(info, endpoint = %endpoint.url, %peer, limit = hit.as_str(), "connection limit reached; closed");
                stats.limited.inc();
                stats.recent_denials.record(Refusal {
                    client: peer.ip(),
                    cause: hit.as_str(),
                    by: "endpoint",
                    rule: None,
                    rule_name: None,
                });
            }
            Outcome::Denied(why) => {
                crate::log_throttled!(info, endpoint = %endpoint.url, %peer, rule = why.rule(),
                    rule_name = why.rule_name().unwrap_or(""),
                    cause = why.cause().as_str(), "denied by traffic policy");
                EdgeStats::bump(&self.edge.denied);
                stats.denied.inc();
                stats.recent_denials.record(Refusal {
                    client: peer.ip(),
                    cause: why.cause().as_str(),
                    by: "endpoint",
                    rule: Some(why.rule()),
                    rule_name: why.rule_name(),
                });
            }
            Outcome::DeniedAtEndpoint { target, why } => {
                crate::log_throttled!(info, endpoint = %endpoint.url, %peer, internal_url = %target,
                    rule = why.rule(), rule_name = why.rule_name().unwrap_or(""),
                    cause = why.cause().as_str(), "denied by the agent endpoint's traffic policy");
                EdgeStats::bump(&self.edge.denied);
                stats.denied.inc();
                stats.recent_denials.record(Refusal {
                    client: peer.ip(),
                    cause: why.cause().as_str(),
                    by: target,
                    rule: Some(why.rule()),
                    rule_name: why.rule_name(),
                });
            }
            Outcome::WouldDeny(why) => {
                tracing::info!(endpoint = %endpoint.url, %peer, rule = why.rule(),
                    "would be denied by traffic policy (enforce: false); forwarded");
            }
            Outcome::NoAgent { target } => {
                crate::log_throttled!(info, endpoint = %endpoint.url, %peer, internal_url = %target, "no agent serves the target");
                EdgeStats::bump(&self.edge.no_agent);
                stats.no_agent.inc();
            }
            Outcome::TlsHandshakeFailed { reason } => {
                crate::log_throttled!(info, endpoint = %endpoint.url, %peer, %reason, "tls handshake with the client failed; closed");
                EdgeStats::bump(&self.edge.tls_handshake_failed);
                stats.tls_handshake_failed.inc();
            }
            Outcome::NoMember { target, failure } => {
                let last = failure.last.map_or("", |e| e.as_str());
                crate::log_throttled!(info, endpoint = %endpoint.url, %peer, internal_url = %target, tried = failure.tried,
                    last, "no pool member could take the connection");
                EdgeStats::bump(&self.edge.no_channel);
                stats.no_channel.inc();
            }
            Outcome::Forwarded {
                failovers,
                open_latency,
            } => {
                stats.failovers.add(failovers as u64);
                EdgeStats::bump(&self.edge.forwarded);
                stats.forwarded.inc();
                stats.open_latency.observe(open_latency);
            }
            Outcome::Ended(StreamEnd::Closed(bytes)) => {
                tracing::trace!(%peer, up = bytes.inbound_to_outbound, down = bytes.outbound_to_inbound, "stream closed");
                stats.bytes_in.add(bytes.inbound_to_outbound);
                stats.bytes_out.add(bytes.outbound_to_inbound);
            }
            Outcome::Ended(StreamEnd::Failed(e)) => {
                tracing::debug!(%peer, error = %e, "stream ended with an error");
                stats.stream_errors.inc();
            }
            Outcome::Ended(StreamEnd::IdleTimeout) => {
                tracing::debug!(%peer, "idle timeout; closed");
                stats.idle_timeouts.inc();
            }
            Outcome::Ended(StreamEnd::Cut { session }) => {
                crate::log_throttled!(info, endpoint = %endpoint.url, %peer, session,
                    "stream cut: its agent session was ended (token revoked or user deactivated)");
                stats.stream_errors.inc();
            }
        }
    }
}

/// Why a connection on the `tls://` port found no endpoint.
pub enum Unrouted<'a> {
    /// No usable ClientHello.
    Hello(HelloError),
    /// No endpoint has this SNI host name.
    UnknownSni(&'a str),
}

/// Logs and counts a `tls://` port connection closed before it had an endpoint.
pub fn unrouted(edge: &EdgeStats, peer: SocketAddr, why: Unrouted<'_>) {
    match why {
        Unrouted::Hello(HelloError::Timeout) => {
            crate::log_throttled!(info, %peer, "tls endpoint: no ClientHello in time; closed");
        }
        Unrouted::Hello(reason) => {
            crate::log_throttled!(info, %peer, %reason, "tls endpoint: connection closed");
        }
        Unrouted::UnknownSni(sni) => {
            crate::log_throttled!(info, %peer, sni, "tls endpoint: unknown SNI; closed");
        }
    }
    EdgeStats::bump(&edge.no_route);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sluice_policy::TrafficPolicy;

    use super::*;
    use crate::edge::datachan::OpenError;

    const URL: &str = "tcp://x.internal:1";

    fn endpoint() -> LiveEndpoint {
        let yaml = format!(
            "{{ on_tcp_connect: [ {{ actions: [ {{ type: restrict-ips, config: {{ allow: [\"10.0.0.0/8\"] }} }}, \
             {{ type: forward-internal, config: {{ url: \"{URL}\" }} }} ] }} ] }}"
        );
        let policy = TrafficPolicy::from_yaml(&yaml).unwrap().compile().unwrap();
        let url = "tcp://127.0.0.1:1";
        LiveEndpoint::new(
            crate::edge::endpoints::EndpointSpec {
                id: "ep".into(),
                url: url.into(),
                addr: crate::config::edge::parse_endpoint_url(url).unwrap(),
                policy,
                idle_timeout: None,
                response_timeout: crate::config::edge::DEFAULT_RESPONSE_TIMEOUT,
                terminate_tls: None,
                limits: Default::default(),
            },
            "127.0.0.1:1".parse().unwrap(),
        )
    }

    #[test]
    fn each_outcome_is_counted_once_under_its_metric() {
        let edge = EdgeStats::default();
        let ep = endpoint();
        let peer = "192.0.2.1:5".parse().unwrap();
        let conn = Conn {
            edge: &edge,
            endpoint: &ep,
            peer,
        };
        let policy = ep.policy.load();
        let decision = policy.evaluate(peer);
        assert!(!decision.is_allowed());
        conn.account(Outcome::Denied(decision.why()));
        conn.account(Outcome::OverLimit(LimitHit::PerIp));
        conn.account(Outcome::NoAgent { target: URL });
        conn.account(Outcome::TlsHandshakeFailed {
            reason: "no shared cipher".into(),
        });
        conn.account(Outcome::NoMember {
            target: URL,
            failure: NoMember {
                tried: 2,
                last: Some(OpenError::NoChannel),
            },
        });
        conn.account(Outcome::Forwarded {
            failovers: 2,
            open_latency: Duration::from_millis(1),
        });
        conn.account(Outcome::Ended(StreamEnd::Closed(PumpStats {
            inbound_to_outbound: 3,
            outbound_to_inbound: 4,
        })));
        conn.account(Outcome::Ended(StreamEnd::IdleTimeout));
        conn.account(Outcome::Ended(StreamEnd::Cut { session: 1 }));
        let s = &ep.stats;
        let endpoint_counts = [
            s.denied.get(),
            s.limited.get(),
            s.no_agent.get(),
            s.tls_handshake_failed.get(),
            s.no_channel.get(),
            s.forwarded.get(),
            s.failovers.get(),
            s.bytes_in.get(),
            s.bytes_out.get(),
            s.idle_timeouts.get(),
            s.stream_errors.get(),
        ];
        assert_eq!(endpoint_counts, [1, 1, 1, 1, 1, 1, 2, 3, 4, 1, 1]);
        let edge_counts = [
            edge.denied.get(),
            edge.no_agent.get(),
            edge.tls_handshake_failed.get(),
            edge.no_channel.get(),
            edge.forwarded.get(),
            edge.no_route.get(),
        ];
        assert_eq!(edge_counts, [1, 1, 1, 1, 1, 0]);
        // The phases count the connection itself (`handled`) before any outcome.
        assert_eq!(s.connections.get(), 0);
        unrouted(&edge, peer, Unrouted::UnknownSni("a.example"));
        unrouted(&edge, peer, Unrouted::Hello(HelloError::Timeout));
        assert_eq!(edge.no_route.get(), 2);
    }
}
