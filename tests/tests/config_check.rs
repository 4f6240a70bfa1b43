//! `sluice config check FILE` as an operator runs it: exit 0 on a valid file, otherwise
//! every problem, one a line, with file, line and key.

use std::process::Command;

use sluice_tests::{
    fixture::Fixture,
    process::{config_check, sluice_bin},
};

/// The lines of the report that name `key`.
fn lines_about<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(key)).collect()
}

#[test]
fn config_check_catches_a_broken_policy_a_missing_cert_and_an_unknown_key_in_one_run() {
    let fx = Fixture::new();
    let cfg = fx.write(
        "edge.yml",
        &format!(
            "version: 1\n\
             agents:\n  \
               listen: 127.0.0.1:0\n  \
               tls: {{ cert: absent.crt, key: edge.key }}\n\
             service_users:\n  \
               - name: u\n    \
                 authtokens: [\"{}\"]\n    \
                 colour: blue\n\
             endpoints:\n  \
               - url: tcp://127.0.0.1:0\n    \
                 traffic_policy:\n      \
                   on_tcp_connect:\n        \
                     - actions:\n            \
                         - type: restrict-ips\n              \
                           config: {{ allow: [10.0.0.0/33] }}\n            \
                         - type: forward-internal\n              \
                           config: {{ url: tcp://db.internal:5432 }}\n  \
               - url: tcp://nowhere\n    \
                 traffic_policy: {{ on_tcp_connect: [ {{ actions: [ {{ type: deny }} ] }} ] }}\n",
            fx.token_hash
        ),
    );
    let (ok, text) = config_check(&cfg);
    assert!(!ok, "{text}");

    let cert = lines_about(&text, "agents.tls.cert");
    assert_eq!(cert.len(), 1, "{text}");
    assert!(cert[0].contains("edge.yml:4:"), "{text}");
    assert!(cert[0].contains("absent.crt"), "{text}");

    let unknown = lines_about(&text, "colour");
    assert_eq!(unknown.len(), 1, "{text}");
    assert!(
        unknown[0].contains("edge.yml:8:5: service_users[0].colour: unknown field"),
        "{text}"
    );

    let policy = lines_about(&text, "endpoints[0].traffic_policy");
    assert_eq!(
        policy.len(),
        1,
        "one line for the bad CIDR, no knock-on errors: {text}"
    );
    assert!(policy[0].contains("edge.yml:15:"), "{text}");
    assert!(policy[0].contains("10.0.0.0/33"), "{text}");

    let url = lines_about(&text, "endpoints[1].url");
    assert_eq!(url.len(), 1, "{text}");
    assert!(url[0].contains("edge.yml:18:"), "{text}");

    assert!(
        text.contains("4 problem(s)"),
        "exactly the four problems: {text}"
    );
}

#[test]
fn config_check_passes_valid_edge_and_agent_files() {
    let fx = Fixture::new();
    let edge = fx.write(
        "edge.yml",
        &fx.edge_yaml(
            "127.0.0.1:0",
            &[(
                "127.0.0.1:0",
                sluice_tests::fixture::forward_all("tcp://db.internal:5432"),
            )],
        ),
    );
    let (ok, text) = config_check(&edge);
    assert!(ok, "{text}");
    assert!(text.contains("valid edge config"), "{text}");

    let agent = fx.write(
        "agent.yml",
        &fx.agent_yaml(
            &fx.token,
            "127.0.0.1:4443".parse().unwrap(),
            "tls",
            &[("tcp://db.internal:5432", "127.0.0.1:5432".parse().unwrap())],
        ),
    );
    let (ok, text) = config_check(&agent);
    assert!(ok, "{text}");
    assert!(text.contains("valid agent config"), "{text}");
}

#[test]
fn config_check_lists_every_agent_problem() {
    let fx = Fixture::new();
    let cfg = fx.write(
        "agent.yml",
        "version: 3\n\
         agent:\n  \
           authtoken: slt_x\n  \
           connect_url: edge.example.com:4443\n  \
           connect_cas: missing-ca.pem\n  \
           transport: carrier-pigeon\n\
         endpoints:\n  \
           - url: tcp://db.internal:5432\n    \
             upstream: { url: 10.0.0.5 }\n  \
           - url: tcp://db.internal:5432\n    \
             upstream: { url: 10.0.0.5:5432, proxy_protocol: 7 }\n",
    );
    let (ok, text) = config_check(&cfg);
    assert!(!ok, "{text}");
    for (line, key) in [
        (5, "agent.connect_cas"),
        (6, "agent.transport"),
        (9, "endpoints[0].upstream.url"),
        (10, "endpoints[1].url"),
        (11, "endpoints[1].upstream.proxy_protocol"),
    ] {
        let hits = lines_about(&text, &format!("agent.yml:{line}:"));
        assert!(
            hits.iter().any(|l| l.contains(&format!(": {key}: "))),
            "line {line}, {key}: {text}"
        );
    }
    assert!(text.contains("5 problem(s)"), "{text}");
}

#[test]
fn config_check_refuses_listeners_that_would_share_a_port_naming_both() {
    let fx = Fixture::new();
    let policy = sluice_tests::fixture::forward_all("tcp://db.internal:5432");
    let endpoint =
        |listen: &str| format!("  - url: tcp://{listen}\n    traffic_policy: {policy}\n");
    let mut yaml = format!(
        "version: 1\n\
         agents:\n  \
           listen: 127.0.0.1:8443\n  \
           tls: {{ cert: edge.crt, key: edge.key }}\n\
         tls_endpoints:\n  \
           listen: 0.0.0.0:8444\n\
         admin:\n  \
           listen: \"[::]:8445\"\n  \
           allow_plaintext_remote: true\n  \
           api_keys: [\"{}\"]\n\
         service_users:\n  \
           - name: u\n    \
             authtokens: [\"{}\"]\n\
         endpoints:\n",
        fx.token_hash, fx.token_hash
    );
    for listen in [
        "0.0.0.0:8443",   // 0: the agent port (wildcard over its IP)
        "127.0.0.1:8444", // 1: inside the TLS port's wildcard
        "127.0.0.1:8445", // 2: the admin API's dual-stack `::`
        "127.0.0.1:9000", // 3
        "127.0.0.1:9000", // 4: endpoint 3 again
        "127.0.0.1:0",    // 5: port 0 never clashes
        "127.0.0.1:0",    // 6
        "[::1]:9001",     // 7
        "0.0.0.0:9001",   // 8: IPv4 wildcard, endpoint 7 is IPv6: no clash
        "127.0.0.2:9000", // 9: another IP than endpoint 3: no clash
    ] {
        yaml.push_str(&endpoint(listen));
    }
    let (ok, text) = config_check(&fx.write("edge.yml", &yaml));
    assert!(!ok, "{text}");
    for (key, other) in [
        ("endpoints[0].url", "agents.listen (127.0.0.1:8443)"),
        ("endpoints[1].url", "tls_endpoints.listen (0.0.0.0:8444)"),
        ("endpoints[2].url", "admin.listen ([::]:8445)"),
        ("endpoints[4].url", "endpoints[3].url (127.0.0.1:9000)"),
    ] {
        let lines = lines_about(&text, &format!(": {key}: "));
        assert_eq!(lines.len(), 1, "{key}: {text}");
        assert!(lines[0].contains(other), "{key}: {text}");
        assert!(lines[0].contains("would share port"), "{key}: {text}");
    }
    assert!(
        text.contains("4 problem(s)"),
        "exactly the four clashes: {text}"
    );

    // The same check covers the edge's own listeners among themselves.
    let own = fx.write(
        "own.yml",
        &fx.edge_yaml("0.0.0.0:8443", &[]).replace(
            "endpoints:\n",
            "endpoints: []\ntls_endpoints:\n  listen: 127.0.0.1:8443\n",
        ),
    );
    let (ok, text) = config_check(&own);
    assert!(!ok, "{text}");
    let lines = lines_about(&text, ": tls_endpoints.listen: ");
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("agents.listen (0.0.0.0:8443)"), "{text}");
}

#[test]
fn the_usual_openssl_one_liner_is_explained_and_sluice_certs_new_passes() {
    let fx = Fixture::new();
    // What most guides print: a self-signed CA certificate without a subjectAltName.
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "bad.key",
            "-out",
            "bad.crt",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .current_dir(&fx.dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = |cert: &str, key: &str| {
        format!(
            "version: 1\nagents:\n  listen: 127.0.0.1:0\n  tls: {{ cert: {cert}, key: {key} }}\n\
             service_users:\n  - name: u\n    authtokens: [\"{}\"]\n",
            fx.token_hash
        )
    };
    let (ok, text) = config_check(&fx.write("bad.yml", &yaml("bad.crt", "bad.key")));
    assert!(!ok, "{text}");
    for sentence in [
        "CaUsedAsEndEntity",
        "has no subjectAltName",
        "sluice certs new",
    ] {
        assert!(
            lines_about(&text, "agents.tls.cert")
                .iter()
                .any(|l| l.contains(sentence)),
            "`{sentence}` missing: {text}"
        );
    }
    // The same check passes the set `sluice certs new` makes.
    let made = Command::new(sluice_bin())
        .args(["certs", "new", "--name", "localhost", "--dir"])
        .arg(fx.path("certs"))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (ok, text) = config_check(&fx.write("good.yml", &yaml("certs/edge.crt", "certs/edge.key")));
    assert!(ok, "{text}");
}

#[test]
fn an_agent_logs_the_ngrok_keys_it_ignores_and_runs() {
    let fx = Fixture::new();
    // An edge address nobody listens on: the agent starts, warns, and keeps retrying.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = fx
        .agent_yaml(&fx.token, nobody, "tls", &[])
        .replace(
            "agent:\n",
            "agent:\n  update_channel: stable\n  web_addr: localhost:4040\n",
        )
        .replace("endpoints:\n", "endpoints: []\n");
    let mut agent = sluice_tests::process::Sluice::agent(&fx.write("agent.yml", &yaml), "uring");
    let warned = agent.wait_for_n("the ignored keys' warning", 1, |v| {
        v["level"] == "WARN"
            && v["message"].as_str().is_some_and(|m| {
                m.contains("agent.update_channel (") && m.contains("agent.web_addr (")
            })
    });
    assert!(
        warned["file"].as_str().unwrap().ends_with("agent.yml"),
        "{warned}"
    );
    assert!(agent.is_running(), "the agent runs with them");
}

#[test]
fn an_agent_logs_where_its_file_says_in_logfmt_at_its_level() {
    let fx = Fixture::new();
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let log = fx.dir().join("agent.log");
    let yaml = fx
        .agent_yaml(&fx.token, nobody, "tls", &[])
        .replace(
            "agent:\n",
            &format!(
                "agent:\n  log: {}\n  log_format: logfmt\n  log_level: warn\n  update_channel: stable\n",
                log.display()
            ),
        )
        .replace("endpoints:\n", "endpoints: []\n");
    let config = fx.write("agent.yml", &yaml);
    // No --log-* flags: the file decides.
    let mut child = Command::new(sluice_tests::process::sluice_bin())
        .args(["agent", "--config", config.to_str().unwrap()])
        .env_remove("SLUICE_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    sluice_tests::wait_until(
        "the ignored keys' warning and a failed session in the log file",
        std::time::Duration::from_secs(10),
        || {
            let text = read();
            text.contains("agent.update_channel") && text.contains("cannot establish a session")
        },
    );
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let text = read();
    for line in text.lines() {
        assert!(line.starts_with("t="), "not logfmt: {line}");
        assert!(
            line.contains(" lvl=warn ") || line.contains(" lvl=error "),
            "below warn: {line}"
        );
    }
    assert!(
        text.contains(" msg=\"cannot establish a session with the edge\""),
        "{text}"
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn an_agent_gives_up_on_a_silent_edge_after_its_connect_timeout() {
    let fx = Fixture::new();
    // Accepts connections and never answers the TLS handshake.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let yaml = fx
        .agent_yaml(&fx.token, addr, "tls", &[])
        .replace("agent:\n", "agent:\n  connect_timeout: 1s\n")
        .replace("endpoints:\n", "endpoints: []\n");
    let started = std::time::Instant::now();
    let mut agent = sluice_tests::process::Sluice::agent(&fx.write("agent.yml", &yaml), "uring");
    // The default (10 s) would not give up within this wait.
    let gave_up = agent.wait_for_n("the handshake's timeout", 1, |v| {
        v["message"] == "cannot establish a session with the edge"
            && v["error"]
                .as_str()
                .is_some_and(|e| e.contains("TLS handshake") && e.contains("timed out"))
    });
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "gave up only after {:?}: {gave_up}",
        started.elapsed()
    );
    drop(silent);
}

#[test]
fn an_ngrok_v2_file_is_named_as_such_and_converts_to_files_that_check() {
    let fx = Fixture::new();
    let v2 = fx.write(
        "ngrok.yml",
        "authtoken: 2abcNGROK\nregion: eu\ntunnels:\n  db:\n    proto: tcp\n    addr: 5432\n    \
         remote_addr: 1.tcp.eu.ngrok.io:0\n    proxy_proto: 2\n    ip_restriction:\n      \
         allow_cidrs: [203.0.113.0/24]\n  api:\n    proto: http\n    addr: 8080\n    \
         hostname: api.acme.example\n    schemes: [http]\n    basic_auth: [\"u:p\"]\n",
    );
    // The agent and `config check` say what the file is and which command converts it.
    let agent = Command::new(sluice_bin())
        .args(["agent", "--config", v2.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!agent.status.success());
    let said = String::from_utf8_lossy(&agent.stderr);
    assert!(
        said.contains("ngrok v2") && said.contains("sluice config convert"),
        "{said}"
    );
    let check = Command::new(sluice_bin())
        .args(["config", "check", v2.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!check.status.success());
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("sluice config convert"),
        "{check:?}"
    );

    let out = fx.dir().join("converted");
    let convert = Command::new(sluice_bin())
        .args([
            "config",
            "convert",
            v2.to_str().unwrap(),
            "--connect-url",
            "127.0.0.1:4443",
        ])
        .arg("--out-dir")
        .arg(&out)
        .output()
        .unwrap();
    assert!(convert.status.success(), "{convert:?}");
    let notes = String::from_utf8_lossy(&convert.stderr);
    assert!(
        notes.contains("basic_auth") && notes.contains("`region`"),
        "{notes}"
    );

    // The agent file checks as it is.
    let agent_file = out.join("agent.yml");
    let check = Command::new(sluice_bin())
        .args(["config", "check", agent_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{check:?}\n{}",
        fixture_text(&agent_file)
    );
    // The edge endpoints check in an edge file.
    let endpoints = std::fs::read_to_string(out.join("edge-endpoints.yml")).unwrap();
    assert!(endpoints.contains("url: tcp://0.0.0.0:0"), "{endpoints}");
    assert!(
        endpoints.contains("url: http://api.acme.example"),
        "{endpoints}"
    );
    let edge = fx.write(
        "edge.yml",
        &(fx.tls_edge_head().replace(
            "tls_endpoints:\n  listen: 127.0.0.1:0\n",
            "http_endpoints:\n  listen: 127.0.0.1:0\n",
        ) + &endpoints),
    );
    let check = Command::new(sluice_bin())
        .args(["config", "check", edge.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}\n{}", fixture_text(&edge));
}

fn fixture_text(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn a_country_expression_needs_a_readable_country_database() {
    let fx = Fixture::new();
    let policy = "{ on_tcp_connect: [ { expressions: [\"conn.geo.country_code == 'NL'\"], \
                  actions: [ { type: deny } ] }, { actions: [ { type: forward-internal, \
                  config: { url: \"tcp://db.internal:5432\" } } ] } ] }";
    let edge = fx.edge_yaml("127.0.0.1:0", &[("127.0.0.1:0", policy.to_owned())]);
    let (ok, text) = config_check(&fx.write("no-db.yml", &edge));
    assert!(!ok, "{text}");
    let lines = lines_about(&text, "endpoints[0].traffic_policy");
    assert!(
        lines.len() == 1 && lines[0].contains("geoip: { database: FILE }"),
        "{text}"
    );

    std::fs::write(fx.path("junk.mmdb"), b"not a database").unwrap();
    let (ok, text) = config_check(&fx.write(
        "junk-db.yml",
        &format!("{edge}geoip:\n  database: junk.mmdb\n"),
    ));
    assert!(!ok, "{text}");
    let lines = lines_about(&text, "geoip.database");
    assert!(
        lines.len() == 1 && lines[0].contains("not a MaxMind database"),
        "{text}"
    );
    assert!(lines_about(&text, "traffic_policy").is_empty(), "{text}");

    std::fs::write(
        fx.path("good.mmdb"),
        sluice_tests::mmdb::country_database(&[(std::net::Ipv4Addr::new(192, 0, 2, 0), 24, "NL")]),
    )
    .unwrap();
    let (ok, text) = config_check(&fx.write(
        "good-db.yml",
        &format!("{edge}geoip:\n  database: good.mmdb\n"),
    ));
    assert!(ok, "{text}");
}
