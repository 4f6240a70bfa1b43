//! Worker start-up, the one place that builds runtimes: [`spawn`] starts named
//! threads (`load-worker-0`, `serve-worker-0`, ...), builds one `monoio` runtime with a
//! timer inside each thread on the chosen driver, and reports which driver runs
//! ([`DriverKind`]) or why a runtime could not be built. No CPU pinning: the harness
//! usually shares its cores with the service it measures, and pinning both to the
//! same cores would only make them fight.
use std::{
    future::Future,
    io,
    sync::{mpsc, Arc},
    thread::{self, JoinHandle},
};

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
use serde::Serialize;

use crate::{options::DriverChoice, LoadError, Shutdown};

/// io_uring submission queue entries per worker.
const RING_ENTRIES: u32 = 1024;

/// The driver a worker runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum DriverKind {
    /// io_uring.
    #[serde(rename = "io_uring")]
    IoUring,
    /// epoll (monoio's legacy driver).
    #[serde(rename = "epoll")]
    Epoll,
    /// No runtime: blocking std sockets on a pool of OS threads (`--model blocking`).
    #[serde(rename = "blocking")]
    Blocking,
}

impl DriverKind {
    /// `io_uring` or `epoll`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::Epoll => "epoll",
            DriverKind::Blocking => "blocking",
        }
    }
}

/// The driver `choice` resolves to on this machine.
#[must_use]
pub fn resolve(choice: DriverChoice) -> DriverKind {
    match choice {
        DriverChoice::Auto if monoio::utils::detect_uring() => DriverKind::IoUring,
        DriverChoice::Uring => DriverKind::IoUring,
        _ => DriverKind::Epoll,
    }
}

/// Running worker threads whose futures produce a `T` each.
#[derive(Debug)]
pub struct Workers<T> {
    handles: Vec<(String, JoinHandle<Option<T>>)>,
    /// The driver every worker runs on.
    pub driver: DriverKind,
}

/// Starts `threads` workers named `{prefix}-{i}`, each running `make(i)` to completion
/// on its own runtime. Returns once every runtime is built; if one cannot be, fires
/// `shutdown` (so that the others can stop) and returns the error.
pub fn spawn<T, F, Fut>(
    prefix: &str,
    threads: usize,
    choice: DriverChoice,
    shutdown: &Shutdown,
    make: F,
) -> Result<Workers<T>, LoadError>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let make = Arc::new(make);
    let kind = resolve(choice);
    let (tx, rx) = mpsc::channel::<(String, io::Result<()>)>();
    let mut handles = Vec::with_capacity(threads);
    for i in 0..threads {
        let name = format!("{prefix}-{i}");
        let (make, tx, tname) = (make.clone(), tx.clone(), name.clone());
        let spawned = thread::Builder::new().name(name.clone()).spawn(move || {
            macro_rules! run_on {
                ($driver:ty) => {
                    match RuntimeBuilder::<$driver>::new()
                        .with_entries(RING_ENTRIES)
                        .enable_timer()
                        .build()
                    {
                        Ok(mut rt) => {
                            let _ = tx.send((tname, Ok(())));
                            Some(rt.block_on(make(i)))
                        }
                        Err(e) => {
                            let _ = tx.send((tname, Err(e)));
                            None
                        }
                    }
                };
            }
            match kind {
                DriverKind::IoUring => run_on!(IoUringDriver),
                // `resolve` never gives `Blocking`: that model starts no runtime.
                DriverKind::Epoll | DriverKind::Blocking => run_on!(LegacyDriver),
            }
        });
        match spawned {
            Ok(h) => handles.push((name, h)),
            Err(source) => {
                shutdown.trigger();
                return Err(LoadError::Worker { name, source });
            }
        }
    }
    drop(tx);
    for _ in 0..threads {
        match rx.recv() {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(source))) => {
                shutdown.trigger();
                return Err(LoadError::Worker {
                    name,
                    source: explain(source),
                });
            }
            Err(_) => {
                shutdown.trigger();
                return Err(LoadError::WorkerPanicked(prefix.to_string()));
            }
        }
    }
    Ok(Workers {
        handles,
        driver: kind,
    })
}

/// io_uring set-up failures on older kernels are about locked memory: say so.
fn explain(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ENOMEM) || e.raw_os_error() == Some(libc::ENOBUFS) {
        io::Error::new(
            e.kind(),
            format!("{e} (io_uring ring memory is bounded by RLIMIT_MEMLOCK on older kernels; try --driver legacy)"),
        )
    } else {
        e
    }
}

impl<T> Workers<T> {
    /// Waits for every worker and returns their results in worker order.
    pub fn join(self) -> Result<Vec<T>, LoadError> {
        let mut out = Vec::with_capacity(self.handles.len());
        for (name, h) in self.handles {
            match h.join() {
                Ok(Some(v)) => out.push(v),
                _ => return Err(LoadError::WorkerPanicked(name)),
            }
        }
        Ok(out)
    }

    /// Whether every worker has finished.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.handles.iter().all(|(_, h)| h.is_finished())
    }
}
