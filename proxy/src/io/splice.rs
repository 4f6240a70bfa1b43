//! The pieces of zero-copy forwarding with `splice(2)` that the chunk-framed `tcp`
//! channel pump ([`super::chunked_splice`]) is built from: per-worker pooled pipes and a
//! non-blocking `splice` call; and what every pump shares ([`PumpError`],
//! [`join_or_first_error`]).
//!
//! monoio's own `io::zero_copy` makes a pipe per call and lets io_uring punt splices on
//! sockets that are not ready to kernel worker threads, which measured 50x slower than
//! a copy loop here. The pump instead holds a pipe per direction only while bytes move
//! (taken from a per-worker pool, given back when the stream goes idle, enlarged once a
//! stream fills it), waits for readiness through the runtime (a one-shot poll on
//! io_uring, the epoll registration on the legacy driver), and splices non-blockingly.
//!
//! A pipe costs two descriptors. When the process has none left, [`Pipe::take`] fails
//! and the pump copies that chunk through a small user-space buffer instead: a process
//! out of descriptors keeps forwarding what it has, just with a copy.

use std::{
    future::{poll_fn, Future},
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    pin::Pin,
    task::Poll,
};

use super::Side;

/// Pipe capacity requested with `F_SETPIPE_SZ` once a stream fills the default pipe
/// (pages are only allocated when used).
pub const PIPE_SIZE: usize = 1 << 20;
/// Linux's default pipe capacity.
pub(super) const DEFAULT_PIPE_SIZE: usize = 64 * 1024;

/// How a forwarded stream ended abnormally.
#[derive(Debug, thiserror::Error)]
#[error("{side:?} side failed: {source}")]
pub struct PumpError {
    /// Which socket failed.
    pub side: Side,
    /// The error.
    #[source]
    pub source: io::Error,
}

/// Pipes kept per worker thread for reuse, so a short connection does not pay
/// `pipe2` + `F_SETPIPE_SZ` + two `close` per direction.
const PIPE_POOL_MAX: usize = 64;

thread_local! {
    static PIPE_POOL: std::cell::RefCell<Vec<Pipe>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub(super) struct Pipe {
    pub(super) read: OwnedFd,
    pub(super) write: OwnedFd,
    /// Bytes in the pipe.
    pub(super) pending: usize,
    pub(super) enlarged: bool,
}

impl Pipe {
    /// A pipe from this thread's pool, or a new one.
    pub(super) fn take() -> io::Result<Self> {
        if let Some(pipe) = PIPE_POOL.with(|p| p.borrow_mut().pop()) {
            return Ok(pipe);
        }
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid two-element array for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Self {
            read,
            write,
            pending: 0,
            enlarged: false,
        })
    }

    /// Grows the pipe to [`PIPE_SIZE`] the first time a stream fills it: bulk streams
    /// then need fewer wake-ups per megabyte, short ones never pay for it. Failure
    /// (a limit) is harmless.
    pub(super) fn enlarge(&mut self) {
        self.enlarged = true;
        // SAFETY: F_SETPIPE_SZ on a pipe fd we own, with an integer argument.
        unsafe {
            libc::fcntl(
                self.write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_SIZE as libc::c_int,
            )
        };
    }

    /// Returns an empty pipe to this thread's pool (a pipe holding bytes is closed).
    pub(super) fn give_back(self) {
        if self.pending == 0 {
            PIPE_POOL.with(|p| {
                let mut pool = p.borrow_mut();
                if pool.len() < PIPE_POOL_MAX {
                    pool.push(self);
                }
            });
        }
    }
}

pub(super) fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain syscall on fds owned by the caller; null offsets mean "current position".
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Awaits both futures; returns early with the first error. They are pinned by the
/// caller, so each is stored once in the caller's state (a future passed by value to
/// an `async fn` is kept twice: as the argument and as the pinned local).
pub(crate) async fn join_or_first_error<A, B, T, U, E>(
    mut a: Pin<&mut A>,
    mut b: Pin<&mut B>,
) -> Result<(T, U), E>
where
    A: Future<Output = Result<T, E>>,
    B: Future<Output = Result<U, E>>,
{
    let mut ra: Option<T> = None;
    let mut rb: Option<U> = None;
    poll_fn(|cx| {
        if ra.is_none() {
            if let Poll::Ready(r) = a.as_mut().poll(cx) {
                match r {
                    Ok(v) => ra = Some(v),
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
        if rb.is_none() {
            if let Poll::Ready(r) = b.as_mut().poll(cx) {
                match r {
                    Ok(v) => rb = Some(v),
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
        if ra.is_some() && rb.is_some() {
            Poll::Ready(Ok((ra.take().expect("set"), rb.take().expect("set"))))
        } else {
            Poll::Pending
        }
    })
    .await
}
