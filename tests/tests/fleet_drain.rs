//! End-to-end: a rolling restart of a fleet. Three edges on one host (127.0.0.1, .2,
//! .3) share their state in a real etcd; an agent lists all three and keeps two
//! sessions. A client picks among the edges a balancer would (those whose `/readyz`
//! answers 200, polled every 20 ms) for each new connection. Each edge in turn gets
//! SIGTERM: it stops being ready, tells its agents to move their sessions to another
//! edge, keeps serving (over peer links once the sessions moved) until they have, then
//! closes its listeners and exits; it is started again on the same ports before the
//! next. No new connection fails.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::json;
use sluice_tests::{
    admin::Admin,
    client,
    etcd::Etcd,
    fixture::{self, Fixture},
    fleet::{
        agent_yaml_on, edge_config, fresh_prefix, listen_addr, on, three_edges, Edge, API_KEY,
        DRIVER, IPS, NAMES, PROPAGATION,
    },
    process::Sluice,
    upstream::Echo,
    wait_until,
};

const URL: &str = "tcp://db.internal:5432";

/// Starts the edge of `cfg` (whose agent port is fixed) and waits for its admin API.
fn start_fixed(cfg: &std::path::Path) -> Edge {
    let (mut process, agent_addr, _) = Sluice::edge_on_fixed_ports(cfg, DRIVER, 0);
    let (addr, _) = sluice_tests::admin::listening(&mut process);
    let http_addr = Some(process.http_endpoints_addr());
    Edge {
        process,
        agent_addr,
        admin: Admin::new(addr, API_KEY),
        http_addr,
    }
}

/// Whether the edge whose admin API is at `admin` answers `/readyz` with 200; false
/// when it does not answer at all (stopped).
fn ready(admin: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

#[test]
fn a_rolling_restart_of_every_edge_fails_no_new_connection() {
    let etcd = Etcd::start();
    let fx = Fixture::new();
    let prefix = fresh_prefix();
    // Each edge on a fixed agent port, so that it comes back where the agent looks.
    let configs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| {
            let port = std::net::TcpListener::bind((IPS[i], 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let path = edge_config(&fx, NAMES[i], IPS[i], &etcd, &prefix, &[]);
            let yaml = std::fs::read_to_string(&path).unwrap().replace(
                &format!("listen: {}:0\n  tls", IPS[i]),
                &format!("listen: {}:{port}\n  tls", IPS[i]),
            );
            assert!(yaml.contains(&format!(":{port}")), "{yaml}");
            fx.write(&format!("{}.yml", NAMES[i]), &yaml)
        })
        .collect();
    let mut edges: Vec<Edge> = configs.iter().map(|c| start_fixed(c)).collect();
    let echo = Echo::start();
    let ports: Vec<SocketAddr> = edges.iter().map(|e| e.agent_addr).collect();
    let agent_yaml = agent_yaml_on(&fx, &ports, 2, "tcp", &[(URL, echo.addr)]);
    let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), DRIVER);
    agent.wait_for_n("two sessions", 2, |v| v["message"] == "session established");
    let created = edges[0].admin.create(
        "/v1/endpoints",
        json!({ "url": "tcp://127.0.0.1:0", "traffic_policy": fixture::forward_all(URL) }),
    );
    let port = listen_addr(&created).unwrap().port();
    let public = |i: usize| on(i, port);
    for i in 0..3 {
        client::wait_until_echo(public(i), PROPAGATION).unwrap();
    }

    // The balancer: which edges are in rotation, from their /readyz.
    let admins: Mutex<Vec<SocketAddr>> = Mutex::new(edges.iter().map(|e| e.admin.addr).collect());
    let in_rotation: [AtomicBool; 3] = std::array::from_fn(|_| AtomicBool::new(true));
    let stop = AtomicBool::new(false);
    let made = AtomicUsize::new(0);
    let (served, failures) = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let now: Vec<SocketAddr> = admins.lock().unwrap().clone();
                for (i, admin) in now.into_iter().enumerate() {
                    in_rotation[i].store(ready(admin), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let looping = s.spawn(|| {
            let (mut served, mut failures) = (0usize, Vec::new());
            let end = Instant::now() + Duration::from_secs(120);
            let mut turn = 0usize;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                turn += 1;
                let Some(i) = (0..3)
                    .map(|k| (turn + k) % 3)
                    .find(|&i| in_rotation[i].load(Ordering::Relaxed))
                else {
                    continue;
                };
                let n = made.fetch_add(1, Ordering::Relaxed);
                match client::echo_ok(None, public(i), format!("rolling {n}").as_bytes()) {
                    Ok(()) => served += 1,
                    Err(e) => failures.push(format!("connection {n} to edge {i}: {e}")),
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
        for i in 0..3 {
            let asked = Instant::now();
            edges[i].process.terminate();
            let (code, log) = edges[i].process.wait_exit_and_log();
            assert_eq!(code, Some(0), "edge {i} exit:\n{log}");
            eprintln!("edge {i} left in {:?}", asked.elapsed());
            edges[i] = start_fixed(&configs[i]);
            admins.lock().unwrap()[i] = edges[i].admin.addr;
            wait_until(&format!("edge {i} back in rotation"), PROPAGATION, || {
                ready(edges[i].admin.addr)
            });
            past(made.load(Ordering::Relaxed) + 50);
        }
        stop.store(true, Ordering::Relaxed);
        looping.join().unwrap()
    });
    assert!(
        failures.is_empty(),
        "{} of {} new connections failed during the rolling restart: {failures:?}",
        failures.len(),
        served + failures.len()
    );
    assert!(served > 200, "only {served} connections made");
    // The agent moved each session it had on a leaving edge, and holds two again.
    assert!(
        agent.count(|v| v["message"] == "session moved off a leaving edge") >= 1,
        "{}",
        agent.log_text()
    );
}

#[test]
fn a_stream_forwarded_into_a_leaving_edge_lives_through_its_drain() {
    let etcd = Etcd::start();
    let fx = Fixture::new();
    let mut edges = three_edges(&fx, &etcd);
    let echo = Echo::start();
    // One session, on B; C is where it moves.
    let agent_yaml = agent_yaml_on(
        &fx,
        &[edges[1].agent_addr, edges[2].agent_addr],
        1,
        "tcp",
        &[(URL, echo.addr)],
    );
    let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), DRIVER);
    agent.wait_for("endpoint bound");
    let created = edges[0].admin.create(
        "/v1/endpoints",
        json!({ "url": "tcp://127.0.0.1:0", "traffic_policy": fixture::forward_all(URL) }),
    );
    let on_a = on(0, listen_addr(&created).unwrap().port());
    client::wait_until_echo(on_a, PROPAGATION).unwrap();
    // A stream through A, carried to B.
    let mut held = client::connect_from(None, on_a).unwrap();
    assert!(client::echoes(&mut held, b"before\n", client::IO_TIMEOUT));

    // B leaves: its session moves to C, its listeners close; the stream it carries
    // keeps flowing until the client ends it, and only then does B exit.
    edges[1].process.terminate();
    edges[1]
        .process
        .wait_for("draining: public listeners closed");
    agent.wait_for("session moved off a leaving edge");
    assert!(
        client::echoes(&mut held, b"during the drain\n", client::IO_TIMEOUT),
        "the stream forwarded into B was cut by its drain"
    );
    assert!(
        edges[1].process.is_running(),
        "B exited with a stream in flight"
    );
    // New connections through A reach the session on C meanwhile.
    client::echo_ok(None, on_a, b"new").unwrap();
    drop(held);
    let (code, log) = edges[1].process.wait_exit_and_log();
    assert_eq!(code, Some(0), "{log}");
}
