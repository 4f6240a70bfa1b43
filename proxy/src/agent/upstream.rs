//! The connect-upstream phase of a stream: resolve the endpoint's `host:port`, dial it
//! (bounded by [`CONNECT_TIMEOUT`]), send the PROXY protocol header when the endpoint
//! asks for one, then start TLS when it sets `upstream.tls`.
//!
//! A failure is an [`UpstreamError`] naming its cause (refused, timeout, DNS, TLS…):
//! [`UpstreamError::label`] for the `sluice_agent_upstream_failures_total{cause}`
//! counter, `Display` for logs, and [`log_failure`] the one place its log line is
//! written. The edge still learns only `UpstreamFailed` (the wire status is unchanged).
//!
//! Resolution is done here rather than inside `TcpStream::connect` (which makes the
//! same blocking `to_socket_addrs` call and dials its first address) so that a name
//! that does not resolve is told apart from a refused connect.

use std::{
    io,
    net::{SocketAddr, ToSocketAddrs},
};

use monoio::{io::AsyncWriteRentExt, net::TcpStream};
use rustls::ClientConnection;

use super::CONNECT_TIMEOUT;
use crate::{config::agent::AgentEndpoint, io::maybe_tls::MaybeTls, wire::StreamStart};

/// The upstream connection: plain, or TLS when the endpoint sets `upstream.tls`.
pub type Upstream = MaybeTls<ClientConnection>;

/// Why an upstream could not be connected. Every cause happens before any upstream
/// byte reached the edge, so the edge may replay the stream on another pool member.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream's host name did not resolve (or resolved to no address).
    #[error("cannot resolve the upstream address: {0}")]
    Dns(io::Error),
    /// Nothing listens at the upstream address (RST to our SYN).
    #[error("connection refused: {0}")]
    Refused(io::Error),
    /// No route to the upstream's host or network.
    #[error("upstream unreachable: {0}")]
    Unreachable(io::Error),
    /// The connect did not complete within [`CONNECT_TIMEOUT`] (or the kernel gave up).
    #[error("connect timed out")]
    Timeout,
    /// Any other connect error.
    #[error("connect failed: {0}")]
    Connect(io::Error),
    /// The connection broke while the PROXY protocol header was sent.
    #[error("PROXY header not sent: {0}")]
    ProxyHeader(io::Error),
    /// The upstream TLS handshake failed (certificate, name, protocol).
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    /// The upstream TLS handshake did not complete within [`CONNECT_TIMEOUT`].
    #[error("TLS handshake timed out")]
    TlsTimeout,
}

impl UpstreamError {
    /// Every cause label, in [`Self::index`] order (one counter each).
    pub const LABELS: [&'static str; 8] = [
        "dns",
        "refused",
        "unreachable",
        "timeout",
        "connect",
        "proxy_header",
        "tls",
        "tls_timeout",
    ];

    /// Position of this cause in [`Self::LABELS`].
    pub const fn index(&self) -> usize {
        match self {
            UpstreamError::Dns(_) => 0,
            UpstreamError::Refused(_) => 1,
            UpstreamError::Unreachable(_) => 2,
            UpstreamError::Timeout => 3,
            UpstreamError::Connect(_) => 4,
            UpstreamError::ProxyHeader(_) => 5,
            UpstreamError::Tls(_) => 6,
            UpstreamError::TlsTimeout => 7,
        }
    }

    /// Stable name for metric labels and the log's `cause` field.
    pub const fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }

    /// Classifies a failed TCP connect by its error kind.
    pub fn from_connect(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => UpstreamError::Refused(e),
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                UpstreamError::Unreachable(e)
            }
            io::ErrorKind::TimedOut => UpstreamError::Timeout,
            _ => UpstreamError::Connect(e),
        }
    }
}

/// The address to dial for `host:port`: the first one it resolves to, as
/// `TcpStream::connect` would. Blocking, like that call, when `host` is a name.
pub fn resolve(addr: &str) -> Result<SocketAddr, UpstreamError> {
    addr.to_socket_addrs()
        .map_err(UpstreamError::Dns)?
        .next()
        .ok_or_else(|| UpstreamError::Dns(io::Error::other("no address")))
}

/// Connects the stream's upstream and, when the endpoint asks for it, sends the PROXY
/// protocol header naming the public client before any other byte, then starts TLS
/// when the endpoint sets `upstream.tls`. Not cancel-safe (a dropped connect may
/// still complete on io_uring); dropped only with the stream.
pub async fn connect(
    start: &StreamStart,
    endpoint: &AgentEndpoint,
) -> Result<Upstream, UpstreamError> {
    let s = connect_tcp(start, endpoint).await?;
    let Some(tls) = &endpoint.upstream_tls else {
        return Ok(MaybeTls::Plain(s));
    };
    let handshake = crate::io::tls_stream::connect(s, tls.config.clone(), tls.server_name.clone());
    // Boxed: the handshake's state would otherwise size every stream's task.
    match Box::pin(monoio::time::timeout(CONNECT_TIMEOUT, handshake)).await {
        Ok(Ok(tls)) => Ok(MaybeTls::Tls(Box::new(tls))),
        Ok(Err(e)) => Err(UpstreamError::Tls(e)),
        Err(_) => Err(UpstreamError::TlsTimeout),
    }
}

async fn connect_tcp(
    start: &StreamStart,
    endpoint: &AgentEndpoint,
) -> Result<TcpStream, UpstreamError> {
    let dial = async {
        let addr = resolve(&endpoint.upstream)?;
        TcpStream::connect_addr(addr)
            .await
            .map_err(UpstreamError::from_connect)
    };
    let mut s = crate::io::idle::within(CONNECT_TIMEOUT, dial)
        .await
        .map_err(|_| UpstreamError::Timeout)??;
    let _ = s.set_nodelay(true);
    if let Some(version) = endpoint.proxy_protocol {
        let mut header = bytes::BytesMut::with_capacity(108);
        crate::proxy_protocol::encode(version, start.client, start.server, &mut header);
        let (res, _) = s.write_all(header).await;
        res.map_err(UpstreamError::ProxyHeader)?;
    }
    Ok(s)
}

/// [`connect`] as a stream's (or sub-stream's) connect phase: a failure is logged and
/// counted, per endpoint and agent-wide by cause.
pub async fn connect_counted(
    start: &StreamStart,
    endpoint: &AgentEndpoint,
    stats: &crate::metrics::agent::AgentStats,
) -> Result<Upstream, UpstreamError> {
    let result = connect(start, endpoint).await;
    if let Err(e) = &result {
        log_failure(e, start, endpoint);
        if let Some(counted) = stats.endpoint(&start.internal_url) {
            counted.upstream_failed.inc();
        }
        stats.upstream_failures.inc(e.index());
    }
    result
}

/// Logs a failed upstream connect (rate limited, one limit per kind of line) with its
/// `cause` label. The messages are the ones operators and tests match on.
pub fn log_failure(e: &UpstreamError, start: &StreamStart, endpoint: &AgentEndpoint) {
    let (url, upstream, cause) = (&start.internal_url, &endpoint.upstream, e.label());
    match e {
        UpstreamError::Dns(source)
        | UpstreamError::Refused(source)
        | UpstreamError::Unreachable(source)
        | UpstreamError::Connect(source) => {
            crate::log_throttled!(warn, %url, %upstream, client = %start.client, cause, error = %source, "upstream connect failed")
        }
        UpstreamError::Timeout => {
            crate::log_throttled!(warn, %url, %upstream, cause, "upstream connect timed out")
        }
        UpstreamError::ProxyHeader(source) => {
            crate::log_throttled!(warn, %url, %upstream, cause, error = %source, "PROXY header not sent")
        }
        UpstreamError::Tls(source) => {
            crate::log_throttled!(warn, %url, %upstream, cause, error = %source, "upstream TLS handshake failed")
        }
        UpstreamError::TlsTimeout => {
            crate::log_throttled!(warn, %url, %upstream, cause, "upstream TLS handshake timed out")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(errno: i32) -> io::Error {
        io::Error::from_raw_os_error(errno)
    }

    #[test]
    fn connect_errors_are_classified_by_kind() {
        let label = |e| UpstreamError::from_connect(e).label();
        assert_eq!(label(os(libc::ECONNREFUSED)), "refused");
        assert_eq!(label(os(libc::EHOSTUNREACH)), "unreachable");
        assert_eq!(label(os(libc::ENETUNREACH)), "unreachable");
        assert_eq!(label(os(libc::ETIMEDOUT)), "timeout");
        assert_eq!(label(os(libc::ECONNRESET)), "connect");
        assert_eq!(label(os(libc::EMFILE)), "connect");
    }

    #[test]
    fn labels_are_distinct_and_in_index_order() {
        let all = [
            UpstreamError::Dns(os(libc::EINVAL)),
            UpstreamError::Refused(os(libc::ECONNREFUSED)),
            UpstreamError::Unreachable(os(libc::EHOSTUNREACH)),
            UpstreamError::Timeout,
            UpstreamError::Connect(os(libc::ECONNRESET)),
            UpstreamError::ProxyHeader(os(libc::EPIPE)),
            UpstreamError::Tls(io::Error::other("bad certificate")),
            UpstreamError::TlsTimeout,
        ];
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert_eq!(e.label(), UpstreamError::LABELS[i]);
        }
        let distinct: std::collections::HashSet<_> = UpstreamError::LABELS.iter().collect();
        assert_eq!(distinct.len(), UpstreamError::LABELS.len());
    }

    #[test]
    fn display_names_the_cause_and_keeps_the_os_error() {
        let refused = UpstreamError::from_connect(os(libc::ECONNREFUSED)).to_string();
        assert!(refused.starts_with("connection refused: "), "{refused}");
        assert!(refused.contains("os error 111"), "{refused}");
        assert_eq!(UpstreamError::Timeout.to_string(), "connect timed out");
        assert_eq!(
            UpstreamError::TlsTimeout.to_string(),
            "TLS handshake timed out"
        );
        let tls = UpstreamError::Tls(io::Error::other("invalid peer certificate")).to_string();
        assert_eq!(tls, "TLS handshake failed: invalid peer certificate");
    }

    #[test]
    fn addresses_resolve_and_names_that_cannot_are_dns_failures() {
        assert_eq!(
            resolve("127.0.0.1:5432").unwrap(),
            "127.0.0.1:5432".parse().unwrap()
        );
        assert_eq!(resolve("[::1]:80").unwrap(), "[::1]:80".parse().unwrap());
        // A port that is no number fails before any lookup.
        assert_eq!(resolve("localhost:http").unwrap_err().label(), "dns");
        // A label over 63 bytes cannot be put in a DNS query: the resolver fails
        // locally, without sending one.
        let name = format!("{}.invalid:80", "a".repeat(70));
        let e = resolve(&name).unwrap_err();
        assert_eq!(e.label(), "dns", "{e}");
        assert!(e.to_string().starts_with("cannot resolve"), "{e}");
    }
}
