//! Idle timeouts for forwarded streams without a clock read per chunk and without a
//! timer per stream: pumps bump a byte counter ([`Progress`]), and each worker thread
//! keeps one watchdog over the streams it runs, a hashed timing wheel of [`TICK`]
//! slots. The wheel looks at a stream's counter once per idle period and ends the
//! stream when the counter did not move for a whole period (so an idle stream ends
//! after one to two periods, give or take a tick). A watched stream costs one small
//! shared cell and a wheel entry, where a monoio timer of its own would hold 640
//! bytes aligned to 128 for as long as the stream lives. The watchdog task runs only
//! while its worker has streams to watch.

use std::{
    cell::{Cell, RefCell},
    future::{poll_fn, Future},
    pin::Pin,
    rc::{Rc, Weak},
    task::{Poll, Waker},
    time::Duration,
};

/// How often the watchdog turns the wheel (the timeout's granularity).
pub const TICK: Duration = Duration::from_millis(100);

/// Slots of the wheel: one turn is `SLOTS * TICK` (1.6 s); longer periods wait for
/// their turn in the slot they hash to. Each slot is visited once per turn, which is
/// also when the entries of streams and waits that ended leave the wheel: a short turn
/// keeps those few (a worker accepting 10,000 connections a second holds about 16,000
/// finished entries of ~80 bytes), at the price of touching each long-lived stream's
/// entry once per turn.
const SLOTS: usize = 16;

/// What the pumps and the watchdog share about one stream.
#[derive(Default)]
struct Shared {
    bytes: Cell<u64>,
    idle: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

/// Bytes moved so far by the pumps of one stream.
#[derive(Default)]
pub struct Progress(Rc<Shared>);

impl Progress {
    /// Records `n` bytes moved.
    #[inline]
    pub fn bump(&self, n: u64) {
        let bytes = &self.0.bytes;
        bytes.set(bytes.get().wrapping_add(n));
    }
}

/// Runs `work` to completion, or returns `None` once `progress` stood still for a
/// whole `period` (the work is then dropped). `period: None` never times out. Must
/// run on a monoio runtime (the worker's watchdog is a task of it).
pub async fn until_idle<F: Future>(
    period: Option<Duration>,
    progress: &Progress,
    mut work: Pin<&mut F>,
) -> Option<F::Output> {
    let Some(period) = period else {
        return Some(work.await);
    };
    let _watched = watch(&progress.0, period);
    poll_fn(|cx| {
        if let Poll::Ready(v) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if progress.0.idle.get() {
            return Poll::Ready(None);
        }
        progress.0.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    })
    .await
}

/// A deadline passed ([`within`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

/// `work`, unless `limit` passes first (give or take a [`TICK`]), on the worker's
/// wheel: for the waits every new connection goes through (a hello, a data channel,
/// a stream's status), where a monoio timeout would add 640 bytes aligned to 128 to
/// each of them. Must run on a monoio runtime.
pub async fn within<F: Future>(limit: Duration, work: F) -> Result<F::Output, TimedOut> {
    let work = std::pin::pin!(work);
    // A counter nobody moves: idle at the first check, a period after the start.
    until_idle(Some(limit), &Progress::default(), work)
        .await
        .ok_or(TimedOut)
}

/// A stream on the wheel: checked at tick `due`, again `period` ticks later while its
/// counter moves.
struct Entry {
    stream: Weak<Shared>,
    period: u64,
    due: u64,
    seen: u64,
}

/// One worker's watchdog.
struct Wheel {
    slots: Vec<Vec<Entry>>,
    /// The last tick processed, counted from `origin`.
    now: u64,
    origin: std::time::Instant,
    /// Streams being watched (entries of streams that ended leave the wheel when
    /// their slot next comes round).
    watched: usize,
    /// Whether the watchdog task is running.
    running: bool,
    /// The runtime the watchdog task runs on ([`crate::runtime::runtime_generation`]).
    runtime: u64,
}

impl Wheel {
    fn new() -> Wheel {
        Wheel {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            now: 0,
            origin: std::time::Instant::now(),
            watched: 0,
            running: false,
            runtime: 0,
        }
    }

    fn insert(&mut self, entry: Entry) {
        self.slots[(entry.due % SLOTS as u64) as usize].push(entry);
    }

    /// Processes every tick up to `target`: streams due that moved go round again,
    /// those that did not are marked idle (their wakers returned, to wake outside the
    /// borrow), those that ended leave.
    fn advance(&mut self, target: u64, idle: &mut Vec<Waker>) {
        // Past a whole turn every slot has been seen once: entries due earlier are
        // handled by the last turn's pass.
        let from = self.now.max(target.saturating_sub(SLOTS as u64));
        for tick in from + 1..=target {
            let slot = std::mem::take(&mut self.slots[(tick % SLOTS as u64) as usize]);
            for mut entry in slot {
                let Some(stream) = entry.stream.upgrade() else {
                    continue;
                };
                if entry.due > tick {
                    self.insert(entry);
                    continue;
                }
                let bytes = stream.bytes.get();
                if bytes != entry.seen {
                    entry.seen = bytes;
                    // From the clock, not from the tick being caught up on: a late
                    // watchdog must not check a stream twice in one pass.
                    entry.due = target + entry.period;
                    self.insert(entry);
                } else {
                    stream.idle.set(true);
                    idle.extend(stream.waker.take());
                }
            }
        }
        self.now = self.now.max(target);
    }

    /// The tick the clock is at now.
    fn clock(&self) -> u64 {
        (self.origin.elapsed().as_nanos() / TICK.as_nanos()) as u64
    }
}

thread_local! {
    static WHEEL: RefCell<Wheel> = RefCell::new(Wheel::new());
}

/// A stream on the wheel, counted as watched until dropped.
struct Watched;

impl Drop for Watched {
    fn drop(&mut self) {
        // The thread may be exiting (its wheel gone): nothing left to count then.
        let _ = WHEEL.try_with(|wheel| wheel.borrow_mut().watched -= 1);
    }
}

/// Puts `stream` on this worker's wheel, starting the watchdog if it was not running.
fn watch(stream: &Rc<Shared>, period: Duration) -> Watched {
    let period = period.as_nanos().div_ceil(TICK.as_nanos()).max(1) as u64;
    let start = WHEEL.with(|wheel| {
        let mut wheel = wheel.borrow_mut();
        let now = wheel.clock().max(wheel.now);
        wheel.insert(Entry {
            stream: Rc::downgrade(stream),
            period,
            // The current tick has partly passed: one more, never less than a period.
            due: now + period + 1,
            seen: stream.bytes.get(),
        });
        wheel.watched += 1;
        // A watchdog of an earlier runtime of this thread went with it (tests run
        // several in turn on one thread): this runtime needs its own.
        let runtime = crate::runtime::runtime_generation();
        let start = !wheel.running || wheel.runtime != runtime;
        if start {
            wheel.running = true;
            wheel.runtime = runtime;
        }
        start.then_some(runtime)
    });
    if let Some(runtime) = start {
        drop(monoio::spawn(watchdog(runtime)));
    }
    Watched
}

/// Turns this worker's wheel every [`TICK`] while it has streams on it (and no later
/// runtime of this thread took the wheel over).
async fn watchdog(runtime: u64) {
    let mut idle = Vec::new();
    loop {
        monoio::time::sleep(TICK).await;
        let more = WHEEL.with(|wheel| {
            let mut wheel = wheel.borrow_mut();
            if wheel.runtime != runtime {
                return false;
            }
            let target = wheel.clock();
            wheel.advance(target, &mut idle);
            wheel.running = wheel.watched > 0;
            wheel.running
        });
        for waker in idle.drain(..) {
            waker.wake();
        }
        if !more {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::runtime::{block_on, Driver};

    /// Longer than any watched stream here may take to end.
    const NEVER: Duration = Duration::from_secs(20);

    /// A stream that never ends by itself: it bumps `progress` every 50 ms until
    /// `busy_for` has passed, then falls silent.
    async fn stream(progress: &Progress, busy_for: Duration) {
        let start = Instant::now();
        loop {
            monoio::time::sleep(Duration::from_millis(50)).await;
            if start.elapsed() < busy_for {
                progress.bump(1);
            }
        }
    }

    /// How long `stream` ran under [`until_idle`] with `period`, and whether it was
    /// ended for idleness.
    async fn run(period: Duration, busy_for: Duration) -> (bool, Duration) {
        let progress = Progress::default();
        let started = Instant::now();
        let work = std::pin::pin!(stream(&progress, busy_for));
        let ended = monoio::time::timeout(NEVER, until_idle(Some(period), &progress, work));
        (
            ended.await.expect("never ended").is_none(),
            started.elapsed(),
        )
    }

    /// Waits until this worker's watchdog stopped.
    async fn watchdog_stopped() {
        let deadline = Instant::now() + Duration::from_secs(5);
        while WHEEL.with(|w| w.borrow().running) {
            assert!(Instant::now() < deadline, "the watchdog kept running");
            monoio::time::sleep(TICK).await;
        }
        WHEEL.with(|w| assert_eq!(w.borrow().watched, 0));
    }

    #[test]
    fn a_silent_stream_ends_after_one_to_two_periods_and_a_busy_one_lives_on() {
        block_on(Driver::Legacy, || async {
            let period = Duration::from_millis(300);
            let ((silent_idle, silent_after), (busy_idle, busy_after)) =
                monoio::join!(run(period, Duration::ZERO), run(period, period * 4));
            assert!(silent_idle && busy_idle);
            assert!(silent_after >= period, "ended early: {silent_after:?}");
            // Loose upper bounds: a shared machine may wake the worker late.
            let late = Duration::from_secs(5);
            assert!(silent_after < late, "ended late: {silent_after:?}");
            // Moving for 4 periods kept it alive; silent after that, it ended.
            assert!(busy_after >= period * 4, "ended while busy: {busy_after:?}");
            assert!(busy_after < period * 4 + late, "ended late: {busy_after:?}");
            watchdog_stopped().await;
        })
        .unwrap();
    }

    #[test]
    fn within_ends_slow_work_at_its_limit_and_returns_quick_work() {
        // Twice on one thread, each time on a new runtime: the first runtime's
        // watchdog went with it, and the second one gets its own.
        for driver in [Driver::Legacy, Driver::Legacy] {
            block_on(driver, || async {
                let limit = Duration::from_millis(300);
                let started = Instant::now();
                let slow =
                    monoio::time::timeout(NEVER, within(limit, std::future::pending::<()>()));
                assert_eq!(slow.await.expect("never ended"), Err(TimedOut));
                let waited = started.elapsed();
                assert!(waited >= limit, "ended early: {waited:?}");
                assert_eq!(within(limit, async { 9 }).await, Ok(9));
            })
            .unwrap();
        }
    }

    #[test]
    fn work_that_finishes_leaves_the_wheel_and_no_period_never_times_out() {
        block_on(Driver::Legacy, || async {
            let progress = Progress::default();
            let hour = Some(Duration::from_secs(3600));
            let done = until_idle(hour, &progress, std::pin::pin!(async { 7 })).await;
            assert_eq!(done, Some(7));
            let later = async {
                monoio::time::sleep(Duration::from_millis(500)).await;
                8
            };
            let short = Some(Duration::from_millis(100));
            let unwatched = until_idle(None, &progress, std::pin::pin!(later)).await;
            assert_eq!(unwatched, Some(8), "no period: silence never ends the work");
            watchdog_stopped().await;
            // A stream watched after the watchdog stopped starts it again.
            let silent = std::pin::pin!(std::future::pending::<()>());
            let ended = monoio::time::timeout(NEVER, until_idle(short, &progress, silent));
            assert_eq!(ended.await.expect("never ended"), None);
            watchdog_stopped().await;
        })
        .unwrap();
    }
}
