//! End-to-end: the operator console (`/console` on the admin listener) in a real
//! headless Chromium, against a real edge with two agents in one pool.
//!
//! What an operator must be able to read there: the sessions and pool health (a member
//! turns unhealthy when its upstream stops), an endpoint's traffic and the clients it
//! refused, the audit events (a revocation shows up). And what nobody may do: read
//! anything without a key, or run script through an agent's metadata or an endpoint's
//! description. Screenshots of every page land in `target/test-artifacts/console/`.

use std::{net::SocketAddr, time::Duration};

use serde_json::json;
use sluice_tests::{
    admin::{self, Admin},
    browser::{screenshot_dir, Browser},
    client,
    fixture::{self, Fixture},
    process::Sluice,
    upstream::Echo,
    wait_until,
};

const URL: &str = "tcp://db.internal:5432";
const KEY: &str = "test-admin-key-console";
const DRIVER: &str = "uring";
const DEADLINE: Duration = Duration::from_secs(20);

/// A denied client address (the static endpoint's policy denies it by CIDR).
const DENIED_SOURCE: &str = "127.0.0.2";

struct Site {
    fx: Fixture,
    edge: Sluice,
    admin: Admin,
    admin_addr: SocketAddr,
    agent_addr: SocketAddr,
    public: SocketAddr,
    user_id: String,
}

/// An edge with an admin listener, one static endpoint forwarding to the pool at
/// [`URL`] (denying [`DENIED_SOURCE`]), and a service user agents authenticate as.
fn site() -> Site {
    let fx = Fixture::new();
    let policy = format!(
        "{{ on_tcp_connect: [ {{ name: no-second-loopback, actions: [ {{ type: restrict-ips, \
         config: {{ deny: [\"{DENIED_SOURCE}/32\"] }} }}, {{ type: forward-internal, config: {{ url: \"{URL}\" }} }} ] }} ] }}"
    );
    let mut yaml = fx.edge_yaml("127.0.0.1:0", &[("127.0.0.1:0", policy)]);
    yaml.push_str(&format!(
        "admin:\n  listen: 127.0.0.1:0\n  api_keys: [\"{}\"]\nstate_dir: state\n",
        fixture::token_hash(KEY)
    ));
    let cfg = fx.write("edge.yml", &yaml);
    let mut edge = Sluice::edge(&cfg, DRIVER);
    let (agent_addr, publics) = edge.edge_addrs(1);
    let (admin_addr, _) = admin::listening(&mut edge);
    let admin = Admin::new(admin_addr, KEY);
    let user = admin.create(
        "/v1/service_users",
        json!({ "name": "clinic", "description": "clinic network" }),
    );
    Site {
        fx,
        edge,
        admin,
        admin_addr,
        agent_addr,
        public: publics[0],
        user_id: user["id"].as_str().unwrap().to_string(),
    }
}

impl Site {
    /// A new authtoken of the user: (secret, id).
    fn token(&self) -> (String, String) {
        let t = self.admin.create(
            &format!("/v1/service_users/{}/authtokens", self.user_id),
            json!({ "description": "pool member", "acl": ["bind:*.internal"] }),
        );
        (
            t["token"].as_str().unwrap().to_string(),
            t["id"].as_str().unwrap().to_string(),
        )
    }

    /// An agent in the pool at [`URL`], checking `upstream` every 100 ms, with the
    /// given agent `metadata` and endpoint `description` (YAML-quoted by the caller).
    fn agent(
        &self,
        name: &str,
        token: &str,
        upstream: SocketAddr,
        metadata: &str,
        description: &str,
    ) -> Sluice {
        let yaml = fixture::pooled(
            &self
                .fx
                .agent_yaml(token, self.agent_addr, "tcp", &[(URL, upstream)]),
            URL,
        )
        .replace("agent:\n", &format!("agent:\n  metadata: {metadata}\n"))
        .replace(
            "    pooling_enabled: true\n",
            &format!("    pooling_enabled: true\n    description: {description}\n"),
        )
        .replace(
            "\" }",
            "\", health_check: { interval: 100ms, timeout: 50ms, unhealthy_threshold: 1, healthy_threshold: 1 } }",
        );
        Sluice::agent(&self.fx.write(name, &yaml), DRIVER)
    }

    fn console(&self) -> String {
        format!("http://{}/console", self.admin_addr)
    }

    fn sessions(&self) -> usize {
        self.admin.get("/v1/sessions")["items"]
            .as_array()
            .unwrap()
            .len()
    }
}

fn sign_in(browser: &Browser, key: &str) {
    browser.fill("#key", key);
    browser.click("#login-submit");
}

#[test]
fn console_shows_sessions_pool_health_refused_clients_and_audit_events() {
    let site = site();
    let (up_a, mut up_b) = (Echo::start(), Echo::start());
    let (token_a, _) = site.token();
    let (token_b, token_b_id) = site.token();
    let _a = site.agent("a.yml", &token_a, up_a.addr, "'site-a'", "'replica a'");
    let _b = site.agent("b.yml", &token_b, up_b.addr, "'site-b'", "'replica b'");
    wait_until("both agents hold sessions", DEADLINE, || {
        site.sessions() == 2
    });
    client::wait_until_echo(site.public, DEADLINE).unwrap();

    let shots = screenshot_dir("main");
    let browser = Browser::start(&site.fx.path("chromium"), &shots);
    browser.goto(&site.console());
    // No key yet: the sign-in form, and no data.
    browser.wait_text("the sign-in form", "#login h1", |t| t == "Sign in");
    assert_eq!(
        browser.exec("return document.getElementById('page').hidden"),
        json!(true)
    );
    sign_in(&browser, "not-the-key");
    browser.wait_text("a wrong key refused", "#login-error", |t| {
        t.contains("refused")
    });
    sign_in(&browser, KEY);

    browser.wait_text("two sessions on the overview", "#overview-sessions", |t| {
        t == "2"
    });
    browser.wait_text("both members in service", "#overview-healthy", |t| {
        t == "2 / 2"
    });
    let pools = browser.texts("#overview-pools-table tbody tr td:first-child");
    assert_eq!(pools, vec![URL.to_string()]);
    browser.screenshot("overview");

    // Traffic through the endpoint, and a client its policy refuses.
    for _ in 0..3 {
        client::echo_ok(None, site.public, b"through the pool").unwrap();
    }
    assert!(client::is_refused(
        Some(DENIED_SOURCE.parse().unwrap()),
        site.public
    ));
    browser.wait_texts(
        "the connections counted on the overview",
        "#endpoints-table tbody tr td:nth-child(5)",
        |t| {
            t.first()
                .is_some_and(|n| n.parse::<u64>().unwrap_or(0) >= 4)
        },
    );
    browser.click("#endpoints-table tbody tr a");
    browser.wait_text("the endpoint page", "#endpoint-url", |t| {
        t.starts_with("tcp://127.0.0.1:")
    });
    let denial = browser.wait_texts(
        "the refused client with its cause and rule",
        "#endpoint-denials tbody tr td",
        |t| t.first().is_some_and(|c| c == DENIED_SOURCE),
    );
    assert_eq!(denial[1], "denied-by-cidr", "{denial:?}");
    assert_eq!(denial[3], "no-second-loopback", "{denial:?}");
    let forwarded = browser.wait_text(
        "forwarded connections",
        "#endpoint-outcomes tr[data-outcome=forwarded] td.num",
        |t| t.parse::<u64>().unwrap_or(0) >= 3,
    );
    assert!(forwarded.parse::<u64>().unwrap() >= 3);
    assert!(browser
        .text("#endpoint-policy")
        .unwrap()
        .contains("127.0.0.2/32"));
    browser.screenshot("endpoint");

    // One member's upstream stops: its agent reports it, the pools page shows it.
    browser.click("#nav a[data-page=pools]");
    browser.wait_texts("both members healthy", ".pool tr.member td.health", |t| {
        t.len() == 2 && t.iter().all(|h| h == "healthy")
    });
    up_b.stop();
    let health = browser.wait_texts(
        "one member unhealthy after its upstream stopped",
        ".pool tr.member td.health",
        |t| t.iter().filter(|h| *h == "unhealthy").count() == 1,
    );
    assert_eq!(health.len(), 2);
    let descriptions = browser.texts(".pool tr.member td:nth-child(9)");
    assert!(
        descriptions.contains(&"replica b".to_string()),
        "{descriptions:?}"
    );
    browser.screenshot("pools");

    browser.click("#nav a[data-page=sessions]");
    browser.wait_texts("two sessions listed", "#sessions-table tbody tr", |t| {
        t.len() == 2
    });
    // Each session's metadata, in whatever order the sessions are listed.
    let mut metadata = browser.texts("#sessions-table tbody tr td:nth-child(11)");
    metadata.sort();
    assert_eq!(metadata, vec!["site-a".to_string(), "site-b".to_string()]);
    browser.screenshot("sessions");

    // A revocation: the audit events page shows it, filtered by type.
    let revoked = site.admin.call(
        "DELETE",
        &format!("/v1/service_users/{}/authtokens/{token_b_id}", site.user_id),
        None,
    );
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    browser.click("#nav a[data-page=events]");
    browser.wait_texts(
        "the revocation among the events",
        "#events-table tbody td.kind",
        |t| t.iter().any(|k| k == "authtoken.revoked"),
    );
    browser.fill("#events-type", "authtoken.*");
    browser.click("#events-filters button");
    browser.wait_texts(
        "only authtoken events after filtering",
        "#events-table tbody td.kind",
        |t| !t.is_empty() && t.iter().all(|k| k.starts_with("authtoken.")),
    );
    browser.screenshot("events");
    // The overview follows: one session left.
    browser.click("#nav a[data-page=overview]");
    browser.wait_text(
        "one session after the revocation",
        "#overview-sessions",
        |t| t == "1",
    );
    let points =
        browser.exec("return document.querySelector('#overview-conn-rate').dataset.points");
    assert_ne!(points, json!("0"), "no connection rate charted");
    browser.screenshot("overview-after");
    drop(browser);
    site.edge.terminate();
}

#[test]
fn console_shows_agent_text_as_text_and_refuses_requests_without_a_key() {
    let site = site();
    let up = Echo::start();
    let (token, _) = site.token();
    let metadata = "<script>window.__pwned = 1</script><b>bold</b>";
    let description = "<img src=x onerror=\"window.__pwned = 2\">";
    let _agent = site.agent(
        "agent.yml",
        &token,
        up.addr,
        &format!("'{metadata}'"),
        &format!("'{}'", description.replace('\'', "''")),
    );
    wait_until("the agent holds a session", DEADLINE, || {
        site.sessions() == 1
    });

    // The data behind the page needs the key, like the rest of the API.
    let anonymous = site.admin.with_key(None);
    for path in [
        "/v1/console/overview",
        "/v1/console/pools",
        "/v1/sessions",
        "/v1/events",
    ] {
        let answer = anonymous.call("GET", path, None);
        assert_eq!(answer.status, 401, "{path}: {}", answer.text);
        assert!(!answer.text.contains("__pwned"), "{path}: {}", answer.text);
    }
    let wrong = site.admin.with_key(Some("wrong-key"));
    assert_eq!(wrong.call("GET", "/v1/console/pools", None).status, 401);
    // The page itself holds no data, and forbids inline script.
    let page = anonymous.call("GET", "/console", None);
    assert_eq!(page.status, 200);
    assert!(!page.text.contains("db.internal"), "{}", page.text);
    let csp = page.header("content-security-policy").unwrap_or("");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );

    let browser = Browser::start(&site.fx.path("chromium"), &screenshot_dir("escaping"));
    browser.goto(&site.console());
    sign_in(&browser, KEY);
    browser.click("#nav a[data-page=sessions]");
    let shown = browser.wait_texts(
        "the agent's metadata",
        "#sessions-table tbody tr td:nth-child(11)",
        |t| t.len() == 1,
    );
    assert_eq!(shown, vec![metadata.to_string()], "metadata shown as text");
    browser.click("#nav a[data-page=pools]");
    let shown = browser.wait_texts(
        "the endpoint's description",
        ".pool tr.member td:nth-child(9)",
        |t| t.len() == 1,
    );
    assert_eq!(
        shown,
        vec![description.to_string()],
        "description shown as text"
    );
    browser.screenshot("pools");
    // Nothing the agent sent became an element or ran.
    assert_eq!(
        browser.exec(
            "return [typeof window.__pwned, document.scripts.length, \
             document.querySelectorAll('main img, main b').length]"
        ),
        json!(["undefined", 1, 0])
    );

    // Signing out forgets the key: the next load asks again.
    browser.click("#logout");
    browser.goto(&site.console());
    browser.wait_text("the sign-in form after signing out", "#login h1", |t| {
        t == "Sign in"
    });
    assert_eq!(
        browser.exec("return sessionStorage.length"),
        json!(0),
        "the key stayed in the tab"
    );
}

#[test]
fn the_pools_page_counts_each_members_failed_opens() {
    let site = site();
    let up = Echo::start();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (token_a, _) = site.token();
    let (token_c, _) = site.token();
    let _a = site.agent("a.yml", &token_a, up.addr, "'a'", "'good'");
    // No health checks: the edge learns of c's dead upstream only by failing to open.
    let c_yaml = fixture::without_health_checks(&fixture::pooled(
        &site
            .fx
            .agent_yaml(&token_c, site.agent_addr, "tcp", &[(URL, dead)]),
        URL,
    ));
    let _c = Sluice::agent(&site.fx.write("c.yml", &c_yaml), DRIVER);
    wait_until("both agents hold sessions", DEADLINE, || {
        site.sessions() == 2
    });

    let member_failures = || -> Vec<(String, u64)> {
        let pools = site.admin.get("/v1/console/pools");
        pools["items"][0]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["description"].as_str().unwrap().to_string(),
                    m["open_failures"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let mut sent = 0;
    wait_until("a connection failed over from c", DEADLINE, || {
        assert!(sent < 500, "c was never picked in {sent} connections");
        client::echo_ok(None, site.public, b"fail over").unwrap();
        sent += 1;
        member_failures()
            .iter()
            .any(|(d, n)| d.is_empty() && *n > 0)
    });
    let failures = member_failures();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures.contains(&("good".to_string(), 0)),
        "the good member failed: {failures:?}"
    );
}
