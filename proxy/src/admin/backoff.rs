//! Failed API keys per client, without I/O and without a clock (`now` is passed in):
//! [`AuthFailures`] decides when a client is held off (answered 429 without its key
//! being checked) and for how long, and when an `admin.auth_failed` audit event is due,
//! so that one client stores at most one per window.
//!
//! A client is an IPv4 address or an IPv6 /64 (one host commonly owns a whole /64).
//! Wrong keys count toward a hold-off; missing keys are only audited. After
//! `failures` wrong keys within `window`, the client is held off for `initial`; each
//! further wrong key before it is forgotten holds it off again for twice as long, up
//! to `max`. A right key resets the count. A client is forgotten once it has been quiet
//! (no failure, no hold-off, nothing to audit) for a window. At most [`CAPACITY`]
//! clients are tracked; failures of others are audited together as `other` and do not
//! hold anyone off.

use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    time::{Duration, Instant},
};

/// Most clients tracked at once.
pub const CAPACITY: usize = 4096;

/// `admin.auth_backoff`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffSettings {
    /// Wrong keys within `window` before the first hold-off (at least 1).
    pub failures: u32,
    /// How long failures are remembered; also the audit interval per client.
    pub window: Duration,
    /// First hold-off.
    pub initial: Duration,
    /// Longest hold-off.
    pub max: Duration,
}

impl Default for BackoffSettings {
    fn default() -> Self {
        Self {
            failures: 5,
            window: Duration::from_secs(60),
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

/// Who failed: an IPv4 address, an IPv6 /64, or any untracked client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// One tracked address or /64.
    Ip(IpAddr),
    /// A client beyond [`CAPACITY`].
    Other,
}

impl Client {
    /// The tracking key of `ip` (IPv4-mapped IPv6 counts as IPv4).
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Client::Ip(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::Ip(IpAddr::V4(v4)),
                None => Client::Ip(IpAddr::V6((u128::from(v6) & !0u128 << 64).into())),
            },
        }
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Client::Ip(ip @ IpAddr::V4(_)) => write!(f, "{ip}"),
            Client::Ip(ip) => write!(f, "{ip}/64"),
            Client::Other => f.write_str("other"),
        }
    }
}

/// What to do about one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The client is held off from now for this long.
    pub held_for: Option<Duration>,
    /// Store an audit event now, covering this many failures (this one included).
    pub audit: Option<u32>,
    /// The key it was counted under.
    pub client: Client,
}

#[derive(Debug)]
struct Record {
    /// Wrong keys since `window_start`.
    failures: u32,
    window_start: Instant,
    /// Hold-offs so far (each doubles the next).
    strikes: u32,
    held_until: Option<Instant>,
    last_failure: Instant,
    audit: Audit,
}

/// Audit aggregation of one client.
#[derive(Debug, Default)]
struct Audit {
    stored_at: Option<Instant>,
    pending: u32,
}

impl Audit {
    /// Counts one failure; `Some(n)` when an event covering `n` is due now.
    fn count(&mut self, now: Instant, window: Duration) -> Option<u32> {
        self.pending += 1;
        self.due(now, window)
    }

    fn due(&mut self, now: Instant, window: Duration) -> Option<u32> {
        let quiet = self.stored_at.is_none_or(|t| now >= t + window);
        if self.pending == 0 || !quiet {
            return None;
        }
        self.stored_at = Some(now);
        Some(std::mem::take(&mut self.pending))
    }

    fn busy(&self, now: Instant, window: Duration) -> bool {
        self.pending > 0 || self.stored_at.is_some_and(|t| now < t + window)
    }
}

/// Failed keys of every tracked client.
#[derive(Debug)]
pub struct AuthFailures {
    settings: BackoffSettings,
    clients: HashMap<IpAddr, Record>,
    other: Audit,
}

impl AuthFailures {
    /// Nothing failed yet.
    pub fn new(settings: BackoffSettings) -> Self {
        Self {
            settings,
            clients: HashMap::new(),
            other: Audit::default(),
        }
    }

    /// How much longer `client` is held off, if it is.
    pub fn held(&self, client: Client, now: Instant) -> Option<Duration> {
        let Client::Ip(ip) = client else { return None };
        let until = self.clients.get(&ip)?.held_until?;
        (until > now).then(|| until - now)
    }

    /// A failed authentication from `ip`: `wrong_key` (a key was given and matched
    /// none) counts toward a hold-off, a missing key is only audited.
    pub fn failure(&mut self, ip: IpAddr, wrong_key: bool, now: Instant) -> Failure {
        let s = self.settings;
        let Client::Ip(key) = Client::of(ip) else {
            unreachable!("Client::of is always an address")
        };
        if !self.clients.contains_key(&key) && self.clients.len() >= CAPACITY {
            return Failure {
                held_for: None,
                audit: self.other.count(now, s.window),
                client: Client::Other,
            };
        }
        let r = self.clients.entry(key).or_insert(Record {
            failures: 0,
            window_start: now,
            strikes: 0,
            held_until: None,
            last_failure: now,
            audit: Audit::default(),
        });
        r.last_failure = now;
        let mut held_for = None;
        if wrong_key {
            if now >= r.window_start + s.window {
                r.failures = 0;
                r.window_start = now;
            }
            r.failures += 1;
            let threshold = if r.strikes > 0 { 1 } else { s.failures.max(1) };
            if r.failures >= threshold {
                let hold = s
                    .initial
                    .saturating_mul(1u32 << r.strikes.min(20))
                    .min(s.max);
                r.held_until = Some(now + hold);
                r.strikes += 1;
                r.failures = 0;
                r.window_start = now;
                held_for = Some(hold);
            }
        }
        Failure {
            held_for,
            audit: r.audit.count(now, s.window),
            client: Client::Ip(key),
        }
    }

    /// A right key from `ip`: its failures and hold-offs are forgotten (failures not
    /// yet audited still will be).
    pub fn success(&mut self, ip: IpAddr) {
        let Client::Ip(key) = Client::of(ip) else {
            return;
        };
        if let Some(r) = self.clients.get_mut(&key) {
            r.failures = 0;
            r.strikes = 0;
            r.held_until = None;
        }
    }

    /// Audit events now due (client, failures they cover), and quiet clients forgotten.
    /// Called every second or so.
    pub fn sweep(&mut self, now: Instant) -> Vec<(Client, u32)> {
        let window = self.settings.window;
        let mut due = Vec::new();
        self.clients.retain(|ip, r| {
            if let Some(n) = r.audit.due(now, window) {
                due.push((Client::Ip(*ip), n));
            }
            let held = r.held_until.is_some_and(|t| now < t);
            held || r.audit.busy(now, window) || now < r.last_failure + window
        });
        if let Some(n) = self.other.due(now, window) {
            due.push((Client::Other, n));
        }
        due
    }

    /// Clients tracked now.
    pub fn tracked(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests;
