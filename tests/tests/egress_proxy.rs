//! End-to-end: an agent that may reach its edge only through an egress proxy
//! (`agent.proxy_url`), with real proxies from Debian: tinyproxy (HTTP `CONNECT`, Basic
//! authentication) and microsocks (SOCKS5, username and password). The session and its
//! data channels go through the proxy (the proxy's log counts the tunnels), bytes flow
//! both ways through the endpoint, and wrong credentials keep the agent out with an
//! error that says so.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use sluice_tests::{
    client,
    fixture::{self, free_port_range, Fixture},
    process::Sluice,
    upstream::Echo,
    wait_until,
};

const URL: &str = "tcp://svc.internal:1";

/// A proxy process, stopped (by its PID) when dropped.
struct Proxy {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    free_port_range("127.0.0.1".parse().unwrap(), 1)
}

fn wait_listening(addr: SocketAddr) {
    wait_until(
        &format!("the proxy listening on {addr}"),
        Duration::from_secs(10),
        || std::net::TcpStream::connect(addr).is_ok(),
    );
}

/// tinyproxy on loopback, allowing loopback clients with `user`/`pass`, logging each
/// connection to `log`.
fn tinyproxy(dir: &Path, log: &Path, user: &str, pass: &str) -> Proxy {
    let port = free_port();
    let conf = dir.join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 64\nAllow 127.0.0.1\n\
             LogFile \"{}\"\nLogLevel Connect\nBasicAuth {user} {pass}\n",
            log.display()
        ),
    )
    .unwrap();
    let child = Command::new("tinyproxy")
        .args(["-d", "-c", conf.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tinyproxy (tests/run.sh installs it)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(addr);
    Proxy { child, addr }
}

/// microsocks on loopback with `user`/`pass`, its log (a line per tunnel) to `log`.
fn microsocks(log: &Path, user: &str, pass: &str) -> Proxy {
    let port = free_port();
    let child = Command::new("microsocks")
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-u",
            user,
            "-P",
            pass,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("microsocks (tests/run.sh installs it)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(addr);
    Proxy { child, addr }
}

/// An edge with one `tcp://` endpoint forwarding to [`URL`].
fn edge(fx: &Fixture) -> (Sluice, SocketAddr, SocketAddr) {
    let cfg = fx.write(
        "edge.yml",
        &fx.edge_yaml("127.0.0.1:0", &[("127.0.0.1:0", fixture::forward_all(URL))]),
    );
    let mut edge = Sluice::edge(&cfg, "uring");
    let (agent_addr, eps) = edge.edge_addrs(1);
    (edge, agent_addr, eps[0])
}

fn agent_yaml(
    fx: &Fixture,
    edge: SocketAddr,
    transport: &str,
    upstream: SocketAddr,
    proxy_url: &str,
) -> String {
    fx.agent_yaml(&fx.token, edge, transport, &[(URL, upstream)])
        .replace(
            "agent:\n",
            &format!("agent:\n  proxy_url: \"{proxy_url}\"\n  connect_timeout: 5s\n"),
        )
}

/// Bytes through the endpoint and back, on a few connections.
fn echo_through(endpoint: SocketAddr) {
    for i in 0..3u64 {
        let payload = client::payload(i, 100_000);
        client::echo_ok(None, endpoint, &payload).expect("echo through the endpoint");
    }
}

fn lines_with(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn an_agent_reaches_its_edge_through_an_http_connect_proxy() {
    let fx = Fixture::new();
    let (_edge, agent_addr, endpoint) = edge(&fx);
    let echo = Echo::start();
    let log = fx.dir().join("tinyproxy.log");
    let proxy = tinyproxy(fx.dir(), &log, "sluice", "s3cret");
    let url = format!("http://sluice:s3cret@{}", proxy.addr);
    let mut agent = Sluice::agent(
        &fx.write(
            "agent.yml",
            &agent_yaml(&fx, agent_addr, "tls", echo.addr, &url),
        ),
        "uring",
    );
    agent.wait_for("endpoint bound");
    echo_through(endpoint);
    // The control channel and the data channels each went through a CONNECT.
    let tunnels = lines_with(&log, &format!("CONNECT {agent_addr}"));
    assert!(
        tunnels >= 2,
        "{tunnels} CONNECTs in the proxy's log:\n{}",
        fixture::read(&log)
    );

    // The wrong password: the proxy refuses, and the agent says why.
    let bad = format!("http://sluice:wrong@{}", proxy.addr);
    let mut refused = Sluice::agent(
        &fx.write(
            "bad.yml",
            &agent_yaml(&fx, agent_addr, "tls", echo.addr, &bad),
        ),
        "uring",
    );
    let failed = refused.wait_for_n("the proxy's refusal", 1, |v| {
        v["message"] == "cannot establish a session with the edge"
            && v["error"]
                .as_str()
                .is_some_and(|e| e.contains("refused CONNECT"))
    });
    let error = failed["error"].as_str().unwrap();
    // tinyproxy says 401; the RFC's proxies, 407.
    assert!(error.contains("401") || error.contains("407"), "{failed}");
    assert!(error.contains("proxy_url: http://user:pass@"), "{failed}");
}

#[test]
fn an_agent_reaches_its_edge_through_a_socks5_proxy_on_both_transports() {
    for transport in ["tcp", "tls"] {
        let fx = Fixture::new();
        let (_edge, agent_addr, endpoint) = edge(&fx);
        let echo = Echo::start();
        let log = fx.dir().join("microsocks.log");
        let proxy = microsocks(&log, "sluice", "s3cret");
        let url = format!("socks5://sluice:s3cret@{}", proxy.addr);
        let mut agent = Sluice::agent(
            &fx.write(
                "agent.yml",
                &agent_yaml(&fx, agent_addr, transport, echo.addr, &url),
            ),
            "uring",
        );
        agent.wait_for("endpoint bound");
        echo_through(endpoint);
        let tunnels = lines_with(
            &log,
            &format!("connected to {}:{}", agent_addr.ip(), agent_addr.port()),
        );
        assert!(
            tunnels >= 2,
            "{transport}: {tunnels} tunnels in the proxy's log:\n{}",
            fixture::read(&log)
        );

        let bad = format!("socks5://sluice:wrong@{}", proxy.addr);
        let mut refused = Sluice::agent(
            &fx.write(
                "bad.yml",
                &agent_yaml(&fx, agent_addr, transport, echo.addr, &bad),
            ),
            "uring",
        );
        refused.wait_for_n("the proxy's refusal", 1, |v| {
            v["message"] == "cannot establish a session with the edge"
                && v["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("SOCKS5 proxy") && e.contains("refused"))
        });
    }
}
