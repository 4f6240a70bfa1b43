//! Config files of every proxied path, generated from the ports and files of one run:
//! sluice edge and agent, HAProxy's two hops, rathole server and client. (bore takes
//! flags only.) Pure text, so the tests can pin them. The HTTP workloads reach the
//! HTTP upstream through the paths that speak HTTP: sluice's `http://` endpoint and
//! HAProxy in `mode http`.
use std::net::SocketAddr;
use std::path::Path;

/// The upstreams every path forwards to: an echo service, a sink and an HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct Upstreams {
    pub echo: SocketAddr,
    pub sink: SocketAddr,
    pub http: SocketAddr,
}

/// The public addresses a path exposes, one per upstream (HTTP only on the paths that
/// forward HTTP requests).
#[derive(Debug, Clone, Copy)]
pub struct Public {
    pub echo: SocketAddr,
    pub sink: SocketAddr,
    pub http: Option<SocketAddr>,
}

/// The host name the HTTP workloads send and sluice's `http://` endpoint routes.
pub const HTTP_HOST: &str = "bench.example";

fn forward(url: &str) -> String {
    format!(
        "traffic_policy: {{ on_tcp_connect: [ {{ actions: [ {{ type: forward-internal, config: {{ url: \"{url}\" }} }} ] }} ] }}"
    )
}

/// sluice edge: the agent port with its certificate, one bench user, two `tcp://`
/// endpoints and, when `public.http` is set, the `http://` endpoint on that port.
pub fn sluice_edge(
    agent_port: SocketAddr,
    cert: &Path,
    key: &Path,
    hash: &str,
    public: Public,
) -> String {
    let (http_port, http_endpoint) = match public.http {
        Some(addr) => (
            format!("http_endpoints: {{ listen: \"{addr}\" }}\n"),
            format!(
                "  - url: http://{HTTP_HOST}\n    {}\n",
                forward("http://web.internal")
            ),
        ),
        None => Default::default(),
    };
    format!(
        "version: 1\n\
         agents: {{ listen: \"{agent_port}\", tls: {{ cert: \"{}\", key: \"{}\" }}, plain_channels: true }}\n\
         {http_port}\
         service_users: [ {{ name: bench, authtokens: [\"{hash}\"] }} ]\n\
         endpoints:\n  \
         - url: tcp://{}\n    {}\n  \
         - url: tcp://{}\n    {}\n\
         {http_endpoint}",
        cert.display(),
        key.display(),
        public.echo,
        forward("tcp://echo.internal:7"),
        public.sink,
        forward("tcp://sink.internal:9"),
    )
}

/// sluice agent: `transport` is `tcp` or `tls`; 64 idle data channels as in bench/scripts.
pub fn sluice_agent(
    token: &str,
    agent_port: SocketAddr,
    ca: &Path,
    transport: &str,
    up: Upstreams,
) -> String {
    format!(
        "version: 3\n\
         agent: {{ authtoken: \"{token}\", connect_url: \"{agent_port}\", connect_cas: \"{}\", \
         server_name: localhost, transport: {transport}, data_channels: 64 }}\n\
         endpoints:\n  \
         - {{ url: tcp://echo.internal:7, upstream: {{ url: \"{}\" }} }}\n  \
         - {{ url: tcp://sink.internal:9, upstream: {{ url: \"{}\" }} }}\n  \
         - {{ url: http://web.internal, upstream: {{ url: \"http://{}\" }} }}\n",
        ca.display(),
        up.echo,
        up.sink,
        up.http,
    )
}

/// One HAProxy hop in plain TCP mode with splicing: `listen[i]` forwards to `to[i]`;
/// `http` (listen, to) in `mode http`, with keep-alive on both sides (HAProxy's
/// default), as the HTTP peer.
pub fn haproxy_hop(
    pairs: &[(SocketAddr, SocketAddr)],
    http: Option<(SocketAddr, SocketAddr)>,
    maxconn: u32,
) -> String {
    let mut s = format!(
        "global\n    maxconn {maxconn}\n\n\
         defaults\n    mode tcp\n    option splice-auto\n    maxconn {maxconn}\n    \
         timeout connect 5s\n    timeout client 120s\n    timeout server 120s\n"
    );
    for (i, (listen, to)) in pairs.iter().enumerate() {
        s.push_str(&format!(
            "\nlisten hop{i}\n    bind {listen}\n    server s{i} {to}\n"
        ));
    }
    if let Some((listen, to)) = http {
        s.push_str(&format!(
            "\nlisten web\n    mode http\n    bind {listen}\n    server web {to}\n"
        ));
    }
    s
}

/// rathole's transport section: `tcp`, `noise` (with a key) or `tls` (with files).
#[derive(Debug, Clone)]
pub enum RatholeTransport {
    Tcp,
    /// Noise NK: the server's private key, the client's copy of its public key.
    Noise {
        private_key: String,
        public_key: String,
    },
    /// TLS: the server's PKCS#12 identity and password, the client's CA and host name.
    Tls {
        pkcs12: String,
        password: String,
        ca: String,
    },
}

impl RatholeTransport {
    fn section(&self, side: &str) -> String {
        match (self, side) {
            (RatholeTransport::Tcp, _) => format!("[{side}.transport]\ntype = \"tcp\"\n"),
            (RatholeTransport::Noise { private_key, .. }, "server") => format!(
                "[server.transport]\ntype = \"noise\"\n[server.transport.noise]\nlocal_private_key = \"{private_key}\"\n"
            ),
            (RatholeTransport::Noise { public_key, .. }, _) => format!(
                "[{side}.transport]\ntype = \"noise\"\n[{side}.transport.noise]\nremote_public_key = \"{public_key}\"\n"
            ),
            (RatholeTransport::Tls { pkcs12, password, .. }, "server") => format!(
                "[server.transport]\ntype = \"tls\"\n[server.transport.tls]\npkcs12 = \"{pkcs12}\"\npkcs12_password = \"{password}\"\n"
            ),
            (RatholeTransport::Tls { ca, .. }, _) => format!(
                "[{side}.transport]\ntype = \"tls\"\n[{side}.transport.tls]\ntrusted_root = \"{ca}\"\nhostname = \"localhost\"\n"
            ),
        }
    }
}

/// rathole server: control port, token, two services bound on the public addresses.
pub fn rathole_server(
    control: SocketAddr,
    token: &str,
    t: &RatholeTransport,
    public: Public,
) -> String {
    format!(
        "[server]\nbind_addr = \"{control}\"\ndefault_token = \"{token}\"\n\n{}\n\
         [server.services.echo]\nbind_addr = \"{}\"\n\n[server.services.sink]\nbind_addr = \"{}\"\n",
        t.section("server"),
        public.echo,
        public.sink
    )
}

/// rathole client: the server's control port, token, the two upstreams.
pub fn rathole_client(
    control: SocketAddr,
    token: &str,
    t: &RatholeTransport,
    up: Upstreams,
) -> String {
    format!(
        "[client]\nremote_addr = \"{control}\"\ndefault_token = \"{token}\"\n\n{}\n\
         [client.services.echo]\nlocal_addr = \"{}\"\n\n[client.services.sink]\nlocal_addr = \"{}\"\n",
        t.section("client"),
        up.echo,
        up.sink
    )
}

/// `bore local` arguments exposing `upstream` on `public_port` of the server at 127.0.0.1.
pub fn bore_local_args(upstream: SocketAddr, public_port: u16, secret: &str) -> Vec<String> {
    vec![
        "local".into(),
        upstream.port().to_string(),
        "--local-host".into(),
        upstream.ip().to_string(),
        "--to".into(),
        "127.0.0.1".into(),
        "--port".into(),
        public_port.to_string(),
        "--secret".into(),
        secret.into(),
    ]
}

/// `bore server` arguments: loopback only, tunnels limited to `min..=max`.
pub fn bore_server_args(min: u16, max: u16, secret: &str) -> Vec<String> {
    vec![
        "server".into(),
        "--bind-addr".into(),
        "127.0.0.1".into(),
        "--min-port".into(),
        min.to_string(),
        "--max-port".into(),
        max.to_string(),
        "--secret".into(),
        secret.into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn public() -> Public {
        Public {
            echo: a("127.0.0.1:20001"),
            sink: a("127.0.0.1:20002"),
            http: Some(a("127.0.0.1:20003")),
        }
    }

    fn up() -> Upstreams {
        Upstreams {
            echo: a("127.0.0.1:7001"),
            sink: a("127.0.0.1:7002"),
            http: a("127.0.0.1:7003"),
        }
    }

    #[test]
    fn sluice_configs_name_ports_transport_and_upstreams() {
        let e = sluice_edge(
            a("127.0.0.1:4443"),
            Path::new("/t/e.crt"),
            Path::new("/t/e.key"),
            "sha256:ab",
            public(),
        );
        assert!(e.contains("listen: \"127.0.0.1:4443\""));
        assert!(e.contains("url: tcp://127.0.0.1:20001\n    traffic_policy"));
        assert!(e.contains("tcp://sink.internal:9"));
        assert!(e.contains("authtokens: [\"sha256:ab\"]"));
        assert!(e.contains("http_endpoints: { listen: \"127.0.0.1:20003\" }"));
        assert!(e.contains("  - url: http://bench.example\n    traffic_policy"));
        assert!(e.contains("http://web.internal"));
        let tcp_only = sluice_edge(
            a("127.0.0.1:4443"),
            Path::new("/t/e.crt"),
            Path::new("/t/e.key"),
            "sha256:ab",
            Public {
                http: None,
                ..public()
            },
        );
        assert!(!tcp_only.contains("http"), "{tcp_only}");
        let g = sluice_agent(
            "slt_x",
            a("127.0.0.1:4443"),
            Path::new("/t/ca.pem"),
            "tcp",
            up(),
        );
        assert!(g.contains("transport: tcp"));
        assert!(g.contains("upstream: { url: \"127.0.0.1:7002\" }"));
        assert!(
            g.contains("url: http://web.internal, upstream: { url: \"http://127.0.0.1:7003\" }")
        );
    }

    #[test]
    fn haproxy_hop_splices_in_tcp_mode() {
        let h = haproxy_hop(
            &[
                (a("127.0.0.1:1"), a("127.0.0.1:2")),
                (a("127.0.0.1:3"), a("127.0.0.1:4")),
            ],
            Some((a("127.0.0.1:5"), a("127.0.0.1:6"))),
            30000,
        );
        assert!(h.contains("mode tcp") && h.contains("option splice-auto"));
        assert!(h.contains("listen hop1\n    bind 127.0.0.1:3\n    server s1 127.0.0.1:4\n"));
        assert!(h.contains("maxconn 30000"));
        assert!(h.contains(
            "listen web\n    mode http\n    bind 127.0.0.1:5\n    server web 127.0.0.1:6\n"
        ));
    }

    #[test]
    fn rathole_sections_per_transport() {
        let tcp = rathole_server(a("127.0.0.1:2333"), "t", &RatholeTransport::Tcp, public());
        assert!(tcp.contains("[server.transport]\ntype = \"tcp\""));
        assert!(tcp.contains("[server.services.sink]\nbind_addr = \"127.0.0.1:20002\""));
        let noise = RatholeTransport::Noise {
            private_key: "PRIV".into(),
            public_key: "PUB".into(),
        };
        assert!(rathole_server(a("127.0.0.1:2333"), "t", &noise, public())
            .contains("local_private_key = \"PRIV\""));
        let c = rathole_client(a("127.0.0.1:2333"), "t", &noise, up());
        assert!(
            c.contains("remote_public_key = \"PUB\"")
                && c.contains("local_addr = \"127.0.0.1:7001\"")
        );
        let tls = RatholeTransport::Tls {
            pkcs12: "/i.p12".into(),
            password: "pw".into(),
            ca: "/ca.pem".into(),
        };
        assert!(rathole_client(a("127.0.0.1:1"), "t", &tls, up())
            .contains("trusted_root = \"/ca.pem\""));
    }

    #[test]
    fn bore_arguments() {
        let l = bore_local_args(a("127.0.0.1:7001"), 20001, "s");
        assert_eq!(l[..4], ["local", "7001", "--local-host", "127.0.0.1"]);
        assert!(l.windows(2).any(|w| w == ["--port", "20001"]));
        assert!(bore_server_args(20000, 20010, "s")
            .windows(2)
            .any(|w| w == ["--bind-addr", "127.0.0.1"]));
    }
}
