//! How the agent reaches an edge: directly, or through the egress proxy its file names
//! (`agent.proxy_url`, as ngrok's agent has it), for networks that let nothing out but
//! through one. Both kinds of proxy carry the whole session, control channel and data
//! channels alike, as a TCP tunnel; TLS (or the `tcp` transport) runs inside it
//! unchanged:
//!
//! - `http://[user:pass@]host:port`: an HTTP `CONNECT` (RFC 9110 §9.3.6), with Basic
//!   proxy authentication when the URL has credentials;
//! - `socks5://[user:pass@]host:port`: SOCKS5 (RFC 1928), no authentication or
//!   username/password (RFC 1929).
//!
//! The edge is named to the proxy by the address the agent resolved it to. Every step
//! is bounded: the caller's timeout covers the proxy's connect and handshake, and a
//! proxy's answer is read into at most [`MAX_PROXY_REPLY`] bytes.

use std::{
    io,
    net::{SocketAddr, ToSocketAddrs},
};

use monoio::{
    io::{AsyncReadRent, AsyncWriteRentExt},
    net::TcpStream,
};

/// Longest HTTP `CONNECT` response head read.
pub const MAX_PROXY_REPLY: usize = 8 * 1024;

/// The kind of egress proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// HTTP `CONNECT`.
    Http,
    /// SOCKS5.
    Socks5,
}

/// An egress proxy, from `agent.proxy_url`.
#[derive(Clone, PartialEq, Eq)]
pub struct EgressProxy {
    /// HTTP or SOCKS5.
    pub kind: ProxyKind,
    /// `host:port` of the proxy.
    pub addr: String,
    /// User name and password, if the URL has them.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for EgressProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password stays out of logs.
        f.debug_struct("EgressProxy")
            .field("kind", &self.kind)
            .field("addr", &self.addr)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl EgressProxy {
    /// Parses `http://[user:pass@]host:port` or `socks5://[user:pass@]host:port`.
    pub fn parse(url: &str) -> Result<EgressProxy, String> {
        let (kind, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (ProxyKind::Http, rest)
        } else if let Some(rest) = url
            .strip_prefix("socks5://")
            .or_else(|| url.strip_prefix("socks5h://"))
        {
            (ProxyKind::Socks5, rest)
        } else if url.starts_with("https://") {
            return Err(format!(
                "`{url}`: a proxy spoken to over TLS is not supported; use http:// (the \
                 session is TLS inside the tunnel anyway) or socks5://"
            ));
        } else {
            return Err(format!(
                "`{url}`: expected http://[user:pass@]host:port or socks5://[user:pass@]host:port"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (
                    Some((percent_decode(user)?, percent_decode(pass)?)),
                    hostport,
                )
            }
            None => (None, rest),
        };
        let port_ok = hostport
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok || hostport.contains('/') {
            return Err(format!("`{url}`: expected host:port after the scheme"));
        }
        if kind == ProxyKind::Socks5 {
            if let Some((user, pass)) = &credentials {
                if user.len() > 255 || pass.len() > 255 {
                    return Err(format!(
                        "`{url}`: SOCKS5 user names and passwords are at most 255 bytes"
                    ));
                }
            }
        }
        Ok(EgressProxy {
            kind,
            addr: hostport.to_owned(),
            credentials,
        })
    }
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("`{text}`: a `%` not followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{text}`: not UTF-8 once decoded"))
}

/// A TCP connection to `edge`, through `proxy` when there is one. Not bounded in time
/// itself: the caller's timeout covers it.
pub async fn dial(edge: SocketAddr, proxy: Option<&EgressProxy>) -> io::Result<TcpStream> {
    let Some(proxy) = proxy else {
        return TcpStream::connect_addr(edge).await;
    };
    let proxy_addr = proxy
        .addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other(format!("proxy {}: no address", proxy.addr)))?;
    let mut stream = TcpStream::connect_addr(proxy_addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("proxy {}: {e}", proxy.addr)))?;
    match proxy.kind {
        ProxyKind::Http => http_connect(&mut stream, edge, proxy).await?,
        ProxyKind::Socks5 => socks5_connect(&mut stream, edge, proxy).await?,
    }
    Ok(stream)
}

async fn send(stream: &mut TcpStream, bytes: Vec<u8>) -> io::Result<()> {
    let (result, _) = stream.write_all(bytes).await;
    result.map(drop)
}

/// Reads exactly `n` bytes.
async fn read_exact(stream: &mut TcpStream, n: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let buf = Vec::with_capacity(n - out.len());
        let (result, buf) = stream.read(buf).await;
        match result? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the proxy closed the connection",
                ))
            }
            _ => out.extend_from_slice(&buf),
        }
    }
    Ok(out)
}

async fn http_connect(
    stream: &mut TcpStream,
    edge: SocketAddr,
    proxy: &EgressProxy,
) -> io::Result<()> {
    let mut request = format!("CONNECT {edge} HTTP/1.1\r\nHost: {edge}\r\n");
    if let Some((user, pass)) = &proxy.credentials {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    send(stream, request.into_bytes()).await?;
    // The edge says nothing before the agent does, so the proxy's answer is all there is
    // to read until the tunnel is used.
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_PROXY_REPLY {
            return Err(io::Error::other(format!(
                "proxy {}: its CONNECT answer is over {MAX_PROXY_REPLY} bytes",
                proxy.addr
            )));
        }
        let buf = Vec::with_capacity(1024);
        let (result, buf) = stream.read(buf).await;
        if result? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("proxy {}: closed before answering CONNECT", proxy.addr),
            ));
        }
        head.extend_from_slice(&buf);
    }
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
    let status_line =
        String::from_utf8_lossy(&head[..head.iter().position(|&b| b == b'\r').unwrap_or(0)])
            .into_owned();
    let code = status_line.split(' ').nth(1).unwrap_or("");
    if !(status_line.starts_with("HTTP/1.") && code.starts_with('2') && code.len() == 3) {
        // tinyproxy answers a missing or wrong password with 401, the RFC with 407.
        let why = if code == "407" || code == "401" {
            " (the proxy wants credentials: proxy_url: http://user:pass@host:port)"
        } else {
            ""
        };
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "proxy {} refused CONNECT {edge}: `{status_line}`{why}",
                proxy.addr
            ),
        ));
    }
    if end != head.len() {
        return Err(io::Error::other(format!(
            "proxy {}: sent bytes after its CONNECT answer",
            proxy.addr
        )));
    }
    Ok(())
}

async fn socks5_connect(
    stream: &mut TcpStream,
    edge: SocketAddr,
    proxy: &EgressProxy,
) -> io::Result<()> {
    let refused = |what: String| {
        io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("SOCKS5 proxy {}: {what}", proxy.addr),
        )
    };
    let greeting = match proxy.credentials {
        Some(_) => vec![5, 2, 0, 2],
        None => vec![5, 1, 0],
    };
    send(stream, greeting).await?;
    let choice = read_exact(stream, 2).await?;
    if choice[0] != 5 {
        return Err(refused(format!("not a SOCKS5 answer ({choice:?})")));
    }
    match (choice[1], &proxy.credentials) {
        (0, _) => {}
        (2, Some((user, pass))) => {
            let mut auth = vec![1, user.len() as u8];
            auth.extend_from_slice(user.as_bytes());
            auth.push(pass.len() as u8);
            auth.extend_from_slice(pass.as_bytes());
            send(stream, auth).await?;
            let verdict = read_exact(stream, 2).await?;
            if verdict[1] != 0 {
                return Err(refused("the user name or password was refused".into()));
            }
        }
        (0xff, None) => {
            return Err(refused(
                "it wants credentials (proxy_url: socks5://user:pass@host:port)".into(),
            ))
        }
        (method, _) => {
            return Err(refused(format!(
                "it chose an authentication method the agent does not offer ({method})"
            )))
        }
    }
    let mut connect = vec![5, 1, 0];
    match edge {
        SocketAddr::V4(a) => {
            connect.push(1);
            connect.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            connect.push(4);
            connect.extend_from_slice(&a.ip().octets());
        }
    }
    connect.extend_from_slice(&edge.port().to_be_bytes());
    send(stream, connect).await?;
    let reply = read_exact(stream, 4).await?;
    if reply[1] != 0 {
        let why = match reply[1] {
            1 => "general failure",
            2 => "not allowed by its rules",
            3 => "network unreachable",
            4 => "host unreachable",
            5 => "connection refused",
            6 => "TTL expired",
            7 => "command not supported",
            8 => "address type not supported",
            _ => "unknown error",
        };
        return Err(refused(format!("CONNECT {edge} failed: {why}")));
    }
    // The bound address the reply carries: skipped.
    let rest = match reply[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => usize::from(read_exact(stream, 1).await?[0]) + 2,
        other => {
            return Err(refused(format!(
                "unknown address type {other} in its reply"
            )))
        }
    };
    read_exact(stream, rest).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_parse_with_and_without_credentials() {
        let p = EgressProxy::parse("http://proxy.corp:3128").unwrap();
        assert_eq!(
            (p.kind, p.addr.as_str(), p.credentials),
            (ProxyKind::Http, "proxy.corp:3128", None)
        );
        let p = EgressProxy::parse("socks5://u%40corp:p%3Ass@10.0.0.1:1080/").unwrap();
        assert_eq!(p.kind, ProxyKind::Socks5);
        assert_eq!(p.addr, "10.0.0.1:1080");
        assert_eq!(p.credentials, Some(("u@corp".into(), "p:ss".into())));
        assert!(
            !format!("{p:?}").contains("p:ss"),
            "the password is not shown"
        );
        for bad in [
            "proxy:3128",
            "http://proxy",
            "https://proxy:443",
            "ftp://x:1",
            "http://:80",
            "http://a:b@",
        ] {
            assert!(EgressProxy::parse(bad).is_err(), "{bad}");
        }
    }
}
