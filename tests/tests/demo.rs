//! End-to-end: `sluice demo`, README's first command, serves an echo through a real
//! edge, TLS data channels and agent, a hello over HTTP through its HTTP endpoint, and
//! its console with the key it prints (the agent's session shows there).

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use sluice_tests::{admin::Admin, client, process::sluice_bin, DRIVERS};

#[test]
fn the_demo_prints_a_public_address_that_echoes() {
    for driver in DRIVERS {
        let mut child = Command::new(sluice_bin())
            .args(["demo", "--port", "0"])
            .env("SLUICE_DRIVER", driver)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let public: SocketAddr = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("demo printed no public endpoint");
            if let Some(rest) = line.trim().strip_prefix("public endpoint") {
                let addr = rest.trim().trim_start_matches("tcp://");
                break addr.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        let http_port: u16 = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("demo printed no http endpoint");
            if let Some(rest) = line.trim().strip_prefix("http endpoint") {
                let url = rest.split_whitespace().next().unwrap();
                break url.rsplit(':').next().unwrap().parse().unwrap();
            }
        };
        let (console, key) = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("demo printed no console");
            if let Some(rest) = line.trim().strip_prefix("console") {
                let url = rest.split_whitespace().next().unwrap().to_string();
                let key = rest
                    .rsplit("API key: ")
                    .next()
                    .unwrap()
                    .trim_end_matches(')');
                break (url, key.to_string());
            }
        };
        let result = client::wait_until_echo(public, Duration::from_secs(20))
            .and_then(|()| client::echo_ok(None, public, &[7u8; 100_000]))
            .and_then(|()| hello(http_port))
            .and_then(|()| console_answers(&console, &key));
        let _ = child.kill();
        let _ = child.wait();
        result.unwrap_or_else(|e| panic!("{driver}: {e}"));
    }
}

/// A GET through the demo's HTTP endpoint: its hello, with the forwarding headers.
fn hello(port: u16) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /hi HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut got = String::new();
    s.read_to_string(&mut got)?;
    let ok = got.starts_with("HTTP/1.1 200")
        && got.contains("you asked: GET /hi HTTP/1.1")
        && got.contains("x-forwarded-for: 127.0.0.1");
    ok.then_some(())
        .ok_or_else(|| std::io::Error::other(format!("unexpected answer:\n{got}")))
}

/// The console's page, and its data with the printed key (not without): one agent session.
fn console_answers(url: &str, key: &str) -> std::io::Result<()> {
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches("/console")
        .parse()
        .map_err(std::io::Error::other)?;
    let admin = Admin::new(addr, key);
    let page = admin.with_key(None).call("GET", "/console", None);
    let anonymous = admin
        .with_key(None)
        .call("GET", "/v1/console/overview", None);
    let overview = admin.call("GET", "/v1/console/overview", None);
    let ok = page.status == 200
        && page.text.contains("sluice console")
        && anonymous.status == 401
        && overview.status == 200
        && overview.body["totals"]["sessions"] == 1
        && overview.body["totals"]["endpoints"] == 2;
    ok.then_some(()).ok_or_else(|| {
        std::io::Error::other(format!(
            "console: page {}, without key {}, with key {}: {}",
            page.status, anonymous.status, overview.status, overview.text
        ))
    })
}
