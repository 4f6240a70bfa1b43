//! End-to-end: several agents binding one internal URL with `pooling_enabled: true`
//! form a pool; connections spread over its members, a dead member stops receiving
//! them with no client-visible error, and members must agree on pooling.

use sluice_tests::{
    client,
    fixture::{self, Fixture},
    process::Sluice,
    upstream::Echo,
    DRIVERS,
};

const URL: &str = "tcp://db.internal:5432";

fn agent_yaml(
    fx: &Fixture,
    edge: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
    pooling: bool,
) -> String {
    let yaml = fx.agent_yaml(&fx.token, edge, "tcp", &[(URL, upstream)]);
    if pooling {
        yaml.replace(
            &format!("  - url: {URL}\n"),
            &format!("  - url: {URL}\n    pooling_enabled: true\n"),
        )
    } else {
        yaml
    }
}

#[test]
fn a_pool_of_three_shares_connections_and_survives_a_dead_member() {
    for driver in DRIVERS {
        let fx = Fixture::new();
        let cfg = fx.write(
            "edge.yml",
            &fx.edge_yaml("127.0.0.1:0", &[("127.0.0.1:0", fixture::forward_all(URL))]),
        );
        let mut edge = Sluice::edge(&cfg, driver);
        let (agent_addr, eps) = edge.edge_addrs(1);
        let upstreams: Vec<Echo> = (0..3).map(|_| Echo::start()).collect();
        let mut agents: Vec<Sluice> = upstreams
            .iter()
            .enumerate()
            .map(|(i, up)| {
                let path = fx.write(
                    &format!("agent{i}.yml"),
                    &agent_yaml(&fx, agent_addr, up.addr, true),
                );
                Sluice::agent(&path, driver)
            })
            .collect();
        for a in &mut agents {
            a.wait_for("endpoint bound");
        }
        edge.wait_for_n("three members", 1, |v| {
            v["message"] == "endpoint bound" && v["members"] == 3
        });

        for i in 0..300u64 {
            client::echo_ok(None, eps[0], &i.to_be_bytes()).unwrap();
        }
        let counts: Vec<usize> = upstreams.iter().map(Echo::accepted).collect();
        assert_eq!(counts.iter().sum::<usize>(), 300, "{driver}: {counts:?}");
        assert!(
            counts.iter().all(|&c| c >= 50),
            "{driver}: unfair spread {counts:?}"
        );

        agents[1].kill();
        edge.wait_for_n("member left", 1, |v| {
            v["message"] == "pool member left" && v["members"] == 2
        });
        let dead_before = upstreams[1].accepted();
        for i in 0..100u64 {
            client::echo_ok(None, eps[0], &i.to_be_bytes())
                .unwrap_or_else(|e| panic!("{driver}: connection {i} after a member died: {e}"));
        }
        assert_eq!(
            upstreams[1].accepted(),
            dead_before,
            "{driver}: the dead member got traffic"
        );
    }
}

#[test]
fn members_must_all_enable_pooling() {
    let fx = Fixture::new();
    let cfg = fx.write(
        "edge.yml",
        &fx.edge_yaml("127.0.0.1:0", &[("127.0.0.1:0", fixture::forward_all(URL))]),
    );
    let mut edge = Sluice::edge(&cfg, DRIVERS[0]);
    let (agent_addr, eps) = edge.edge_addrs(1);
    let (a_up, b_up) = (Echo::start(), Echo::start());
    let mut a = Sluice::agent(
        &fx.write("a.yml", &agent_yaml(&fx, agent_addr, a_up.addr, true)),
        DRIVERS[0],
    );
    a.wait_for("endpoint bound");
    let mut b = Sluice::agent(
        &fx.write("b.yml", &agent_yaml(&fx, agent_addr, b_up.addr, false)),
        DRIVERS[0],
    );
    let refused = b.wait_for("edge reported an error");
    let detail = refused["detail"].as_str().unwrap();
    assert!(
        detail.contains(URL) && detail.contains("pooling_enabled"),
        "{detail}"
    );
    for i in 0..20u64 {
        client::echo_ok(None, eps[0], &i.to_be_bytes()).unwrap();
    }
    assert_eq!((a_up.accepted(), b_up.accepted()), (20, 0));
}
