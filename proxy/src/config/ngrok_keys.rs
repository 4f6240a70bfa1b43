//! Keys of ngrok's v3 agent file that have no meaning for a self-hosted edge: an ngrok
//! user's file runs as written, these keys set aside with one warning naming each and
//! why it is ignored ("bring your agent file, change `connect_url`"). Any other unknown
//! key is still an error (with the closest known key suggested: problems.rs).

use super::tree::{Node, Value};

/// `agent:` keys ignored, with why.
const IGNORED: &[(&str, &str)] = &[
    (
        "update_channel",
        "sluice is updated by its operator, not by the agent",
    ),
    (
        "update_check",
        "sluice is updated by its operator, not by the agent",
    ),
    (
        "console_ui",
        "the agent has no terminal UI (its state: logs and agent.metrics_listen)",
    ),
    ("console_ui_color", "the agent has no terminal UI"),
    (
        "web_addr",
        "no local inspection UI (the agent's metrics: agent.metrics_listen)",
    ),
    (
        "inspect_db_size",
        "requests are not recorded for inspection",
    ),
    (
        "api_key",
        "there is no ngrok cloud API; the edge's admin API has its own keys",
    ),
    ("remote_management", "no cloud manages the agent"),
    (
        "crl_noverify",
        "the edge's certificate is checked against connect_cas, no CRL is fetched",
    ),
    ("dns_resolver_ips", "the agent uses the system's resolver"),
];

/// Sets the ignored keys of `tree`'s `agent:` section aside (the deserializers skip
/// them); the warning naming them, if any.
pub fn set_aside(tree: &mut Node) -> Option<String> {
    let Value::Map(root) = &mut tree.value else {
        return None;
    };
    let agent = root.iter_mut().find(|e| e.key == "agent")?;
    let Value::Map(entries) = &mut agent.value.value else {
        return None;
    };
    let mut named = Vec::new();
    for entry in entries.iter_mut() {
        if let Some((key, why)) = IGNORED.iter().find(|(k, _)| *k == entry.key) {
            entry.value.pruned = true;
            named.push(format!("agent.{key} ({why})"));
        }
    }
    (!named.is_empty()).then(|| {
        format!(
            "ignored, as they have no meaning for a self-hosted edge: {}",
            named.join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tree;

    #[test]
    fn cloud_only_keys_are_set_aside_with_one_warning_and_others_kept() {
        let mut t = tree::parse(
            "version: 3\nagent:\n  authtoken: x\n  update_channel: stable\n  web_addr: false\n  colour: blue\n",
        )
        .unwrap();
        let warning = set_aside(&mut t).unwrap();
        assert!(
            warning.contains("agent.update_channel (sluice is updated"),
            "{warning}"
        );
        assert!(
            warning.contains("agent.web_addr (no local inspection UI"),
            "{warning}"
        );
        assert!(!warning.contains("colour"), "{warning}");
        let agent = t.key("agent").unwrap();
        let Value::Map(entries) = &agent.value else {
            panic!()
        };
        let pruned: Vec<_> = entries
            .iter()
            .filter(|e| e.value.pruned)
            .map(|e| &e.key)
            .collect();
        assert_eq!(pruned, ["update_channel", "web_addr"]);
        let mut clean = tree::parse("version: 3\nagent:\n  authtoken: x\n").unwrap();
        assert_eq!(set_aside(&mut clean), None);
    }
}
