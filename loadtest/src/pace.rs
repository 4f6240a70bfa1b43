//! Open-loop pacing shared by `rr --rate` and `connect --rate`: loop `k` of `n`
//! starts its operations on a fixed schedule, one every `n / rate` seconds, staggered
//! by `k / n` of that interval, so that `n` loops together keep `rate` per second
//! however long each operation takes.
//!
//! The schedule is absolute (the next start is the previous *intended* start plus the
//! interval), so a late start does not lower the rate: the loop catches up. When an
//! operation starts late because the previous one ran long, the wait was the
//! service's doing and latency counts from the intended start (the
//! coordinated-omission correction of wrk2). When the loop was idle and only the
//! timer (millisecond resolution) made the start late, latency counts from the actual
//! start and the lateness is reported apart, as schedule lag.
use std::time::{Duration, Instant};

/// One loop's schedule.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    next: Instant,
    interval: Duration,
}

/// The start of one paced operation.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    /// When the schedule wanted it to start.
    pub intended: Instant,
    /// True when the loop waited for this slot (it was not already behind).
    pub idle: bool,
}

impl Slot {
    /// The latency to record for an operation of this slot started at `started` and
    /// finished at `done` (see the module docs).
    #[must_use]
    pub fn latency(&self, started: Instant, done: Instant) -> Duration {
        if self.idle {
            done.duration_since(started)
        } else {
            done.duration_since(self.intended)
        }
    }

    /// How far behind schedule the operation started.
    #[must_use]
    pub fn lag(&self, started: Instant) -> Duration {
        started.saturating_duration_since(self.intended)
    }
}

impl Schedule {
    /// The schedule of loop `k` of `n` sharing `rate` operations per second, all
    /// loops counted from `start`.
    #[must_use]
    pub fn new(start: Instant, k: usize, n: usize, rate: f64) -> Self {
        let interval = Duration::from_secs_f64(n as f64 / rate);
        Self {
            next: start + interval.mul_f64(k as f64 / n as f64),
            interval,
        }
    }

    /// Whether no slot is left before `end`.
    #[must_use]
    pub fn finished(&self, end: Instant) -> bool {
        self.next >= end
    }

    /// Waits for the next slot; `None` when it would start at or after `end`.
    /// A slot is spent whether or not its operation succeeds: an open loop does not
    /// retry late.
    pub async fn wait(&mut self, end: Instant) -> Option<Slot> {
        let intended = self.next;
        if intended >= end {
            return None;
        }
        self.next = intended + self.interval;
        let idle = Instant::now() < intended;
        if idle {
            monoio::time::sleep_until(monoio::time::Instant::from_std(intended)).await;
        }
        Some(Slot { intended, idle })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_are_staggered_and_together_keep_the_rate() {
        let start = Instant::now();
        let rate = 5_000.0;
        let n = 4;
        let mut starts: Vec<Instant> = (0..n)
            .flat_map(|k| {
                let s = Schedule::new(start, k, n, rate);
                (0..250).map(move |i| s.next + s.interval * i)
            })
            .collect();
        starts.sort();
        let span = starts[starts.len() - 1].duration_since(starts[0]);
        // 1,000 starts at 5,000/s: 999 gaps of 200 µs.
        assert!((span.as_secs_f64() - 999.0 / rate).abs() < 1e-6, "{span:?}");
        for w in starts.windows(2) {
            let gap = w[1].duration_since(w[0]).as_nanos();
            assert!((199_000..=201_000).contains(&gap), "gap {gap} ns");
        }
    }

    #[test]
    fn a_late_slot_counts_latency_from_its_intended_start() {
        let t0 = Instant::now();
        let late = Slot {
            intended: t0,
            idle: false,
        };
        let started = t0 + Duration::from_millis(3);
        let done = started + Duration::from_millis(1);
        assert_eq!(late.latency(started, done), Duration::from_millis(4));
        assert_eq!(late.lag(started), Duration::from_millis(3));
        let waited = Slot {
            intended: t0,
            idle: true,
        };
        assert_eq!(waited.latency(started, done), Duration::from_millis(1));
    }

    #[test]
    fn the_schedule_stops_at_the_end() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let start = Instant::now();
            let mut s = Schedule::new(start, 0, 1, 1_000.0);
            let end = start + Duration::from_millis(5);
            let mut slots = 0;
            while s.wait(end).await.is_some() {
                slots += 1;
            }
            assert_eq!(slots, 5);
        });
    }
}
