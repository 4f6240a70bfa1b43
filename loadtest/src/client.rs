//! What every client command shares: [`run`] starts the workers with their
//! recorders and the progress line and merges the results; [`Worker`] is a worker's
//! view (its share of the connections, its recorder); [`open`] makes a connection
//! (TCP, then TLS if asked) and [`read_exact`] / [`within`] are the bounded I/O steps
//! the commands are built from.
use std::{
    cell::RefCell,
    future::Future,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    net,
    progress::{Printer, Progress},
    rlimit, runtime,
    stats::{Recorder, RunResult, Window},
    stream::{Reader, Stream},
    ClientOptions, Failure, LoadError, Shutdown,
};

/// One worker's view of a run.
#[derive(Clone)]
pub struct Worker {
    /// Worker number, `0..threads`.
    pub index: usize,
    /// Number of workers.
    pub threads: usize,
    /// The run's options.
    pub opts: Arc<ClientOptions>,
    /// This worker's recorder.
    pub rec: Rc<RefCell<Recorder>>,
    /// The measured window.
    pub window: Window,
}

impl Worker {
    /// Global indexes of the `total` items (connections, streams) this worker owns:
    /// item `k` belongs to worker `k % threads`.
    pub fn share(&self, total: usize) -> impl Iterator<Item = usize> {
        (self.index..total).step_by(self.threads)
    }

    /// When the run ends.
    #[must_use]
    pub fn end(&self) -> Instant {
        self.window.end
    }

    /// Opens a connection, counting the attempt; failures are recorded and returned.
    pub async fn open(&self) -> Option<Stream> {
        match open(&self.opts).await {
            Ok(s) => {
                self.rec.borrow_mut().opened();
                Some(s)
            }
            Err(f) => {
                self.rec.borrow_mut().open_failed(Instant::now(), f);
                None
            }
        }
    }

    /// Records a failure of an open connection and counts it as dropped.
    pub fn fail(&self, f: Failure) {
        let mut r = self.rec.borrow_mut();
        r.error(Instant::now(), f);
        r.closed(false);
    }
}

/// Connects to the target and runs the TLS handshake if configured, each step
/// bounded by the timeout.
pub async fn open(opts: &ClientOptions) -> Result<Stream, Failure> {
    let tcp = net::connect(opts.target, opts.bind, opts.timeout).await?;
    match &opts.tls {
        None => Ok(Stream::plain(tcp)),
        Some(tls) => {
            match monoio::time::timeout(opts.timeout, Stream::tls_client(tcp, tls)).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(Failure::handshake(&e)),
                Err(_) => Err(Failure::timeout("TLS handshake")),
            }
        }
    }
}

/// Reads exactly `buf[range]`; an orderly close before that is `short_read`.
pub async fn read_exact(
    reader: &mut Reader,
    mut buf: Vec<u8>,
    range: std::ops::Range<usize>,
    what: &str,
) -> (Result<(), Failure>, Vec<u8>) {
    let mut got = range.start;
    while got < range.end {
        let (res, b) = reader.read(buf, got..range.end).await;
        buf = b;
        match res {
            Ok(0) => {
                return (
                    Err(Failure::short_read(what, got - range.start, range.len())),
                    buf,
                )
            }
            Ok(n) => got += n,
            Err(e) => return (Err(Failure::io(what, &e)), buf),
        }
    }
    (Ok(()), buf)
}

/// Outcome of a step bounded by both the run's end and the per-operation timeout.
pub enum Step<T> {
    /// The step finished.
    Done(T),
    /// The run ended first (not a failure).
    Ended,
    /// The timeout ran out first.
    TimedOut,
}

/// Runs `fut` until it finishes, the run ends, or `timeout` passes, whichever is first.
pub async fn within<F: Future>(end: Instant, timeout: Duration, fut: F) -> Step<F::Output> {
    let now = Instant::now();
    if now >= end {
        return Step::Ended;
    }
    let limit = (now + timeout).min(end);
    match monoio::time::timeout_at(monoio::time::Instant::from_std(limit), fut).await {
        Ok(v) => Step::Done(v),
        Err(_) if Instant::now() >= end || limit == end => Step::Ended,
        Err(_) => Step::TimedOut,
    }
}

/// Runs a client command: `body` is called once per worker, inside its runtime, and
/// must finish by itself (every loop bounded by the window and the timeout).
/// `fds` is how many descriptors the run needs (the limit is raised to fit).
pub fn run<B, Fut>(
    label: &str,
    opts: &ClientOptions,
    fds: u64,
    body: B,
) -> Result<RunResult, LoadError>
where
    B: Fn(Worker) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    opts.validate()?;
    rlimit::raise_nofile(fds + 256);
    let threads = opts.threads;
    let progress = Arc::new(Progress::new(threads));
    let shutdown = Shutdown::new();
    let started = Instant::now();
    let window = Window::after(opts.warmup, opts.duration);
    let printer = Printer::start(
        label,
        progress.clone(),
        opts.warmup + opts.duration,
        opts.progress,
    );
    let (shared_opts, shared_progress) = (Arc::new(opts.clone()), progress.clone());
    let workers = runtime::spawn(
        "load-worker",
        threads,
        opts.driver,
        &shutdown,
        move |index| {
            let rec = Rc::new(RefCell::new(Recorder::new(
                window,
                index,
                shared_progress.clone(),
            )));
            let worker = Worker {
                index,
                threads,
                opts: shared_opts.clone(),
                rec: rec.clone(),
                window,
            };
            let fut = body(worker);
            let progress = shared_progress.clone();
            async move {
                fut.await;
                rec.replace(Recorder::new(window, index, progress))
            }
        },
    );
    let result = workers.and_then(|w| {
        let driver = w.driver;
        w.join().map(|recs| (driver, recs))
    });
    if let Some(p) = printer {
        p.finish();
    }
    let (driver, recs) = result?;
    Ok(RunResult::merge(recs, driver, started.elapsed(), &progress))
}

/// Awaits every task handle (tasks finish by themselves at the end of the run).
pub async fn join_all(handles: Vec<monoio::task::JoinHandle<()>>) {
    for h in handles {
        h.await;
    }
}
