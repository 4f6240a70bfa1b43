//! hyper on a monoio worker: byte streams (a client's socket, a stream inside a data
//! channel) adapted to hyper's I/O traits through monoio's own compat layer, a timer
//! for hyper's deadlines, and an executor for HTTP/2's per-stream tasks.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use monoio::io::{AsyncReadRent, AsyncWriteRent};

/// A monoio stream as hyper reads and writes it. The compat wrapper stays on the heap:
/// a read or write it has started holds a pointer to the stream inside it, and hyper
/// moves its I/O freely (HTTP/2's handshake starts writing its preface, then the
/// connection, with the I/O, moves into its task), so a wrapper kept inline would leave
/// that pointer dangling.
pub struct Io<T>(Box<hyper_util::rt::TokioIo<monoio_compat::StreamWrapper<T>>>);

// SAFETY: hyper wants the I/O of a connection it may upgrade (websockets) to be Send,
// because its upgraded streams may move between threads on other runtimes. Here a
// connection, its upgraded stream and everything they hold live and are dropped on the
// monoio worker that accepted or opened them: a monoio task never leaves its thread,
// and the edge never hands these to another thread.
unsafe impl<T> Send for Io<T> {}

/// Wraps `stream` for hyper.
pub fn io<T: AsyncReadRent + AsyncWriteRent + Unpin + 'static>(stream: T) -> Io<T> {
    Io(Box::new(hyper_util::rt::TokioIo::new(
        monoio_compat::StreamWrapper::new(stream),
    )))
}

/// The stream back from hyper's wrapping.
pub fn unwrap<T>(io: Io<T>) -> T {
    (*io.0).into_inner().into_inner()
}

impl<T: AsyncReadRent + Unpin + 'static> hyper::rt::Read for Io<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWriteRent + Unpin + 'static> hyper::rt::Write for Io<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// hyper's executor for HTTP/2 streams: tasks of the worker the connection is on.
#[derive(Clone, Copy, Debug)]
pub struct Exec;

impl<F> hyper::rt::Executor<F> for Exec
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, future: F) {
        monoio::spawn(future);
    }
}

/// hyper's timer, on the worker's monoio timer.
#[derive(Clone, Copy, Debug)]
pub struct Timer;

impl hyper::rt::Timer for Timer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep(monoio::time::sleep(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep(monoio::time::sleep_until(deadline.into())))
    }
}

/// A monoio sleep (one allocation per sleep: hyper sets one for each request head).
struct Sleep(monoio::time::Sleep);

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: a structural pin projection: the inner sleep is never moved out of
        // its wrapper, nor reached other than through this pinned reference.
        unsafe { self.map_unchecked_mut(|s| &mut s.0) }.poll(cx)
    }
}

impl hyper::rt::Sleep for Sleep {}

// SAFETY: hyper asks its timer's sleeps to be Send + Sync because its connections may
// move between threads on other runtimes. Here every connection, and so every sleep
// it makes, lives and is dropped on the monoio worker that made it: a monoio task never
// leaves its thread, and nothing shares a sleep.
unsafe impl Send for Sleep {}
// SAFETY: as above; a sleep is only ever touched through its owner's `&mut`.
unsafe impl Sync for Sleep {}
