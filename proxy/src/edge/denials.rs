//! The clients an endpoint refused lately, for the operator console's endpoint page:
//! one entry per client address (the newest [`CAPACITY`]), with the last cause, the
//! rule that decided and how often. Counting every refusal is the endpoint counters'
//! job; this table only names who was refused, so under a flood a worker that finds
//! it locked by another skips its entry rather than wait (the `skipped` count says how
//! many), and its size never grows with the flood.

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

/// Distinct clients kept per endpoint; the least recently refused is forgotten first.
pub const CAPACITY: usize = 32;

/// Longest rule name kept (names come from policies; they are cut at a char boundary).
const MAX_RULE_NAME: usize = 64;

/// One refused client.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Denial {
    /// The client's address.
    pub client: IpAddr,
    /// Why, as the `cause` of the log line (`not-in-allow-list`, `max_connections_per_ip`…).
    pub cause: &'static str,
    /// Where the refusal came from: `endpoint` (its policy or limits) or the agent
    /// endpoint's internal URL (its own policy).
    pub by: String,
    /// The deciding rule's name, or its index as `#N` (empty for limits).
    pub rule: String,
    /// Refusals of this client since it entered the table.
    pub count: u64,
    /// When it was last refused, ms since the epoch.
    pub last_ms: i64,
}

/// The table.
#[derive(Default)]
pub struct RecentDenials {
    entries: Mutex<Vec<Denial>>,
    skipped: AtomicU64,
}

impl std::fmt::Debug for RecentDenials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecentDenials").finish_non_exhaustive()
    }
}

/// What is being refused, as [`RecentDenials::record`] takes it.
pub struct Refusal<'a> {
    /// The client.
    pub client: IpAddr,
    /// Why.
    pub cause: &'static str,
    /// `endpoint` or the agent endpoint's internal URL.
    pub by: &'a str,
    /// The rule's index, if a rule decided.
    pub rule: Option<usize>,
    /// The rule's name, if it has one.
    pub rule_name: Option<&'a str>,
}

impl RecentDenials {
    /// Notes one refusal (skipped when another thread holds the table).
    pub fn record(&self, refusal: Refusal<'_>) {
        let Ok(mut entries) = self.entries.try_lock() else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let now = crate::clock::wall_ms();
        let rule = match (refusal.rule_name, refusal.rule) {
            (Some(name), _) => cut(name, MAX_RULE_NAME).to_string(),
            (None, Some(i)) => format!("#{i}"),
            (None, None) => String::new(),
        };
        if let Some(at) = entries.iter().position(|d| d.client == refusal.client) {
            let mut entry = entries.remove(at);
            entry.count += 1;
            entry.last_ms = now;
            entry.cause = refusal.cause;
            if entry.by != refusal.by {
                entry.by = refusal.by.to_string();
            }
            entry.rule = rule;
            entries.push(entry);
            return;
        }
        if entries.len() == CAPACITY {
            entries.remove(0);
        }
        entries.push(Denial {
            client: refusal.client,
            cause: refusal.cause,
            by: refusal.by.to_string(),
            rule,
            count: 1,
            last_ms: now,
        });
    }

    /// The table, most recently refused first.
    pub fn snapshot(&self) -> Vec<Denial> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.iter().rev().cloned().collect()
    }

    /// Refusals not entered because the table was busy.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refuse(t: &RecentDenials, ip: &str, cause: &'static str) {
        t.record(Refusal {
            client: ip.parse().unwrap(),
            cause,
            by: "endpoint",
            rule: Some(1),
            rule_name: None,
        });
    }

    #[test]
    fn one_entry_per_client_newest_first_and_bounded() {
        let t = RecentDenials::default();
        refuse(&t, "10.0.0.1", "deny-action");
        refuse(&t, "10.0.0.2", "not-in-allow-list");
        refuse(&t, "10.0.0.1", "denied-by-cidr");
        let s = t.snapshot();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].client.to_string(), "10.0.0.1");
        assert_eq!(
            (s[0].count, s[0].cause, s[0].rule.as_str()),
            (2, "denied-by-cidr", "#1")
        );
        assert_eq!(s[1].count, 1);

        for i in 0..100u32 {
            refuse(
                &t,
                &std::net::Ipv4Addr::from(0x0b00_0000 + i).to_string(),
                "deny-action",
            );
        }
        let s = t.snapshot();
        assert_eq!(s.len(), CAPACITY);
        assert_eq!(s[0].client.to_string(), "11.0.0.99");
        assert!(s.iter().all(|d| d.client.to_string().starts_with("11.")));
    }

    #[test]
    fn long_rule_names_are_cut_on_a_char_boundary() {
        let t = RecentDenials::default();
        let name = "é".repeat(100);
        t.record(Refusal {
            client: "::1".parse().unwrap(),
            cause: "deny-action",
            by: "tcp://db.internal:5432",
            rule: Some(0),
            rule_name: Some(&name),
        });
        let s = t.snapshot();
        assert!(s[0].rule.len() <= MAX_RULE_NAME && !s[0].rule.is_empty());
        assert_eq!(s[0].by, "tcp://db.internal:5432");
    }
}
