//! End-to-end: bytes through a real edge and agent, on both drivers.

mod common;

use std::{
    io::{Read, Write},
    net::{IpAddr, Shutdown},
};

use common::Tunnel;
use sha2::{Digest, Sha256};
use sluice_tests::client::payload;
use sluice_tests::{client, DRIVERS};

const TRANSPORTS: [&str; 2] = ["tcp", "tls"];

fn matrix() -> impl Iterator<Item = (&'static str, &'static str)> {
    DRIVERS
        .into_iter()
        .flat_map(|d| TRANSPORTS.into_iter().map(move |t| (d, t)))
}

#[test]
fn data_channels_of_both_transports_carry_stream_after_stream() {
    for driver in DRIVERS {
        for transport in TRANSPORTS {
            let t = Tunnel::start(driver, transport);
            for i in 0..50u64 {
                client::echo_ok(None, t.public, &payload(i, 2000)).unwrap();
            }
            // A larger one, spliced on `tcp` channels, must leave its channel reusable too.
            client::echo_ok(None, t.public, &payload(50, 3 << 20)).unwrap();
            for i in 51..60u64 {
                client::echo_ok(None, t.public, &payload(i, 100)).unwrap();
            }
            let is_new_channel = |v: &serde_json::Value| v["message"] == "new data channel parked";
            let opened = t.edge.count(is_new_channel);
            assert!(
                opened < 20,
                "{driver}/{transport}: 60 sequential streams opened {opened} channels"
            );
        }
    }
}

#[test]
fn echo_passes_through_the_tunnel() {
    for driver in DRIVERS {
        for transport in TRANSPORTS {
            let t = Tunnel::start(driver, transport);
            client::echo_ok(None, t.public, b"hello through sluice")
                .unwrap_or_else(|e| panic!("{driver}/{transport}: {e}"));
            assert!(t.echo.accepted() >= 1);
        }
    }
}

#[test]
fn two_hundred_concurrent_connections_each_get_their_own_bytes() {
    for (driver, transport) in matrix() {
        let t = Tunnel::start(driver, transport);
        let public = t.public;
        let workers: Vec<_> = (0..200u64)
            .map(|i| {
                std::thread::spawn(move || {
                    let data = payload(i, 1000 + (i as usize * 37) % 20_000);
                    client::echo_ok(None, public, &data).map_err(|e| format!("conn {i}: {e}"))
                })
            })
            .collect();
        let failures: Vec<String> = workers
            .into_iter()
            .filter_map(|h| h.join().unwrap().err())
            .collect();
        assert!(
            failures.is_empty(),
            "{driver}: {} failed: {failures:?}",
            failures.len()
        );
        assert!(
            t.echo.accepted() >= 200,
            "{driver}: upstream saw {}",
            t.echo.accepted()
        );
    }
}

#[test]
fn sixty_four_mebibytes_each_way_arrive_unchanged() {
    for (driver, transport) in matrix() {
        let t = Tunnel::start(driver, transport);
        let data = payload(7, 64 << 20);
        let sent_hash = Sha256::digest(&data);
        let stream = client::connect_from(None, t.public).unwrap();
        let got = client::exchange(stream, &data).unwrap();
        assert_eq!(got.len(), data.len(), "{driver}/{transport}: length");
        assert_eq!(
            Sha256::digest(&got),
            sent_hash,
            "{driver}/{transport}: content hash"
        );
    }
}

#[test]
fn half_close_reaches_the_upstream_and_the_reply_still_arrives() {
    for (driver, transport) in matrix() {
        let t = Tunnel::start(driver, transport);
        let mut s = client::connect_from(None, t.public).unwrap();
        let data = payload(3, 300_000);
        s.write_all(&data).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        // The echo upstream only closes after reading our EOF: receiving everything
        // and then EOF proves the FIN crossed both hops and the reply was not cut.
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got, data, "{driver}/{transport}");
    }
}

#[test]
fn restrict_ips_lets_allowed_sources_through_and_closes_the_rest() {
    for (driver, transport) in matrix() {
        let policy =
            sluice_tests::fixture::allow_only(&["127.0.0.2/32", "127.0.0.3/32"], common::ECHO_URL);
        let t = Tunnel::with_policy(driver, transport, policy);
        let allowed: IpAddr = "127.0.0.2".parse().unwrap();
        let denied: IpAddr = "127.0.0.9".parse().unwrap();
        client::echo_ok(Some(allowed), t.public, b"let me in").unwrap();
        let before = t.echo.accepted();
        assert!(
            client::is_refused(Some(denied), t.public),
            "{driver}: 127.0.0.9 got through"
        );
        assert!(client::is_refused(
            Some("127.0.0.1".parse().unwrap()),
            t.public
        ));
        assert_eq!(
            t.echo.accepted(),
            before,
            "{driver}: a denied client reached the upstream"
        );
        client::echo_ok(Some("127.0.0.3".parse().unwrap()), t.public, b"me too").unwrap();
    }
}

#[test]
fn an_idle_connection_is_closed_after_the_endpoint_idle_timeout() {
    for (driver, transport) in matrix() {
        let policy = sluice_tests::fixture::forward_all(common::ECHO_URL);
        let t = Tunnel::build(driver, transport, policy, "    idle_timeout: 300ms\n");
        let mut s = client::connect_from(None, t.public).unwrap();
        s.write_all(b"once").unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"once");
        // Say nothing more: the edge must close within two periods (read returns EOF
        // or a reset) long before the client's 20 s read timeout.
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        let waited = started.elapsed();
        assert!(rest.is_empty(), "{driver}/{transport}");
        assert!(
            waited < std::time::Duration::from_secs(10),
            "{driver}/{transport}: idle connection lived {waited:?}"
        );
        assert!(
            waited >= std::time::Duration::from_millis(250),
            "{driver}/{transport}: closed too early ({waited:?})"
        );
    }
}
