//! End-to-end: an agent endpoint's `traffic_policy` (ngrok's agent file allows one on
//! each endpoint) is sent with the bind and enforced by the edge on every connection
//! to that endpoint, after the cloud endpoint's own policy forwarded it there; a pool
//! member with another policy is refused, and so is a policy the edge cannot run.

use std::net::IpAddr;

use sluice_tests::{
    client,
    fixture::{self, Fixture},
    process::Sluice,
    upstream::Echo,
    DRIVERS,
};

const URL: &str = "tcp://db.internal:5432";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An agent file serving [`URL`] from `upstream`, pooled, with `policy` (YAML lines
/// indented for the endpoint) appended.
fn agent_file(
    fx: &Fixture,
    edge: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
    policy: &str,
) -> String {
    let mut yaml = fx.agent_yaml(&fx.token, edge, "tcp", &[(URL, upstream)]);
    yaml.push_str("    pooling_enabled: true\n");
    yaml.push_str(policy);
    yaml
}

const OFFICE_ONLY: &str = "    traffic_policy:
      on_tcp_connect:
        - name: office
          actions:
            - type: restrict-ips
              config: { allow: [127.0.0.1/32, 127.0.0.3/32] }
        - expressions: [\"conn.client_ip == '127.0.0.3'\"]
          actions:
            - type: log
              config: { metadata: { who: \"${conn.client_ip}\" } }
            - type: close-connection
";

#[test]
fn the_agent_endpoints_policy_is_enforced_at_the_edge_and_pool_members_must_agree() {
    let fx = Fixture::new();
    let echo = Echo::start();
    let yaml = fx.edge_yaml("127.0.0.1:0", &[("127.0.0.1:0", fixture::forward_all(URL))]);
    let mut edge = Sluice::edge(&fx.write("edge.yml", &yaml), DRIVERS[0]);
    let (agent_addr, public) = edge.edge_addrs(1);
    let public = public[0];
    let mut agent = Sluice::agent(
        &fx.write(
            "agent.yml",
            &agent_file(&fx, agent_addr, echo.addr, OFFICE_ONLY),
        ),
        DRIVERS[0],
    );
    agent.wait_for("endpoint bound");

    client::echo_ok(Some(ip("127.0.0.1")), public, b"from the office").unwrap();
    assert_eq!(echo.accepted(), 1);
    for outsider in ["127.0.0.2", "127.0.0.3"] {
        assert!(
            client::is_refused(Some(ip(outsider)), public),
            "{outsider} got through the endpoint's policy"
        );
    }
    assert_eq!(echo.accepted(), 1, "a refused client reached the upstream");
    let denied = edge.wait_for_n("two endpoint denials", 2, |v| {
        v["message"] == "denied by the agent endpoint's traffic policy"
    });
    assert_eq!(denied["internal_url"], URL);
    let logged = edge.wait_for("traffic policy log");
    assert_eq!(
        logged["policy"], URL,
        "the agent endpoint's policy wrote it"
    );
    assert!(
        logged["metadata"].as_str().unwrap().contains("127.0.0.3"),
        "{logged}"
    );

    // A second pool member without the policy would open a way around it: refused.
    let echo2 = Echo::start();
    let mut other = Sluice::agent(
        &fx.write("other.yml", &agent_file(&fx, agent_addr, echo2.addr, "")),
        DRIVERS[0],
    );
    let refused = other.wait_for_n("a refused bind", 1, |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("bind refused"))
            || v["code"] == "PolicyMismatch"
    });
    assert!(refused.to_string().contains("traffic_policy"), "{refused}");
    // The same policy joins the pool.
    let mut same = Sluice::agent(
        &fx.write(
            "same.yml",
            &agent_file(&fx, agent_addr, echo2.addr, OFFICE_ONLY),
        ),
        DRIVERS[0],
    );
    same.wait_for("endpoint bound");
}
