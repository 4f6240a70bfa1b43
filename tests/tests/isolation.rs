//! End-to-end: one customer's token never reaches another customer's traffic. Two
//! service users, alice and mallory, on one edge (real edge and agent processes):
//! mallory cannot join alice's pool, cannot take her URL while she reconnects or after
//! an edge restart, and ownership moves only through the admin API (or edge.yml).

use std::{net::SocketAddr, path::PathBuf};

use serde_json::{json, Value};
use sluice_tests::{
    admin::Admin,
    client,
    fixture::{self, Fixture},
    process::Sluice,
    upstream::Echo,
    wait_until,
};

const URL: &str = "tcp://db.internal:5432";
const URL_PATH: &str = "/v1/internal_urls/tcp%3A%2F%2Fdb.internal%3A5432";
const DRIVER: &str = "uring";
const API_KEY: &str = "test-admin-key-isolation-0123";

/// Two customers' tokens.
struct Users {
    alice: String,
    mallory: String,
}

fn new_token() -> String {
    format!("slt_{:032x}", rand::random::<u128>())
}

/// An edge with users alice and mallory (`extra` appended to alice's entry), one
/// endpoint forwarding to [`URL`], the admin API and a state directory.
fn edge_config(fx: &Fixture, users: &Users, alice_extra: &str) -> PathBuf {
    let yaml = format!(
        "version: 1\nworkers: 2\nagents:\n  listen: 127.0.0.1:0\n  tls: {{ cert: edge.crt, key: edge.key }}\n  plain_channels: true\n\
         service_users:\n  - name: alice\n    authtokens: [\"{}\"]\n{alice_extra}  - name: mallory\n    authtokens: [\"{}\"]\n\
         endpoints:\n  - url: tcp://127.0.0.1:0\n    traffic_policy: {}\n\
         admin:\n  listen: 127.0.0.1:0\n  api_keys: [\"{}\"]\nstate_dir: state\n",
        fixture::token_hash(&users.alice),
        fixture::token_hash(&users.mallory),
        fixture::forward_all(URL),
        fixture::token_hash(API_KEY),
    );
    fx.write("edge.yml", &yaml)
}

fn start_edge(cfg: &std::path::Path) -> (Sluice, SocketAddr, SocketAddr, Admin) {
    let mut edge = Sluice::edge(cfg, DRIVER);
    let (agent_addr, public) = edge.edge_addrs(1);
    let admin = edge.wait_for_n("admin listener", 1, |v| {
        v["message"] == "listening" && v["kind"] == "admin"
    });
    let admin = Admin::new(admin["addr"].as_str().unwrap().parse().unwrap(), API_KEY);
    (edge, agent_addr, public[0], admin)
}

/// An agent of `token` binding `url` to `upstream`, pooled or not.
fn agent(
    fx: &Fixture,
    name: &str,
    token: &str,
    edge: SocketAddr,
    url: &str,
    upstream: SocketAddr,
    pooled: bool,
) -> Sluice {
    let mut yaml = fx.agent_yaml(token, edge, "tcp", &[(url, upstream)]);
    if pooled {
        yaml = yaml.replace(
            &format!("  - url: {url}\n"),
            &format!("  - url: {url}\n    pooling_enabled: true\n    weight: 1000\n"),
        );
    }
    Sluice::agent(&fx.write(name, &yaml), DRIVER)
}

/// Waits for the agent's refusal of its bind because another user owns the URL.
fn wait_not_owner(agent: &mut Sluice) -> Value {
    agent.wait_for_n("bind refused as not owner", 1, |v| {
        v["message"] == "edge reported an error" && v["code"] == "NotOwner"
    })
}

fn events(admin: &Admin, kind: &str) -> Vec<Value> {
    admin.get(&format!("/v1/events?type={kind}&limit=1000"))["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn another_users_agent_cannot_join_the_pool_or_weigh_itself_in() {
    let fx = Fixture::new();
    let users = Users {
        alice: new_token(),
        mallory: new_token(),
    };
    let (mut edge, agent_addr, public, admin) = start_edge(&edge_config(&fx, &users, ""));
    let alice_up = Echo::start();
    let mallory_up = Echo::start();
    let mut alice = agent(
        &fx,
        "alice.yml",
        &users.alice,
        agent_addr,
        URL,
        alice_up.addr,
        true,
    );
    alice.wait_for("endpoint bound");
    // mallory's token is valid and may bind URLs nobody owns: her own works.
    let mallory_own = Echo::start();
    let mallory_yaml = fx
        .agent_yaml(
            &users.mallory,
            agent_addr,
            "tcp",
            &[
                (URL, mallory_up.addr),
                ("tcp://mallory.internal:1", mallory_own.addr),
            ],
        )
        .replace(
            &format!("  - url: {URL}\n"),
            &format!("  - url: {URL}\n    pooling_enabled: true\n    weight: 1000\n"),
        );
    let mut mallory = Sluice::agent(&fx.write("mallory.yml", &mallory_yaml), DRIVER);
    mallory.wait_for("endpoint bound");
    let refusal = wait_not_owner(&mut mallory);
    assert!(
        refusal["detail"].as_str().unwrap().contains("alice"),
        "the refusal names the owner: {refusal}"
    );
    edge.wait_for("bind refused: the URL belongs to another service user");

    for i in 0..40 {
        client::echo_ok(None, public, format!("query {i}").as_bytes()).unwrap();
    }
    assert_eq!(
        alice_up.accepted(),
        40,
        "every connection reached alice's upstream"
    );
    assert_eq!(
        mallory_up.accepted(),
        0,
        "mallory's upstream received alice's traffic"
    );

    let owner = admin.get(URL_PATH);
    assert_eq!(owner["user_name"], "alice");
    assert_eq!(owner["source"], "first_bind");
    wait_until(
        "the refusal's audit event",
        std::time::Duration::from_secs(10),
        || !events(&admin, "internal_url.foreign_bind_refused").is_empty(),
    );
    let refused = &events(&admin, "internal_url.foreign_bind_refused")[0];
    assert_eq!(refused["detail"]["user"], "mallory");
    assert_eq!(refused["detail"]["owner"], "alice");
}

#[test]
fn a_url_cannot_be_squatted_while_its_owner_is_away_nor_after_a_restart() {
    let fx = Fixture::new();
    let users = Users {
        alice: new_token(),
        mallory: new_token(),
    };
    let cfg = edge_config(&fx, &users, "");
    let (mut edge, agent_addr, public, admin) = start_edge(&cfg);
    let alice_up = Echo::start();
    let mallory_up = Echo::start();
    let mut alice = agent(
        &fx,
        "alice.yml",
        &users.alice,
        agent_addr,
        URL,
        alice_up.addr,
        false,
    );
    alice.wait_for("endpoint bound");
    client::echo_ok(None, public, b"alice").unwrap();
    // alice's agent goes away (a reconnect, a reboot): the URL stays hers.
    drop(alice);
    edge.wait_for("agent session ended");
    let mut mallory = agent(
        &fx,
        "mallory.yml",
        &users.mallory,
        agent_addr,
        URL,
        mallory_up.addr,
        false,
    );
    wait_not_owner(&mut mallory);
    assert!(
        client::is_refused(None, public),
        "nobody serves the URL meanwhile"
    );
    assert_eq!(mallory_up.accepted(), 0);
    drop(mallory);

    // The claim is durable: a restarted edge still refuses mallory, who connects first.
    edge.terminate();
    edge.wait_exit();
    drop(edge);
    let (_edge, agent_addr, public, admin2) = start_edge(&cfg);
    let mut mallory = agent(
        &fx,
        "mallory2.yml",
        &users.mallory,
        agent_addr,
        URL,
        mallory_up.addr,
        false,
    );
    wait_not_owner(&mut mallory);
    let mut alice = agent(
        &fx,
        "alice2.yml",
        &users.alice,
        agent_addr,
        URL,
        alice_up.addr,
        false,
    );
    alice.wait_for("endpoint bound");
    client::echo_ok(None, public, b"alice again").unwrap();
    assert_eq!(mallory_up.accepted(), 0);
    assert_eq!(admin2.get(URL_PATH)["user_name"], "alice");
    drop(admin);
}

#[test]
fn ownership_moves_only_through_the_admin_api_and_edge_yml_is_read_only() {
    let fx = Fixture::new();
    let users = Users {
        alice: new_token(),
        mallory: new_token(),
    };
    let (mut edge, agent_addr, public, admin) = start_edge(&edge_config(&fx, &users, ""));
    let alice_up = Echo::start();
    let mallory_up = Echo::start();
    let mut alice = agent(
        &fx,
        "alice.yml",
        &users.alice,
        agent_addr,
        URL,
        alice_up.addr,
        false,
    );
    alice.wait_for("endpoint bound");
    // Released while bound: refused, the owner stays.
    let busy = admin.call("DELETE", URL_PATH, None);
    assert_eq!(busy.status, 409, "{}", busy.text);
    assert_eq!(busy.body["error"]["code"], "url_in_use", "{}", busy.text);
    // Unknown users and bad URLs are refused.
    let nobody = admin.call("PUT", URL_PATH, Some(json!({ "user_id": "usr_nobody" })));
    assert_eq!(nobody.status, 400, "{}", nobody.text);
    let bad = admin.call(
        "PUT",
        "/v1/internal_urls/not-a-url",
        Some(json!({ "user_id": "static:mallory" })),
    );
    assert_eq!(bad.status, 400, "{}", bad.text);

    // Transfer to mallory: alice's session loses the URL at once.
    let moved = admin.call(
        "PUT",
        URL_PATH,
        Some(json!({ "user_id": "static:mallory" })),
    );
    assert_eq!(moved.status, 200, "{}", moved.text);
    assert_eq!(moved.body["user_name"], "mallory");
    alice.wait_for_n("told it lost the URL", 1, |v| {
        v["message"] == "edge reported an error" && v["code"] == "NotOwner"
    });
    edge.wait_for("unbound: the URL belongs to another service user");
    let mut mallory = agent(
        &fx,
        "mallory.yml",
        &users.mallory,
        agent_addr,
        URL,
        mallory_up.addr,
        false,
    );
    mallory.wait_for("endpoint bound");
    client::echo_ok(None, public, b"now mallory's").unwrap();
    assert_eq!(mallory_up.accepted(), 1);
    drop(mallory);
    edge.wait_for("agent session ended");
    // Nobody holds it now: released, it can be claimed again.
    let released = admin.call("DELETE", URL_PATH, None);
    assert_eq!(released.status, 204, "{}", released.text);
    assert_eq!(admin.call("GET", URL_PATH, None).status, 404);
    let wanted = [
        "internal_url.claimed",
        "internal_url.transferred",
        "internal_url.unbound",
        "internal_url.released",
    ];
    let kinds = || -> Vec<String> {
        events(&admin, "internal_url.*")
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    };
    wait_until(
        "every ownership event stored",
        std::time::Duration::from_secs(10),
        || {
            let k = kinds();
            wanted.iter().all(|w| k.iter().any(|x| x == w))
        },
    );
}

#[test]
fn edge_yml_ownership_and_bind_rules_hold_for_static_users() {
    let fx = Fixture::new();
    let users = Users {
        alice: new_token(),
        mallory: new_token(),
    };
    // alice owns the URL by edge.yml and her tokens may bind only *.alice.internal
    // and the URL she owns.
    let extra =
        format!("    owns: [\"{URL}\"]\n    acl: [\"bind:*.alice.internal\", \"bind:{URL}\"]\n");
    let (_edge, agent_addr, public, admin) = start_edge(&edge_config(&fx, &users, &extra));
    let owner = admin.get(URL_PATH);
    assert_eq!(owner["source"], "config");
    let change = admin.call(
        "PUT",
        URL_PATH,
        Some(json!({ "user_id": "static:mallory" })),
    );
    assert_eq!(change.status, 403, "{}", change.text);
    assert_eq!(admin.call("DELETE", URL_PATH, None).status, 403);

    // mallory connects first: refused although nobody ever bound the URL.
    let mallory_up = Echo::start();
    let mut mallory = agent(
        &fx,
        "mallory.yml",
        &users.mallory,
        agent_addr,
        URL,
        mallory_up.addr,
        false,
    );
    wait_not_owner(&mut mallory);
    // alice's rules: a URL outside them is refused, hers work.
    let alice_up = Echo::start();
    let other = Echo::start();
    let yaml = fx.agent_yaml(
        &users.alice,
        agent_addr,
        "tcp",
        &[
            (URL, alice_up.addr),
            ("tcp://elsewhere.internal:1", other.addr),
        ],
    );
    let mut alice = Sluice::agent(&fx.write("alice.yml", &yaml), DRIVER);
    alice.wait_for("endpoint bound");
    alice.wait_for_n("refused by the token's rules", 1, |v| {
        v["message"] == "edge reported an error"
            && v["detail"]
                .as_str()
                .is_some_and(|d| d.contains("may not bind"))
    });
    client::echo_ok(None, public, b"alice").unwrap();
    assert_eq!(alice_up.accepted(), 1);
    assert_eq!(mallory_up.accepted(), 0);
}
