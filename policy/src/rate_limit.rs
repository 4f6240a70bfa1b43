//! [`SlidingWindow`]: the counters of one `rate-limit` action, shared by every worker
//! thread of the edge. Each bucket (a client address, or whatever `bucket_key` names)
//! counts its requests in the current fixed window and remembers the previous one's
//! count; a request is admitted while `previous × (share of the previous window still
//! inside the sliding one) + current` is below the capacity, as ngrok's and
//! Cloudflare's sliding windows do. Buckets live in shards behind their own mutex, at
//! most [`MAX_BUCKETS`] in all: when a shard is full its stale buckets go first, then
//! the oldest one, so a flood of distinct keys costs bounded memory (and forgets the
//! least recently started windows first).
//!
//! The counters belong to the compiled policy: a new policy starts them afresh.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Buckets kept at most, over all shards.
pub const MAX_BUCKETS: usize = 100_000;
const SHARDS: usize = 16;

/// One bucket: which window it counts in, and the counts of that window and the one
/// before.
#[derive(Clone, Copy)]
struct Bucket {
    window: u64,
    current: u32,
    previous: u32,
}

/// The counters of one `rate-limit` action.
pub struct SlidingWindow {
    capacity: u32,
    rate: Duration,
    epoch: Instant,
    shards: Box<[Mutex<HashMap<String, Bucket>>]>,
}

impl std::fmt::Debug for SlidingWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlidingWindow")
            .field("capacity", &self.capacity)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl SlidingWindow {
    /// `capacity` requests per `rate` and bucket.
    pub fn new(capacity: u32, rate: Duration) -> SlidingWindow {
        SlidingWindow {
            capacity,
            rate,
            epoch: Instant::now(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Counts a request of `key` at `now` if the bucket has room; otherwise how long
    /// until it has (for `Retry-After`).
    pub fn admit(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let rate = self.rate.as_nanos().max(1);
        let since = now.saturating_duration_since(self.epoch).as_nanos();
        let window = (since / rate) as u64;
        let into = (since % rate) as f64 / rate as f64;
        let shard = &self.shards[shard_of(key)];
        let mut buckets = shard.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= MAX_BUCKETS / SHARDS {
            make_room(&mut buckets, window);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            window,
            current: 0,
            previous: 0,
        });
        if bucket.window != window {
            bucket.previous = if bucket.window + 1 == window {
                bucket.current
            } else {
                0
            };
            bucket.current = 0;
            bucket.window = window;
        }
        let estimate = f64::from(bucket.previous) * (1.0 - into) + f64::from(bucket.current);
        if estimate < f64::from(self.capacity) {
            bucket.current += 1;
            return Ok(());
        }
        // Room comes back as the previous window slides out (or, with none, when this
        // window ends).
        let wait = if bucket.previous > 0 && f64::from(bucket.current) < f64::from(self.capacity) {
            let need = (estimate - f64::from(self.capacity) + 1.0) / f64::from(bucket.previous);
            self.rate.mul_f64(need.clamp(0.0, 1.0))
        } else {
            self.rate.mul_f64(1.0 - into)
        };
        Err(wait.max(Duration::from_millis(1)))
    }
}

/// Drops the buckets whose windows are over (they would start afresh anyway), or,
/// when none are, the one whose window started first.
fn make_room(buckets: &mut HashMap<String, Bucket>, window: u64) {
    let before = buckets.len();
    buckets.retain(|_, b| b.window + 1 >= window);
    if buckets.len() == before {
        if let Some(oldest) = buckets
            .iter()
            .min_by_key(|(_, b)| b.window)
            .map(|(k, _)| k.clone())
        {
            buckets.remove(&oldest);
        }
    }
}

fn shard_of(key: &str) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key) as usize % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_capacity_per_window_then_refuses_with_a_wait() {
        let limiter = SlidingWindow::new(3, Duration::from_secs(10));
        let t0 = limiter.epoch;
        for _ in 0..3 {
            assert!(limiter.admit("a", t0).is_ok());
        }
        let wait = limiter.admit("a", t0).unwrap_err();
        assert!(wait <= Duration::from_secs(10) && wait > Duration::from_secs(9));
        // Another bucket is not affected.
        assert!(limiter.admit("b", t0).is_ok());
    }

    #[test]
    fn the_previous_window_slides_out_gradually() {
        let limiter = SlidingWindow::new(10, Duration::from_secs(10));
        let t0 = limiter.epoch;
        for _ in 0..10 {
            limiter.admit("a", t0).unwrap();
        }
        // A quarter into the next window, 7.5 of the previous 10 still count: admitted
        // at 7.5, 8.5 and 9.5, refused at 10.5.
        let t = t0 + Duration::from_millis(12_500);
        for _ in 0..3 {
            assert!(limiter.admit("a", t).is_ok());
        }
        assert!(limiter.admit("a", t).is_err());
        // Two windows later everything has slid out.
        let later = t0 + Duration::from_secs(30);
        for _ in 0..10 {
            assert!(limiter.admit("a", later).is_ok());
        }
        assert!(limiter.admit("a", later).is_err());
    }

    #[test]
    fn a_flood_of_keys_stays_bounded() {
        let limiter = SlidingWindow::new(1, Duration::from_secs(60));
        let t0 = limiter.epoch;
        for i in 0..(MAX_BUCKETS + 5_000) {
            limiter.admit(&format!("client-{i}"), t0).unwrap();
        }
        let held: usize = limiter.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(held <= MAX_BUCKETS, "{held}");
    }
}
