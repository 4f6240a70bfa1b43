//! Client load for end-to-end tests: threads that each make one short echo connection
//! after another until stopped, recording what succeeded, what failed (and when it
//! started) and which connections were slow.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use crate::client;

/// A connection taking at least this long is recorded as slow (by [`Load::start`]).
pub const SLOW: Duration = Duration::from_secs(1);

/// Pause of a client thread after a failed connection.
const FAILURE_PAUSE: Duration = Duration::from_millis(5);

#[derive(Default)]
struct Seen {
    ok: AtomicUsize,
    failures: Mutex<Vec<(Instant, String)>>,
    slow: Mutex<Vec<(Instant, Duration)>>,
}

/// Clients in a loop; stopped and joined by [`Load::finish`] (or on drop).
pub struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Starts `threads` client threads against `public`.
    pub fn start(public: SocketAddr, threads: usize) -> Load {
        Load::start_with_slow(public, threads, SLOW)
    }

    /// Like [`Load::start`], recording connections that take at least `slow` as slow.
    pub fn start_with_slow(public: SocketAddr, threads: usize, slow: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let threads = (0..threads)
            .map(|t| {
                let (stop, seen) = (stop.clone(), seen.clone());
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let payload = format!("client {t} connection {i}");
                        let started = Instant::now();
                        match client::echo_ok(None, public, payload.as_bytes()) {
                            Ok(()) => {
                                seen.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                seen.failures
                                    .lock()
                                    .unwrap()
                                    .push((started, format!("{payload}: {e}")));
                                // Refused while nothing listens (a restart): retry at
                                // a modest pace rather than spin.
                                std::thread::sleep(FAILURE_PAUSE);
                            }
                        }
                        let took = started.elapsed();
                        if took >= slow {
                            seen.slow.lock().unwrap().push((started, took));
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            seen,
            threads,
        }
    }

    /// Connections that succeeded so far.
    pub fn ok(&self) -> usize {
        self.seen.ok.load(Ordering::Relaxed)
    }

    /// Connections that failed so far.
    pub fn failed(&self) -> usize {
        self.seen.failures.lock().unwrap().len()
    }

    /// Waits until `more` further connections succeeded (bounded: 30 s).
    pub fn wait_for_more(&self, more: usize, what: &str) {
        let target = self.ok() + more;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.ok() < target {
            assert!(
                Instant::now() < deadline,
                "{what}: only {} of {target} connections succeeded; failures: {:?}",
                self.ok(),
                self.seen.failures.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How long each slow connection started after `after` took.
    pub fn slow_started_after(&self, after: Instant) -> Vec<Duration> {
        let slow = self.seen.slow.lock().unwrap();
        slow.iter()
            .filter(|(started, _)| *started > after)
            .map(|(_, took)| *took)
            .collect()
    }

    /// Stops the clients; returns the successes and the failures with their start.
    pub fn finish(mut self) -> (usize, Vec<(Instant, String)>) {
        self.stop();
        let failures = self.seen.failures.lock().unwrap().clone();
        (self.ok(), failures)
    }

    /// Stops the clients and waits for the connections in flight; what they saw stays
    /// readable.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            // A client thread that panicked stopped adding load: that fails the test
            // (unless it is failing already).
            if let Err(panic) = t.join() {
                if !std::thread::panicking() {
                    std::panic::resume_unwind(panic);
                }
            }
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}
