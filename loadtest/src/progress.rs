//! Live counters shared by all workers ([`Progress`]: one cache-padded slot per
//! worker, plus the number of open connections) and the progress line printed on
//! stderr once a second while stderr is a terminal ([`Printer`]). Nothing is printed
//! when stderr is not a terminal.
use std::{
    io::{IsTerminal, Write},
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot {
    ops: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

/// Counters every worker adds to as it goes.
#[derive(Debug)]
pub struct Progress {
    slots: Vec<Slot>,
    open: AtomicI64,
    peak: AtomicI64,
}

/// A snapshot of [`Progress`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    /// Completed operations (requests, connections, keep-alive echoes).
    pub ops: u64,
    /// Bytes sent plus received.
    pub bytes: u64,
    /// Failures.
    pub errors: u64,
    /// Connections open now.
    pub open: i64,
    /// Most connections open at once.
    pub peak: i64,
}

impl Progress {
    /// Counters for `workers` workers.
    #[must_use]
    pub fn new(workers: usize) -> Self {
        Self {
            slots: (0..workers).map(|_| Slot::default()).collect(),
            open: AtomicI64::new(0),
            peak: AtomicI64::new(0),
        }
    }

    /// Worker `w` completed an operation.
    pub fn op(&self, w: usize) {
        self.slots[w].ops.fetch_add(1, Relaxed);
    }

    /// Worker `w` moved `n` bytes.
    pub fn bytes(&self, w: usize, n: u64) {
        self.slots[w].bytes.fetch_add(n, Relaxed);
    }

    /// Worker `w` saw a failure.
    pub fn error(&self, w: usize) {
        self.slots[w].errors.fetch_add(1, Relaxed);
    }

    /// A connection opened.
    pub fn opened(&self) {
        let now = self.open.fetch_add(1, Relaxed) + 1;
        self.peak.fetch_max(now, Relaxed);
    }

    /// A connection closed.
    pub fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    /// Current totals.
    #[must_use]
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            open: self.open.load(Relaxed),
            peak: self.peak.load(Relaxed),
            ..Totals::default()
        };
        for s in &self.slots {
            t.ops += s.ops.load(Relaxed);
            t.bytes += s.bytes.load(Relaxed);
            t.errors += s.errors.load(Relaxed);
        }
        t
    }
}

/// The thread printing the progress line; [`Printer::finish`] stops it and clears the line.
#[derive(Debug)]
pub struct Printer {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

impl Printer {
    /// Starts printing for a run of `total` labelled `label`, if `enabled` and
    /// stderr is a terminal.
    #[must_use]
    pub fn start(
        label: &str,
        progress: Arc<Progress>,
        total: Duration,
        enabled: bool,
    ) -> Option<Printer> {
        if !enabled || !std::io::stderr().is_terminal() {
            return None;
        }
        let (stop, rx) = mpsc::channel::<()>();
        let label = label.to_string();
        let handle = std::thread::Builder::new()
            .name("load-progress".into())
            .spawn(move || {
                let start = Instant::now();
                let mut last = (start, Totals::default());
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(1)) {
                    let now = Instant::now();
                    let t = progress.totals();
                    let dt = now.duration_since(last.0).as_secs_f64().max(1e-9);
                    let ops = (t.ops - last.1.ops) as f64 / dt;
                    let gbps = (t.bytes - last.1.bytes) as f64 * 8.0 / dt / 1e9;
                    eprint!(
                        "\r{label} {:>5.0}s/{:.0}s  {ops:>10.0} ops/s  {gbps:>7.3} Gbit/s  open {:>6}  errors {}\x1b[K",
                        now.duration_since(start).as_secs_f64(),
                        total.as_secs_f64(),
                        t.open,
                        t.errors
                    );
                    let _ = std::io::stderr().flush();
                    last = (now, t);
                }
                eprint!("\r\x1b[K");
                let _ = std::io::stderr().flush();
            })
            .ok()?;
        Some(Printer { stop, handle })
    }

    /// Stops the thread and clears the line.
    pub fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.handle.join();
    }
}
