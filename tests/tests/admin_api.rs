//! End-to-end: the edge's admin API and durable state. Real edge and agent processes;
//! the API is driven over HTTP on loopback with a bearer key.

use std::{
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use sluice_tests::{
    admin::{sample, Admin},
    client,
    fixture::{self, Fixture},
    process::Sluice,
    upstream::Echo,
    wait_until,
};

const URL: &str = "tcp://db.internal:5432";
const DRIVER: &str = "uring";
const API_KEY: &str = "test-admin-key-0123456789";

/// An edge config with the admin API on an ephemeral loopback port and a state dir.
fn edge_config(fx: &Fixture, static_endpoints: &[(&str, String)]) -> PathBuf {
    let mut yaml = fx.edge_yaml("127.0.0.1:0", static_endpoints);
    if static_endpoints.is_empty() {
        yaml = yaml.replace("endpoints:\n", "endpoints: []\n");
    }
    yaml.push_str(&format!(
        "admin:\n  listen: 127.0.0.1:0\n  api_keys: [\"{}\"]\nstate_dir: state\n",
        fixture::token_hash(API_KEY)
    ));
    fx.write("edge.yml", &yaml)
}

/// Starts the edge; its agent port and its admin API.
fn start_edge(cfg: &std::path::Path) -> (Sluice, SocketAddr, Admin) {
    start_edge_with(cfg, &[])
}

/// [`start_edge`] with global `sluice` flags before the subcommand (e.g. `--pump copy`).
fn start_edge_with(cfg: &std::path::Path, flags: &[&str]) -> (Sluice, SocketAddr, Admin) {
    let args: Vec<&str> = flags
        .iter()
        .copied()
        .chain(["edge", "--config", cfg.to_str().unwrap()])
        .collect();
    let mut edge = Sluice::start("edge", &args, DRIVER);
    let (agent_addr, _) = edge.edge_addrs(0);
    let admin = edge.wait_for_n("admin listener", 1, |v| {
        v["message"] == "listening" && v["kind"] == "admin"
    });
    let addr = admin["addr"].as_str().unwrap().parse().unwrap();
    (edge, agent_addr, Admin::new(addr, API_KEY))
}

/// Starts the edge again on `cfg` after it stopped: its stored endpoints come back
/// on the ports they had, which any process (a client's ephemeral port included) may
/// have taken meanwhile. An edge that could not serve one because its address was in
/// use is stopped (by PID) and started again, within the usual deadline.
fn restart_edge(cfg: &std::path::Path) -> (Sluice, SocketAddr, Admin) {
    let deadline = Instant::now() + sluice_tests::process::WAIT;
    loop {
        let (mut edge, agent_addr, admin) = start_edge(cfg);
        let unserved = admin.get("/v1/endpoints")["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["listen_addr"].as_str().unwrap_or_default().is_empty());
        if !unserved {
            return (edge, agent_addr, admin);
        }
        let log = edge.log_text();
        assert!(
            log.contains("stored endpoint not served")
                && log.to_lowercase().contains("in use")
                && Instant::now() < deadline,
            "a stored endpoint is not served after the restart:\n{log}"
        );
        edge.kill();
    }
}

fn start_agent(
    fx: &Fixture,
    name: &str,
    token: &str,
    edge: SocketAddr,
    upstream: SocketAddr,
) -> Sluice {
    let path = fx.write(name, &fx.agent_yaml(token, edge, "tcp", &[(URL, upstream)]));
    Sluice::agent(&path, DRIVER)
}

fn endpoint_addr(endpoint: &Value) -> SocketAddr {
    endpoint["listen_addr"].as_str().unwrap().parse().unwrap()
}

fn event_types(admin: &Admin, query: &str) -> Vec<String> {
    admin.get(&format!("/v1/events?{query}"))["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn lifecycle_user_token_agent_endpoint_policy_swap_and_revocation() {
    let fx = Fixture::new();
    let (mut edge, agent_addr, admin) = start_edge(&edge_config(&fx, &[]));

    let user = admin.create(
        "/v1/service_users",
        json!({ "name": "clinic", "description": "clinic network" }),
    );
    let user_id = user["id"].as_str().unwrap().to_string();
    let token = admin.create(
        &format!("/v1/service_users/{user_id}/authtokens"),
        json!({ "description": "db agent", "acl": ["bind:*.internal"] }),
    );
    let secret = token["token"].as_str().unwrap().to_string();
    let token_id = token["id"].as_str().unwrap().to_string();
    // Listing never shows the secret.
    let listed = admin.call(
        "GET",
        &format!("/v1/service_users/{user_id}/authtokens"),
        None,
    );
    assert_eq!(listed.status, 200);
    assert!(
        !listed.text.contains(&secret) && !listed.text.contains("sha256:"),
        "{}",
        listed.text
    );

    let upstream = Echo::start();
    let mut agent = start_agent(&fx, "agent.yml", &secret, agent_addr, upstream.addr);
    agent.wait_for("endpoint bound");

    let endpoint = admin.create(
        "/v1/endpoints",
        json!({ "url": "tcp://127.0.0.1:0", "traffic_policy": fixture::forward_all(URL), "description": "db" }),
    );
    let ep_id = endpoint["id"].as_str().unwrap().to_string();
    let public = endpoint_addr(&endpoint);
    // Serving when the API answered.
    client::echo_ok(None, public, b"hello through the API").unwrap();

    let sessions = admin.get("/v1/sessions");
    let session = &sessions["items"][0];
    assert_eq!(session["user_id"], user_id.as_str());
    assert_eq!(session["token_id"], token_id.as_str());
    assert_eq!(session["endpoints"][0]["url"], URL);

    // Continuous load: an established connection, and new connections in a loop.
    let mut established = client::connect_from(None, public).unwrap();
    assert!(client::echoes(
        &mut established,
        b"before\n",
        client::IO_TIMEOUT
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let attempts: Arc<Mutex<Vec<(Instant, Instant, bool)>>> = Default::default();
    let churn = {
        let (stop, attempts) = (stop.clone(), attempts.clone());
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                let started = Instant::now();
                let ok = client::echo_ok(None, public, b"churn").is_ok();
                attempts.lock().unwrap().push((started, Instant::now(), ok));
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    wait_until("some allowed connections", Duration::from_secs(10), || {
        attempts.lock().unwrap().iter().filter(|a| a.2).count() >= 5
    });
    // Deny this client (loopback) from now on. The swap takes effect while the call
    // is in flight: connections that ended before it was sent must have been served,
    // those that started after it answered must be refused.
    let sent_at = Instant::now();
    let swap = admin.call(
        "PATCH",
        &format!("/v1/endpoints/{ep_id}"),
        Some(json!({ "traffic_policy": fixture::allow_only(&["10.0.0.0/8"], URL) })),
    );
    assert_eq!(swap.status, 200, "{}", swap.text);
    let swapped_at = Instant::now();
    wait_until(
        "connections after the swap",
        Duration::from_secs(10),
        || {
            attempts
                .lock()
                .unwrap()
                .iter()
                .filter(|a| a.0 > swapped_at)
                .count()
                >= 5
        },
    );
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    let attempts = attempts.lock().unwrap().clone();
    let before_ok = attempts.iter().filter(|a| a.1 < sent_at).all(|a| a.2);
    let after_refused = attempts.iter().filter(|a| a.0 > swapped_at).all(|a| !a.2);
    assert!(before_ok, "a connection failed before the policy changed");
    assert!(
        after_refused,
        "a connection started after the swap was forwarded"
    );
    // The established connection is untouched by the swap.
    assert!(client::echoes(
        &mut established,
        b"after the swap\n",
        client::IO_TIMEOUT
    ));

    // Back to allowing, then revoke the token: the session ends, traffic stops.
    let back = admin.call(
        "PATCH",
        &format!("/v1/endpoints/{ep_id}"),
        Some(json!({ "traffic_policy": fixture::forward_all(URL) })),
    );
    assert_eq!(back.status, 200);
    client::echo_ok(None, public, b"allowed again").unwrap();
    let revoked = admin.call(
        "DELETE",
        &format!("/v1/service_users/{user_id}/authtokens/{token_id}"),
        None,
    );
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert!(revoked.body["revoked_at"].as_i64().is_some());
    let revoked_at = Instant::now();
    // Unbound within the call: the very next connection finds no agent.
    assert!(
        client::is_refused(None, public),
        "forwarded after revocation"
    );
    // Refused because no agent serves the URL any more (the endpoint itself is fine:
    // a new token's agent is served through it at the end of this test).
    edge.wait_for_n("the refusal's reason", 1, |v| {
        v["message"] == "no agent serves the target" && v["endpoint"] == "tcp://127.0.0.1:0"
    });
    wait_until("the session to end", Duration::from_secs(5), || {
        admin.get("/v1/sessions")["items"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    eprintln!("session gone {:?} after revocation", revoked_at.elapsed());
    // The stream that was flowing through the revoked session is cut, both ways: the
    // client sees a reset (not a clean close), and the upstream's connection ends.
    assert!(
        client::reset_within(&mut established, Duration::from_secs(5)),
        "a stream kept flowing after its agent's token was revoked"
    );
    eprintln!(
        "flowing stream cut {:?} after revocation",
        revoked_at.elapsed()
    );
    wait_until(
        "the upstream's connection to close",
        Duration::from_secs(5),
        || upstream.active() == 0,
    );
    agent.wait_for_n("agent told", 1, |v| {
        v["message"] == "edge reported an error"
            && v["code"] == "Unauthorized"
            && v["detail"]
                .as_str()
                .is_some_and(|d| d.contains("authtoken revoked"))
    });
    // The audit log says why the session ended: the revocation, not "the agent
    // closed the control channel".
    wait_until("the session.ended event", Duration::from_secs(5), || {
        admin.get("/v1/events?type=session.ended")["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| {
                e["detail"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("authtoken revoked"))
            })
    });
    // The agent keeps retrying with its revoked token and is refused each time.
    edge.wait_for_n("refused retry", 1, |v| {
        v["message"] == "agent refused: unknown authtoken"
    });
    assert!(client::is_refused(None, public));

    // Workers hand audit events to the control plane through a queue: the refusal's
    // event is stored a moment after its log line.
    wait_until("the refusal's audit event", Duration::from_secs(10), || {
        event_types(&admin, "limit=1000").contains(&"session.auth_failed".to_string())
    });
    let types = event_types(&admin, "limit=1000");
    for expected in [
        "service_user.created",
        "authtoken.created",
        "session.started",
        "endpoint.bound",
        "endpoint.created",
        "endpoint.policy_changed",
        "authtoken.revoked",
        "session.ended",
        "session.auth_failed",
    ] {
        assert!(
            types.contains(&expected.to_string()),
            "no {expected} in {types:?}"
        );
    }
    // Newest first, filterable by type prefix, attributed to the user and token.
    let sessions = admin.get("/v1/events?type=session.started");
    let started = &sessions["items"][0];
    assert_eq!(started["actor"], format!("user:{user_id}"));
    assert_eq!(started["detail"]["token_id"], token_id.as_str());
    let policy_changes = admin.get("/v1/events?type=endpoint.policy_changed");
    let newest = &policy_changes["items"][0]["detail"];
    assert!(newest["new"]["traffic_policy"]
        .as_str()
        .unwrap()
        .contains("forward-internal"));
    assert!(newest["old"]["traffic_policy"]
        .as_str()
        .unwrap()
        .contains("10.0.0.0/8"));
    // Token lists show when it was last used.
    let tokens = admin.get(&format!("/v1/service_users/{user_id}/authtokens"));
    assert!(tokens["items"][0]["last_used_at"].as_i64().is_some());

    // Positive control for the refusals above: the same endpoint serves again as soon
    // as an agent with a valid token binds the URL (the revoked one still retries).
    let fresh = admin.create(
        &format!("/v1/service_users/{user_id}/authtokens"),
        json!({ "description": "replacement", "acl": ["bind:*.internal"] }),
    );
    let mut replacement = start_agent(
        &fx,
        "replacement.yml",
        fresh["token"].as_str().unwrap(),
        agent_addr,
        upstream.addr,
    );
    replacement.wait_for("endpoint bound");
    client::echo_ok(None, public, b"a valid token is served").unwrap();
}

#[test]
fn restart_and_kill_9_keep_every_object_and_event() {
    let fx = Fixture::new();
    let cfg = edge_config(&fx, &[]);
    let (mut edge, agent_addr, admin) = start_edge(&cfg);
    let user = admin.create("/v1/service_users", json!({ "name": "branch" }));
    let user_id = user["id"].as_str().unwrap().to_string();
    let token = admin.create(
        &format!("/v1/service_users/{user_id}/authtokens"),
        json!({}),
    );
    let secret = token["token"].as_str().unwrap().to_string();
    let zero = admin.call(
        "POST",
        "/v1/reserved_addrs",
        Some(json!({ "addr": "127.0.0.1:0-0" })),
    );
    assert_eq!(zero.status, 400, "port 0 cannot be reserved: {}", zero.text);
    let ep = admin.create(
        "/v1/endpoints",
        json!({ "url": "tcp://127.0.0.1:0", "traffic_policy": fixture::forward_all(URL) }),
    );
    let public = endpoint_addr(&ep);
    let ra = admin.create(
        "/v1/reserved_addrs",
        json!({ "addr": format!("127.0.0.1:{}-{}", public.port() + 1, public.port() + 3) }),
    );
    let upstream = Echo::start();
    let mut agent = start_agent(&fx, "agent.yml", &secret, agent_addr, upstream.addr);
    agent.wait_for("endpoint bound");
    client::echo_ok(None, public, b"first run").unwrap();
    let before = admin.get("/v1/events?limit=1000")["items"]
        .as_array()
        .unwrap()
        .len();

    let mut admin = admin;
    for (round, hard) in [(1, false), (2, true)] {
        // Writes made by the process that is about to stop (or be killed): a user, a
        // token revoked, a policy change, an internal URL's owner.
        let made = admin.create(
            "/v1/service_users",
            json!({ "name": format!("round-{round}") }),
        );
        let made_id = made["id"].as_str().unwrap().to_string();
        let doomed = admin.create(
            &format!("/v1/service_users/{made_id}/authtokens"),
            json!({}),
        );
        let doomed_id = doomed["id"].as_str().unwrap().to_string();
        let revoked = admin.call(
            "DELETE",
            &format!("/v1/service_users/{made_id}/authtokens/{doomed_id}"),
            None,
        );
        assert_eq!(revoked.status, 200, "{}", revoked.text);
        let cidr = if round == 1 {
            "127.0.0.0/8"
        } else {
            "127.0.0.1/32"
        };
        let patched = admin.call(
            "PATCH",
            &format!("/v1/endpoints/{}", ep["id"].as_str().unwrap()),
            Some(json!({ "traffic_policy": fixture::allow_only(&[cidr], URL) })),
        );
        assert_eq!(patched.status, 200, "{}", patched.text);
        let owned = admin.call(
            "PUT",
            &format!("/v1/internal_urls/tcp%3A%2F%2Fround{round}.internal%3A1"),
            Some(json!({ "user_id": made_id })),
        );
        assert_eq!(owned.status, 201, "{}", owned.text);
        if hard {
            edge.kill();
        } else {
            edge.terminate();
            assert_eq!(edge.wait_exit(), Some(0));
        }
        // Same config, new process: the agent port is ephemeral, so the agent is
        // restarted pointing at the new one.
        let (new_edge, new_agent_addr, new_admin) = restart_edge(&cfg);
        edge = new_edge;
        let tokens =
            new_admin.get(&format!("/v1/service_users/{made_id}/authtokens"))["items"].clone();
        assert!(
            tokens[0]["revoked_at"].as_i64().is_some(),
            "round {round}: the revocation was lost: {tokens}"
        );
        let policy = new_admin.get(&format!("/v1/endpoints/{}", ep["id"].as_str().unwrap()));
        assert!(
            policy.to_string().contains(cidr),
            "round {round}: the policy change was lost: {policy}"
        );
        let owner = new_admin.get(&format!(
            "/v1/internal_urls/tcp%3A%2F%2Fround{round}.internal%3A1"
        ));
        assert_eq!(owner["user_id"], made_id.as_str(), "round {round}: {owner}");
        let endpoints = new_admin.get("/v1/endpoints")["items"].clone();
        assert_eq!(
            endpoints.as_array().unwrap().len(),
            1,
            "round {round}: {endpoints}"
        );
        assert_eq!(endpoints[0]["id"], ep["id"]);
        assert_eq!(
            endpoint_addr(&endpoints[0]),
            public,
            "same port after restart"
        );
        let users = new_admin.get("/v1/service_users")["items"].clone();
        assert!(users
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["id"] == user_id.as_str()));
        let reserved = new_admin.get("/v1/reserved_addrs")["items"].clone();
        assert_eq!(reserved[0]["id"], ra["id"]);
        let events = new_admin.get("/v1/events?limit=1000")["items"]
            .as_array()
            .unwrap()
            .len();
        assert!(
            events >= before,
            "round {round}: {events} events, had {before}"
        );
        agent.kill();
        agent = start_agent(&fx, "agent.yml", &secret, new_agent_addr, upstream.addr);
        agent.wait_for("endpoint bound");
        client::wait_until_echo(public, Duration::from_secs(10)).unwrap();
        admin = new_admin;
    }
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let fx = Fixture::new();
    let static_policy = fixture::forward_all(URL);
    let (_edge, _agent_addr, admin) =
        start_edge(&edge_config(&fx, &[("127.0.0.1:0", static_policy)]));
    let count = |admin: &Admin, path: &str| admin.get(path)["items"].as_array().unwrap().len();
    let endpoints_before = count(&admin, "/v1/endpoints");
    let changes = |admin: &Admin| {
        admin.get("/v1/events?limit=1000")["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["type"] != "admin.auth_failed"
                    && !e["type"].as_str().unwrap().starts_with("session")
            })
            .count()
    };
    let changes_before = changes(&admin);

    // Authentication.
    for key in [None, Some("wrong-key")] {
        let a = admin.with_key(key).call("GET", "/v1/endpoints", None);
        assert_eq!(a.status, 401, "{}", a.text);
        assert_eq!(a.body["error"]["code"], "unauthorized");
        let a = admin.with_key(key).call(
            "POST",
            "/v1/endpoints",
            Some(
                json!({ "url": "tcp://127.0.0.1:0", "traffic_policy": fixture::forward_all(URL) }),
            ),
        );
        assert_eq!(a.status, 401);
    }
    // Failures are audited per client: the first at once, the rest summed up once the
    // back-off window has passed (admin_transport.rs waits for that summary).
    let audited = admin.get("/v1/events?type=admin.auth_failed")["items"].clone();
    assert_eq!(audited.as_array().unwrap().len(), 1, "{audited}");
    assert_eq!(audited[0]["detail"]["client"], "127.0.0.1", "{audited}");
    assert_eq!(audited[0]["detail"]["failures"], 1, "{audited}");
    // Health needs no key.
    assert_eq!(
        admin.with_key(None).call("GET", "/healthz", None).status,
        200
    );
    assert_eq!(
        admin.with_key(None).call("GET", "/readyz", None).status,
        200
    );

    // Bad JSON.
    let a = admin.raw("POST", "/v1/endpoints", b"{\"url\": ");
    assert_eq!(a.status, 400);
    assert_eq!(a.body["error"]["code"], "bad_json");
    let a = admin.call("POST", "/v1/service_users", Some(json!({ "nme": "typo" })));
    assert_eq!(a.status, 400);
    assert!(
        a.body["error"]["message"].as_str().unwrap().contains("nme"),
        "{}",
        a.text
    );

    // A broken policy: 400 naming line and column, as the policy engine does.
    let broken = "on_tcp_connect:\n  - actions:\n      - type: restrict-ips\n        config:\n          allow: [10.0.0.300/8]\n      - type: forward-internal\n        config: { url: \"tcp://db.internal:5432\" }\n";
    let a = admin.call(
        "POST",
        "/v1/endpoints",
        Some(json!({ "url": "tcp://127.0.0.1:0", "traffic_policy": broken })),
    );
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.body["error"]["code"], "invalid_policy");
    assert_eq!(a.body["error"]["line"], 5, "{}", a.text);
    assert!(a.body["error"]["column"].as_u64().is_some());
    assert!(a.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("10.0.0.300"));

    // Unknown ids, static objects, conflicts.
    assert_eq!(admin.call("GET", "/v1/endpoints/ep_nope", None).status, 404);
    assert_eq!(
        admin.call("DELETE", "/v1/endpoints/ep_nope", None).status,
        404
    );
    assert_eq!(
        admin
            .call(
                "POST",
                "/v1/service_users/usr_nope/authtokens",
                Some(json!({}))
            )
            .status,
        404
    );
    assert_eq!(admin.call("GET", "/v1/nothing-here", None).status, 404);
    let listed = admin.get("/v1/endpoints");
    let static_ep = &listed["items"][0];
    assert_eq!(static_ep["static"], true);
    let static_id = static_ep["id"].as_str().unwrap();
    let a = admin.call("DELETE", &format!("/v1/endpoints/{static_id}"), None);
    assert_eq!(a.status, 403, "{}", a.text);
    let taken = endpoint_addr(static_ep);
    let a = admin.call(
        "POST",
        "/v1/endpoints",
        Some(
            json!({ "url": format!("tcp://{taken}"), "traffic_policy": fixture::forward_all(URL) }),
        ),
    );
    assert_eq!(a.status, 409, "{}", a.text);
    let a = admin.call(
        "POST",
        "/v1/reserved_addrs",
        Some(json!({ "addr": format!("{taken}") })),
    );
    assert_eq!(a.status, 409, "{}", a.text);
    let a = admin.call(
        "POST",
        "/v1/service_users/static:test-user/authtokens",
        Some(json!({})),
    );
    assert_eq!(a.status, 403, "{}", a.text);
    let a = admin.call(
        "POST",
        "/v1/service_users",
        Some(json!({ "name": "test-user" })),
    );
    assert_eq!(a.status, 409, "{}", a.text);
    let a = admin.call(
        "POST",
        "/v1/service_users",
        Some(json!({ "name": "has space" })),
    );
    assert_eq!(a.status, 400);
    // A huge bad name is quoted back in part, not echoed whole.
    let a = admin.call(
        "POST",
        "/v1/service_users",
        Some(json!({ "name": "x ".repeat(500_000) })),
    );
    assert_eq!(a.status, 400);
    assert_eq!(a.body["error"]["code"], "invalid_name");
    assert!(a.text.len() < 1_000, "{} bytes of error", a.text.len());

    // Errors axum makes by itself are in the documented JSON shape too.
    let a = admin.call("PUT", "/v1/events", Some(json!({})));
    assert_eq!(a.status, 405, "{}", a.text);
    assert_eq!(a.body["error"]["code"], "method_not_allowed", "{}", a.text);
    let a = admin.raw("POST", "/v1/service_users", &vec![b' '; 5 * 1024 * 1024]);
    assert_eq!(a.status, 413, "{}", a.text);
    assert_eq!(a.body["error"]["code"], "body_too_large", "{}", a.text);

    // The bearer scheme is case-insensitive.
    for scheme in ["bearer", "BEARER"] {
        let mut s = std::net::TcpStream::connect(admin.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        std::io::Write::write_all(
            &mut s,
            format!(
                "GET /v1/endpoints HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {scheme} {API_KEY}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let mut answer = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{scheme}: {answer}");
    }

    assert_eq!(count(&admin, "/v1/endpoints"), endpoints_before);
    assert_eq!(
        changes(&admin),
        changes_before,
        "a failed request changed state"
    );
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one_and_a_good_edit_applies() {
    let fx = Fixture::new();
    let cfg = edge_config(&fx, &[("127.0.0.1:0", fixture::forward_all(URL))]);
    let (mut edge, agent_addr, admin) = start_edge(&cfg);
    let upstream = Echo::start();
    let mut agent = start_agent(&fx, "agent.yml", &fx.token, agent_addr, upstream.addr);
    agent.wait_for("endpoint bound");
    let first = endpoint_addr(&admin.get("/v1/endpoints")["items"][0]);
    client::echo_ok(None, first, b"before reload").unwrap();

    // Broken: a bad CIDR in the policy.
    let good = fixture::read(&cfg);
    std::fs::write(&cfg, good.replace("forward-internal", "forward-nowhere")).unwrap();
    edge.hangup();
    // The signal's doing, not the file watcher's (which would say "file changed").
    edge.wait_for_n("rejected reload", 1, |v| {
        v["message"] == "config reload rejected; the running configuration stays"
            && v["trigger"] == "SIGHUP"
    });
    client::echo_ok(None, first, b"still serving").unwrap();
    // Audit events are stored through a queue, a moment after the log line.
    wait_until(
        "the config.reload_failed event",
        Duration::from_secs(5),
        || !event_types(&admin, "type=config.reload_failed").is_empty(),
    );

    // Good edit: a second endpoint that only allows 127.0.0.2, picked up from the
    // file changing (no signal).
    let edited = good.replace(
        "admin:",
        &format!(
            "  - url: tcp://127.0.0.1:0\n    traffic_policy: {}\nadmin:",
            fixture::allow_only(&["127.0.0.2/32"], URL)
        ),
    );
    std::fs::write(&cfg, edited).unwrap();
    edge.wait_for_n("reloaded", 1, |v| v["message"] == "config reloaded");
    let endpoints = admin.get("/v1/endpoints")["items"].clone();
    assert_eq!(endpoints.as_array().unwrap().len(), 2, "{endpoints}");
    let second = endpoints
        .as_array()
        .unwrap()
        .iter()
        .map(endpoint_addr)
        .find(|a| *a != first)
        .unwrap();
    // Its policy is in force: the one allowed source is served, at the same moment
    // as the refusal of another.
    client::echo_ok(
        Some("127.0.0.2".parse().unwrap()),
        second,
        b"allowed source",
    )
    .unwrap();
    assert!(
        client::is_refused(None, second),
        "the new endpoint's policy is not in force"
    );
    client::echo_ok(
        Some("127.0.0.2".parse().unwrap()),
        second,
        b"allowed source",
    )
    .unwrap();
    client::echo_ok(None, first, b"first endpoint untouched").unwrap();

    // A change a reload cannot apply (the agent port) says so, and the rest applies.
    let moved =
        fixture::read(&cfg).replace("listen: 127.0.0.1:0\n  tls:", "listen: 127.0.0.1:1\n  tls:");
    assert_ne!(moved, fixture::read(&cfg), "the test edits agents.listen");
    std::fs::write(&cfg, moved).unwrap();
    edge.hangup();
    let pending = edge.wait_for_n("a restart-only change", 1, |v| {
        v["message"]
            == "config change needs a restart to take effect; the running values stay until then"
            && v["trigger"] == "SIGHUP"
    });
    assert!(
        pending["keys"].as_str().unwrap().contains("agents.listen"),
        "{pending}"
    );
    client::echo_ok(None, first, b"agent port unchanged").unwrap();
}

#[test]
fn metrics_change_as_traffic_flows_and_logs_are_json() {
    let fx = Fixture::new();
    let cfg = edge_config(
        &fx,
        &[
            ("127.0.0.1:0", fixture::forward_all(URL)),
            ("127.0.0.2:0", fixture::allow_only(&["127.0.0.3/32"], URL)),
        ],
    );
    let (edge, agent_addr, admin) = start_edge(&cfg);
    let upstream = Echo::start();
    // The agent serves its own metrics on a listener of its own.
    let agent_yaml = fx
        .agent_yaml(&fx.token, agent_addr, "tcp", &[(URL, upstream.addr)])
        .replace(
            "  workers: 2\n",
            "  workers: 2\n  metrics_listen: 127.0.0.1:0\n",
        );
    let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), DRIVER);
    let agent_metrics: SocketAddr = sluice_tests::admin::metrics_listening(&mut agent);
    agent.wait_for("endpoint bound");
    let endpoints = admin.get("/v1/endpoints")["items"].clone();
    let by_ip = |ip: &str| {
        endpoints
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["listen_addr"].as_str().unwrap().starts_with(ip))
            .map(|e| {
                (
                    e["url"].as_str().unwrap().to_string(),
                    e["id"].as_str().unwrap().to_string(),
                    endpoint_addr(e),
                )
            })
            .unwrap()
    };
    // Series are labelled with the URL as configured and the endpoint id.
    let (open_url, open_id, open) = by_ip("127.0.0.1:");
    let (closed_url, closed_id, closed) = by_ip("127.0.0.2:");
    let series = |id: &str, url: &str, outcome: &str| {
        format!(
            "sluice_edge_connections_total{{endpoint=\"{url}\",id=\"{id}\",outcome=\"{outcome}\"}}"
        )
    };

    let unauthorised = admin.with_key(None).call("GET", "/metrics", None);
    assert_eq!(unauthorised.status, 401);
    let before = admin.call("GET", "/metrics", None).text;
    // The endpoint that refuses this client serves the one source it allows (the
    // positive control for the refusal).
    let control = b"allowed source";
    client::echo_ok(Some("127.0.0.3".parse().unwrap()), closed, control).unwrap();
    let payload = vec![7u8; 10_000];
    for _ in 0..3 {
        client::echo_ok(None, open, &payload).unwrap();
    }
    assert!(client::is_refused(None, closed));
    // Byte counts land when streams end; the edge sees the end just after the client.
    let bytes_out = format!(
        "sluice_edge_bytes_total{{endpoint=\"{open_url}\",id=\"{open_id}\",direction=\"out\"}}"
    );
    let end = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let now = admin.call("GET", "/metrics", None).text;
        if sample(&now, &bytes_out) - sample(&before, &bytes_out) >= 30_000.0 {
            break now;
        }
        assert!(Instant::now() < end, "bytes not counted:\n{now}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(
        delta(&series(&open_id, &open_url, "forwarded")),
        3.0,
        "{after}"
    );
    assert_eq!(
        delta(&series(&closed_id, &closed_url, "denied")),
        1.0,
        "{after}"
    );
    assert_eq!(delta(&series(&closed_id, &closed_url, "forwarded")), 1.0);
    let bytes_in = format!(
        "sluice_edge_bytes_total{{endpoint=\"{open_url}\",id=\"{open_id}\",direction=\"in\"}}"
    );
    assert_eq!(delta(&bytes_in), 30_000.0);
    let opens = format!(
        "sluice_edge_open_latency_seconds_count{{endpoint=\"{open_url}\",id=\"{open_id}\"}}"
    );
    assert_eq!(delta(&opens), 3.0);
    assert_eq!(sample(&after, "sluice_edge_sessions"), 1.0);
    assert_eq!(
        sample(
            &after,
            &format!("sluice_edge_pool_members{{url=\"{URL}\"}}")
        ),
        1.0
    );
    assert!(sample(&after, "sluice_edge_agent_handshake_seconds_count") >= 1.0);
    // The agent's side of the same traffic (no key: its listener is loopback-only).
    let agent_text = Admin::new(agent_metrics, "")
        .with_key(None)
        .call("GET", "/metrics", None)
        .text;
    let agent_series = |outcome: &str| {
        format!("sluice_agent_streams_total{{endpoint=\"{URL}\",outcome=\"{outcome}\"}}")
    };
    assert_eq!(
        sample(&agent_text, &agent_series("assigned")),
        4.0,
        "{agent_text}"
    );
    assert_eq!(sample(&agent_text, &agent_series("upstream_failed")), 0.0);
    let agent_bytes = format!("sluice_agent_bytes_total{{endpoint=\"{URL}\",direction=\"in\"}}");
    assert_eq!(
        sample(&agent_text, &agent_bytes),
        30_000.0 + control.len() as f64,
        "{agent_text}"
    );
    assert_eq!(sample(&agent_text, "sluice_agent_session_up"), 1.0);
    assert_eq!(sample(&agent_text, "sluice_agent_sessions_total"), 1.0);
    assert!(sample(&agent_text, "sluice_agent_data_channels_opened_total") >= 4.0);
    // Every log line the edge and agent wrote is a JSON object.
    assert_eq!(edge.count(|v| v["raw"] == true), 0, "{}", edge.log_text());
    assert_eq!(agent.count(|v| v["raw"] == true), 0);
}

#[test]
fn deleting_an_endpoint_stops_new_connections_and_lets_established_ones_finish() {
    let fx = Fixture::new();
    let (_edge, agent_addr, admin) = start_edge(&edge_config(&fx, &[]));
    let upstream = Echo::start();
    let mut agent = start_agent(&fx, "agent.yml", &fx.token, agent_addr, upstream.addr);
    agent.wait_for("endpoint bound");
    // A range of 10 loopback ports, free when found; another process may take one
    // before the edge binds it, so a failed endpoint creation is retried on a new
    // range.
    let (start, ra, ep) = (0..20)
        .find_map(|_| {
            let start = fixture::free_port_range("127.0.0.1".parse().unwrap(), 10);
            let ra = admin.create(
                "/v1/reserved_addrs",
                json!({ "addr": format!("127.0.0.1:{start}-{}", start + 9), "description": "db" }),
            );
            let ep = admin.call(
                "POST",
                "/v1/endpoints",
                Some(
                    json!({ "reserved_addr_id": ra["id"], "traffic_policy": fixture::forward_all(URL) }),
                ),
            );
            if ep.status == 201 {
                return Some((start, ra, ep.body));
            }
            let rid = ra["id"].as_str().unwrap();
            eprintln!("reserved range {start}: endpoint not created ({}); another range", ep.text);
            assert_eq!(
                admin.call("DELETE", &format!("/v1/reserved_addrs/{rid}"), None).status,
                204
            );
            None
        })
        .expect("an endpoint on a reserved range within 20 tries");
    let public = endpoint_addr(&ep);
    assert!((start..=start + 9).contains(&public.port()), "{ep}");
    // A port of the reservation cannot be taken without it.
    let a = admin.call(
        "POST",
        "/v1/endpoints",
        Some(
            json!({ "url": format!("tcp://127.0.0.1:{}", start + 5), "traffic_policy": fixture::forward_all(URL) }),
        ),
    );
    assert_eq!(a.status, 409, "{}", a.text);
    assert_eq!(
        admin
            .call(
                "DELETE",
                &format!("/v1/reserved_addrs/{}", ra["id"].as_str().unwrap()),
                None
            )
            .status,
        409
    );

    let mut established = client::connect_from(None, public).unwrap();
    assert!(client::echoes(
        &mut established,
        b"before delete\n",
        client::IO_TIMEOUT
    ));
    let id = ep["id"].as_str().unwrap();
    assert_eq!(
        admin
            .call("DELETE", &format!("/v1/endpoints/{id}"), None)
            .status,
        204
    );
    assert_eq!(
        admin
            .call("GET", &format!("/v1/endpoints/{id}"), None)
            .status,
        404
    );
    wait_until("the port to close", Duration::from_secs(5), || {
        std::net::TcpStream::connect(public).is_err()
    });
    assert!(client::echoes(
        &mut established,
        b"still flowing after delete\n",
        client::IO_TIMEOUT
    ));
    drop(established);
    assert_eq!(
        admin
            .call(
                "DELETE",
                &format!("/v1/reserved_addrs/{}", ra["id"].as_str().unwrap()),
                None
            )
            .status,
        204
    );
    assert_eq!(event_types(&admin, "type=endpoint.deleted").len(), 1);
}

#[test]
fn token_bind_rules_and_deactivated_users() {
    let fx = Fixture::new();
    let (_edge, agent_addr, admin) = start_edge(&edge_config(&fx, &[]));
    let user = admin.create("/v1/service_users", json!({ "name": "narrow" }));
    let user_id = user["id"].as_str().unwrap().to_string();
    let token = admin.create(
        &format!("/v1/service_users/{user_id}/authtokens"),
        json!({ "acl": ["bind:web.internal"] }),
    );
    let bad = admin.call(
        "POST",
        &format!("/v1/service_users/{user_id}/authtokens"),
        Some(json!({ "acl": ["*.internal"] })),
    );
    assert_eq!(bad.status, 400, "{}", bad.text);
    let upstream = Echo::start();
    let secret = token["token"].as_str().unwrap();
    // URL is db.internal: the token may only bind web.internal. An agent whose every
    // endpoint is refused can never serve: it says why and exits (status 2) instead of
    // idling connected.
    let mut refused = start_agent(&fx, "refused.yml", secret, agent_addr, upstream.addr);
    refused.wait_for_n("bind refused", 1, |v| {
        v.to_string().contains("may not bind")
    });
    let (code, log) = refused.wait_exit_and_log();
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("the edge refuses every endpoint of this agent"),
        "{log}"
    );
    wait_until("the bind_refused event", Duration::from_secs(5), || {
        event_types(&admin, "type=endpoint.bind_refused").len() == 1
    });
    // With one endpoint its rules allow, the session stays and serves that one.
    let web = Echo::start();
    let yaml = fx.agent_yaml(
        secret,
        agent_addr,
        "tcp",
        &[(URL, upstream.addr), ("tcp://web.internal:80", web.addr)],
    );
    let mut agent = Sluice::agent(&fx.write("agent.yml", &yaml), DRIVER);
    agent.wait_for("endpoint bound");
    wait_until(
        "the second bind_refused event",
        Duration::from_secs(5),
        || event_types(&admin, "type=endpoint.bind_refused").len() == 2,
    );
    let sessions = admin.get("/v1/sessions");
    let bound: Vec<&str> = sessions["items"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["url"].as_str().unwrap())
        .collect();
    assert_eq!(bound, ["tcp://web.internal:80"], "{sessions}");
    assert!(agent.is_running());
    // Deactivating the user ends its session.
    let a = admin.call(
        "PATCH",
        &format!("/v1/service_users/{user_id}"),
        Some(json!({ "active": false })),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    wait_until("the session to end", Duration::from_secs(5), || {
        admin.get("/v1/sessions")["items"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    assert_eq!(
        event_types(&admin, "type=service_user.deactivated").len(),
        1
    );
}

/// Revoking one token cuts the streams flowing through its agent's session, on either
/// data-channel transport and with either plain-TCP pump, and leaves every other
/// agent's streams alone. A cut is a reset: a clean close (FIN) would tell the client
/// and the upstream that the stream ended complete.
#[test]
fn revoking_a_token_or_deactivating_or_deleting_its_user_cuts_its_flowing_streams_and_nobody_elses()
{
    struct Tunnel {
        user_id: String,
        token_id: String,
        upstream: Echo,
        _agent: Sluice,
        streams: Vec<TcpStream>,
    }
    for (transport, pump, how) in [
        ("tcp", "splice", "revoke"),
        ("tls", "splice", "revoke"),
        ("tcp", "copy", "revoke"),
        ("tcp", "splice", "deactivate"),
        ("tls", "splice", "delete"),
    ] {
        let fx = Fixture::new();
        let (_edge, agent_addr, admin) = start_edge_with(&edge_config(&fx, &[]), &["--pump", pump]);
        let mut tunnels = Vec::new();
        for (name, url) in [("revoked", URL), ("kept", "tcp://web.internal:80")] {
            let user = admin.create("/v1/service_users", json!({ "name": name }));
            let user_id = user["id"].as_str().unwrap().to_string();
            let token = admin.create(
                &format!("/v1/service_users/{user_id}/authtokens"),
                json!({ "description": name }),
            );
            let upstream = Echo::start();
            let yaml = fx.agent_yaml(
                token["token"].as_str().unwrap(),
                agent_addr,
                transport,
                &[(url, upstream.addr)],
            );
            let path = fx.write(&format!("{name}.yml"), &yaml);
            let mut agent = Sluice::start(
                "agent",
                &["--pump", pump, "agent", "--config", path.to_str().unwrap()],
                DRIVER,
            );
            agent.wait_for("endpoint bound");
            let endpoint = admin.create(
                "/v1/endpoints",
                json!({ "url": "tcp://127.0.0.1:0", "traffic_policy": fixture::forward_all(url) }),
            );
            let public = endpoint_addr(&endpoint);
            client::wait_until_echo(public, Duration::from_secs(10)).unwrap();
            let streams = (0..3)
                .map(|_| {
                    let mut s = client::connect_from(None, public).unwrap();
                    assert!(client::echoes(&mut s, b"open\n", client::IO_TIMEOUT));
                    s
                })
                .collect();
            tunnels.push(Tunnel {
                user_id,
                token_id: token["id"].as_str().unwrap().to_string(),
                upstream,
                _agent: agent,
                streams,
            });
        }

        let (revoked, kept) = tunnels.split_at_mut(1);
        let (revoked, kept) = (&mut revoked[0], &mut kept[0]);
        let user = format!("/v1/service_users/{}", revoked.user_id);
        let answer = match how {
            "revoke" => admin.call(
                "DELETE",
                &format!("{user}/authtokens/{}", revoked.token_id),
                None,
            ),
            "deactivate" => admin.call("PATCH", &user, Some(json!({ "active": false }))),
            _ => admin.call("DELETE", &user, None),
        };
        assert!(matches!(answer.status, 200 | 204), "{how}: {}", answer.text);
        let revoked_at = Instant::now();
        for s in &mut revoked.streams {
            assert!(
                client::reset_within(s, Duration::from_secs(5)),
                "{transport}/{pump}/{how}: a stream was not reset after its agent's authority ended"
            );
        }
        eprintln!(
            "{transport}/{pump}/{how}: 3 flowing streams reset {:?} after the answer",
            revoked_at.elapsed()
        );
        wait_until(
            "the revoked agent's upstream connections to close",
            Duration::from_secs(5),
            || revoked.upstream.active() == 0,
        );
        for s in &mut kept.streams {
            assert!(client::echoes(s, b"still flowing\n", client::IO_TIMEOUT));
        }
        assert!(kept.upstream.active() >= 3);
    }
}

#[test]
fn sessions_show_the_agents_metadata_and_each_endpoints_description_as_written() {
    let fx = Fixture::new();
    let cfg = edge_config(&fx, &[]);
    let (_edge, agent_addr, admin) = start_edge(&cfg);
    let upstream = Echo::start();
    // ngrok's keys: agent metadata, endpoint description, metadata and bindings. The
    // text is an agent's to choose: markup comes back as it was written, as JSON text.
    let hostile = "<script>alert(1)</script>";
    let yaml = fx
        .agent_yaml(&fx.token, agent_addr, "tcp", &[(URL, upstream.addr)])
        .replace(
            "agent:\n",
            &format!("agent:\n  metadata: '{{\"site\": \"clinic-3\", \"note\": \"{hostile}\"}}'\n"),
        )
        .replace(
            &format!("  - url: {URL}\n"),
            &format!(
                "  - url: {URL}\n    description: patient DB <b>primary</b>\n    metadata: '{{\"tier\": 1}}'\n    bindings: [internal]\n"
            ),
        );
    let mut agent = Sluice::agent(&fx.write("agent.yml", &yaml), DRIVER);
    agent.wait_for("endpoint bound");

    let sessions = admin.get("/v1/sessions");
    let session = &sessions["items"][0];
    let metadata: Value = serde_json::from_str(session["metadata"].as_str().unwrap()).unwrap();
    assert_eq!(metadata["site"], "clinic-3");
    assert_eq!(metadata["note"], hostile);
    let endpoint = &session["endpoints"][0];
    assert_eq!(endpoint["url"], URL);
    assert_eq!(endpoint["description"], "patient DB <b>primary</b>");
    assert_eq!(endpoint["metadata"], "{\"tier\": 1}");

    // The session's start event carries the metadata too (events are written by the
    // audit writer, shortly after the session starts).
    wait_until(
        "the session.started event with the agent's metadata",
        Duration::from_secs(10),
        || {
            admin.get("/v1/events?type=session.started")["items"][0]
                .to_string()
                .contains("clinic-3")
        },
    );
}
