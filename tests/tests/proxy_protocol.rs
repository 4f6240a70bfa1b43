//! End-to-end: `upstream.proxy_protocol: 1|2` makes the agent send a PROXY protocol
//! header with the public client's address before any other byte.

use std::{
    io::{BufRead, BufReader, Write},
    net::IpAddr,
};

use sluice_tests::{
    client,
    fixture::{self, Fixture},
    process::Sluice,
    upstream::ProxyEcho,
    DRIVERS,
};

#[test]
fn the_upstream_learns_the_public_client_address_from_a_proxy_header() {
    for driver in DRIVERS {
        for transport in ["tcp", "tls"] {
            for version in [1, 2] {
                let fx = Fixture::new();
                let upstream = ProxyEcho::start();
                let edge_cfg = fx.write(
                    "edge.yml",
                    &fx.edge_yaml(
                        "127.0.0.1:0",
                        &[("127.0.0.1:0", fixture::forward_all("tcp://pp.internal:1"))],
                    ),
                );
                let mut edge = Sluice::edge(&edge_cfg, driver);
                let (agent_addr, eps) = edge.edge_addrs(1);
                let agent_yaml = fx
                    .agent_yaml(
                        &fx.token,
                        agent_addr,
                        transport,
                        &[("tcp://pp.internal:1", upstream.addr)],
                    )
                    .replace(
                        "    upstream: {",
                        &format!("    upstream: {{ proxy_protocol: {version},"),
                    );
                let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), driver);
                agent.wait_for("endpoint bound");

                let source: IpAddr = "127.0.0.5".parse().unwrap();
                let s = client::connect_from(Some(source), eps[0]).unwrap();
                let me = s.local_addr().unwrap();
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                (&s).write_all(b"ping").unwrap();
                reader.read_line(&mut line).unwrap();
                assert_eq!(
                    line.trim_end(),
                    format!("SRC={me}"),
                    "{driver}/{transport}/v{version}"
                );
                let mut echo = [0u8; 4];
                std::io::Read::read_exact(&mut reader, &mut echo).unwrap();
                assert_eq!(&echo, b"ping");
            }
        }
    }
}
