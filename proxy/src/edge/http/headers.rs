//! Headers across the edge (pure): the host a request names, hop-by-hop headers kept on
//! their hop (RFC 9110 §7.6.1, and those RFC 2616 listed), and the client's address,
//! protocol and host passed on in `X-Forwarded-For`/`-Proto`/`-Host`.

use std::net::IpAddr;

use hyper::{
    header::{self, HeaderMap, HeaderName, HeaderValue},
    Request,
};

/// Headers that belong to one connection, never forwarded. (Named by their
/// `HeaderName`s: a name given as a string is parsed and hashed again at each lookup.)
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The host a request is for: its `Host` header (or the authority of an absolute
/// URI), lowercase, without a port. `None` when it names none or an unusable one.
pub fn host_of<B>(req: &Request<B>) -> Option<String> {
    let raw = match req.headers().get(header::HOST) {
        Some(value) => value.to_str().ok()?,
        None => req.uri().authority()?.as_str(),
    };
    let raw = raw.rsplit_once('@').map_or(raw, |(_, h)| h);
    let host = if let Some(v6) = raw.strip_prefix('[') {
        v6.split_once(']')?.0
    } else {
        raw.split_once(':').map_or(raw, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Removes the hop-by-hop headers, and those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most heads have none: one pass over their few names costs less than a lookup of
    // each hop-by-hop name.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether a request's `TE` says its client accepts trailers (`TE: trailers`, as every
/// gRPC client sends). `TE` is hop-by-hop, but that one value is passed on (RFC 9113
/// 8.2.2 allows it even in HTTP/2): without it a gRPC server refuses the call.
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let name = coding.split(';').next().unwrap_or_default();
            name.trim().eq_ignore_ascii_case("trailers")
        })
}

/// The protocol a request asks to switch to (`Upgrade`, with `upgrade` among the
/// `Connection` options), e.g. `websocket`.
pub fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|option| option.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// A 101 response's headers as the client gets them: hop-by-hop ones gone, except the
/// protocol switch itself.
pub fn keep_upgrade(headers: &mut HeaderMap) {
    let protocol = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(headers);
    if let Some(protocol) = protocol {
        headers.insert(header::UPGRADE, protocol);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The client's address as `X-Forwarded-For` names it, made once per connection (for
/// [`add_forwarded`]).
pub fn client_value(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_string()).expect("an IP address is a valid header value")
}

/// Appends `client` (from [`client_value`]) to `X-Forwarded-For` (after any addresses
/// earlier proxies put there) and sets `X-Forwarded-Proto` to `proto` and
/// `X-Forwarded-Host` to the host the client asked for (`host`, its `Host` header as
/// sent).
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    proto: &'static str,
    host: &str,
) {
    let earlier: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let chain = if earlier.is_empty() {
        Some(client.clone())
    } else {
        let client = client.to_str().unwrap_or_default();
        HeaderValue::from_str(&format!("{}, {client}", earlier.join(", "))).ok()
    };
    if let Some(value) = chain {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Ok(value) = HeaderValue::from_str(host) {
        headers.insert(X_FORWARDED_HOST, value);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn te_trailers_is_found_among_codings() {
        use super::accepts_trailers;
        let mut h = hyper::HeaderMap::new();
        assert!(!accepts_trailers(&h));
        h.insert(hyper::header::TE, "gzip;q=0.5, Trailers".parse().unwrap());
        assert!(accepts_trailers(&h));
        h.insert(hyper::header::TE, "gzip, deflate".parse().unwrap());
        assert!(!accepts_trailers(&h));
    }

    use super::*;

    fn request(host: Option<&str>, uri: &str) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        if let Some(host) = host {
            builder = builder.header(header::HOST, host);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn the_host_comes_from_the_host_header_or_the_absolute_uri_without_its_port() {
        let cases = [
            (Some("API.Example.com:8080"), "/", Some("api.example.com")),
            (Some("api.example.com"), "/x", Some("api.example.com")),
            (Some("[::1]:80"), "/", Some("::1")),
            (None, "http://Other.example:81/p", Some("other.example")),
            (None, "/", None),
            (Some(""), "/", None),
            (Some(":80"), "/", None),
        ];
        for (host, uri, want) in cases {
            assert_eq!(
                host_of(&request(host, uri)).as_deref(),
                want,
                "{host:?} {uri}"
            );
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            "keep-alive, X-Secret-Hop".parse().unwrap(),
        );
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert("x-kept", "yes".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn a_protocol_switch_is_read_from_connection_and_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert_eq!(upgrade_of(&h), None, "no Connection: upgrade");
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        assert_eq!(upgrade_of(&h).unwrap(), "websocket");
        keep_upgrade(&mut h);
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
    }

    #[test]
    fn the_client_is_appended_to_the_forwarded_chain() {
        let client = client_value("203.0.113.9".parse().unwrap());
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, &client, "http", "api.example.com:8080");
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com:8080");

        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "10.0.0.1".parse().unwrap());
        h.append("x-forwarded-for", "10.0.0.2, 10.0.0.3".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        add_forwarded(&mut h, &client, "http", "a");
        assert_eq!(
            h["x-forwarded-for"],
            "10.0.0.1, 10.0.0.2, 10.0.0.3, 203.0.113.9"
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(
            h["x-forwarded-proto"], "http",
            "the client's own claim is replaced"
        );
    }
}
