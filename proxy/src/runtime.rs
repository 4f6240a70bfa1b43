//! Worker start-up: one named thread per worker, each with its own `monoio` runtime on
//! the io_uring driver, or on the epoll ("legacy") driver where io_uring is missing or
//! when forced with `--driver legacy` / `SLUICE_DRIVER=legacy`. The driver in use is
//! logged once per process; runtime construction errors are returned, never panicked.
//! Each worker thread knows its index ([`worker_index`]), which per-worker state such as
//! the metrics cells keys on.

use std::{cell::Cell, future::Future, io, str::FromStr, thread::JoinHandle};

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

/// Submission queue entries per io_uring.
const RING_ENTRIES: u32 = 4096;

/// Which monoio driver the workers run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Driver {
    /// io_uring if the kernel offers it, else epoll.
    #[default]
    Auto,
    /// io_uring; start-up fails where it is unavailable.
    Uring,
    /// epoll.
    Legacy,
}

impl FromStr for Driver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "uring" | "io_uring" | "io-uring" => Ok(Self::Uring),
            "legacy" | "epoll" => Ok(Self::Legacy),
            other => Err(format!("unknown driver `{other}` (auto, uring, legacy)")),
        }
    }
}

impl Driver {
    /// Resolves `Auto` by probing the kernel.
    pub fn resolve(self) -> Driver {
        match self {
            Driver::Auto if monoio::utils::detect_uring() => Driver::Uring,
            Driver::Auto => Driver::Legacy,
            other => other,
        }
    }

    /// Name for logs.
    pub fn name(self) -> &'static str {
        match self.resolve() {
            Driver::Uring => "io_uring",
            _ => "epoll",
        }
    }
}

thread_local! {
    /// This thread's worker index; `usize::MAX` on threads that are not workers.
    static WORKER: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Runtimes [`block_on`] has started on this thread.
    static RUNTIMES: Cell<u64> = const { Cell::new(0) };
}

/// Which of this thread's runtimes is running (a per-thread count of [`block_on`]
/// calls): state kept per thread across runtimes, such as the idle watchdog's task,
/// can tell a runtime that is gone.
pub(crate) fn runtime_generation() -> u64 {
    RUNTIMES.with(Cell::get)
}

/// The index of the calling worker thread (as passed to `make` by
/// [`spawn_workers`]), or `None` on any other thread.
#[inline]
pub fn worker_index() -> Option<usize> {
    let i = WORKER.with(Cell::get);
    (i != usize::MAX).then_some(i)
}

/// Marks the calling thread as worker `index` (done by [`spawn_workers`] as each worker
/// starts).
pub(crate) fn set_worker_index(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// Number of cores available to this process.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs a future to completion on a fresh runtime of the given driver, in this thread.
pub fn block_on<Fut: Future>(
    driver: Driver,
    make: impl FnOnce() -> Fut,
) -> io::Result<Fut::Output> {
    RUNTIMES.with(|n| n.set(n.get() + 1));
    match driver.resolve() {
        Driver::Uring => {
            let mut rt = uring_runtime(true)
                .or_else(|_| uring_runtime(false))
                .map_err(explain_uring_error)?;
            Ok(rt.block_on(make()))
        }
        _ => {
            let mut rt = RuntimeBuilder::<LegacyDriver>::new()
                .enable_timer()
                .build()?;
            Ok(rt.block_on(make()))
        }
    }
}

/// An io_uring runtime for this thread. `deferred`: the ring is only ever used by the
/// thread that made it (`SINGLE_ISSUER`) and the kernel runs completion work when that
/// thread asks for completions (`DEFER_TASKRUN`, Linux 6.1+) rather than interrupting
/// it whenever a completion arrives. Measured with `compare --quick --paths
/// sluice-tcp,sluice-tls` interleaved with and without, two rounds each: proxy CPU per
/// connection 134–139 against 152–166 µs on `tcp`, 140–145 against 160 on `tls`.
fn uring_runtime(
    deferred: bool,
) -> io::Result<monoio::Runtime<monoio::time::TimeDriver<IoUringDriver>>> {
    let mut ring = io_uring::IoUring::builder();
    if deferred {
        ring.setup_single_issuer().setup_defer_taskrun();
    }
    RuntimeBuilder::<IoUringDriver>::new()
        .with_entries(RING_ENTRIES)
        .uring_builder(ring)
        .enable_timer()
        .build()
}

fn explain_uring_error(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ENOMEM) || e.raw_os_error() == Some(libc::ENOBUFS) {
        io::Error::new(
            e.kind(),
            format!("cannot create io_uring ({e}): RLIMIT_MEMLOCK too low? raise it or run with --driver legacy"),
        )
    } else {
        e
    }
}

/// Starts `count` named worker threads (`{role}-worker-{i}`), each running
/// `make(i)` on its own runtime. Returns once every thread is spawned.
pub fn spawn_workers<F, Fut>(
    role: &'static str,
    count: usize,
    driver: Driver,
    make: F,
) -> io::Result<Vec<JoinHandle<io::Result<()>>>>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    tracing::info!(
        role,
        workers = count,
        driver = driver.name(),
        "starting workers"
    );
    (0..count)
        .map(|i| {
            let make = make.clone();
            std::thread::Builder::new()
                .name(format!("{role}-worker-{i}"))
                .spawn(move || {
                    set_worker_index(i);
                    block_on(driver, || make(i)).inspect_err(|e| {
                        tracing::error!(role, worker = i, error = %e, "worker runtime failed");
                    })
                })
        })
        .collect()
}
