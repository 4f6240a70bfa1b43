//! The crate's one clock.
//!
//! - [`mono_ms`] / [`mono_us`]: a monotonic clock since the process started, for
//!   everything measured or compared in-process (suspicion, starvation, heartbeat
//!   tolerance, round trips, log throttling). Readings are plain integers, so state
//!   kept in atomics can hold them and pure logic can take them as `now` arguments
//!   (tests pass made-up values: a fake clock needs nothing more).
//! - [`wall_ms`]: milliseconds since the Unix epoch, for timestamps that are stored or
//!   shown (session start, audit events, records of the control plane). Never used to
//!   measure an interval: it can jump.
//!
//! The monotonic clock starts at [`MONO_START_MS`] (about 17 minutes), not 0, so a
//! reading is never 0 (0 means "unset" in the atomics that hold readings) and moments
//! shortly before the first reading can be expressed too.
//!
//! Deadlines handed to `monoio::time` (`timeout`, `sleep`) stay `std::time::Instant`,
//! the type that API takes.

use std::{sync::OnceLock, time::Instant};

/// What [`mono_ms`] reads at the first reading of the process.
pub const MONO_START_MS: u64 = 1 << 20;

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Milliseconds on the process's monotonic clock (never 0).
pub fn mono_ms() -> u64 {
    start().elapsed().as_millis() as u64 + MONO_START_MS
}

/// Microseconds on the same clock as [`mono_ms`] (`mono_us() / 1000 == mono_ms()`).
pub fn mono_us() -> u64 {
    start().elapsed().as_micros() as u64 + MONO_START_MS * 1000
}

/// Milliseconds since the Unix epoch, now (0 if the system clock is before 1970).
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_is_never_zero_and_agrees_in_both_units() {
        let (ms, us, ms_after) = (mono_ms(), mono_us(), mono_ms());
        assert!(ms >= MONO_START_MS);
        assert!(
            ms <= us / 1000 && us / 1000 <= ms_after,
            "{ms} {us} {ms_after}"
        );
        assert!(wall_ms() > 1_600_000_000_000);
    }
}
