//! End-to-end: every listener the edge owns is its own. The workers' listeners set
//! SO_REUSEPORT, which on its own would let a second `sluice edge` (or a `tcp://`
//! endpoint of the same edge) join the agent port or the TLS port and silently take a
//! share of its connections. Here: a second edge on a running edge's ports refuses to
//! start and the first keeps serving; the admin API answers 409 `address_in_use` for a
//! `tcp://` endpoint on a port the edge or another process holds; an edge.yml whose
//! endpoint shares a port with the agent or TLS port does not start; and an edge
//! restarted at once after `kill -9` is not refused its own ports.

use std::net::{SocketAddr, TcpListener};

use serde_json::{json, Value};
use sluice_tests::{
    admin::Admin,
    client,
    fixture::{self, Fixture},
    process::Sluice,
    upstream::Echo,
    DRIVERS,
};

const URL: &str = "tcp://echo.internal:7";
const API_KEY: &str = "test-admin-key-0123456789";
/// What a refused bind says, once, with the address in front.
const IN_USE: &str = "is already in use by another process or listener";

/// An edge config: agent port on `agents`, the tls:// port on `tls` (if any), the
/// admin API on 127.0.0.1:0 (if `admin`), and TCP endpoints forwarding to [`URL`].
fn edge_yaml(fx: &Fixture, agents: &str, tls: Option<&str>, admin: bool, tcp: &[&str]) -> String {
    let endpoints: Vec<(&str, String)> = tcp
        .iter()
        .map(|listen| (*listen, fixture::forward_all(URL)))
        .collect();
    let mut yaml = fx.edge_yaml(agents, &endpoints);
    if tcp.is_empty() {
        yaml = yaml.replace("endpoints:\n", "endpoints: []\n");
    }
    if let Some(listen) = tls {
        yaml.push_str(&format!("tls_endpoints:\n  listen: {listen}\n"));
    }
    if admin {
        yaml.push_str(&format!(
            "admin:\n  listen: 127.0.0.1:0\n  api_keys: [\"{}\"]\n",
            fixture::token_hash(API_KEY)
        ));
    }
    yaml
}

/// The address a `listening` event of `kind` reports.
fn listening(edge: &mut Sluice, kind: &str) -> SocketAddr {
    let event = edge.wait_for_n(kind, 1, |v| {
        v["message"] == "listening" && v["kind"] == kind
    });
    event["addr"].as_str().unwrap().parse().unwrap()
}

/// A port no one listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `sluice edge` on `yaml`, expects it to exit with an error, and returns the
/// line of its stderr that says why.
fn refused_start(fx: &Fixture, name: &str, yaml: &str, driver: &str) -> String {
    let mut edge = Sluice::edge(&fx.write(name, yaml), driver);
    let (code, log) = edge.wait_exit_and_log();
    assert!(
        matches!(code, Some(c) if c != 0),
        "{name}: exit {code:?}\n{log}"
    );
    log.lines()
        .find(|l| l.contains(r#""raw":true"#) && l.contains("sluice: "))
        .unwrap_or_else(|| panic!("{name}: no error line\n{log}"))
        .to_string()
}

#[test]
fn a_second_edge_on_the_agent_or_tls_port_of_a_running_one_refuses_to_start_and_the_first_keeps_serving(
) {
    for driver in DRIVERS {
        let fx = Fixture::new();
        let echo = Echo::start();
        let first = edge_yaml(
            &fx,
            "127.0.0.1:0",
            Some("127.0.0.1:0"),
            false,
            &["127.0.0.1:0"],
        );
        let mut edge = Sluice::edge(&fx.write("first.yml", &first), driver);
        let (agent_addr, eps) = edge.edge_addrs(1);
        let tls_addr = listening(&mut edge, "tls-endpoints");
        let agent_yaml = fx.agent_yaml(&fx.token, agent_addr, "tcp", &[(URL, echo.addr)]);
        let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), driver);
        agent.wait_for("endpoint bound");

        let wildcard = format!("0.0.0.0:{}", agent_addr.port());
        let attempts = [
            (
                "same-agent-port.yml",
                edge_yaml(&fx, &agent_addr.to_string(), None, false, &[]),
                "agents.listen",
                agent_addr.to_string(),
            ),
            (
                "wildcard-agent-port.yml",
                edge_yaml(&fx, &wildcard, None, false, &[]),
                "agents.listen",
                wildcard.clone(),
            ),
            (
                "same-tls-port.yml",
                edge_yaml(&fx, "127.0.0.1:0", Some(&tls_addr.to_string()), false, &[]),
                "tls_endpoints.listen",
                tls_addr.to_string(),
            ),
        ];
        for (name, yaml, key, addr) in attempts {
            let line = refused_start(&fx, name, &yaml, driver);
            assert!(line.contains(IN_USE), "{driver}/{name}: {line}");
            assert!(line.contains(key), "{driver}/{name}: {line}");
            assert_eq!(
                line.matches(&addr).count(),
                1,
                "{driver}/{name}: the address once: {line}"
            );
        }

        // The first edge still owns its ports: every public connection reaches its
        // agent, and a new agent connection gets a session from it.
        assert!(edge.is_running(), "{driver}: {}", edge.log_text());
        for i in 0..8u8 {
            client::echo_ok(None, eps[0], &[i; 64])
                .unwrap_or_else(|e| panic!("{driver}: connection {i}: {e}"));
        }
        let mut second_agent = Sluice::agent(&fx.path("agent.yml"), driver);
        second_agent.wait_for("session established");
    }
}

#[test]
fn an_edge_restarted_right_after_kill_9_gets_its_fixed_ports_back() {
    // On io_uring a dead edge's listeners outlive the reaped process by a few
    // milliseconds; that is not a clash.
    for driver in DRIVERS {
        let fx = Fixture::new();
        let first = edge_yaml(
            &fx,
            "127.0.0.1:0",
            Some("127.0.0.1:0"),
            false,
            &["127.0.0.1:0"],
        );
        let mut edge = Sluice::edge(&fx.write("first.yml", &first), driver);
        let (agent_addr, eps) = edge.edge_addrs(1);
        let tls_addr = listening(&mut edge, "tls-endpoints");
        // A working edge, with an agent's channels and a client's stream in flight.
        let echo = Echo::start();
        let agent_yaml = fx.agent_yaml(&fx.token, agent_addr, "tcp", &[(URL, echo.addr)]);
        let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), driver);
        agent.wait_for("endpoint bound");
        let mut held = client::connect_from(None, eps[0]).unwrap();
        assert!(
            client::echoes(&mut held, b"held\n", client::IO_TIMEOUT),
            "{driver}"
        );
        edge.kill();
        let same = edge_yaml(
            &fx,
            &agent_addr.to_string(),
            Some(&tls_addr.to_string()),
            false,
            &[&eps[0].to_string()],
        );
        let mut again = Sluice::edge(&fx.write("again.yml", &same), driver);
        let (agent_again, eps_again) = again.edge_addrs(1);
        assert_eq!(
            (agent_again, eps_again[0]),
            (agent_addr, eps[0]),
            "{driver}"
        );
        assert_eq!(listening(&mut again, "tls-endpoints"), tls_addr, "{driver}");
    }
}

/// POSTs a `tcp://` endpoint on `addr`.
fn create(admin: &Admin, url: &str) -> sluice_tests::admin::Answer {
    admin.call(
        "POST",
        "/v1/endpoints",
        Some(json!({ "url": url, "traffic_policy": fixture::forward_all(URL) })),
    )
}

#[test]
fn the_admin_api_answers_409_for_a_tcp_endpoint_on_a_port_the_edge_or_another_process_holds() {
    let fx = Fixture::new();
    let echo = Echo::start();
    let yaml = edge_yaml(&fx, "127.0.0.1:0", Some("127.0.0.1:0"), true, &[]);
    let mut edge = Sluice::edge(&fx.write("edge.yml", &yaml), "uring");
    let (agent_addr, _) = edge.edge_addrs(0);
    let tls_addr = listening(&mut edge, "tls-endpoints");
    let admin = Admin::new(listening(&mut edge, "admin"), API_KEY);
    let agent_yaml = fx.agent_yaml(&fx.token, agent_addr, "tcp", &[(URL, echo.addr)]);
    let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), "uring");
    agent.wait_for("endpoint bound");

    // Positive control: a free port is served, bytes flow.
    let created = create(&admin, "tcp://127.0.0.1:0");
    assert_eq!(created.status, 201, "{}", created.text);
    let ep_addr: SocketAddr = created.body["listen_addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let ep_id = created.body["id"].as_str().unwrap().to_string();
    client::echo_ok(None, ep_addr, b"through the new endpoint").unwrap();

    // Another process's listeners: a plain one, and one that would let us join it.
    let foreign = TcpListener::bind("127.0.0.1:0").unwrap();
    let foreign_reuseport = {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_reuse_port(true).unwrap();
        s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        s.listen(16).unwrap();
        TcpListener::from(s)
    };
    let port = |a: SocketAddr| a.port();
    let cases = [
        (format!("tcp://{agent_addr}"), "agents.listen".to_string()),
        (
            format!("tcp://0.0.0.0:{}", port(agent_addr)),
            "agents.listen".to_string(),
        ),
        (
            format!("tcp://[::]:{}", port(agent_addr)),
            "agents.listen".to_string(),
        ),
        (
            format!("tcp://{tls_addr}"),
            "tls_endpoints.listen".to_string(),
        ),
        (format!("tcp://{}", admin.addr), "admin.listen".to_string()),
        (format!("tcp://{ep_addr}"), ep_id.clone()),
        (
            format!("tcp://{}", foreign.local_addr().unwrap()),
            "another process".to_string(),
        ),
        (
            format!("tcp://{}", foreign_reuseport.local_addr().unwrap()),
            "another process".to_string(),
        ),
    ];
    for (url, holder) in &cases {
        let a = create(&admin, url);
        assert_eq!(a.status, 409, "{url}: {}", a.text);
        let error: &Value = &a.body["error"];
        assert_eq!(error["code"], "address_in_use", "{url}: {}", a.text);
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(holder.as_str()), "{url}: {message}");
    }

    // Nothing was added, and the edge serves on.
    let listed = admin.get("/v1/endpoints");
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    client::echo_ok(None, ep_addr, b"still flowing").unwrap();
    assert!(edge.is_running());
}

#[test]
fn an_edge_whose_endpoint_shares_the_agent_or_tls_port_refuses_to_start() {
    let fx = Fixture::new();
    let port = free_port();
    let on_agent_port = edge_yaml(
        &fx,
        &format!("127.0.0.1:{port}"),
        None,
        false,
        &[&format!("0.0.0.0:{port}")],
    );
    let line = refused_start(&fx, "agent-port.yml", &on_agent_port, "uring");
    assert!(line.contains("endpoints[0].url"), "{line}");
    assert!(line.contains("agents.listen"), "{line}");

    let on_tls_port = edge_yaml(
        &fx,
        "127.0.0.1:0",
        Some(&format!("127.0.0.1:{port}")),
        false,
        &["127.0.0.1:0", &format!("127.0.0.1:{port}")],
    );
    let line = refused_start(&fx, "tls-port.yml", &on_tls_port, "uring");
    assert!(line.contains("endpoints[1].url"), "{line}");
    assert!(line.contains("tls_endpoints.listen"), "{line}");
}
