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

/// A monoio stream as hyper reads and writes it.
pub type Io<T> = hyper_util::rt::TokioIo<monoio_compat::StreamWrapper<T>>;

/// Wraps `stream` for hyper.
pub fn io<T: AsyncReadRent + AsyncWriteRent + Unpin + 'static>(stream: T) -> Io<T> {
    hyper_util::rt::TokioIo::new(monoio_compat::StreamWrapper::new(stream))
}

/// The stream back from hyper's wrapping.
pub fn unwrap<T>(io: Io<T>) -> T {
    io.into_inner().into_inner()
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
        Box::pin(Sleep(Box::pin(monoio::time::sleep(duration))))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep(Box::pin(monoio::time::sleep_until(deadline.into()))))
    }
}

/// A monoio sleep.
struct Sleep(Pin<Box<monoio::time::Sleep>>);

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
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
