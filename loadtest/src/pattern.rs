//! The verification pattern: byte `i` of every stream is `i % 251`.
//!
//! 251 is prime, so the pattern never lines up with power-of-two buffer sizes: a
//! dropped, duplicated or reordered chunk shifts the phase and is caught. Requests of
//! `rr`, `connect` and `hold` start at a phase that changes per request, so a stale
//! buffer echoed twice is caught too.

/// Period of the pattern.
pub const PERIOD: usize = 251;

/// A buffer of `len + PERIOD` pattern bytes: `buf[p..p + len]` is the pattern at any
/// phase `p < PERIOD`.
#[must_use]
pub fn buffer(len: usize) -> Vec<u8> {
    (0..len + PERIOD).map(|i| (i % PERIOD) as u8).collect()
}

/// Whether `got` is the pattern starting at stream offset `offset`; `pattern` comes
/// from [`buffer`] with a length of at least `got.len()`.
#[must_use]
pub fn matches(pattern: &[u8], offset: u64, got: &[u8]) -> bool {
    let phase = (offset % PERIOD as u64) as usize;
    pattern[phase..phase + got.len()] == *got
}
