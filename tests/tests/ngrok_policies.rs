//! The traffic policies of `tests/ngrok/`, written as ngrok's documentation writes
//! them, run unchanged: each becomes the `traffic_policy` of one agent endpoint, a real
//! edge (with a country database: 127.0.0.1 in the US, .2 in CN, .3 in DE) forwards a
//! cloud endpoint to it, and clients from the addresses each file names under
//! `# allowed:` and `# refused:` get through to the upstream or are refused before it.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use sluice_tests::{
    client,
    fixture::{self, Fixture},
    mmdb,
    process::Sluice,
    upstream::Echo,
    DRIVERS,
};

/// One file of `tests/ngrok/`.
struct Case {
    name: String,
    policy: String,
    allowed: Vec<IpAddr>,
    refused: Vec<IpAddr>,
}

fn addresses(text: &str, key: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.strip_prefix(key))
        .flat_map(|l| l.split_whitespace().map(|a| a.parse().unwrap()))
        .collect()
}

fn cases() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ngrok");
    let mut out: Vec<Case> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .map(|path| {
            let policy = std::fs::read_to_string(&path).unwrap();
            Case {
                name: path.file_name().unwrap().to_string_lossy().into_owned(),
                allowed: addresses(&policy, "# allowed:"),
                refused: addresses(&policy, "# refused:"),
                policy,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[test]
fn ngrok_documentation_policies_run_unchanged_on_agent_endpoints() {
    let cases = cases();
    assert!(cases.len() >= 8, "{} policies in tests/ngrok", cases.len());
    for case in &cases {
        assert!(
            !case.allowed.is_empty() && !case.refused.is_empty(),
            "{}: name addresses under # allowed: and # refused:",
            case.name
        );
    }
    let fx = Fixture::new();
    std::fs::write(fx.path("countries.mmdb"), mmdb::ngrok_test_countries()).unwrap();
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let first_port = fixture::free_port_range(loopback, cases.len() as u16);
    let urls: Vec<String> = (0..cases.len())
        .map(|i| format!("tcp://policy{i}.internal:7"))
        .collect();
    let listens: Vec<String> = (0..cases.len())
        .map(|i| format!("127.0.0.1:{}", first_port + i as u16))
        .collect();
    let endpoints: Vec<(&str, String)> = listens
        .iter()
        .zip(&urls)
        .map(|(listen, url)| (listen.as_str(), fixture::forward_all(url)))
        .collect();
    let mut yaml = fx.edge_yaml("127.0.0.1:0", &endpoints);
    yaml.push_str("geoip:\n  database: countries.mmdb\n");
    let mut edge = Sluice::edge(&fx.write("edge.yml", &yaml), DRIVERS[0]);
    let (agent_addr, _) = edge.edge_addrs(cases.len());

    let echoes: Vec<Echo> = cases.iter().map(|_| Echo::start()).collect();
    let pairs: Vec<(&str, SocketAddr)> = urls
        .iter()
        .zip(&echoes)
        .map(|(url, echo)| (url.as_str(), echo.addr))
        .collect();
    let mut agent_yaml = fx.agent_yaml(&fx.token, agent_addr, "tcp", &[]);
    for ((url, upstream), case) in pairs.iter().zip(&cases) {
        agent_yaml.push_str(&format!(
            "  - url: {url}\n    upstream: {{ url: \"{upstream}\" }}\n    traffic_policy:\n"
        ));
        for line in case.policy.lines() {
            agent_yaml.push_str(&format!("      {line}\n"));
        }
    }
    let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), DRIVERS[0]);
    agent.wait_for_n("every endpoint bound", cases.len(), |v| {
        v["message"] == "endpoint bound"
    });

    for (i, case) in cases.iter().enumerate() {
        let public: SocketAddr = listens[i].parse().unwrap();
        for &source in &case.allowed {
            client::echo_ok(Some(source), public, b"hello")
                .unwrap_or_else(|e| panic!("{}: {source} was refused: {e}", case.name));
        }
        let reached = echoes[i].accepted();
        assert_eq!(reached, case.allowed.len(), "{}", case.name);
        for &source in &case.refused {
            assert!(
                client::is_refused(Some(source), public),
                "{}: {source} got through",
                case.name
            );
        }
        assert_eq!(
            echoes[i].accepted(),
            reached,
            "{}: a refused client reached the upstream",
            case.name
        );
    }
    // The two policies that log wrote their events, with the documented metadata.
    let logged = edge.wait_for_n("two policy logs", 2, |v| {
        v["message"] == "traffic policy log"
    });
    assert!(
        logged["metadata"].as_str().unwrap().contains("127.0.0.2"),
        "{logged}"
    );
    let unauthorized = edge.wait_for_n("the log with a country", 1, |v| {
        v["message"] == "traffic policy log"
            && v["metadata"]
                .as_str()
                .is_some_and(|m| m.contains("Unauthorized") && m.contains("\"CN\""))
    });
    assert!(unauthorized["metadata"]
        .as_str()
        .unwrap()
        .contains("127.0.0.2"));
}
