//! End-to-end: `sluice demo`, README's first command, serves an echo through a real
//! edge, TLS data channels and agent.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use sluice_tests::{client, process::sluice_bin, DRIVERS};

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
        let result = client::wait_until_echo(public, Duration::from_secs(20))
            .and_then(|()| client::echo_ok(None, public, &[7u8; 100_000]));
        let _ = child.kill();
        let _ = child.wait();
        result.unwrap_or_else(|e| panic!("{driver}: {e}"));
    }
}
