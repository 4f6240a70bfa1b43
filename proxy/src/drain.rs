//! Graceful drain on SIGTERM: the caller stops new work (the edge closes its public
//! listeners, the agent leaves the edge so its endpoints are unbound), then the main
//! thread waits until in-flight streams reach zero or the drain timeout passes. A
//! second SIGINT/SIGTERM during the drain ends it at once.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use crate::signals;

/// Streams being forwarded right now.
#[derive(Default, Debug)]
pub struct InFlight(AtomicUsize);

impl InFlight {
    /// Counts a stream until the returned guard drops.
    ///
    /// Sequentially consistent with [`Self::get`]: a worker that enters and then reads
    /// a "draining" flag, and a drain that sets the flag and then reads the count, can
    /// not both miss each other.
    pub fn enter(&self) -> InFlightGuard<'_> {
        self.0.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self)
    }

    /// Streams in flight now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Decrements its [`InFlight`] on drop.
pub struct InFlightGuard<'a>(&'a InFlight);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    /// Every stream finished.
    Drained,
    /// The timeout passed with this many streams still open.
    TimedOut(usize),
    /// A second signal asked to stop now, with this many streams still open.
    Interrupted(usize),
}

/// Waits (on the main thread) for `in_flight` to reach zero, up to `timeout`.
pub fn wait(in_flight: &InFlight, timeout: Duration) -> DrainEnd {
    let deadline = Instant::now() + timeout;
    loop {
        let open = in_flight.get();
        if open == 0 {
            return DrainEnd::Drained;
        }
        let now = Instant::now();
        if now >= deadline {
            return DrainEnd::TimedOut(open);
        }
        let step = (deadline - now).min(Duration::from_millis(50));
        if signals::wait_for_termination_timeout(step).is_some() {
            return DrainEnd::Interrupted(in_flight.get());
        }
    }
}
