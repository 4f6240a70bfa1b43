//! Measurement: each worker owns a [`Recorder`] (hdrhistograms in nanoseconds,
//! one-second buckets, byte and error counts); at the end they are merged into one
//! [`RunResult`]. Only operations *sent* inside the measured window (after the
//! warm-up, before the end) count towards latency, rate and the timeline; failures
//! are counted whenever they happen, warm-up included.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{progress::Progress, runtime::DriverKind, ErrorCounts, Failure};

/// Largest latency recorded exactly (100 s, in ns); larger ones saturate.
const MAX_NS: u64 = 100_000_000_000;
/// Distinct failure messages kept for the report.
const MAX_SAMPLES: usize = 16;

/// A fresh nanosecond histogram (3 significant digits, 1 ns to 100 s).
#[must_use]
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("static histogram bounds are valid")
}

/// The measured window of a run.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// When measuring starts (after the warm-up).
    pub start: Instant,
    /// When the run ends.
    pub end: Instant,
}

impl Window {
    /// A window starting after `warmup` from now and lasting `duration`.
    #[must_use]
    pub fn after(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now() + warmup;
        Self {
            start,
            end: start + duration,
        }
    }

    /// Whether `t` falls inside.
    #[must_use]
    pub fn contains(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }

    fn bucket(&self, t: Instant) -> usize {
        t.duration_since(self.start).as_secs() as usize
    }

    /// Number of one-second buckets.
    #[must_use]
    pub fn buckets(&self) -> usize {
        self.end.duration_since(self.start).as_secs_f64().ceil() as usize
    }
}

/// One second of the measured window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Bucket {
    /// Operations sent in this second.
    pub ops: u64,
    /// Bytes sent in this second.
    pub bytes_sent: u64,
    /// Bytes received in this second.
    pub bytes_received: u64,
    /// Failures in this second.
    pub errors: u64,
}

/// Connection counts (all of the run, warm-up included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConnCounts {
    /// Connection attempts.
    pub attempted: u64,
    /// Attempts that completed (TCP, and TLS handshake if any).
    pub opened: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// Open connections later lost to a failure.
    pub dropped: u64,
    /// Connections still open and healthy when the run ended.
    pub held: u64,
    /// Most connections open at once (over all workers).
    pub peak_open: u64,
}

impl ConnCounts {
    fn merge(&mut self, o: &ConnCounts) {
        self.attempted += o.attempted;
        self.opened += o.opened;
        self.failed += o.failed;
        self.dropped += o.dropped;
        self.held += o.held;
        self.peak_open = self.peak_open.max(o.peak_open);
    }
}

/// Per-worker measurements.
#[derive(Debug)]
pub struct Recorder {
    window: Window,
    worker: usize,
    progress: Arc<Progress>,
    /// Latency (closed loop: from send; open loop: from the intended send time).
    pub latency: Histogram<u64>,
    /// Open loop only: service time, from the actual send.
    pub service: Histogram<u64>,
    /// Open loop only: how late sends left after their intended time.
    pub lag: Histogram<u64>,
    /// One-second buckets of the measured window.
    pub timeline: Vec<Bucket>,
    /// Operations in the window.
    pub ops: u64,
    /// Bytes sent in the window.
    pub bytes_sent: u64,
    /// Bytes received in the window.
    pub bytes_received: u64,
    /// Failures by class.
    pub errors: ErrorCounts,
    /// Distinct failure messages, at most 16.
    pub samples: Vec<String>,
    /// Connection counts.
    pub conns: ConnCounts,
}

impl Recorder {
    /// A recorder for worker `worker` over `window`.
    #[must_use]
    pub fn new(window: Window, worker: usize, progress: Arc<Progress>) -> Self {
        Self {
            window,
            worker,
            progress,
            latency: histogram(),
            service: histogram(),
            lag: histogram(),
            timeline: vec![Bucket::default(); window.buckets()],
            ops: 0,
            bytes_sent: 0,
            bytes_received: 0,
            errors: ErrorCounts::default(),
            samples: Vec::new(),
            conns: ConnCounts::default(),
        }
    }

    /// The measured window.
    #[must_use]
    pub fn window(&self) -> Window {
        self.window
    }

    fn bucket(&mut self, t: Instant) -> Option<&mut Bucket> {
        let i = self.window.bucket(t);
        self.timeline.get_mut(i)
    }

    /// An operation sent at `sent` took `latency`.
    pub fn op(&mut self, sent: Instant, latency: Duration) {
        self.progress.op(self.worker);
        if self.window.contains(sent) {
            self.ops += 1;
            self.latency.saturating_record(latency.as_nanos() as u64);
            if let Some(b) = self.bucket(sent) {
                b.ops += 1;
            }
        }
    }

    /// An open-loop operation: intended at `intended`, corrected `latency`, `service`
    /// time from the actual send, and send `lag` behind schedule.
    pub fn op_open(
        &mut self,
        intended: Instant,
        latency: Duration,
        service: Duration,
        lag: Duration,
    ) {
        if self.window.contains(intended) {
            self.service.saturating_record(service.as_nanos() as u64);
            self.lag.saturating_record(lag.as_nanos() as u64);
        }
        self.op(intended, latency);
    }

    /// `sent` and `received` bytes moved at `at`.
    pub fn bytes(&mut self, at: Instant, sent: u64, received: u64) {
        self.progress.bytes(self.worker, sent + received);
        if self.window.contains(at) {
            self.bytes_sent += sent;
            self.bytes_received += received;
            if let Some(b) = self.bucket(at) {
                b.bytes_sent += sent;
                b.bytes_received += received;
            }
        }
    }

    /// A failure at `at`.
    pub fn error(&mut self, at: Instant, f: Failure) {
        self.progress.error(self.worker);
        self.errors.add(f.class);
        if self.window.contains(at) {
            if let Some(b) = self.bucket(at) {
                b.errors += 1;
            }
        }
        if self.samples.len() < MAX_SAMPLES && !self.samples.contains(&f.detail) {
            self.samples.push(f.detail);
        }
    }

    /// A connection attempt succeeded.
    pub fn opened(&mut self) {
        self.conns.attempted += 1;
        self.conns.opened += 1;
        self.progress.opened();
    }

    /// A connection attempt failed.
    pub fn open_failed(&mut self, at: Instant, f: Failure) {
        self.conns.attempted += 1;
        self.conns.failed += 1;
        self.error(at, f);
    }

    /// An open connection closed; `healthy` when it was closed by us, not by a failure.
    pub fn closed(&mut self, healthy: bool) {
        if !healthy {
            self.conns.dropped += 1;
        }
        self.progress.closed();
    }
}

/// Everything measured in a run, merged over workers.
#[derive(Debug)]
pub struct RunResult {
    /// Latency histogram (ns).
    pub latency: Histogram<u64>,
    /// Open-loop service time histogram (ns); empty in closed loop.
    pub service: Histogram<u64>,
    /// Open-loop send lag histogram (ns); empty in closed loop.
    pub lag: Histogram<u64>,
    /// One-second buckets.
    pub timeline: Vec<Bucket>,
    /// Operations in the window.
    pub ops: u64,
    /// Bytes sent in the window.
    pub bytes_sent: u64,
    /// Bytes received in the window.
    pub bytes_received: u64,
    /// Failures by class.
    pub errors: ErrorCounts,
    /// Distinct failure messages.
    pub samples: Vec<String>,
    /// Connection counts.
    pub conns: ConnCounts,
    /// Length of the measured window.
    pub measured: Duration,
    /// Driver the workers ran on.
    pub driver: DriverKind,
    /// Wall time of the whole run, warm-up included.
    pub wall: Duration,
}

impl RunResult {
    /// Merges worker recorders; `peak_open` comes from the shared progress counters.
    #[must_use]
    pub fn merge(
        recorders: Vec<Recorder>,
        driver: DriverKind,
        wall: Duration,
        progress: &Progress,
    ) -> Self {
        let mut out = RunResult {
            latency: histogram(),
            service: histogram(),
            lag: histogram(),
            timeline: Vec::new(),
            ops: 0,
            bytes_sent: 0,
            bytes_received: 0,
            errors: ErrorCounts::default(),
            samples: Vec::new(),
            conns: ConnCounts::default(),
            measured: Duration::ZERO,
            driver,
            wall,
        };
        for r in recorders {
            out.measured = r.window.end.duration_since(r.window.start);
            let _ = out.latency.add(&r.latency);
            let _ = out.service.add(&r.service);
            let _ = out.lag.add(&r.lag);
            if out.timeline.len() < r.timeline.len() {
                out.timeline.resize(r.timeline.len(), Bucket::default());
            }
            for (o, b) in out.timeline.iter_mut().zip(&r.timeline) {
                o.ops += b.ops;
                o.bytes_sent += b.bytes_sent;
                o.bytes_received += b.bytes_received;
                o.errors += b.errors;
            }
            out.ops += r.ops;
            out.bytes_sent += r.bytes_sent;
            out.bytes_received += r.bytes_received;
            out.errors.merge(&r.errors);
            for s in r.samples {
                if out.samples.len() < MAX_SAMPLES && !out.samples.contains(&s) {
                    out.samples.push(s);
                }
            }
            out.conns.merge(&r.conns);
        }
        out.conns.peak_open = progress.totals().peak.max(0) as u64;
        out
    }
}
