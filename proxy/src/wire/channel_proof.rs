//! How a data channel proves it belongs to a session without sending anything an
//! observer could reuse.
//!
//! At the welcome the edge gives the agent a 32-byte session secret over the TLS
//! control channel. Each data channel the agent opens carries a fresh sequence number
//! and `HMAC-SHA256(secret, "sluice-channel" ‖ session_id ‖ seq)`, never the secret
//! itself. The edge checks the MAC, then accepts each sequence number once
//! ([`ReplayWindow`]): someone who watched a plain-TCP channel go by (its hello is in
//! clear) can neither derive the secret nor replay that hello from another address.
//! Channels are dialled concurrently, so numbers arrive a little out of order; the
//! window accepts any unseen number within [`REPLAY_WINDOW`] of the highest seen.

use ring::hmac;

/// How far below the highest sequence number seen an unseen one is still accepted.
pub const REPLAY_WINDOW: u64 = 4096;

const LABEL: &[u8] = b"sluice-channel";

/// The proof for channel `seq` of session `session_id`.
pub fn prove(secret: &[u8; 32], session_id: u64, seq: u64) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, &message(session_id, seq));
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Whether `proof` is the proof for channel `seq` of session `session_id` (constant
/// time).
pub fn verify(secret: &[u8; 32], session_id: u64, seq: u64, proof: &[u8; 32]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, &message(session_id, seq), proof).is_ok()
}

fn message(session_id: u64, seq: u64) -> [u8; LABEL.len() + 16] {
    let mut m = [0u8; LABEL.len() + 16];
    m[..LABEL.len()].copy_from_slice(LABEL);
    m[LABEL.len()..LABEL.len() + 8].copy_from_slice(&session_id.to_be_bytes());
    m[LABEL.len() + 8..].copy_from_slice(&seq.to_be_bytes());
    m
}

/// Sequence numbers already used by a session's channels: the highest seen and a
/// bitmap of the [`REPLAY_WINDOW`] below it (the anti-replay window of IPsec, RFC 4303).
#[derive(Debug)]
pub struct ReplayWindow {
    highest: u64,
    seen: Box<[u64; (REPLAY_WINDOW / 64) as usize]>,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            highest: 0,
            seen: Box::new([0; (REPLAY_WINDOW / 64) as usize]),
        }
    }
}

/// Why a sequence number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Used before.
    Seen,
    /// Further below the highest seen than the window reaches (or 0).
    TooOld,
}

impl ReplayWindow {
    /// Marks `seq` used; refused if it was, or lies below the window. Call only after
    /// the proof verified, so a forger cannot move the window.
    pub fn accept(&mut self, seq: u64) -> Result<(), Replay> {
        if seq == 0 || seq + REPLAY_WINDOW <= self.highest {
            return Err(Replay::TooOld);
        }
        if seq > self.highest {
            let shift = seq - self.highest;
            if shift >= REPLAY_WINDOW {
                self.seen.fill(0);
            } else {
                for s in self.highest + 1..seq {
                    self.clear(s);
                }
            }
            self.highest = seq;
            self.clear(seq);
        }
        let (word, bit) = Self::slot(seq);
        if self.seen[word] & bit != 0 {
            return Err(Replay::Seen);
        }
        self.seen[word] |= bit;
        Ok(())
    }

    fn clear(&mut self, seq: u64) {
        let (word, bit) = Self::slot(seq);
        self.seen[word] &= !bit;
    }

    fn slot(seq: u64) -> (usize, u64) {
        let i = seq % REPLAY_WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_bind_secret_session_and_sequence() {
        let secret = [7u8; 32];
        let p = prove(&secret, 3, 10);
        assert!(verify(&secret, 3, 10, &p));
        assert!(!verify(&secret, 3, 11, &p));
        assert!(!verify(&secret, 4, 10, &p));
        assert!(!verify(&[8u8; 32], 3, 10, &p));
        assert_ne!(&p, &secret, "the proof is not the secret");
    }

    #[test]
    fn each_number_is_accepted_once_in_any_order_within_the_window() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(0), Err(Replay::TooOld));
        for seq in [5, 3, 4, 1, 2, 100, 50] {
            assert_eq!(w.accept(seq), Ok(()), "{seq}");
        }
        for seq in [5, 3, 4, 1, 2, 100, 50] {
            assert_eq!(w.accept(seq), Err(Replay::Seen), "{seq}");
        }
        assert_eq!(w.accept(99), Ok(()));
        assert_eq!(w.accept(100 + REPLAY_WINDOW), Ok(()));
        assert_eq!(w.accept(100), Err(Replay::TooOld));
        assert_eq!(w.accept(101), Ok(()), "unseen and still inside the window");
        assert_eq!(w.accept(101), Err(Replay::Seen));
    }

    #[test]
    fn matches_a_naive_set_on_a_shuffled_stream() {
        use rand::{seq::SliceRandom, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut seqs: Vec<u64> = (1..20_000).collect();
        // Mostly increasing, locally shuffled, with duplicates: what concurrent dials
        // and a replaying observer produce.
        for chunk in seqs.chunks_mut(64) {
            chunk.shuffle(&mut rng);
        }
        let dups: Vec<u64> = seqs.iter().step_by(7).copied().collect();
        seqs.extend(dups);
        let mut w = ReplayWindow::default();
        let mut used = std::collections::HashSet::new();
        let mut highest = 0;
        for s in seqs {
            let expected_ok = !used.contains(&s) && s + REPLAY_WINDOW > highest;
            assert_eq!(w.accept(s).is_ok(), expected_ok, "{s}");
            if expected_ok {
                used.insert(s);
                highest = highest.max(s);
            }
        }
    }
}
