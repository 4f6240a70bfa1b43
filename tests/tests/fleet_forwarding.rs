//! End-to-end: forwarding between the edges of a fleet. Three edges on one host
//! (127.0.0.1, .2, .3) share their state in a real etcd; agents hold sessions with
//! some of them. A public connection that reaches an edge holding no session for its
//! URL is checked against the endpoint's policy there, on the real client address,
//! then carried over a peer link to an edge that holds one. Bytes are verified both
//! ways (half-close included), the PROXY header at the upstream names the real client,
//! an edge killed under a connection loop costs no more than the connection in flight
//! through it, and a forged peer link opening is refused.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use serde_json::json;
use sluice_tests::{
    client,
    etcd::Etcd,
    fixture::{self, Fixture},
    fleet::{agent_yaml_on, listen_addr, on, three_edges, Edge, DRIVER, PROPAGATION},
    probes::HeaderEcho,
    process::Sluice,
    upstream::Echo,
    wait_until,
};

const URL: &str = "tcp://db.internal:5432";
const PP_URL: &str = "tcp://pp.internal:7000";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// An agent holding sessions with `on` (indexes into `edges`), serving `endpoints`,
/// each upstream with `upstream_extra` (e.g. `, proxy_protocol: 2`).
fn agent_on(
    fx: &Fixture,
    name: &str,
    edges: &[Edge],
    on: &[usize],
    endpoints: &[(&str, SocketAddr)],
    upstream_extra: &str,
) -> Sluice {
    let ports: Vec<SocketAddr> = on.iter().map(|&i| edges[i].agent_addr).collect();
    let yaml = agent_yaml_on(fx, &ports, on.len(), "tcp", endpoints)
        .replace("\" }", &format!("\"{upstream_extra} }}"));
    let mut agent = Sluice::agent(&fx.write(name, &yaml), DRIVER);
    agent.wait_for_n("every session", on.len(), |v| {
        v["message"] == "session established"
    });
    agent
}

/// A `tcp://` endpoint made through edge 0 with `policy`: its port.
fn endpoint(edges: &[Edge], policy: String) -> u16 {
    let created = edges[0].admin.create(
        "/v1/endpoints",
        json!({ "url": "tcp://127.0.0.1:0", "traffic_policy": policy }),
    );
    listen_addr(&created).unwrap().port()
}

/// Waits until a client from `source` gets its echo through `target`.
fn wait_served(source: &str, target: SocketAddr) {
    wait_until(&format!("{target} serves {source}"), PROPAGATION, || {
        client::echo_ok(Some(ip(source)), target, b"ready?").is_ok()
    });
}

#[test]
fn an_edge_without_the_session_forwards_to_the_edge_that_has_it_under_its_own_policy() {
    let etcd = Etcd::start();
    let fx = Fixture::new();
    let edges = three_edges(&fx, &etcd);
    let echo = Echo::start();
    let headers = HeaderEcho::start();
    // The agent holds one session, with B (edge 1); its PROXY endpoint sends v2 headers.
    let yaml_marker = format!(
        "  - url: {PP_URL}\n    upstream: {{ url: \"{}\"",
        headers.addr
    );
    let _agent = {
        let yaml = agent_yaml_on(
            &fx,
            &[edges[1].agent_addr],
            1,
            "tcp",
            &[(URL, echo.addr), (PP_URL, headers.addr)],
        )
        .replace(&yaml_marker, &format!("{yaml_marker}, proxy_protocol: 2"));
        assert!(yaml.contains("proxy_protocol: 2"), "{yaml}");
        let mut agent = Sluice::agent(&fx.write("agent.yml", &yaml), DRIVER);
        agent.wait_for_n("both endpoints bound", 2, |v| {
            v["message"] == "endpoint bound"
        });
        agent
    };
    // Only 127.0.0.5 may connect.
    let port = endpoint(&edges, fixture::allow_only(&["127.0.0.5/32"], URL));
    let pp_port = endpoint(&edges, fixture::forward_all(PP_URL));

    for edge in 0..3 {
        wait_served("127.0.0.5", on(edge, port));
        // A megabyte each way, then the client's half-close: everything comes back,
        // then the end, through the extra hop on A and C.
        let payload = client::payload(edge as u64 + 1, 1 << 20);
        let stream = client::connect_from(Some(ip("127.0.0.5")), on(edge, port)).unwrap();
        let got = client::exchange(stream, &payload).unwrap();
        assert!(
            got == payload,
            "edge {edge}: {} of {} bytes came back intact",
            got.len(),
            payload.len()
        );
        // The policy is decided where the client connected, on its own address: a
        // forwarding edge does not let through what the holding edge would refuse.
        assert!(
            client::is_refused(Some(ip("127.0.0.6")), on(edge, port)),
            "edge {edge} let 127.0.0.6 through"
        );
    }
    // Only B holds a session: A and C carried theirs over peer links. Every edge lists
    // it, with the edge that holds it.
    for (edge, name) in [(0, "A"), (2, "C")] {
        let own = edges[edge]
            .admin
            .get(&format!("/v1/sessions?edge=edge-{}", name.to_lowercase()));
        assert!(own["items"].as_array().unwrap().is_empty(), "{name}: {own}");
        let fleet = edges[edge].admin.get("/v1/sessions");
        let items = fleet["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{name}: {fleet}");
        assert_eq!(items[0]["edge"], "edge-b", "{fleet}");
        let urls: Vec<&str> = items[0]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap())
            .collect();
        assert_eq!(urls, [URL, PP_URL], "{fleet}");
        let metrics = edges[edge].admin.call("GET", "/metrics", None).text;
        let out = sluice_tests::prom::sample(
            &metrics,
            "sluice_edge_peer_streams_total{direction=\"out\",outcome=\"opened\"}",
        );
        assert!(out >= 1.0, "{name} forwarded nothing:\n{metrics}");
    }
    let metrics_b = edges[1].admin.call("GET", "/metrics", None).text;
    let into_b = sluice_tests::prom::sample(
        &metrics_b,
        "sluice_edge_peer_streams_total{direction=\"in\",outcome=\"opened\"}",
    );
    assert!(into_b >= 4.0, "B took {into_b} peer streams:\n{metrics_b}");

    // The upstream behind B's agent sees the real client and the address it reached,
    // on C, in the PROXY header.
    wait_served("127.0.0.7", on(2, pp_port));
    while headers.headers.try_recv().is_ok() {}
    client::echo_ok(Some(ip("127.0.0.7")), on(2, pp_port), b"who am I?").unwrap();
    let header = headers
        .headers
        .recv_timeout(PROPAGATION)
        .unwrap()
        .expect("a PROXY header");
    assert_eq!(header.src.ip(), ip("127.0.0.7"), "{header:?}");
    assert_eq!(header.dst, on(2, pp_port), "{header:?}");
}

#[test]
fn an_edge_killed_under_forwarded_connections_costs_only_those_in_flight() {
    let etcd = Etcd::start();
    let fx = Fixture::new();
    let mut edges = three_edges(&fx, &etcd);
    let echo = Echo::start();
    // Sessions with B and C; connections arrive at A, which holds none.
    let _agent = agent_on(&fx, "agent.yml", &edges, &[1, 2], &[(URL, echo.addr)], "");
    let port = endpoint(&edges, fixture::forward_all(URL));
    wait_served("127.0.0.1", on(0, port));

    let stop = AtomicBool::new(false);
    let made = AtomicUsize::new(0);
    let (served, failures) = std::thread::scope(|s| {
        let looping = s.spawn(|| {
            let (mut served, mut failures) = (0usize, Vec::new());
            let end = Instant::now() + Duration::from_secs(40);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                let n = made.fetch_add(1, Ordering::Relaxed);
                match client::echo_ok(None, on(0, port), format!("loop {n}").as_bytes()) {
                    Ok(()) => served += 1,
                    Err(e) => failures.push(format!("connection {n}: {e}")),
                }
            }
            (served, failures)
        });
        let past = |count: usize| {
            wait_until("the loop makes connections", PROPAGATION, || {
                made.load(Ordering::Relaxed) > count || looping.is_finished()
            })
        };
        past(50);
        edges[1].process.kill();
        let killed_at = Instant::now();
        // A keeps B's routes until B's lease runs out; connections meanwhile go to C
        // after B refuses the link.
        wait_until(
            "A's routes drop the killed edge",
            Duration::from_secs(15),
            || {
                edges[0]
                    .admin
                    .call("GET", "/metrics", None)
                    .text
                    .contains("sluice_edge_fleet_routes 1\n")
            },
        );
        eprintln!(
            "B's routes left A's snapshot {:?} after the kill",
            killed_at.elapsed()
        );
        past(made.load(Ordering::Relaxed) + 50);
        stop.store(true, Ordering::Relaxed);
        looping.join().unwrap()
    });
    assert!(
        failures.len() <= 1,
        "{} of {} connections through A failed (at most the one in flight through B may): {failures:?}",
        failures.len(),
        served + failures.len()
    );
    assert!(served > 100, "only {served} connections made");
}

#[test]
fn a_peer_link_opening_without_the_fleet_key_is_refused_and_reaches_no_upstream() {
    let etcd = Etcd::start();
    let fx = Fixture::new();
    let edges = three_edges(&fx, &etcd);
    let headers = HeaderEcho::start();
    let _agent = agent_on(
        &fx,
        "agent.yml",
        &edges,
        &[1],
        &[(URL, headers.addr)],
        ", proxy_protocol: 2",
    );
    let port = endpoint(&edges, fixture::forward_all(URL));
    wait_served("127.0.0.1", on(0, port));
    while headers.headers.try_recv().is_ok() {}

    // A hand-made opening with a proof made with another key.
    let mut opening = Vec::new();
    opening.extend_from_slice(b"SLPS");
    let mut body = vec![13u8];
    let put_str = |b: &mut Vec<u8>, s: &str| {
        b.extend_from_slice(&(s.len() as u16).to_be_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    put_str(&mut body, "edge-a");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    body.extend_from_slice(&now_ms.to_be_bytes());
    body.extend_from_slice(&42u64.to_be_bytes());
    body.extend_from_slice(&[0x5a; 32]);
    for addr in ["203.0.113.9:4000", "127.0.0.1:1"] {
        let addr: SocketAddr = addr.parse().unwrap();
        let IpAddr::V4(v4) = addr.ip() else {
            unreachable!()
        };
        body.push(4);
        body.extend_from_slice(&v4.octets());
        body.extend_from_slice(&addr.port().to_be_bytes());
    }
    put_str(&mut body, URL);
    opening.extend_from_slice(&(body.len() as u32).to_be_bytes());
    opening.extend_from_slice(&body);

    let mut link = std::net::TcpStream::connect(edges[1].agent_addr).unwrap();
    link.set_read_timeout(Some(PROPAGATION)).unwrap();
    link.write_all(&opening).unwrap();
    let mut answer = Vec::new();
    let _ = link.read_to_end(&mut answer);
    // A StreamStatus frame: length 2, kind 12, code 3 (peer link refused); then EOF.
    assert_eq!(answer, [0, 0, 0, 2, 12, 3], "answer to a forged opening");
    // The next connection the upstream sees is a real one, from 127.0.0.8 through A:
    // the forged opening reached nothing.
    client::echo_ok(Some(ip("127.0.0.8")), on(0, port), b"real").unwrap();
    let first = headers
        .headers
        .recv_timeout(PROPAGATION)
        .unwrap()
        .expect("a PROXY header");
    assert_eq!(first.src.ip(), ip("127.0.0.8"), "{first:?}");
    // A lone edge (no fleet, so no key) refuses an opening before reading it, however
    // long it claims to be.
    let lone_yaml = fx
        .edge_yaml("127.0.0.1:0", &[])
        .replace("endpoints:\n", "endpoints: []\n");
    let mut lone = Sluice::edge(&fx.write("lone.yml", &lone_yaml), DRIVER);
    let (lone_agent_port, _) = lone.edge_addrs(0);
    let mut link = std::net::TcpStream::connect(lone_agent_port).unwrap();
    link.set_read_timeout(Some(PROPAGATION)).unwrap();
    link.write_all(b"SLPS\x00\x10\x00\x00").unwrap();
    let mut answer = Vec::new();
    let _ = link.read_to_end(&mut answer);
    assert_eq!(
        answer,
        [0, 0, 0, 2, 12, 3],
        "a lone edge's answer to an opening"
    );

    let metrics = edges[1].admin.call("GET", "/metrics", None).text;
    let refused = sluice_tests::prom::sample(
        &metrics,
        "sluice_edge_peer_streams_total{direction=\"in\",outcome=\"refused\"}",
    );
    assert_eq!(refused, 1.0, "{metrics}");
}

#[test]
fn an_edge_whose_members_are_unhealthy_forwards_to_an_edge_with_a_healthy_one() {
    let etcd = Etcd::start();
    let fx = Fixture::new();
    let edges = three_edges(&fx, &etcd);
    let echo = Echo::start();
    let checks = ", health_check: { interval: 100ms, timeout: 50ms, unhealthy_threshold: 1 }";
    // B's agent cannot reach its upstream; C's can.
    let mut sick = agent_on(
        &fx,
        "sick.yml",
        &edges,
        &[1],
        &[(URL, sluice_tests::faults::gone_addr())],
        checks,
    );
    let _well = agent_on(&fx, "well.yml", &edges, &[2], &[(URL, echo.addr)], checks);
    sick.wait_for("upstream unhealthy");
    wait_until("B knows its member is unhealthy", PROPAGATION, || {
        edges[1].admin.get("/v1/sessions?edge=edge-b")["items"][0]["endpoints"][0]["healthy"]
            == false
    });
    let port = endpoint(&edges, fixture::forward_all(URL));
    // Through A (no session) and through B (a session, unhealthy): both reach C's.
    for edge in [0, 1] {
        wait_served("127.0.0.1", on(edge, port));
        for n in 0..20 {
            client::echo_ok(None, on(edge, port), format!("healthy {n}").as_bytes())
                .unwrap_or_else(|e| panic!("connection {n} through edge {edge}: {e}"));
        }
    }
}

#[test]
fn an_agent_whose_only_edge_dies_is_served_again_after_its_reconnect() {
    let etcd = Etcd::start();
    let fx = Fixture::new();
    let mut edges = three_edges(&fx, &etcd);
    let echo = Echo::start();
    // One session, on B (the first edge it lists); C is there to move to.
    let yaml = agent_yaml_on(
        &fx,
        &[edges[1].agent_addr, edges[2].agent_addr],
        1,
        "tcp",
        &[(URL, echo.addr)],
    );
    let mut agent = Sluice::agent(&fx.write("agent.yml", &yaml), DRIVER);
    agent.wait_for("endpoint bound");
    assert_eq!(
        edges[1].admin.get("/v1/sessions?edge=edge-b")["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let port = endpoint(&edges, fixture::forward_all(URL));
    wait_served("127.0.0.1", on(0, port));

    // B dies; connections through A fail until the agent's session is back (on C)
    // and A has learnt its route.
    edges[1].process.kill();
    let killed = Instant::now();
    let mut failed = 0;
    let gap = loop {
        match client::echo_ok(None, on(0, port), b"back?") {
            Ok(()) => break killed.elapsed(),
            Err(_) => failed += 1,
        }
        assert!(
            killed.elapsed() < PROPAGATION * 2,
            "not served again {:?} after the agent's only edge died",
            killed.elapsed()
        );
    };
    eprintln!(
        "served again through A {gap:?} after B died ({failed} connections failed meanwhile)"
    );
    agent.wait_for_n("a session with C", 2, |v| {
        v["message"] == "session established"
    });
}

#[test]
fn resets_cross_the_extra_hop_both_ways_on_both_transports() {
    use sluice_tests::upstream::{Ending, Recorder};
    let etcd = Etcd::start();
    let fx = Fixture::new();
    let edges = three_edges(&fx, &etcd);
    for (i, transport) in ["tcp", "tls"].into_iter().enumerate() {
        let url = format!("tcp://resets-{transport}.internal:{}", 7100 + i);
        let plain = Recorder::start(None);
        let resetting = Recorder::start(Some(3));
        let reset_url = format!("tcp://resets-{transport}-up.internal:{}", 7200 + i);
        // The agent holds its session with B, on this transport; clients come to A.
        let yaml = agent_yaml_on(
            &fx,
            &[edges[1].agent_addr],
            1,
            transport,
            &[
                (url.as_str(), plain.addr),
                (reset_url.as_str(), resetting.addr),
            ],
        );
        let mut agent = Sluice::agent(&fx.write(&format!("agent-{transport}.yml"), &yaml), DRIVER);
        agent.wait_for_n("both endpoints bound", 2, |v| {
            v["message"] == "endpoint bound"
        });
        let port = endpoint(&edges, fixture::forward_all(&url));
        let reset_port = endpoint(&edges, fixture::forward_all(&reset_url));
        wait_served("127.0.0.1", on(0, port));

        // The connection that found the endpoint served ended cleanly; the upstream
        // records it on its own thread, so wait for that before the next one.
        let served = plain.endings.recv_timeout(PROPAGATION).unwrap();
        assert_eq!(served, Ending::Eof, "{transport}: the served echo's end");
        // The client resets: the upstream behind B sees a reset.
        let mut s = client::connect_from(None, on(0, port)).unwrap();
        s.write_all(b"abc").unwrap();
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
        let ending = plain.endings.recv_timeout(PROPAGATION).unwrap();
        assert_eq!(ending, Ending::Reset, "{transport}: client reset at A");

        // The upstream resets: the client at A sees a reset, not an end.
        let mut s = client::connect_from(None, on(0, reset_port)).unwrap();
        s.write_all(b"abc").unwrap();
        let mut got = Vec::new();
        let err = s.read_to_end(&mut got).expect_err(&format!(
            "{transport}: the stream must end in a reset, not EOF"
        ));
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::ConnectionReset,
            "{transport}"
        );
    }
}

/// A sample of edge `edge`'s metrics.
fn metric(edges: &[Edge], edge: usize, series: &str) -> f64 {
    let text = edges[edge].admin.call("GET", "/metrics", None).text;
    sluice_tests::prom::sample(&text, series)
}

const OUT_OPENED: &str = "sluice_edge_peer_streams_total{direction=\"out\",outcome=\"opened\"}";
const IN_OPENED: &str = "sluice_edge_peer_streams_total{direction=\"in\",outcome=\"opened\"}";

#[test]
fn connections_through_a_forwarding_edge_reuse_its_peer_links() {
    let etcd = Etcd::start();
    let fx = Fixture::new();
    let (a, b) = sluice_tests::fleet::fleet(&fx, &etcd);
    let edges = vec![a, b];
    let echo = Echo::start();
    let _agent = agent_on(&fx, "agent.yml", &edges, &[1], &[(URL, echo.addr)], "");
    let port = endpoint(&edges, fixture::forward_all(URL));
    wait_served("127.0.0.1", on(0, port));

    // One after another through A, each with its bytes both ways and the client's
    // half-close: each stream ends cleanly on both sides, so its link carries the next.
    for n in 0..40u64 {
        let payload = client::payload(n, 20_000);
        let stream = client::connect_from(None, on(0, port)).unwrap();
        let got = client::exchange(stream, &payload).unwrap();
        assert!(got == payload, "connection {n}: {} bytes back", got.len());
    }
    let connected = metric(
        &edges,
        0,
        "sluice_edge_peer_link_streams_total{link=\"connected\"}",
    );
    let reused = metric(
        &edges,
        0,
        "sluice_edge_peer_link_streams_total{link=\"reused\"}",
    );
    eprintln!("41 connections through A: {connected} new peer links, {reused} reused");
    assert_eq!(connected + reused, metric(&edges, 0, OUT_OPENED));
    assert!(
        reused >= 30.0,
        "only {reused} of 41 streams reused a link ({connected} connected)"
    );
    assert!(metric(&edges, 1, IN_OPENED) >= 41.0);
}

#[test]
fn a_forwarding_edge_sends_new_connections_to_the_less_loaded_edge() {
    let etcd = Etcd::start();
    let fx = Fixture::new();
    let edges = three_edges(&fx, &etcd);
    let echo = Echo::start();
    // One agent with sessions on A and B; clients come to C, which holds none.
    let _agent = agent_on(&fx, "agent.yml", &edges, &[0, 1], &[(URL, echo.addr)], "");
    let port = endpoint(&edges, fixture::forward_all(URL));
    wait_served("127.0.0.1", on(2, port));
    let into = |edge: usize| metric(&edges, edge, IN_OPENED);
    let (into_a, into_b) = (into(0), into(1));

    // Six connections held open on A itself: A's URL carries six streams.
    let held_on_a: Vec<_> = (0..6)
        .map(|n| {
            let mut s = client::connect_from(None, on(0, port)).unwrap();
            assert!(client::echoes(
                &mut s,
                format!("on A {n}").as_bytes(),
                PROPAGATION
            ));
            s
        })
        .collect();
    wait_until("C sees A's load", PROPAGATION, || {
        edges[2].admin.get("/v1/routes")["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["edge"] == "edge-a" && r["active"].as_u64() >= Some(6))
    });
    // Six more through C: each goes to B, the lighter, until B carries as many.
    let held_via_c: Vec<_> = (0..6)
        .map(|n| {
            let mut s = client::connect_from(None, on(2, port)).unwrap();
            assert!(client::echoes(
                &mut s,
                format!("via C {n}").as_bytes(),
                PROPAGATION
            ));
            s
        })
        .collect();
    let (to_a, to_b) = (into(0) - into_a, into(1) - into_b);
    assert_eq!(
        (to_a, to_b),
        (0.0, 6.0),
        "C sent {to_a} to A (6 streams) and {to_b} to B (none)"
    );
    // B now publishes its six: C's routes show both edges loaded alike.
    wait_until("C sees B's load", PROPAGATION, || {
        edges[2].admin.get("/v1/routes")["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["edge"] == "edge-b" && r["active"].as_u64() >= Some(6))
    });
    drop((held_on_a, held_via_c));
}

#[test]
fn an_http_endpoint_is_served_through_an_edge_without_the_session() {
    use sluice_tests::http::{curl, HttpEcho};
    let etcd = Etcd::start();
    let fx = Fixture::new();
    let edges = three_edges(&fx, &etcd);
    let api = HttpEcho::start("api");
    let url = "http://api.internal";
    let yaml = agent_yaml_on(&fx, &[edges[1].agent_addr], 1, "tcp", &[])
        + &format!(
            "  - url: {url}\n    upstream: {{ url: \"http://{}\" }}\n",
            api.addr
        );
    let mut agent = Sluice::agent(&fx.write("agent.yml", &yaml), DRIVER);
    agent.wait_for("endpoint bound");
    edges[0].admin.create(
        "/v1/endpoints",
        json!({ "url": "http://api.example.com", "traffic_policy": fixture::forward_all(url) }),
    );
    // Through C, which holds no session (forwarded to B), and through B itself.
    for edge in [2, 1] {
        let http = edges[edge]
            .http_addr
            .expect("fleet edges serve http:// endpoints");
        let target = format!("http://api.example.com:{}/via-{edge}", http.port());
        wait_until(
            &format!("edge {edge} serves the http endpoint"),
            PROPAGATION,
            || {
                curl(
                    http,
                    "api.example.com",
                    std::slice::from_ref(&target),
                    None,
                    &[],
                    fx.dir(),
                )[0]
                .status
                    == 200
            },
        );
        let urls: Vec<String> = (0..5).map(|_| target.clone()).collect();
        let accepted = api.accepted.load(Ordering::SeqCst);
        let got = curl(http, "api.example.com", &urls, None, &[], fx.dir());
        for t in &got {
            assert_eq!(t.status, 200, "edge {edge}: {t:?}");
            let seen = t.text().to_ascii_lowercase();
            assert!(seen.contains("x-forwarded-for: 127.0.0.1\r\n"), "{seen}");
            assert!(
                seen.contains(&format!("get /via-{edge} http/1.1")),
                "{seen}"
            );
            assert!(!seen.contains("connection: close"), "{seen}");
        }
        // Kept alive through the tunnel, over the peer link too: five requests on one
        // client connection take at most one new upstream connection (none when the
        // worker kept one from the requests before).
        let new = api.accepted.load(Ordering::SeqCst) - accepted;
        assert!(
            new <= 1,
            "edge {edge}: {new} upstream connections for 5 requests"
        );
    }
    // C carried the requests to B, on fewer streams than requests (one per worker
    // that served them, kept alive between requests).
    let forwarded = metric(&edges, 2, OUT_OPENED);
    assert!(
        (1.0..5.0).contains(&forwarded),
        "C carried 6 or more requests to B on {forwarded} streams"
    );
}

const IN_FAILED: &str = "sluice_edge_peer_streams_total{direction=\"in\",outcome=\"failed\"}";

#[test]
fn what_only_the_sessions_edge_can_do_is_refused_over_a_peer_link_and_reaches_no_upstream() {
    use sluice_tests::{
        http::{curl, HttpEcho},
        http2::Http2Echo,
    };
    let etcd = Etcd::start();
    let fx = Fixture::new();
    let edges = three_edges(&fx, &etcd);
    // B holds the agent's session. One agent endpoint has HTTP rules of its own (run
    // per request, only where the requests are parsed next to the session), the other
    // an HTTP/2 upstream (spoken to only by an edge holding the session).
    let guarded = HttpEcho::start("guarded");
    let h2 = Http2Echo::start("h2");
    let yaml = agent_yaml_on(&fx, &[edges[1].agent_addr], 1, "tcp", &[])
        + &format!(
            "  - url: http://guarded.internal\n    upstream: {{ url: \"http://{}\" }}\n    traffic_policy:\n      on_http_request:\n        - expressions: [\"req.url.path.startsWith('/blocked')\"]\n          actions:\n            - type: deny\n              config: {{ status_code: 451 }}\n\
             \x20 - url: http://h2.internal\n    upstream: {{ url: \"http://{}\", protocol: http2 }}\n",
            guarded.addr, h2.addr
        );
    let mut agent = Sluice::agent(&fx.write("agent.yml", &yaml), DRIVER);
    agent.wait_for_n("every endpoint bound", 2, |v| {
        v["message"] == "endpoint bound"
    });
    for (host, internal) in [
        ("guarded.example.com", "http://guarded.internal"),
        ("h2.example.com", "http://h2.internal"),
    ] {
        edges[0].admin.create(
            "/v1/endpoints",
            json!({ "url": format!("http://{host}"), "traffic_policy": fixture::forward_all(internal) }),
        );
    }
    let get = |edge: usize, host: &str, path: &str| {
        let http = edges[edge]
            .http_addr
            .expect("fleet edges serve http:// endpoints");
        let url = format!("http://{host}:{}{path}", http.port());
        curl(http, host, &[url], None, &[], fx.dir()).pop().unwrap()
    };
    // Through B: the agent endpoint's rule answers, the rest reaches the upstreams (the
    // HTTP/2 one over HTTP/2).
    wait_until("B serves both endpoints", PROPAGATION, || {
        get(1, "guarded.example.com", "/").status == 200
            && get(1, "h2.example.com", "/").status == 200
    });
    assert_eq!(get(1, "guarded.example.com", "/blocked/x").status, 451);
    let h2_seen = get(1, "h2.example.com", "/h2");
    assert!(
        h2_seen.text().starts_with("HTTP/2.0 GET"),
        "{}",
        h2_seen.text()
    );
    let (guarded_before, h2_before) = (guarded.requests.load(Ordering::SeqCst), h2.requests());
    let refused_before = metric(&edges, 1, IN_FAILED);

    // Through C (no session): B refuses both streams, C answers with its own page, and
    // no request reaches an upstream (the blocked path would have slipped past the rule
    // had B carried it).
    for (host, path) in [
        ("guarded.example.com", "/blocked/x"),
        ("guarded.example.com", "/"),
        ("h2.example.com", "/h2"),
    ] {
        let got = get(2, host, path);
        assert!(
            got.status >= 500 && got.header("sluice-error-code").is_some(),
            "{host}{path} through C: {got:?}"
        );
    }
    assert_eq!(guarded.requests.load(Ordering::SeqCst), guarded_before);
    assert_eq!(h2.requests(), h2_before);
    assert!(
        metric(&edges, 1, IN_FAILED) >= refused_before + 3.0,
        "B counted the refused streams"
    );
    for reason in ["policy has HTTP rules", "upstream speaks HTTP/2"] {
        assert!(
            edges[1]
                .process
                .count(|v| v["message"].as_str().is_some_and(|m| m.contains(reason)))
                >= 1,
            "B logs why ({reason}):\n{}",
            edges[1].process.log_text()
        );
    }
}
