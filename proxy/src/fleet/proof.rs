//! How an edge proves a peer link's opening comes from an edge of its fleet and is
//! meant for the edge that receives it: every opening carries `HMAC-SHA256(fleet key,
//! "sluice-peer" ‖ from ‖ to ‖ to_boot ‖ client ‖ server ‖ url ‖ at_ms ‖ nonce)`, never
//! the key. `to` and `to_boot` are the receiving edge's name and the random number it
//! drew at start (published with its routes): an opening captured on its way to one
//! edge is refused by any other, and by the same edge after a restart. The receiving
//! edge checks the MAC with its own name and boot number, refuses an opening whose
//! time is more than [`WINDOW_MS`] from its own clock, and accepts each (edge, nonce)
//! once within that window ([`ReplayGuard`]): someone who watched an opening go by on
//! a plain link can neither forge another nor replay it.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

use ring::hmac;

use crate::wire::StreamStart;

/// How far an opening's time may be from the receiver's clock, either way.
pub const WINDOW_MS: u64 = 30_000;
/// Openings remembered at most; beyond, new ones are refused until old ones age out
/// (fail closed).
pub const MAX_REMEMBERED: usize = 1_000_000;

const LABEL: &[u8] = b"sluice-peer";

/// What an opening's proof covers.
pub struct Opening<'a> {
    /// The sending edge.
    pub from: &'a str,
    /// The receiving edge.
    pub to: &'a str,
    /// The receiving edge's boot number.
    pub to_boot: u64,
    /// The sender's wall clock, ms.
    pub at_ms: u64,
    /// Random, once per opening.
    pub nonce: u64,
    /// The stream.
    pub start: &'a StreamStart,
}

/// The proof of an opening.
pub fn prove(key: &[u8; 32], opening: &Opening<'_>) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&key, &message(opening));
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Whether `proof` is the proof of that opening (constant time).
pub fn verify(key: &[u8; 32], opening: &Opening<'_>, proof: &[u8; 32]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::verify(&key, &message(opening), proof).is_ok()
}

fn message(o: &Opening<'_>) -> Vec<u8> {
    let mut m = Vec::with_capacity(160);
    m.extend_from_slice(LABEL);
    for field in [
        o.from,
        o.to,
        &o.start.client.to_string(),
        &o.start.server.to_string(),
        &o.start.internal_url,
    ] {
        m.extend_from_slice(&(field.len() as u32).to_be_bytes());
        m.extend_from_slice(field.as_bytes());
    }
    m.extend_from_slice(&o.to_boot.to_be_bytes());
    m.extend_from_slice(&o.at_ms.to_be_bytes());
    m.extend_from_slice(&o.nonce.to_be_bytes());
    m
}

/// Why an opening with a valid proof was refused anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// Its time is outside the window (a replay of an old one, or clocks apart).
    OutOfWindow,
    /// Seen before.
    Replayed,
    /// Too many openings remembered.
    Full,
}

impl Stale {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Stale::OutOfWindow => "opening time outside the window (clocks apart, or a replay)",
            Stale::Replayed => "opening replayed",
            Stale::Full => "too many openings to remember",
        }
    }
}

/// The openings accepted within the window.
#[derive(Default)]
pub struct ReplayGuard {
    seen: Mutex<HashMap<(String, u64), u64>>,
    /// When entries older than the window were last dropped (wall ms).
    pruned_at: AtomicU64,
}

impl ReplayGuard {
    /// Admits the opening (`edge`, `nonce`) made at `at_ms`, at `now_ms` on this
    /// edge's clock, once.
    pub fn admit(&self, edge: &str, nonce: u64, at_ms: u64, now_ms: u64) -> Result<(), Stale> {
        if at_ms.abs_diff(now_ms) > WINDOW_MS {
            return Err(Stale::OutOfWindow);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if now_ms.saturating_sub(self.pruned_at.load(Ordering::Relaxed)) > WINDOW_MS {
            seen.retain(|_, at| now_ms.saturating_sub(*at) <= WINDOW_MS);
            self.pruned_at.store(now_ms, Ordering::Relaxed);
        }
        if seen.len() >= MAX_REMEMBERED {
            return Err(Stale::Full);
        }
        match seen.entry((edge.to_string(), nonce)) {
            std::collections::hash_map::Entry::Occupied(_) => Err(Stale::Replayed),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(at_ms);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> StreamStart {
        StreamStart {
            client: "203.0.113.7:5555".parse().unwrap(),
            server: "198.51.100.1:21001".parse().unwrap(),
            internal_url: "tcp://db.internal:5432".into(),
        }
    }

    #[test]
    fn a_proof_holds_for_its_opening_only() {
        let key = [7u8; 32];
        let start = start();
        let opening = || Opening {
            from: "edge-a",
            to: "edge-b",
            to_boot: 99,
            at_ms: 1000,
            nonce: 5,
            start: &start,
        };
        let proof = prove(&key, &opening());
        assert!(verify(&key, &opening(), &proof));
        assert!(!verify(&[8u8; 32], &opening(), &proof));
        assert!(!verify(
            &key,
            &Opening {
                from: "edge-c",
                ..opening()
            },
            &proof
        ));
        assert!(
            !verify(
                &key,
                &Opening {
                    to: "edge-c",
                    ..opening()
                },
                &proof
            ),
            "another receiver"
        );
        assert!(
            !verify(
                &key,
                &Opening {
                    to_boot: 100,
                    ..opening()
                },
                &proof
            ),
            "after a restart"
        );
        assert!(!verify(
            &key,
            &Opening {
                at_ms: 1001,
                ..opening()
            },
            &proof
        ));
        assert!(!verify(
            &key,
            &Opening {
                nonce: 6,
                ..opening()
            },
            &proof
        ));
        let mut other = start.clone();
        other.internal_url = "tcp://other.internal:5432".into();
        assert!(!verify(
            &key,
            &Opening {
                start: &other,
                ..opening()
            },
            &proof
        ));
        other = start.clone();
        other.client = "203.0.113.8:5555".parse().unwrap();
        assert!(!verify(
            &key,
            &Opening {
                start: &other,
                ..opening()
            },
            &proof
        ));
    }

    #[test]
    fn each_opening_is_admitted_once_and_only_within_the_window() {
        let guard = ReplayGuard::default();
        let now = 10 * WINDOW_MS;
        assert_eq!(guard.admit("edge-a", 1, now, now), Ok(()));
        assert_eq!(guard.admit("edge-a", 1, now, now + 5), Err(Stale::Replayed));
        assert_eq!(
            guard.admit("edge-b", 1, now, now),
            Ok(()),
            "another edge's nonce"
        );
        assert_eq!(
            guard.admit("edge-a", 2, now - WINDOW_MS - 1, now),
            Err(Stale::OutOfWindow)
        );
        assert_eq!(
            guard.admit("edge-a", 3, now + WINDOW_MS + 1, now),
            Err(Stale::OutOfWindow)
        );
        // Entries older than the window are dropped; the old opening is still refused
        // by its time.
        let later = now + 3 * WINDOW_MS;
        assert_eq!(guard.admit("edge-a", 4, later, later), Ok(()));
        assert_eq!(guard.seen.lock().unwrap().len(), 1);
        assert_eq!(
            guard.admit("edge-a", 1, now, later),
            Err(Stale::OutOfWindow)
        );
    }
}
