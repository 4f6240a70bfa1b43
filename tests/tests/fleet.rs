//! End-to-end: a fleet of edges sharing their state in a real etcd server. Two edges
//! on one host, each on its own loopback address (127.0.0.1 and 127.0.0.2, their
//! `public_address`), a real `etcd` started on loopback ports, real agents and echo
//! upstreams. What one edge's admin API changes is in force on the other: endpoints
//! served, re-policied and removed, tokens accepted and revoked, names unique across
//! both; while etcd is down connections keep flowing and writes get 503.

use std::{net::SocketAddr, sync::Barrier, time::Duration, time::Instant};

use serde_json::{json, Value};
use sluice_tests::{
    client,
    etcd::{Etcd, EtcdTls},
    fixture::{self, Fixture},
    fleet::{
        edge_config, fleet, fresh_prefix, listen_addr, run_edge, start_edge, start_edge_with, Edge,
        API_KEY, DRIVER, PROPAGATION,
    },
    pki::Ca,
    process::Sluice,
    upstream::Echo,
    wait_until,
};

const URL: &str = "tcp://db.internal:5432";

/// How many service users `edge` lists whose name starts with `prefix`.
fn users_named(edge: &Edge, prefix: &str) -> usize {
    edge.admin.get("/v1/service_users?limit=1000")["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .count()
}

fn agent(fx: &Fixture, name: &str, token: &str, edge: SocketAddr, upstream: SocketAddr) -> Sluice {
    let path = fx.write(name, &fx.agent_yaml(token, edge, "tcp", &[(URL, upstream)]));
    let mut agent = Sluice::agent(&path, DRIVER);
    agent.wait_for("endpoint bound");
    agent
}

/// The endpoint `id` as `edge` lists it, if it does.
fn listed(edge: &Edge, id: &str) -> Option<Value> {
    edge.admin.get("/v1/endpoints")["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .cloned()
}

/// Creates a `tcp://` endpoint forwarding to [`URL`] through edge `a` and waits until
/// edge B (127.0.0.2, with an agent serving [`URL`]) serves it: the endpoint as created
/// and its address on B.
fn made_through_a_served_by_b(a: &Edge) -> (Value, SocketAddr) {
    let created = a.admin.create(
        "/v1/endpoints",
        json!({ "url": "tcp://127.0.0.1:0", "traffic_policy": fixture::forward_all(URL) }),
    );
    let on_b = SocketAddr::from(([127, 0, 0, 2], listen_addr(&created).unwrap().port()));
    client::wait_until_echo(on_b, PROPAGATION).expect("edge B serves the endpoint made through A");
    (created, on_b)
}

#[test]
fn an_endpoint_made_through_one_edge_is_served_policed_and_removed_by_the_others() {
    let etcd = Etcd::start();
    let fx = Fixture::new();
    let prefix = fresh_prefix();
    let a = start_edge(&fx, "edge-a", "127.0.0.1", &etcd, &prefix);
    let b = start_edge(&fx, "edge-b", "127.0.0.2", &etcd, &prefix);
    let c = start_edge(&fx, "edge-c", "127.0.0.3", &etcd, &prefix);
    let upstream = Echo::start();
    let _agent_b = agent(&fx, "agent-b.yml", &fx.token, b.agent_addr, upstream.addr);
    let _agent_c = agent(&fx, "agent-c.yml", &fx.token, c.agent_addr, upstream.addr);

    let created = a.admin.create(
        "/v1/endpoints",
        json!({ "url": "tcp://127.0.0.1:0", "traffic_policy": fixture::forward_all(URL) }),
    );
    let created_at = Instant::now();
    let id = created["id"].as_str().unwrap().to_string();
    let port = listen_addr(&created).unwrap().port();
    // Edges B and C serve it on their own addresses, the port of the URL, into
    // their agents.
    let on_b = SocketAddr::from(([127, 0, 0, 2], port));
    let on_c = SocketAddr::from(([127, 0, 0, 3], port));
    client::wait_until_echo(on_b, PROPAGATION).expect("edge B serves the endpoint");
    client::wait_until_echo(on_c, PROPAGATION).expect("edge C serves the endpoint");
    eprintln!(
        "created through A, served by B and C after {:?}",
        created_at.elapsed()
    );
    assert_eq!(listen_addr(&listed(&b, &id).unwrap()), Some(on_b));
    assert_eq!(listen_addr(&listed(&c, &id).unwrap()), Some(on_c));

    // A policy change made through A is enforced by B: this client (loopback) is
    // refused from then on.
    let changed = a.admin.call(
        "PATCH",
        &format!("/v1/endpoints/{id}"),
        Some(json!({ "traffic_policy": fixture::allow_only(&["10.0.0.0/8"], URL) })),
    );
    assert_eq!(changed.status, 200, "{}", changed.text);
    let changed_at = Instant::now();
    wait_until("B and C enforce the new policy", PROPAGATION, || {
        client::is_refused(None, on_b) && client::is_refused(None, on_c)
    });
    eprintln!(
        "policy changed through A, enforced by B after {:?}",
        changed_at.elapsed()
    );
    assert!(
        b.process.count(|v| v["message"]
            .as_str()
            .is_some_and(|m| m.contains("policy changed through another edge")))
            >= 1
    );

    // Deleted through A: B stops accepting on that port.
    let deleted = a.admin.call("DELETE", &format!("/v1/endpoints/{id}"), None);
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    wait_until("B and C stop listening", PROPAGATION, || {
        std::net::TcpStream::connect(on_b).is_err() && std::net::TcpStream::connect(on_c).is_err()
    });
    assert!(listed(&b, &id).is_none() && listed(&c, &id).is_none());
    // B and C measured how long A's changes took to reach them.
    for (edge, name) in [(&b, "B"), (&c, "C")] {
        let lag = edge.admin.get("/v1/state")["watch_lag_ms"].as_i64();
        assert!(
            lag.is_some_and(|l| (l as u128) < PROPAGATION.as_millis()),
            "{name}'s watch lag: {lag:?}"
        );
        let metrics = edge.admin.call("GET", "/metrics", None).text;
        assert!(
            metrics.contains("sluice_edge_state_watch_lag_seconds "),
            "{metrics}"
        );
    }

    // B's audit log is the fleet's: it shows what was done through A, and where.
    let events = b
        .admin
        .get("/v1/events?type=endpoint.created,endpoint.policy_changed,endpoint.deleted");
    let kinds: Vec<(&str, &str)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["edge"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("endpoint.deleted", "edge-a"),
            ("endpoint.policy_changed", "edge-a"),
            ("endpoint.created", "edge-a"),
        ],
        "{events}"
    );
}

#[test]
fn an_endpoint_whose_port_is_busy_on_another_edge_is_served_there_once_the_port_is_free() {
    let etcd = Etcd::start();
    let fx = Fixture::new();
    let (a, mut b) = fleet(&fx, &etcd);
    let upstream = Echo::start();
    let _agent_b = agent(&fx, "agent-b.yml", &fx.token, b.agent_addr, upstream.addr);

    // Something else holds the port on B's address when the endpoint is made through A.
    let squatter = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let created = a.admin.create(
        "/v1/endpoints",
        json!({ "url": format!("tcp://127.0.0.1:{port}"), "traffic_policy": fixture::forward_all(URL) }),
    );
    assert_eq!(listen_addr(&created).unwrap().port(), port);
    b.process.wait_for_n("B could not serve it", 1, |v| {
        v["message"] == "endpoint created through another edge not served; trying again"
    });

    // Freed, with no other change to the fleet: B serves it after its next try (1 s,
    // then 2 s, 4 s, …).
    drop(squatter);
    client::wait_until_echo(SocketAddr::from(([127, 0, 0, 2], port)), PROPAGATION)
        .expect("edge B serves the endpoint once its port is free");
    b.process.wait_for_n("B serving it", 1, |v| {
        v["message"] == "endpoint created through another edge: serving"
    });
}

#[test]
fn an_http_endpoints_response_timeout_set_through_one_edge_is_in_force_on_the_other() {
    let etcd = Etcd::start();
    let fx = Fixture::new();
    let (a, b) = fleet(&fx, &etcd);
    let created = a.admin.create(
        "/v1/endpoints",
        json!({
            "url": "http://slow.fleet.example",
            "traffic_policy": fixture::forward_all("http://api.internal"),
            "response_timeout_secs": 7,
        }),
    );
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["response_timeout_secs"], 7, "{created}");
    // B lists the value its own live endpoint runs with.
    wait_until(
        "B serves the endpoint with A's timeout",
        PROPAGATION,
        || {
            listed(&b, &id)
                .is_some_and(|e| e["response_timeout_secs"] == 7 && e["listen_addr"] != "")
        },
    );
}

#[test]
fn a_token_made_through_one_edge_works_on_the_other_and_its_revocation_ends_the_session() {
    let etcd = Etcd::start();
    let fx = Fixture::new();
    let (a, b) = fleet(&fx, &etcd);
    let user = a
        .admin
        .create("/v1/service_users", json!({ "name": "clinic" }));
    let user_id = user["id"].as_str().unwrap().to_string();
    let token = a.admin.create(
        &format!("/v1/service_users/{user_id}/authtokens"),
        json!({ "description": "db agent" }),
    );
    let secret = token["token"].as_str().unwrap().to_string();
    let token_id = token["id"].as_str().unwrap().to_string();
    // An agent refused at its first connect gives up for good, so it starts once B has
    // applied the token: B's applied revision has reached the newest revision A saw
    // (its applied one plus its lag), which includes the token's write.
    let a_state = a.admin.get("/v1/state");
    let written =
        a_state["revision"].as_i64().unwrap() + a_state["lag_revisions"].as_i64().unwrap();
    wait_until(
        "B has applied the token made through A",
        PROPAGATION,
        || b.admin.get("/v1/state")["revision"].as_i64().unwrap() >= written,
    );

    // The agent authenticates at B with the token made through A.
    let upstream = Echo::start();
    let mut agent = agent(&fx, "agent.yml", &secret, b.agent_addr, upstream.addr);
    let sessions = b.admin.get("/v1/sessions");
    assert_eq!(
        sessions["items"][0]["token_id"],
        token_id.as_str(),
        "{sessions}"
    );
    // A stream flowing through B into that session.
    let (_, on_b) = made_through_a_served_by_b(&a);
    let mut flowing = client::connect_from(None, on_b).unwrap();
    assert!(client::echoes(
        &mut flowing,
        b"before\n",
        client::IO_TIMEOUT
    ));

    // Revoked through A: B ends the session and cuts the stream.
    let revoked = a.admin.call(
        "DELETE",
        &format!("/v1/service_users/{user_id}/authtokens/{token_id}"),
        None,
    );
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    let revoked_at = Instant::now();
    wait_until("B ends the revoked token's session", PROPAGATION, || {
        b.admin.get("/v1/sessions")["items"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    eprintln!(
        "revoked through A, session on B ended after {:?}",
        revoked_at.elapsed()
    );
    assert!(
        client::reset_within(&mut flowing, PROPAGATION),
        "the stream through B outlived the revocation"
    );
    // The agent was told why, and B refuses the token from then on.
    agent.wait_for_n("the session's end, with its reason", 1, |v| {
        v["message"] == "session with the edge ended; reconnecting"
            && v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("authtoken revoked"))
    });
    agent.wait_for_n("the token refused at B", 1, |v| {
        v["message"] == "cannot establish a session with the edge"
            && v["error"]
                .as_str()
                .is_some_and(|e| e.contains("authtoken not recognised"))
    });
}

#[test]
fn a_name_claimed_through_two_edges_at_once_is_created_once() {
    let etcd = Etcd::start();
    let fx = Fixture::new();
    let (a, b) = fleet(&fx, &etcd);
    for round in 0..10 {
        let name = format!("site-{round}");
        let barrier = Barrier::new(2);
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let handles: Vec<_> = [&a.admin, &b.admin]
                .into_iter()
                .map(|admin| {
                    let (barrier, name) = (&barrier, &name);
                    s.spawn(move || {
                        barrier.wait();
                        admin
                            .call("POST", "/v1/service_users", Some(json!({ "name": name })))
                            .status
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = statuses.clone();
        sorted.sort();
        assert_eq!(sorted, [201, 409], "round {round}: {statuses:?}");
    }
    // Both edges list each name once.
    for edge in [&a, &b] {
        wait_until("every user on both edges", PROPAGATION, || {
            users_named(edge, "site-") == 10
        });
    }
}

#[test]
fn with_etcd_down_connections_flow_writes_get_503_and_the_fleet_converges_after() {
    let mut etcd = Etcd::start();
    let fx = Fixture::new();
    let (a, b) = fleet(&fx, &etcd);
    let upstream = Echo::start();
    let _agent_a = agent(&fx, "agent-a.yml", &fx.token, a.agent_addr, upstream.addr);
    let _agent_b = agent(&fx, "agent-b.yml", &fx.token, b.agent_addr, upstream.addr);
    let created = a.admin.create(
        "/v1/endpoints",
        json!({ "url": "tcp://127.0.0.1:0", "traffic_policy": fixture::forward_all(URL) }),
    );
    let port = listen_addr(&created).unwrap().port();
    let on_a = SocketAddr::from(([127, 0, 0, 1], port));
    let on_b = SocketAddr::from(([127, 0, 0, 2], port));
    client::wait_until_echo(on_b, PROPAGATION).expect("edge B serves the endpoint");

    let state = b.admin.get("/v1/state");
    assert_eq!(state["edge_id"], "edge-b", "{state}");
    let read = b.admin.call("GET", "/v1/endpoints", None);
    assert_eq!(
        read.header("sluice-state-following"),
        Some("true"),
        "{read:?}"
    );
    assert_eq!(state["backend"], "etcd", "{state}");
    assert_eq!(state["following"], true, "{state}");
    assert!(state["remote_changes"].as_u64().unwrap() >= 1, "{state}");
    assert!(state["revision"].as_i64().unwrap() > 0, "{state}");
    // A liveness bound, not a speed claim: on a loaded 2-core runner, with this file's
    // tests each running an etcd and two edges at once, B's watch once took over 5 s.
    wait_until(
        "B has applied every change it has seen",
        3 * PROPAGATION,
        || b.admin.get("/v1/state")["lag_revisions"] == 0,
    );

    etcd.kill();
    // B notices (its watch ends) and says so; it stays ready: the data path needs
    // nothing from etcd.
    wait_until(
        "B reports that it no longer follows etcd",
        PROPAGATION,
        || b.admin.get("/v1/state")["following"] == false,
    );
    let ready = b.admin.call("GET", "/readyz", None);
    assert_eq!(ready.status, 200, "{}", ready.text);
    // Every connection through either edge is served for the whole outage.
    for i in 0..50 {
        for target in [on_a, on_b] {
            client::echo_ok(None, target, format!("outage {i}").as_bytes()).unwrap_or_else(|e| {
                panic!("connection {i} to {target} failed with etcd down: {e}")
            });
        }
    }
    // Writes are refused with a clear error; reads still answer from the mirror.
    let asked = Instant::now();
    let refused = b.admin.call(
        "POST",
        "/v1/endpoints",
        Some(json!({ "url": "tcp://127.0.0.1:0", "traffic_policy": fixture::forward_all(URL) })),
    );
    assert_eq!(refused.status, 503, "{}", refused.text);
    eprintln!(
        "write refused after {:?}: {}",
        asked.elapsed(),
        refused.text
    );
    assert_eq!(
        refused.body["error"]["code"], "state_unavailable",
        "{}",
        refused.text
    );
    assert!(listed(&b, created["id"].as_str().unwrap()).is_some());
    // Each read says it may be stale, and since when.
    let read = b.admin.call("GET", "/v1/endpoints", None);
    let header = |name: &str| {
        read.header(name)
            .unwrap_or_else(|| panic!("{name} on {read:?}"))
    };
    assert_eq!(header("sluice-state-following"), "false");
    assert_eq!(header("sluice-state-loaded"), "true");
    assert!(header("sluice-state-revision").parse::<i64>().unwrap() > 0);
    let age: u64 = header("sluice-state-contact-age-ms").parse().unwrap();
    assert!(
        age >= asked.elapsed().as_millis() as u64,
        "etcd last answered {age} ms ago, but the refused write started {:?} ago",
        asked.elapsed()
    );
    // The refused create left nothing listening on B.
    assert_eq!(
        b.admin.get("/v1/endpoints")["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let metrics = b.admin.call("GET", "/metrics", None).text;
    assert!(
        metrics.contains("sluice_edge_state_following 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_edge_state_info{backend=\"etcd\",edge=\"edge-b\"} 1"),
        "{metrics}"
    );

    // An agent that connects during the outage is served, and its session's audit
    // event waits for etcd.
    let late_upstream = Echo::start();
    let late_yaml = fx.agent_yaml(
        &fx.token,
        b.agent_addr,
        "tcp",
        &[("tcp://late.internal:1", late_upstream.addr)],
    );
    let mut late = Sluice::agent(&fx.write("agent-late.yml", &late_yaml), DRIVER);
    late.wait_for("endpoint bound");
    let late_session = late.wait_for("session established");
    wait_until("B reports the queued session event", PROPAGATION, || {
        b.admin.get("/v1/state")["queued_events"].as_u64() >= Some(1)
    });
    let listing = b.admin.call("GET", "/v1/events", None);
    assert!(
        listing.header("sluice-state-queued-events").is_some(),
        "{listing:?}"
    );

    etcd.restart();
    // The session event queued during the outage reaches the fleet's audit log once
    // etcd is back, without waiting for another event or write.
    wait_until(
        "the queued session event in the audit log",
        sluice_tests::process::WAIT,
        || {
            let listed = b.admin.call("GET", "/v1/events?type=session.started", None);
            listed.status == 200
                && listed.body["items"]
                    .as_array()
                    .is_some_and(|i| i.len() == 3)
        },
    );
    assert_eq!(b.admin.get("/v1/state")["queued_events"], 0);
    eprintln!("late agent's session: {late_session}");
    // Storing those events made revisions that change no object, so B's watch never
    // delivers them: B asks etcd how far its watch has got rather than reporting a lag
    // until the next change of an object.
    wait_until(
        "B reports no lag once its queued events are stored",
        PROPAGATION,
        || b.admin.get("/v1/state")["lag_revisions"] == 0,
    );
    // A change made through B once etcd is back reaches A.
    let second = wait_for_write(|| {
        b.admin.call(
            "POST",
            "/v1/endpoints",
            Some(
                json!({ "url": "tcp://127.0.0.2:0", "traffic_policy": fixture::forward_all(URL) }),
            ),
        )
    });
    let port2 = listen_addr(&second).unwrap().port();
    client::wait_until_echo(SocketAddr::from(([127, 0, 0, 1], port2)), PROPAGATION)
        .expect("edge A serves the endpoint made through B after etcd came back");
    // Every line of each edge's log names it, whichever thread wrote it.
    for (edge, name) in [(&a, "edge-a"), (&b, "edge-b")] {
        let lines = edge.process.count(|_| true);
        let unnamed = edge.process.count(|v| v["edge"] != name);
        assert!(lines > 10, "{name} logged {lines} lines");
        assert_eq!(
            unnamed,
            0,
            "{name}: lines without the edge's name in\n{}",
            edge.process.log_text()
        );
    }
}

/// Retries `write` while it answers 503 (the edge reconnecting to etcd); the body of
/// its 201.
fn wait_for_write(write: impl Fn() -> sluice_tests::admin::Answer) -> Value {
    let deadline = Instant::now() + sluice_tests::process::WAIT;
    loop {
        let answer = write();
        match answer.status {
            201 => return answer.body,
            503 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => panic!(
                "write after etcd came back: {} {}",
                answer.status, answer.text
            ),
        }
    }
}

#[test]
fn a_three_member_etcd_losing_its_leader_loses_no_write_and_no_connection() {
    let mut etcd = Etcd::start_cluster(3);
    let fx = Fixture::new();
    let (a, b) = fleet(&fx, &etcd);
    let upstream = Echo::start();
    let _agent = agent(&fx, "agent-b.yml", &fx.token, b.agent_addr, upstream.addr);
    let (_, on_b) = made_through_a_served_by_b(&a);

    // Connections through B for the whole test, and admin writes through both edges;
    // the leader is killed after the first ten writes.
    let stop = std::sync::atomic::AtomicBool::new(false);
    // Stops the load when the writes end, or fail.
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    const WRITES: usize = 30;
    let (served, failures) = std::thread::scope(|s| {
        let load = s.spawn(|| {
            let (mut served, mut failures) = (0, Vec::new());
            let end = Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
                match client::echo_ok(None, on_b, b"through the election") {
                    Ok(()) => served += 1,
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (served, failures)
        });
        let _stop = StopOnDrop(&stop);
        for i in 0..WRITES {
            if i == 10 {
                let leader = etcd.leader();
                etcd.kill_member(leader);
                eprintln!("killed etcd member {leader} (the leader)");
            }
            let edge = if i % 2 == 0 { &a } else { &b };
            let started = Instant::now();
            let answer = edge.admin.call(
                "POST",
                "/v1/service_users",
                Some(json!({ "name": format!("branch-{i}") })),
            );
            assert_eq!(answer.status, 201, "write {i}: {}", answer.text);
            if started.elapsed() > Duration::from_millis(200) {
                eprintln!("write {i} took {:?}", started.elapsed());
            }
        }
        drop(_stop);
        load.join().unwrap()
    });
    assert!(
        failures.is_empty(),
        "{} connections failed: {failures:?}",
        failures.len()
    );
    assert!(served > 0);
    for edge in [&a, &b] {
        wait_until("every write on both edges", PROPAGATION, || {
            users_named(edge, "branch-") == WRITES
        });
    }
}

#[test]
fn an_edge_started_while_etcd_is_down_serves_its_own_endpoints_then_the_fleet_s() {
    let mut etcd = Etcd::start();
    let fx = Fixture::new();
    let prefix = fresh_prefix();
    let a = start_edge(&fx, "edge-a", "127.0.0.1", &etcd, &prefix);
    let created = a.admin.create(
        "/v1/endpoints",
        json!({ "url": "tcp://127.0.0.1:0", "traffic_policy": fixture::forward_all(URL) }),
    );
    let port = listen_addr(&created).unwrap().port();
    etcd.kill();

    // B starts with etcd down: it serves its edge.yml endpoint, says the shared state
    // is not loaded, and is not ready.
    let own_port = fixture::free_port_range("127.0.0.2".parse().unwrap(), 1);
    let mut b = start_edge_with(
        &fx,
        "edge-b",
        "127.0.0.2",
        &etcd,
        &prefix,
        &[(&format!("127.0.0.2:{own_port}"), fixture::forward_all(URL))],
    );
    b.process.wait_for("shared state not loaded yet (etcd does not answer): serving edge.yml's objects; the others apply as soon as etcd answers");
    let upstream = Echo::start();
    let _agent = agent(&fx, "agent-b.yml", &fx.token, b.agent_addr, upstream.addr);
    client::echo_ok(
        None,
        SocketAddr::from(([127, 0, 0, 2], own_port)),
        b"edge.yml endpoint",
    )
    .expect("B serves its own endpoint with etcd down");
    let state = b.admin.get("/v1/state");
    assert_eq!(state["loaded"], false, "{state}");
    assert_eq!(b.admin.call("GET", "/readyz", None).status, 503);
    let on_b = SocketAddr::from(([127, 0, 0, 2], port));
    assert!(
        std::net::TcpStream::connect(on_b).is_err(),
        "served before it was loaded"
    );

    // etcd returns: B loads the fleet's state and serves A's endpoint too.
    etcd.restart();
    client::wait_until_echo(on_b, sluice_tests::process::WAIT)
        .expect("B serves the fleet's endpoint once etcd answers");
    assert_eq!(b.admin.get("/v1/state")["loaded"], true);
    // Ready once the fleet's peer key and routes are loaded too: their followers retry
    // on their own second, so they may come a moment after the state.
    wait_until("B is ready", PROPAGATION, || {
        b.admin.call("GET", "/readyz", None).status == 200
    });
}

/// Runs `sluice state <args>` to completion; its stderr.
fn state_command(args: &[&str]) -> String {
    let out = std::process::Command::new(sluice_tests::process::sluice_bin())
        .arg("state")
        .args(args)
        .output()
        .expect("run sluice state");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "sluice state {args:?}: {stderr}");
    stderr
}

#[test]
fn a_single_edge_state_moves_into_etcd_and_the_fleet_serves_it() {
    let fx = Fixture::new();
    // A lone edge on SQLite, with a user, a token and an endpoint made through its API.
    let mut lone_yaml = fx
        .edge_yaml("127.0.0.1:0", &[])
        .replace("endpoints:\n", "endpoints: []\n");
    lone_yaml.push_str(&format!(
        "admin:\n  listen: 127.0.0.1:0\n  api_keys: [\"{}\"]\nstate_dir: state\n",
        fixture::token_hash(API_KEY)
    ));
    let lone_cfg = fx.write("lone.yml", &lone_yaml);
    let (secret, port) = {
        let Edge {
            process: mut lone,
            admin,
            ..
        } = run_edge(&lone_cfg);
        let user = admin.create("/v1/service_users", json!({ "name": "clinic" }));
        let token = admin.create(
            &format!(
                "/v1/service_users/{}/authtokens",
                user["id"].as_str().unwrap()
            ),
            json!({ "description": "db agent" }),
        );
        let endpoint = admin.create(
            "/v1/endpoints",
            json!({ "url": "tcp://127.0.0.1:0", "traffic_policy": fixture::forward_all(URL) }),
        );
        lone.terminate();
        lone.wait_exit();
        (
            token["token"].as_str().unwrap().to_string(),
            listen_addr(&endpoint).unwrap().port(),
        )
    };

    let export = fx.path("state.json");
    let said = state_command(&[
        "export",
        "--config",
        lone_cfg.to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
    ]);
    assert!(
        said.contains("exported 1 endpoints, 0 reserved addresses, 1 service users, 1 authtokens"),
        "{said}"
    );

    let etcd = Etcd::start();
    let prefix = fresh_prefix();
    let target = edge_config(&fx, "edge-a", "127.0.0.1", &etcd, &prefix, &[]);
    let said = state_command(&[
        "import",
        "--config",
        target.to_str().unwrap(),
        export.to_str().unwrap(),
    ]);
    assert!(said.contains("imported 3 objects"), "{said}");
    // Never twice.
    let again = std::process::Command::new(sluice_tests::process::sluice_bin())
        .args([
            "state",
            "import",
            "--config",
            target.to_str().unwrap(),
            export.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds"));

    // A fleet on the imported state: the token works at B, the endpoint is served
    // on both addresses.
    let a = start_edge(&fx, "edge-a", "127.0.0.1", &etcd, &prefix);
    let b = start_edge(&fx, "edge-b", "127.0.0.2", &etcd, &prefix);
    let upstream = Echo::start();
    let _agent_b = agent(&fx, "agent-b.yml", &secret, b.agent_addr, upstream.addr);
    let _agent_a = agent(&fx, "agent-a.yml", &secret, a.agent_addr, upstream.addr);
    client::echo_ok(None, SocketAddr::from(([127, 0, 0, 2], port)), b"imported")
        .expect("B serves the imported endpoint");
    client::echo_ok(None, SocketAddr::from(([127, 0, 0, 1], port)), b"imported")
        .expect("A serves the imported endpoint");
    // The audit log came along, with the import recorded after it.
    let kinds: Vec<String> = a
        .admin
        .get("/v1/events?type=service_user.*,authtoken.*,endpoint.created,endpoint.imported")
        ["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "endpoint.imported",
            "authtoken.imported",
            "service_user.imported",
            "endpoint.created",
            "authtoken.created",
            "service_user.created"
        ]
    );
}

#[test]
fn an_etcd_with_authentication_and_short_lived_tokens_serves_the_fleet() {
    // etcd's own users: the edges log in, and their tokens expire every 2 s.
    let etcd = Etcd::start_with(1, &["--auth-token", "simple", "--auth-token-ttl", "2"]);
    etcd.enable_auth("root", "fleet-secret");
    let fx = Fixture::new();
    fx.write("etcd.password", "fleet-secret\n");
    let prefix = fresh_prefix();
    let with_user = |name: &str, ip: &str| {
        let cfg = edge_config(&fx, name, ip, &etcd, &prefix, &[]);
        let mut yaml = std::fs::read_to_string(&cfg).unwrap();
        yaml.push_str("    username: root\n    password_file: etcd.password\n");
        std::fs::write(&cfg, yaml).unwrap();
        run_edge(&cfg)
    };
    let a = with_user("edge-a", "127.0.0.1");
    let b = with_user("edge-b", "127.0.0.2");
    let upstream = Echo::start();
    let _agent = agent(&fx, "agent-b.yml", &fx.token, b.agent_addr, upstream.addr);
    made_through_a_served_by_b(&a);

    // A token expires 2 s after its last use: after a quiet spell longer than that,
    // writes through both edges still land (the edges log in again), and B's watch
    // keeps delivering A's changes.
    let mut written = 0;
    for round in 0..2 {
        if round > 0 {
            let quiet = Instant::now() + Duration::from_secs(3);
            // Nothing to wait for but the token's lifetime passing.
            std::thread::sleep(quiet - Instant::now());
        }
        for edge in [&a, &b] {
            let answer = edge.admin.call(
                "POST",
                "/v1/service_users",
                Some(json!({ "name": format!("auth-{written}") })),
            );
            assert_eq!(
                answer.status, 201,
                "write {written} (round {round}): {}",
                answer.text
            );
            written += 1;
        }
    }
    wait_until("B lists every user", PROPAGATION, || {
        users_named(&b, "auth-") == written
    });
}

#[test]
fn an_etcd_over_mutual_tls_serves_the_fleet_and_an_edge_it_does_not_trust_gets_nothing() {
    // etcd serves clients over TLS and asks each for a certificate from its CA.
    let fx = Fixture::new();
    let ca = Ca::new("etcd test CA");
    let server = ca.server(&["127.0.0.1"]);
    let edge_identity = ca.client("edge");
    let stranger = Ca::new("another CA").client("stranger");
    let file = |name: &str, pem: &str| fx.write(name, pem);
    let tls = EtcdTls {
        cert: file("etcd.crt", &server.cert_pem),
        key: file("etcd.key", &server.key_pem),
        ca: file("etcd-ca.crt", &ca.pem()),
    };
    file("edge-etcd.crt", &edge_identity.cert_pem);
    file("edge-etcd.key", &edge_identity.key_pem);
    file("stranger.crt", &stranger.cert_pem);
    file("stranger.key", &stranger.key_pem);
    let etcd = Etcd::start_tls(&tls);
    let prefix = fresh_prefix();
    let over_tls = |name: &str, ip: &str, identity: &str| {
        let cfg = edge_config(&fx, name, ip, &etcd, &prefix, &[]);
        let yaml = std::fs::read_to_string(&cfg).unwrap().replace(
            &serde_json::to_string(&etcd.urls()).unwrap(),
            &serde_json::to_string(&etcd.tls_urls()).unwrap(),
        );
        let yaml = format!(
            "{yaml}    tls:\n      ca: etcd-ca.crt\n      cert: {identity}.crt\n      key: {identity}.key\n"
        );
        std::fs::write(&cfg, yaml).unwrap();
        cfg
    };
    let a = run_edge(&over_tls("edge-a", "127.0.0.1", "edge-etcd"));
    let b = run_edge(&over_tls("edge-b", "127.0.0.2", "edge-etcd"));

    // What A writes, B serves: both edges hold a working TLS session with etcd.
    let upstream = Echo::start();
    let _agent = agent(&fx, "agent-b.yml", &fx.token, b.agent_addr, upstream.addr);
    let (created, _) = made_through_a_served_by_b(&a);
    let user = b.admin.call(
        "POST",
        "/v1/service_users",
        Some(json!({ "name": "tls-user" })),
    );
    assert_eq!(user.status, 201, "{}", user.text);
    wait_until("A lists the user made through B", PROPAGATION, || {
        users_named(&a, "tls-user") == 1
    });

    // An edge whose certificate etcd's CA did not sign is refused by etcd: it logs
    // why, writes get 503, and it never sees the fleet's endpoint.
    let mut c = run_edge(&over_tls("edge-c", "127.0.0.3", "stranger"));
    let outage = c
        .process
        .wait_for("etcd unreachable: serving the last applied state; retrying");
    assert!(
        outage["hint"]
            .as_str()
            .is_some_and(|h| h.contains("check that etcd's certificate")),
        "{outage}"
    );
    let refused = c.admin.call(
        "POST",
        "/v1/service_users",
        Some(json!({ "name": "stranger-user" })),
    );
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert!(listed(&c, created["id"].as_str().unwrap()).is_none());
    assert_eq!(users_named(&a, "stranger-user"), 0);
}
