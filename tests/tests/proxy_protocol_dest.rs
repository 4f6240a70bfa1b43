//! End-to-end: the whole PROXY protocol header the agent sends, parsed independently —
//! the destination is the public endpoint the client connected to (address and
//! port, never the configured port 0), in v1 and v2, for IPv4, IPv6 (`::1`) and
//! IPv4-mapped clients; `proxy_protocol.rs` checks the IPv4 source only.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use sluice_tests::{
    client,
    fixture::{self, Fixture},
    probes::{HeaderEcho, ProxyHeader},
    process::Sluice,
    DRIVERS,
};

const URL: &str = "tcp://pp.internal:1";

#[test]
fn the_header_names_the_public_endpoint_as_destination_for_ipv4_ipv6_and_mapped_clients() {
    for transport in ["tcp", "tls"] {
        for version in [1u8, 2] {
            let what = format!("{transport}/v{version}");
            let fx = Fixture::new();
            let upstream = HeaderEcho::start();
            let edge_cfg = fx.write(
                "edge.yml",
                &fx.edge_yaml(
                    "127.0.0.1:0",
                    &[
                        ("127.0.0.1:0", fixture::forward_all(URL)),
                        ("[::1]:0", fixture::forward_all(URL)),
                        ("[::ffff:127.0.0.1]:0", fixture::forward_all(URL)),
                    ],
                ),
            );
            let mut edge = Sluice::edge(&edge_cfg, DRIVERS[0]);
            let (agent_addr, eps) = edge.edge_addrs(3);
            let agent_yaml = fx
                .agent_yaml(&fx.token, agent_addr, transport, &[(URL, upstream.addr)])
                .replace(
                    "    upstream: {",
                    &format!("    upstream: {{ proxy_protocol: {version},"),
                );
            let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), DRIVERS[0]);
            agent.wait_for("endpoint bound");
            // The order of the listening events is not the order of the config.
            let find = |pred: fn(&SocketAddr) -> bool| *eps.iter().find(|a| pred(a)).unwrap();
            let v4 = find(|a| a.is_ipv4());
            let v6 = find(|a| a.ip() == "::1".parse::<IpAddr>().unwrap());
            let mapped = find(|a| a.is_ipv6() && a.ip() != "::1".parse::<IpAddr>().unwrap());
            let mapped_v4 = SocketAddr::new("127.0.0.1".parse().unwrap(), mapped.port());

            let (v4_family, v6_family) = if version == 1 {
                ("TCP4", "TCP6")
            } else {
                ("0x11", "0x21")
            };
            for (source, target, family, dst) in [
                ("127.0.0.5", v4, v4_family, v4),
                ("::1", v6, v6_family, v6),
                // Connected to the mapped listener over IPv4: both ends are sent as
                // the IPv4 addresses they stand for.
                ("127.0.0.6", mapped_v4, v4_family, mapped_v4),
            ] {
                let mut s = client::connect_from(Some(source.parse().unwrap()), target).unwrap();
                let me = s.local_addr().unwrap();
                s.write_all(b"ping").unwrap();
                let header = upstream
                    .headers
                    .recv_timeout(Duration::from_secs(20))
                    .unwrap_or_else(|_| panic!("{what}: {source}: no connection upstream"));
                assert_eq!(
                    header,
                    Some(ProxyHeader {
                        version,
                        family: family.to_string(),
                        src: me,
                        dst,
                    }),
                    "{what}: client {me} -> {target}"
                );
                let mut echo = [0u8; 4];
                s.read_exact(&mut echo).unwrap();
                assert_eq!(&echo, b"ping", "{what}: {source}: bytes after the header");
            }
        }
    }
}
