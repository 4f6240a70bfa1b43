//! The listeners sluice owns, and which listen addresses would share a port (no I/O).
//!
//! Every listener is exclusive to the one thing it serves: the edge's agent port, the
//! shared `tls_endpoints` port, the admin API and each `tcp://` endpoint. Two of them on
//! one port would not fail to bind, since the workers' listeners set `SO_REUSEPORT`
//! (`io::sockets`), but would silently split connections between them. So addresses
//! are compared before anything binds: in edge.yml ([`clashes`], for `sluice config
//! check` and every load), and at run time when the admin API adds an endpoint.
//!
//! Two addresses share a port when the ports are equal (and not 0: the kernel picks a
//! free one) and the IPs overlap the way Linux's `bind` sees it: equal IPs; `0.0.0.0`
//! and any IPv4 address; `::` and any address at all, IPv4 included, because sluice
//! does not set `IPV6_V6ONLY` and `::` is dual-stack by default
//! (`net.ipv6.bindv6only = 0`); and an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is
//! its IPv4 address. With `bindv6only = 1` this is stricter than the kernel, never
//! looser.

use std::net::{IpAddr, SocketAddr};

/// A listener, named as the operator knows it (`agents.listen`, `endpoints[2].url`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// What it is: a config key, or a description such as `endpoint ep_… (tcp://…)`.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Listener {
    /// A listener called `name` on `addr`.
    pub fn new(name: impl Into<String>, addr: SocketAddr) -> Self {
        Self {
            name: name.into(),
            addr,
        }
    }
}

/// Whether a listener on `a` and one on `b` would share a port (see the module doc).
pub fn shares_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0 && a.port() == b.port() && ips_overlap(a.ip(), b.ip())
}

/// Whether two listen IPs overlap: equal, or one is a wildcard covering the other.
pub fn ips_overlap(a: IpAddr, b: IpAddr) -> bool {
    let (a, b) = (a.to_canonical(), b.to_canonical());
    a == b || covers(a, b) || covers(b, a)
}

/// Whether a listener on `wildcard` also receives connections for `ip`.
fn covers(wildcard: IpAddr, ip: IpAddr) -> bool {
    match wildcard {
        IpAddr::V4(w) => w.is_unspecified() && ip.is_ipv4(),
        // Dual-stack `::` takes IPv4 too.
        IpAddr::V6(w) => w.is_unspecified(),
    }
}

/// Every pair of `listeners` that would share a port, as `(later, earlier)` indices,
/// ordered by the later one: each clash is reported once, at the listener that comes
/// second.
pub fn clashes(listeners: &[Listener]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, later) in listeners.iter().enumerate() {
        if let Some(j) = listeners[..i]
            .iter()
            .position(|earlier| shares_port(earlier.addr, later.addr))
        {
            out.push((i, j));
        }
    }
    out
}

/// The sentence a clash is reported with, naming both listeners.
pub fn clash_message(later: &Listener, earlier: &Listener) -> String {
    format!(
        "{} would share port {} with {} ({}); every listener needs an address of its own",
        later.addr,
        later.addr.port(),
        earlier.name,
        earlier.addr
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(a: &str, b: &str) -> bool {
        let (a, b) = (a.parse().unwrap(), b.parse().unwrap());
        let answer = shares_port(a, b);
        assert_eq!(answer, shares_port(b, a), "{a} {b}: not symmetric");
        answer
    }

    #[test]
    fn same_ip_same_port() {
        assert!(shares("127.0.0.1:8443", "127.0.0.1:8443"));
        assert!(shares("[::1]:8443", "[::1]:8443"));
        assert!(!shares("127.0.0.1:8443", "127.0.0.1:8444"));
        assert!(!shares("127.0.0.1:8443", "127.0.0.2:8443"));
        assert!(!shares("[::1]:8443", "[::2]:8443"));
    }

    #[test]
    fn ipv4_wildcard_covers_ipv4_only() {
        assert!(shares("0.0.0.0:8443", "127.0.0.1:8443"));
        assert!(shares("0.0.0.0:8443", "10.1.2.3:8443"));
        assert!(shares("0.0.0.0:8443", "0.0.0.0:8443"));
        assert!(!shares("0.0.0.0:8443", "[::1]:8443"));
        assert!(!shares("0.0.0.0:8443", "[2001:db8::1]:8443"));
        assert!(!shares("0.0.0.0:8443", "127.0.0.1:8444"));
    }

    #[test]
    fn ipv6_wildcard_is_dual_stack() {
        assert!(shares("[::]:8443", "[::1]:8443"));
        assert!(shares("[::]:8443", "127.0.0.1:8443"));
        assert!(shares("[::]:8443", "0.0.0.0:8443"));
        assert!(!shares("[::]:8443", "127.0.0.1:8444"));
    }

    #[test]
    fn ipv4_mapped_addresses_are_their_ipv4_address() {
        assert!(shares("[::ffff:127.0.0.1]:8443", "127.0.0.1:8443"));
        assert!(shares("[::ffff:127.0.0.1]:8443", "0.0.0.0:8443"));
        assert!(!shares("[::ffff:127.0.0.1]:8443", "127.0.0.2:8443"));
    }

    #[test]
    fn port_zero_never_clashes() {
        assert!(!shares("127.0.0.1:0", "127.0.0.1:0"));
        assert!(!shares("0.0.0.0:0", "[::]:0"));
    }

    #[test]
    fn clashes_are_reported_once_at_the_later_listener() {
        let listeners = [
            Listener::new("agents.listen", "127.0.0.1:8443".parse().unwrap()),
            Listener::new("tls_endpoints.listen", "0.0.0.0:443".parse().unwrap()),
            Listener::new("endpoints[0].url", "127.0.0.1:0".parse().unwrap()),
            Listener::new("endpoints[1].url", "127.0.0.1:0".parse().unwrap()),
            Listener::new("endpoints[2].url", "[::]:8443".parse().unwrap()),
            Listener::new("endpoints[3].url", "10.0.0.1:443".parse().unwrap()),
            Listener::new("endpoints[4].url", "[::1]:9000".parse().unwrap()),
            Listener::new("endpoints[5].url", "0.0.0.0:9000".parse().unwrap()),
        ];
        assert_eq!(clashes(&listeners), vec![(4, 0), (5, 1)]);
        let message = clash_message(&listeners[4], &listeners[0]);
        assert_eq!(
            message,
            "[::]:8443 would share port 8443 with agents.listen (127.0.0.1:8443); \
             every listener needs an address of its own"
        );
    }
}
