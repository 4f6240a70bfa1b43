//! The monitoring shipped in `deploy/`: the Prometheus alerting rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`); the Grafana
//! dashboard is well formed and its queries parse; and every metric name the rules,
//! their tests and the dashboard use is exported by a real edge (state in etcd, an
//! agent with a pooled endpoint) or agent, so neither can silently query nothing.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;
use sluice_tests::{
    admin::{self, metrics_listening},
    client,
    etcd::Etcd,
    faults,
    fixture::{self, Fixture},
    fleet,
    process::Sluice,
    prom,
    upstream::Echo,
    wait_until,
};

const RULES: &str = "deploy/prometheus/sluice-alerts.yml";
const RULE_TESTS: &str = "deploy/prometheus/sluice-alerts.test.yml";
const DASHBOARD: &str = "deploy/grafana/sluice-edge.json";
const URL: &str = "tcp://db.internal:5432";
const DEADLINE: Duration = Duration::from_secs(20);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Runs `promtool ARGS` in the repository root; panics with its output unless it
/// succeeds.
fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run promtool (Debian's prometheus package; tests/run.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The metric names in `text`: identifiers `sluice_[a-z0-9_]+` or
/// `process_[a-z0-9_]+` not preceded by an identifier character.
fn metric_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        let starts = (rest.starts_with(b"sluice_") || rest.starts_with(b"process_"))
            && (i == 0 || !ident(bytes[i - 1]));
        if !starts {
            i += 1;
            continue;
        }
        let len = rest
            .iter()
            .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || **b == b'_')
            .count();
        // ASCII only, so a char boundary on both sides.
        names.insert(text[i..i + len].to_string());
        i += len;
    }
    names
}

/// The `expr:` of every rule of a rules file: an inline value, or a block scalar
/// (`expr: |`) made of the more indented lines that follow.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut exprs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect();
            exprs.push(block.join("\n").trim().to_string());
        } else {
            exprs.push(value.to_string());
        }
    }
    exprs
}

/// Every string under an `expr`, `query` or `definition` key of the dashboard
/// (panel targets and template variables).
fn dashboard_queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// Panels, with those nested in collapsed rows.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        all.push(p);
        if let Some(inner) = p["panels"].as_array() {
            all.extend(inner);
        }
    }
    all
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let checked = promtool(&["check", "rules", RULES]);
    let alerts = read(RULES).matches("- alert: ").count();
    assert!(
        checked.contains(&format!("SUCCESS: {alerts} rules found")),
        "{checked}"
    );
    let tested = promtool(&["test", "rules", RULE_TESTS]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert has a unit test, and the rules the brief asks for exist.
    let tests = read(RULE_TESTS);
    for name in read(RULES)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "no promtool test for {name}"
        );
    }
    for name in [
        "SluiceAgentSessionLost",
        "SluiceAgentNoEdgeSession",
        "SluicePoolNoHealthyMember",
        "SluiceDeniedConnectionSpike",
        "SluiceDataChannelStarvation",
        "SluiceEdgeNearFdLimit",
        "SluiceStateStoreUnreachable",
    ] {
        assert!(
            read(RULES).contains(&format!("- alert: {name}\n")),
            "{name} missing"
        );
    }
}

#[test]
fn the_dashboard_is_well_formed_and_its_queries_parse() {
    let dash = dashboard();
    assert!(
        dash["schemaVersion"].as_u64().unwrap() >= 36,
        "{}",
        dash["schemaVersion"]
    );
    assert_eq!(dash["uid"], "sluice-edge");
    let input = &dash["__inputs"][0];
    assert_eq!(
        (&input["name"], &input["pluginId"]),
        (&Value::from("DS_PROMETHEUS"), &Value::from("prometheus"))
    );
    let vars = dash["templating"]["list"].as_array().unwrap();
    let instance = vars
        .iter()
        .find(|v| v["name"] == "instance")
        .expect("an instance variable");
    assert_eq!(instance["type"], "query");
    assert!(instance["definition"]
        .as_str()
        .unwrap()
        .contains("sluice_edge_info"));

    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for p in panels(&dash) {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(ids.insert(p["id"].as_u64().unwrap()), "id reused: {title}");
        let grid = &p["gridPos"];
        assert!(
            grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24,
            "{title} is wider than the grid"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} queries nothing");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let expr = t["expr"].as_str().unwrap();
            assert!(
                expr.contains("instance=~\"$instance\""),
                "{title}: {expr} ignores the instance variable"
            );
            exprs.push((title.to_string(), expr.to_string()));
        }
    }
    // The families the dashboard must show.
    let used: BTreeSet<String> = exprs.iter().flat_map(|(_, e)| metric_names(e)).collect();
    for name in [
        "sluice_edge_sessions",
        "sluice_edge_connections_total",
        "sluice_edge_active_connections",
        "sluice_edge_bytes_total",
        "sluice_edge_pool_members",
        "sluice_edge_pool_member_healthy",
        "sluice_edge_open_latency_seconds_bucket",
        "sluice_edge_session_rtt_seconds",
        "sluice_edge_idle_data_channels",
        "sluice_edge_http_responses_total",
        "sluice_edge_state_lag_revisions",
        "sluice_edge_state_contact_age_seconds",
        "process_open_fds",
        "process_max_fds",
        "sluice_admin_auth_failures_total",
    ] {
        assert!(used.contains(name), "no panel shows {name}");
    }

    // promtool has no query checker of its own: each query becomes a recording rule
    // (Grafana's variables replaced by what they expand to) that `check rules` parses.
    let fx = Fixture::new();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".+");
        rules.push_str(&format!(
            "      # {title}\n      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let file = fx.write("dashboard-queries.yml", &rules);
    let out = promtool(&["check", "rules", file.to_str().unwrap()]);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{out}"
    );
}

/// Whether `exposition` has series named `name`: a family declared with a `# TYPE
/// name KIND` line (not a histogram: its series are `name_bucket`, `name_sum` and
/// `name_count`), or one of those of a declared histogram (or summary, but `_bucket`).
fn exported(exposition: &str, name: &str) -> bool {
    let kinds: BTreeMap<&str, &str> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' '))
        .collect();
    if let Some(kind) = kinds.get(name) {
        return *kind != "histogram";
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        let base = name.strip_suffix(suffix);
        match base.and_then(|b| kinds.get(b)) {
            Some(&"histogram") => true,
            Some(&"summary") => *suffix != "_bucket",
            _ => false,
        }
    })
}

/// The metric names used by the rules' expressions, the rules' unit tests and the
/// dashboard's queries, each with where it is used.
fn names_used() -> BTreeMap<String, BTreeSet<&'static str>> {
    let mut used: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    let rules = read(RULES);
    let exprs = rule_exprs(&rules);
    assert_eq!(
        exprs.len(),
        rules.matches("- alert: ").count(),
        "one expr per alert: {exprs:#?}"
    );
    for name in exprs.iter().flat_map(|e| metric_names(e)) {
        used.entry(name).or_default().insert(RULES);
    }
    for name in metric_names(&read(RULE_TESTS)) {
        used.entry(name).or_default().insert(RULE_TESTS);
    }
    let mut queries = Vec::new();
    dashboard_queries(&dashboard(), &mut queries);
    assert!(queries.len() > 20, "{queries:#?}");
    for name in queries.iter().flat_map(|q| metric_names(q)) {
        used.entry(name).or_default().insert(DASHBOARD);
    }
    used
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(sluice_edge_open_latency_seconds_bucket{x=\"y\"}[5m])))\n\
         / process_max_fds > 0.8 and on (job) sluice_edge_info unless my_sluice_thing:sluice_x",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "process_max_fds",
            "sluice_edge_info",
            "sluice_edge_open_latency_seconds_bucket"
        ]
    );
    let exprs = rule_exprs(
        "      - alert: A\n        expr: |\n          up == 0\n          and b\n        for: 1m\n      - alert: B\n        expr: c > 1\n",
    );
    assert_eq!(exprs, ["up == 0\nand b", "c > 1"]);
    let text = "# TYPE h histogram\nh_bucket{le=\"1\"} 0\n# TYPE g gauge\ng 1\n";
    assert!(exported(text, "h_bucket") && exported(text, "h_count") && exported(text, "g"));
    assert!(!exported(text, "g_count") && !exported(text, "h") && !exported(text, "gg"));
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The process families of `text` describe process `pid`, started after `since`
/// (Unix seconds): its descriptors and limit, memory and start time as `/proc` has them.
fn check_process_figures(who: &str, text: &str, pid: u32, since: f64) {
    let value = |name: &str| {
        let v = prom::sample(text, name);
        assert!(v > 0.0, "{who}: no {name} in\n{text}");
        v
    };
    let open = value("process_open_fds");
    let probed = faults::fd_count(pid) as f64;
    // Admin and scrape connections come and go between the two readings.
    assert!(
        (open - probed).abs() <= 16.0,
        "{who}: process_open_fds {open}, /proc/{pid}/fd has {probed}"
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft: f64 = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{limits}"));
    assert_eq!(value("process_max_fds"), soft, "{who}");
    let rss = value("process_resident_memory_bytes");
    let probed = faults::rss_kib(pid) as f64 * 1024.0;
    assert!(
        rss > probed / 2.0 && rss < probed * 2.0,
        "{who}: resident {rss} bytes, VmRSS {probed}"
    );
    assert!(value("process_virtual_memory_bytes") >= rss, "{who}");
    let start = value("process_start_time_seconds");
    assert!(
        start >= since - 2.0 && start <= unix_now() + 1.0,
        "{who}: started at {start}, the test started it after {since}"
    );
    assert!(text.contains("\nprocess_cpu_seconds_total "), "{who}");
}

#[test]
fn every_metric_the_rules_and_the_dashboard_use_is_exported() {
    let used = names_used();
    let since = unix_now();
    let etcd = Etcd::start();
    let fx = Fixture::new();
    let echo = Echo::start();
    let mut edge = fleet::start_edge_with(
        &fx,
        "edge-a",
        "127.0.0.1",
        &etcd,
        &fleet::fresh_prefix(),
        &[("127.0.0.1:0", fixture::forward_all(URL))],
    );
    let (_, public) = edge.process.edge_addrs(1);
    let public: SocketAddr = public[0];
    // A pooled agent endpoint with its own metrics listener: per-session and per-pool
    // series exist.
    let agent_yaml = fixture::pooled(
        &fx.agent_yaml(&fx.token, edge.agent_addr, "tcp", &[(URL, echo.addr)]),
        URL,
    )
    .replace(
        "  workers: 2\n",
        "  workers: 2\n  metrics_listen: 127.0.0.1:0\n",
    );
    let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), fleet::DRIVER);
    let agent_metrics = metrics_listening(&mut agent);
    agent.wait_for("endpoint bound");
    // One connection through the endpoint, so its counters and histogram have moved.
    client::echo_ok(None, public, b"monitoring\n").expect("echo through the edge");

    let scrape_edge = || {
        let answer = edge.admin.call("GET", "/metrics", None);
        assert_eq!(answer.status, 200, "{}", answer.text);
        answer.text
    };
    let mut edge_text = String::new();
    wait_until(
        "the edge's per-session, per-pool and etcd series",
        DEADLINE,
        || {
            edge_text = scrape_edge();
            edge_text.contains(&format!("sluice_edge_pool_member_healthy{{url=\"{URL}\""))
                && edge_text.contains("sluice_edge_idle_data_channels{session=")
                && edge_text.contains("sluice_edge_state_contact_age_seconds ")
                && edge_text.contains("sluice_edge_state_following 1\n")
                && edge_text.contains("sluice_edge_open_latency_seconds_count{")
        },
    );
    let mut agent_text = String::new();
    wait_until("the agent's session", DEADLINE, || {
        agent_text = admin::scrape(agent_metrics);
        agent_text.contains("sluice_agent_session_up 1\n")
    });

    check_process_figures("edge", &edge_text, edge.process.pid(), since);
    check_process_figures("agent", &agent_text, agent.pid(), since);

    // Each name is looked for where it comes from: the agent's names in the agent's
    // exposition, the process families in both, the rest in the edge's.
    let mut missing = Vec::new();
    for (name, files) in &used {
        let sources: &[(&str, &str)] = if name.starts_with("sluice_agent_") {
            &[("agent", agent_text.as_str())]
        } else if name.starts_with("process_") {
            &[("edge", edge_text.as_str()), ("agent", agent_text.as_str())]
        } else {
            &[("edge", edge_text.as_str())]
        };
        for (who, text) in sources {
            if !exported(text, name) {
                missing.push(format!(
                    "{name} (used in {files:?}) not exported by the {who}"
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{}\n--- edge:\n{edge_text}\n--- agent:\n{agent_text}",
        missing.join("\n")
    );
    // The check saw the names the rules depend on most.
    for name in [
        "sluice_edge_pool_member_healthy",
        "sluice_edge_state_following",
        "sluice_agent_session_up",
        "process_open_fds",
    ] {
        assert!(used.contains_key(name), "{name} not used: {used:?}");
    }
    eprintln!(
        "{} metric names checked against a live edge and agent",
        used.len()
    );
}
