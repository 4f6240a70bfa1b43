//! [`InternalUrl`]: the address of an internal endpoint, `tcp://db.internal:5432`,
//! `tls://api.internal[:443]`, `http://api.internal[:80]` or
//! `https://api.internal[:443]`.
//!
//! The host must be a DNS name ending in `.internal` (so it can never be
//! mistaken for a public address), `tcp` requires a port, `tls` and `https` default to
//! 443, `http` to 80. Hosts are compared in lower case; the original text is kept for logs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::PolicyError;

/// Transport of an internal endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain TCP: `tcp://host.internal:port`.
    Tcp,
    /// TLS: `tls://host.internal[:port]`, port 443 by default.
    Tls,
    /// HTTP: `http://host.internal[:port]`, port 80 by default (the edge speaks HTTP/1.1
    /// to it through the tunnel).
    Http,
    /// HTTP named as ngrok's `https://NAME.internal` endpoints are: port 443 by default,
    /// served like `http` (requests forwarded one by one; the tunnel is the transport,
    /// and the agent speaks TLS to the upstream when its `upstream.url` says so).
    Https,
}

impl Scheme {
    /// `"tcp"`, `"tls"`, `"http"` or `"https"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Tcp => "tcp",
            Scheme::Tls => "tls",
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// Whether requests are forwarded to it one by one (`http`, `https`), not bytes.
    pub const fn is_http(self) -> bool {
        matches!(self, Scheme::Http | Scheme::Https)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed internal endpoint URL.
#[derive(Clone, Debug)]
pub struct InternalUrl {
    scheme: Scheme,
    host: String,
    port: u16,
    original: String,
    /// `scheme://host:port`, made once: the edge looks a pool up by it per request.
    canonical: String,
}

impl InternalUrl {
    /// Parses `tcp://name.internal:port` or `tls://name.internal[:port]`.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        parse(text).map_err(|reason| PolicyError::InvalidUrl {
            value: text.to_owned(),
            reason,
        })
    }

    /// The transport.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host name in lower case, e.g. `db.internal`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (443 when a `tls` URL gave none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL exactly as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.original
    }

    /// The canonical form, `scheme://host:port`, used as the pool key.
    pub fn canonical(&self) -> String {
        self.canonical.clone()
    }
}

/// Two URLs are equal when they name the same endpoint (scheme, host, port),
/// whatever their spelling.
impl PartialEq for InternalUrl {
    fn eq(&self, other: &Self) -> bool {
        self.scheme == other.scheme && self.host == other.host && self.port == other.port
    }
}

impl Eq for InternalUrl {}

impl std::hash::Hash for InternalUrl {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.scheme, &self.host, self.port).hash(state);
    }
}

impl fmt::Display for InternalUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl FromStr for InternalUrl {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for InternalUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(|reason| {
            serde::de::Error::custom(format!("invalid internal URL `{text}`: {reason}"))
        })
    }
}

impl Serialize for InternalUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.original)
    }
}

fn parse(text: &str) -> Result<InternalUrl, String> {
    let (scheme, rest) = text.split_once("://").ok_or_else(|| {
        "expected `tcp://host.internal:port` or `tls://host.internal[:port]`".to_owned()
    })?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "tcp" => Scheme::Tcp,
        "tls" => Scheme::Tls,
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => {
            return Err(format!(
                "unsupported scheme `{other}` (expected `tcp`, `tls`, `http` or `https`)"
            ))
        }
    };
    if let Some(bad) = rest.find(['/', '?', '#', '@']) {
        return Err(format!(
            "unexpected `{}`: an internal URL has no path, query or credentials",
            &rest[bad..=bad]
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => {
            let port: u16 = port.parse().map_err(|_| format!("invalid port `{port}`"))?;
            if port == 0 {
                return Err("port 0 is not a valid port".to_owned());
            }
            (host, Some(port))
        }
        None => (rest, None),
    };
    let host = host.to_ascii_lowercase();
    check_host(&host)?;
    let port = match (scheme, port) {
        (_, Some(p)) => p,
        (Scheme::Tls | Scheme::Https, None) => 443,
        (Scheme::Http, None) => 80,
        (Scheme::Tcp, None) => {
            return Err("a `tcp` URL needs a port, e.g. `tcp://db.internal:5432`".to_owned())
        }
    };
    let canonical = format!("{scheme}://{host}:{port}");
    Ok(InternalUrl {
        scheme,
        host,
        port,
        original: text.to_owned(),
        canonical,
    })
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("missing host".to_owned());
    }
    let Some(name) = host.strip_suffix(".internal") else {
        return Err(format!("host `{host}` does not end in `.internal`"));
    };
    if name.is_empty() || host.len() > 253 {
        return Err(format!("host `{host}` needs a name before `.internal`"));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(format!("host `{host}` has an invalid DNS label `{label}`"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_and_tls() {
        let u = InternalUrl::parse("tcp://db.internal:5432").unwrap();
        assert_eq!(
            (u.scheme(), u.host(), u.port()),
            (Scheme::Tcp, "db.internal", 5432)
        );
        assert_eq!(u.as_str(), "tcp://db.internal:5432");
        let u = InternalUrl::parse("tls://API.Internal").unwrap();
        assert_eq!(
            (u.scheme(), u.host(), u.port()),
            (Scheme::Tls, "api.internal", 443)
        );
        assert_eq!(u.canonical(), "tls://api.internal:443");
        assert_eq!(u, InternalUrl::parse("tls://api.internal:443").unwrap());
    }

    #[test]
    fn http_defaults_to_port_80() {
        let u = InternalUrl::parse("HTTP://Api.Internal").unwrap();
        assert_eq!(u.scheme(), Scheme::Http);
        assert_eq!(u.canonical(), "http://api.internal:80");
        assert_eq!(u, InternalUrl::parse("http://api.internal:80").unwrap());
        assert_ne!(u, InternalUrl::parse("tcp://api.internal:80").unwrap());
    }

    #[test]
    fn https_defaults_to_port_443_and_is_served_like_http() {
        let u = InternalUrl::parse("https://api.internal").unwrap();
        assert_eq!((u.scheme(), u.port()), (Scheme::Https, 443));
        assert_eq!(u.canonical(), "https://api.internal:443");
        assert!(u.scheme().is_http() && Scheme::Http.is_http());
        assert!(!Scheme::Tls.is_http() && !Scheme::Tcp.is_http());
        assert_ne!(u, InternalUrl::parse("http://api.internal:443").unwrap());
        assert_ne!(u, InternalUrl::parse("tls://api.internal:443").unwrap());
    }

    #[test]
    fn rejects_bad_urls() {
        for (bad, why) in [
            ("tcp://db.example.com:5432", "does not end in `.internal`"),
            ("tcp://db.internal", "needs a port"),
            ("udp://db.internal:80", "unsupported scheme `udp`"),
            ("db.internal:80", "expected `tcp://"),
            ("tcp://.internal:1", "needs a name"),
            ("tcp://internal:1", "does not end in `.internal`"),
            ("tcp://db.internal:0", "port 0"),
            ("tcp://db.internal:70000", "invalid port `70000`"),
            ("tcp://db.internal:5432/x", "no path"),
            ("tcp://a_b.internal:1", "invalid DNS label `a_b`"),
            ("tcp://u@db.internal:1", "credentials"),
        ] {
            let err = InternalUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }
}
