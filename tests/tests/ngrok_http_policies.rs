//! The HTTP traffic policies of `tests/ngrok/http/`, written as ngrok's documentation
//! writes them, run unchanged: each becomes the `traffic_policy` of one `http://` agent
//! endpoint (enforced by the edge on every request), a real edge's `http://` cloud
//! endpoint forwards a host name to it, and each `# request:` line of the file is sent
//! and its outcome checked: the status (or `closed`: no answer at all), what the
//! upstream saw (`saw TEXT`, or `not-saw`: the request never reached it), response
//! `header NAME[: VALUE]`, `no-header NAME`, `body TEXT`. `# log: TEXT` names metadata
//! an edge `traffic policy log` line carries. The edge has a country database:
//! 127.0.0.1 is in the US, .2 in CN, .3 in DE.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use sluice_tests::{client, fixture::Fixture, http::HttpEcho, mmdb, process::Sluice};

/// One file.
struct Case {
    name: String,
    policy: String,
    requests: Vec<Request>,
    logs: Vec<String>,
}

/// One `# request:` line.
#[derive(Debug, Default)]
struct Request {
    line: String,
    method: String,
    path: String,
    from: Option<IpAddr>,
    headers: Vec<String>,
    /// A status, or `None` for `closed`.
    status: Option<u16>,
    saw: Vec<String>,
    not_saw: bool,
    header: Vec<String>,
    no_header: Vec<String>,
    body: Vec<String>,
}

fn parse_request(line: &str) -> Request {
    let mut parts = line.split(" ; ");
    let mut first = parts.next().unwrap().split_whitespace();
    let mut r = Request {
        line: line.to_owned(),
        method: first.next().unwrap().to_owned(),
        path: first.next().unwrap().to_owned(),
        ..Request::default()
    };
    // Before `expect`, `header` is one the request carries; after it, one the response
    // must carry.
    let mut expected = false;
    for part in parts {
        let (key, value) = part.split_once(' ').unwrap_or((part, ""));
        let value = value.trim().to_owned();
        match key {
            "from" => r.from = Some(value.parse().unwrap()),
            "header" if !expected => r.headers.push(value),
            "header" => r.header.push(value),
            "expect" => {
                expected = true;
                r.status = (value != "closed").then(|| value.parse().unwrap());
            }
            "saw" => r.saw.push(value),
            "not-saw" => r.not_saw = true,
            "no-header" => r.no_header.push(value),
            "body" => r.body.push(value),
            other => panic!("`{other}` in `{line}`"),
        }
    }
    r
}

fn cases() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ngrok/http");
    let mut out: Vec<Case> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .map(|path| {
            let policy = std::fs::read_to_string(&path).unwrap();
            let requests = policy
                .lines()
                .filter_map(|l| l.strip_prefix("# request: "))
                .map(parse_request)
                .collect();
            let logs = policy
                .lines()
                .filter_map(|l| l.strip_prefix("# log: "))
                .map(str::to_owned)
                .collect();
            Case {
                name: path.file_name().unwrap().to_string_lossy().into_owned(),
                policy,
                requests,
                logs,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What came back for one request: status, headers (names lower case) and body; `None`
/// when the connection closed without an answer.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

/// One HTTP/1.1 request on a new connection (`Connection: close`), from `source`.
fn send(edge: SocketAddr, host: &str, r: &Request) -> Option<Answer> {
    let mut s = client::connect_from(r.from, edge).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n",
        r.method, r.path
    );
    for h in &r.headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    if raw.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    Some(Answer {
        status: status.parse().unwrap(),
        headers: lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect(),
        body: body.to_owned(),
    })
}

#[test]
fn ngrok_documentation_http_policies_run_unchanged_on_http_agent_endpoints() {
    let cases = cases();
    assert!(
        cases.len() >= 10,
        "{} policies in tests/ngrok/http",
        cases.len()
    );
    let fx = Fixture::new();
    std::fs::write(fx.path("countries.mmdb"), mmdb::ngrok_test_countries()).unwrap();
    let mut yaml = fx.tls_edge_head().replace(
        "tls_endpoints:\n  listen: 127.0.0.1:0\n",
        "http_endpoints:\n  listen: 127.0.0.1:0\n",
    );
    for i in 0..cases.len() {
        yaml.push_str(&format!(
            "  - url: http://case{i}.test\n    traffic_policy:\n      on_http_request:\n        - actions:\n            - type: forward-internal\n              config: {{ url: \"http://case{i}.internal\" }}\n"
        ));
    }
    yaml.push_str("geoip:\n  database: countries.mmdb\n");
    let mut edge = Sluice::edge(&fx.write("edge.yml", &yaml), "uring");
    let (agent_addr, _) = edge.edge_addrs(0);
    let http = edge.http_endpoints_addr();

    let upstreams: Vec<HttpEcho> = cases
        .iter()
        .enumerate()
        .map(|(i, _)| HttpEcho::start(&format!("case{i}")))
        .collect();
    let mut agent_yaml = fx.agent_yaml(&fx.token, agent_addr, "tcp", &[]);
    for (i, case) in cases.iter().enumerate() {
        agent_yaml.push_str(&format!(
            "  - url: http://case{i}.internal\n    upstream: {{ url: \"http://{}\" }}\n    traffic_policy:\n",
            upstreams[i].addr
        ));
        for line in case.policy.lines() {
            agent_yaml.push_str(&format!("      {line}\n"));
        }
    }
    let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), "uring");
    agent.wait_for_n("every endpoint bound", cases.len(), |v| {
        v["message"] == "endpoint bound"
    });

    for (i, case) in cases.iter().enumerate() {
        assert!(
            !case.requests.is_empty(),
            "{}: no # request: lines",
            case.name
        );
        let host = format!("case{i}.test");
        for r in &case.requests {
            let what = format!("{}: `{}`", case.name, r.line);
            let reached = upstreams[i]
                .requests
                .load(std::sync::atomic::Ordering::SeqCst);
            let answer = send(http, &host, r);
            let Some(status) = r.status else {
                assert!(
                    answer.is_none(),
                    "{what}: answered {}",
                    answer.unwrap().status
                );
                assert_eq!(
                    upstreams[i]
                        .requests
                        .load(std::sync::atomic::Ordering::SeqCst),
                    reached,
                    "{what}: reached the upstream"
                );
                continue;
            };
            let answer = answer.unwrap_or_else(|| panic!("{what}: closed without an answer"));
            assert_eq!(answer.status, status, "{what}: {}", answer.body);
            let after = upstreams[i]
                .requests
                .load(std::sync::atomic::Ordering::SeqCst);
            if r.not_saw {
                assert_eq!(after, reached, "{what}: reached the upstream");
            }
            for text in &r.saw {
                assert!(
                    answer
                        .body
                        .to_ascii_lowercase()
                        .contains(&text.to_ascii_lowercase()),
                    "{what}: the upstream did not see `{text}`:\n{}",
                    answer.body
                );
            }
            for text in &r.body {
                assert!(
                    answer.body.contains(text.as_str()),
                    "{what}: body {}",
                    answer.body
                );
            }
            for h in &r.header {
                let (name, value) = h.split_once(": ").unwrap_or((h, ""));
                let got = answer.headers.iter().find(|(n, _)| n == name);
                assert!(
                    got.is_some_and(|(_, v)| value.is_empty() || v == value),
                    "{what}: header {name} is {got:?}"
                );
            }
            for name in &r.no_header {
                assert!(
                    answer.headers.iter().all(|(n, _)| n != name),
                    "{what}: header {name} still there"
                );
            }
        }
        for text in &case.logs {
            let logged = edge.wait_for_n(
                &format!("{}: a policy log with {text}", case.name),
                1,
                |v| {
                    v["message"] == "traffic policy log"
                        && v["metadata"]
                            .as_str()
                            .is_some_and(|m| m.contains(text.as_str()))
                },
            );
            // The same fields as `on_tcp_connect`'s log lines.
            assert!(
                logged["phase"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("on_http_"))
                    && logged["rule"].as_u64().is_some_and(|r| r >= 1)
                    && logged["rule_name"].is_string(),
                "{}: {logged}",
                case.name
            );
            // Written by the agent endpoint's policy, not the cloud endpoint's (its
            // internal URL as bound: the port written out).
            assert_eq!(
                logged["policy"],
                format!("http://case{i}.internal:80"),
                "{}: {logged}",
                case.name
            );
        }
    }
}
