//! `sluice config convert`: an ngrok v2 agent file (`tunnels:` with `proto`, `addr`,
//! `remote_addr`, `hostname`, `crt`/`key`, `ip_restriction`, `proxy_proto`) turned into
//! what sluice runs: a v3 agent file binding one internal endpoint per tunnel, and the
//! edge's `endpoints:` entries that expose them (with the traffic policies the
//! tunnels' IP restrictions imply). What has no equivalent is listed, not dropped in
//! silence. The agent and `config check` name this command when given a v2 file.

use serde_json::Value;

use super::tree::Node;

/// The hint for a file in ngrok's v2 format, if it is one (`tunnels:`, or
/// `version: 2`).
pub fn v2_hint(tree: &Node) -> Option<String> {
    let version = tree.key("version").and_then(|n| match &n.value {
        super::tree::Value::Int(i) => Some(i.to_string()),
        super::tree::Value::Str(s) => Some(s.clone()),
        _ => None,
    });
    (tree.key("tunnels").is_some() || version.as_deref() == Some("2")).then(|| {
        "this is an ngrok v2 agent file (`tunnels:`); sluice reads ngrok's v3 format: \
         `sluice config convert FILE` writes it, with the edge endpoints it implies"
            .to_owned()
    })
}

/// What a conversion gives.
#[derive(Debug)]
pub struct Converted {
    /// The v3 agent file.
    pub agent: String,
    /// The edge's `endpoints:` entries (a YAML list under that key).
    pub edge_endpoints: String,
    /// What was not converted, and why; also written as comments in the files.
    pub notes: Vec<String>,
}

/// Converts the v2 file `text`; `connect_url` is the edge's agent port for the agent
/// file (a placeholder when `None`).
pub fn convert_v2(text: &str, connect_url: Option<&str>) -> Result<Converted, String> {
    let doc: Value =
        serde_saphyr::from_str(text).map_err(|e| format!("not a YAML document: {e}"))?;
    let Value::Object(root) = &doc else {
        return Err("expected a map with `tunnels:`".to_owned());
    };
    let tunnels = match root.get("tunnels") {
        Some(Value::Object(t)) if !t.is_empty() => t,
        _ => return Err("no `tunnels:` to convert".to_owned()),
    };
    let mut notes = Vec::new();
    for key in root.keys() {
        match key.as_str() {
            "version" | "tunnels" | "authtoken" | "root_cas" | "log" | "log_level"
            | "log_format" | "proxy_url" | "metadata" => {}
            "region"
            | "server_addr"
            | "update"
            | "update_channel"
            | "console_ui"
            | "web_addr"
            | "inspect_db_size"
            | "heartbeat_interval"
            | "heartbeat_tolerance"
            | "api_key"
            | "remote_management"
            | "dns_resolver_ips"
            | "connect_timeout" => {
                notes.push(format!("`{key}`: ngrok cloud setting, not carried over"))
            }
            other => notes.push(format!("`{other}`: not known, not carried over")),
        }
    }

    let mut agent = String::from(
        "# Converted from an ngrok v2 agent file by `sluice config convert`.\nversion: 3\nagent:\n",
    );
    let authtoken = root.get("authtoken").and_then(Value::as_str);
    agent.push_str(&format!(
        "  authtoken: {}\n",
        quote(authtoken.unwrap_or("SLUICE_AUTHTOKEN"))
    ));
    if authtoken.is_none() {
        notes.push(
            "no `authtoken`: put the one `sluice token new` (or the admin API) issued for \
             this agent's service user in agent.authtoken"
                .to_owned(),
        );
    } else {
        notes.push(
            "agent.authtoken is ngrok's: replace it with a sluice authtoken (`sluice token \
             new`, its hash in the edge's service_users)"
                .to_owned(),
        );
    }
    agent.push_str(&format!(
        "  connect_url: {}\n",
        quote(connect_url.unwrap_or("EDGE_HOST:4443"))
    ));
    if connect_url.is_none() {
        notes.push("agent.connect_url: set your edge's agent port (--connect-url)".to_owned());
    }
    for key in [
        "root_cas",
        "log",
        "log_level",
        "log_format",
        "proxy_url",
        "metadata",
    ] {
        if let Some(value) = root.get(key).and_then(scalar) {
            let key = if key == "root_cas" {
                "connect_cas"
            } else {
                key
            };
            agent.push_str(&format!("  {key}: {}\n", quote(&value)));
        }
    }
    agent.push_str("endpoints:\n");
    let mut edge = String::from(
        "# The edge's endpoints for the converted tunnels (under `endpoints:` in edge.yml).\n",
    );
    for (name, tunnel) in tunnels {
        convert_tunnel(name, tunnel, &mut agent, &mut edge, &mut notes);
    }
    for note in &notes {
        agent.push_str(&format!("# note: {note}\n"));
    }
    Ok(Converted {
        agent,
        edge_endpoints: edge,
        notes,
    })
}

fn convert_tunnel(
    name: &str,
    tunnel: &Value,
    agent: &mut String,
    edge: &mut String,
    notes: &mut Vec<String>,
) {
    let Value::Object(t) = tunnel else {
        notes.push(format!("tunnel `{name}`: not a map, skipped"));
        return;
    };
    let proto = t.get("proto").and_then(Value::as_str).unwrap_or("http");
    let Some(addr) = t.get("addr").and_then(scalar) else {
        notes.push(format!("tunnel `{name}`: no `addr`, skipped"));
        return;
    };
    let label: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let port_of_addr = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
    let (internal, upstream, public) = match proto {
        "tcp" => {
            let port = port_of_addr.unwrap_or(1);
            let public = match t.get("remote_addr").and_then(Value::as_str) {
                Some(remote) => {
                    let port = remote.rsplit(':').next().unwrap_or("0");
                    notes.push(format!(
                        "tunnel `{name}`: remote_addr {remote} becomes tcp://0.0.0.0:{port} on the edge"
                    ));
                    format!("tcp://0.0.0.0:{port}")
                }
                None => {
                    notes.push(format!(
                        "tunnel `{name}`: no remote_addr; choose the edge port (tcp://0.0.0.0:PORT)"
                    ));
                    "tcp://0.0.0.0:PORT".to_owned()
                }
            };
            (
                format!("tcp://{label}.internal:{port}"),
                addr.clone(),
                public,
            )
        }
        "tls" => (
            format!("tls://{label}.internal"),
            addr.clone(),
            format!("tls://{}", host_of(t, name, notes)),
        ),
        "http" => {
            let upstream = if addr.contains("://") {
                addr.clone()
            } else {
                format!(
                    "http://{}",
                    if addr.contains(':') {
                        addr.clone()
                    } else {
                        format!("localhost:{addr}")
                    }
                )
            };
            let scheme = match t.get("schemes").or_else(|| t.get("bind_tls")) {
                Some(Value::Bool(false)) => "http",
                Some(Value::Array(s)) if !s.iter().any(|v| v == "https") => "http",
                _ => "https",
            };
            let host = host_of(t, name, notes);
            if scheme == "https" {
                notes.push(format!(
                    "tunnel `{name}`: https://{host} needs terminate_tls (the certificate for {host}) on the edge"
                ));
            }
            (
                format!("http://{label}.internal"),
                upstream,
                format!("{scheme}://{host}"),
            )
        }
        other => {
            notes.push(format!(
                "tunnel `{name}`: proto `{other}` is not supported (tcp, tls, http), skipped"
            ));
            return;
        }
    };

    agent.push_str(&format!("  - name: {}\n    url: {internal}\n", quote(name)));
    let mut upstream_line = format!("    upstream: {{ url: {}", quote(&upstream));
    if let Some(v) = t
        .get("proxy_proto")
        .and_then(Value::as_u64)
        .filter(|v| *v == 1 || *v == 2)
    {
        upstream_line.push_str(&format!(", proxy_protocol: {v}"));
    }
    upstream_line.push_str(" }\n");
    agent.push_str(&upstream_line);
    if let (Some(crt), Some(key)) = (
        t.get("crt").and_then(Value::as_str),
        t.get("key").and_then(Value::as_str),
    ) {
        agent.push_str(&format!(
            "    agent_tls_termination:\n      server_certificate: {}\n      server_private_key: {}\n",
            quote(crt),
            quote(key)
        ));
    }

    edge.push_str(&format!(
        "  - url: {public}\n    traffic_policy:\n      on_tcp_connect:\n"
    ));
    let restriction = t.get("ip_restriction").and_then(Value::as_object);
    let list = |key: &str| -> Vec<String> {
        restriction
            .and_then(|r| r.get(key))
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (allow, deny) = (list("allow_cidrs"), list("deny_cidrs"));
    if !allow.is_empty() || !deny.is_empty() {
        edge.push_str(
            "        - actions:\n            - type: restrict-ips\n              config:\n",
        );
        if !allow.is_empty() {
            edge.push_str(&format!("                allow: [{}]\n", joined(&allow)));
        }
        if !deny.is_empty() {
            edge.push_str(&format!("                deny: [{}]\n", joined(&deny)));
        }
        edge.push_str(&format!(
            "            - type: forward-internal\n              config: {{ url: {internal} }}\n"
        ));
    } else {
        edge.push_str(&format!(
            "        - actions:\n            - type: forward-internal\n              config: {{ url: {internal} }}\n"
        ));
    }

    for key in t.keys() {
        match key.as_str() {
            "proto" | "addr" | "remote_addr" | "hostname" | "subdomain" | "domain" | "crt"
            | "key" | "ip_restriction" | "proxy_proto" | "schemes" | "bind_tls" => {}
            "inspect" => {}
            other => notes.push(format!(
                "tunnel `{name}`: `{other}` has no equivalent yet, not carried over"
            )),
        }
    }
}

/// The public host of an `http` or `tls` tunnel.
fn host_of(t: &serde_json::Map<String, Value>, name: &str, notes: &mut Vec<String>) -> String {
    if let Some(h) = t
        .get("hostname")
        .or_else(|| t.get("domain"))
        .and_then(Value::as_str)
    {
        return h.to_owned();
    }
    if let Some(sub) = t.get("subdomain").and_then(Value::as_str) {
        notes.push(format!(
            "tunnel `{name}`: subdomain `{sub}` becomes {sub}.EXAMPLE.COM: put your domain"
        ));
        return format!("{sub}.EXAMPLE.COM");
    }
    notes.push(format!("tunnel `{name}`: no hostname; put the public name"));
    format!("{name}.EXAMPLE.COM")
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

fn joined(items: &[String]) -> String {
    items
        .iter()
        .map(|i| quote(i))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = r#"
authtoken: 2abcNGROK
region: eu
tunnels:
  db:
    proto: tcp
    addr: 5432
    remote_addr: 1.tcp.eu.ngrok.io:21000
    proxy_proto: 2
    ip_restriction:
      allow_cidrs: [203.0.113.0/24]
      deny_cidrs: [203.0.113.7/32]
  api:
    proto: http
    addr: 8080
    hostname: api.acme.example
    basic_auth: ["u:p"]
  secure:
    proto: tls
    addr: "10.0.0.5:443"
    hostname: secure.acme.example
    crt: /etc/certs/secure.crt
    key: /etc/certs/secure.key
"#;

    #[test]
    fn a_v2_file_becomes_an_agent_file_and_edge_endpoints_that_load() {
        let out = convert_v2(V2, Some("edge.acme.example:4443")).unwrap();
        for (file, text, expected) in [
            ("agent", &out.agent, "url: tcp://db.internal:5432"),
            (
                "agent",
                &out.agent,
                "upstream: { url: \"5432\", proxy_protocol: 2 }",
            ),
            ("agent", &out.agent, "url: http://api.internal"),
            ("agent", &out.agent, "\"http://localhost:8080\""),
            (
                "agent",
                &out.agent,
                "server_certificate: \"/etc/certs/secure.crt\"",
            ),
            ("edge", &out.edge_endpoints, "url: tcp://0.0.0.0:21000"),
            ("edge", &out.edge_endpoints, "allow: [\"203.0.113.0/24\"]"),
            ("edge", &out.edge_endpoints, "url: https://api.acme.example"),
            (
                "edge",
                &out.edge_endpoints,
                "url: tls://secure.acme.example",
            ),
        ] {
            assert!(
                text.contains(expected),
                "{file}: no `{expected}` in\n{text}"
            );
        }
        assert!(
            out.notes.iter().any(|n| n.contains("basic_auth")),
            "{:?}",
            out.notes
        );
        assert!(
            out.notes.iter().any(|n| n.contains("`region`")),
            "{:?}",
            out.notes
        );
        // The agent file is one sluice reads (its TLS files aside).
        let tree = super::super::tree::parse(&out.agent).unwrap();
        assert!(v2_hint(&tree).is_none());
        let file: Result<super::super::agent::AgentFile, _> =
            super::super::tree_de::from_node(&tree);
        assert!(file.is_ok(), "{:?}\n{}", file.err(), out.agent);
        // And each edge endpoint's policy parses.
        let edge: serde_json::Value =
            serde_saphyr::from_str(&format!("endpoints:\n{}", out.edge_endpoints)).unwrap();
        for ep in edge["endpoints"].as_array().unwrap() {
            let policy = serde_json::to_string(&ep["traffic_policy"]).unwrap();
            sluice_policy::TrafficPolicy::from_yaml(&policy).unwrap();
        }
    }

    #[test]
    fn v2_files_are_told_apart() {
        let tree = super::super::tree::parse(V2).unwrap();
        assert!(v2_hint(&tree).unwrap().contains("sluice config convert"));
        let v3 = super::super::tree::parse("version: 3\nagent:\n  authtoken: x\n").unwrap();
        assert!(v2_hint(&v3).is_none());
    }
}
