//! Zero-copy forwarding between two kernel sockets with `splice(2)`.
//!
//! monoio's own `io::zero_copy` makes a pipe per call and lets io_uring punt splices on
//! sockets that are not ready to kernel worker threads, which measured 50x slower than
//! a copy loop here. This pump instead uses one pipe per direction while bytes move
//! (taken from a per-worker pool, given back when the stream goes idle, enlarged once
//! a stream fills it),
//! waits for readiness through the runtime (a one-shot poll on io_uring, the epoll
//! registration on the legacy driver), and then splices non-blockingly until the kernel
//! says `EAGAIN`. EOF on one side becomes `shutdown(SHUT_WR)` on the other (half-close
//! passes through), and a reset on one side becomes a reset on the other.
//!
//! A pipe costs two descriptors. When the process has none left (`EMFILE`/`ENFILE`), a
//! stream that needs a new pipe moves its next chunk through a small user-space buffer
//! instead and tries for a pipe again on the chunk after: a process out of descriptors
//! keeps forwarding what it has, just with a copy.

use std::{
    future::{poll_fn, Future},
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    pin::{pin, Pin},
    task::Poll,
};

use monoio::net::TcpStream;

use super::{idle::Progress, sockets, PumpStats, Side};

/// Pipe capacity requested with `F_SETPIPE_SZ` once a stream fills the default pipe
/// (pages are only allocated when used).
pub const PIPE_SIZE: usize = 1 << 20;
/// Linux's default pipe capacity.
pub(super) const DEFAULT_PIPE_SIZE: usize = 64 * 1024;
/// The user-space buffer a stream copies through while no pipe can be had.
const FALLBACK_BUFFER: usize = 16 * 1024;

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

/// Moves bytes `src -> dst` until EOF on `src`, then half-closes `dst`.
/// Not cancel-safe (bytes in the pipe are lost if dropped); only dropped on teardown.
async fn one_way(
    src: &TcpStream,
    src_side: Side,
    dst: &TcpStream,
    dst_side: Side,
    progress: &Progress,
) -> Result<u64, PumpError> {
    let src_err = |source| PumpError {
        side: src_side,
        source,
    };
    let dst_err = |source| PumpError {
        side: dst_side,
        source,
    };
    // The pipe is held only while bytes move: an idle stream gives its (empty) pipe
    // back to the worker's pool, so 10,000 idle connections hold no pipes.
    let mut held: Option<Pipe> = None;
    let mut total = 0u64;
    // A splice that returned less than the pipe could take drained the socket: the
    // next one would only say EAGAIN, so wait for readiness first (saves a syscall
    // per message on request/response traffic).
    let mut drained = false;
    // Only allocated if a pipe could not be had (see the module doc).
    let mut fallback: Option<Vec<u8>> = None;
    loop {
        if drained {
            if let Some(idle) = held.take() {
                idle.give_back();
            }
            src.readable(false).await.map_err(src_err)?;
        }
        let pipe = match held.as_mut() {
            Some(pipe) => pipe,
            None => match Pipe::take() {
                Ok(pipe) => held.insert(pipe),
                Err(e) if out_of_descriptors(&e) => {
                    let buffer = fallback.get_or_insert_with(|| vec![0; FALLBACK_BUFFER]);
                    let n = copy_chunk(src, dst, buffer, progress, &src_err, &dst_err).await?;
                    if n == 0 {
                        sockets::shutdown_write(dst.as_raw_fd());
                        return Ok(total);
                    }
                    total += n as u64;
                    drained = false;
                    continue;
                }
                Err(e) => return Err(src_err(e)),
            },
        };
        let eof = match splice(src.as_raw_fd(), pipe.write.as_raw_fd(), PIPE_SIZE) {
            Ok(0) => true,
            Ok(n) => {
                pipe.pending += n;
                drained = n < if pipe.enlarged {
                    PIPE_SIZE
                } else {
                    DEFAULT_PIPE_SIZE
                };
                if !pipe.enlarged && n >= DEFAULT_PIPE_SIZE {
                    pipe.enlarge();
                }
                false
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                drained = true;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(src_err(e)),
        };
        while pipe.pending > 0 {
            match splice(pipe.read.as_raw_fd(), dst.as_raw_fd(), pipe.pending) {
                Ok(n) => {
                    pipe.pending -= n;
                    total += n as u64;
                    progress.bump(n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    dst.writable(false).await.map_err(dst_err)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(dst_err(e)),
            }
        }
        if eof {
            sockets::shutdown_write(dst.as_raw_fd());
            if let Some(pipe) = held.take() {
                pipe.give_back();
            }
            return Ok(total);
        }
    }
}

/// Whether `e` says the process (or the system) has no descriptor left for a pipe.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Moves one chunk (at most `buffer.len()` bytes) from `src` to `dst` through `buffer`,
/// waiting for readiness as needed and counting each write in `progress`; 0 at EOF on
/// `src`.
async fn copy_chunk(
    src: &TcpStream,
    dst: &TcpStream,
    buffer: &mut [u8],
    progress: &Progress,
    src_err: &impl Fn(io::Error) -> PumpError,
    dst_err: &impl Fn(io::Error) -> PumpError,
) -> Result<usize, PumpError> {
    let n = loop {
        // SAFETY: reads into a buffer we own, of the length given, from a caller-owned fd.
        let n = unsafe { libc::read(src.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => src.readable(false).await.map_err(src_err)?,
            io::ErrorKind::Interrupted => {}
            _ => return Err(src_err(e)),
        }
    };
    let mut written = 0;
    while written < n {
        let rest = &buffer[written..n];
        // SAFETY: sends from a buffer we own, of the length given, on a caller-owned fd;
        // MSG_NOSIGNAL turns a closed peer into EPIPE instead of SIGPIPE.
        let sent = unsafe {
            libc::send(
                dst.as_raw_fd(),
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if sent >= 0 {
            written += sent as usize;
            progress.bump(sent as u64);
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => dst.writable(false).await.map_err(dst_err)?,
            io::ErrorKind::Interrupted => {}
            _ => return Err(dst_err(e)),
        }
    }
    Ok(n)
}

/// Forwards both ways between `inbound` and `outbound` until both directions have seen
/// EOF (half-close is passed on as it happens) or one side fails; on failure the other
/// side is reset so the failure reaches both ends. Both sockets must be non-blocking.
/// Not cancel-safe.
pub async fn forward(
    inbound: &TcpStream,
    outbound: &TcpStream,
    progress: &Progress,
) -> Result<PumpStats, PumpError> {
    let up = pin!(one_way(
        inbound,
        Side::Inbound,
        outbound,
        Side::Outbound,
        progress
    ));
    let down = pin!(one_way(
        outbound,
        Side::Outbound,
        inbound,
        Side::Inbound,
        progress
    ));
    let result = join_or_first_error(up, down).await;
    if let Err(e) = &result {
        let other = match e.side {
            Side::Inbound => outbound,
            Side::Outbound => inbound,
        };
        sockets::reset_on_close(other.as_raw_fd());
    }
    result.map(|(a, b)| PumpStats {
        inbound_to_outbound: a,
        outbound_to_inbound: b,
    })
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
