//! Where an HTTP/1.1 connection is in its life, and how long it may stay there: a
//! [`Watch`] shared by the connection's reader ([`Watched`]), the service (a request
//! head arrived) and the answer body ([`AnswerDone`]), and awaited by the connection
//! task, which closes the connection when the current phase outlives its limit.
//!
//! | phase | starts | ends | limit |
//! |---|---|---|---|
//! | `header` | accept (TLS handshake included), or the first byte after an idle wait | the request head is complete | `header_timeout` |
//! | `request` | the head is complete | the answer body is handed over whole | `request_timeout` |
//! | `idle` | the answer is handed over | the first byte of the next request | `idle_timeout` |
//!
//! Why not hyper's `header_read_timeout`: it needs a timer (without one, as under
//! `axum::serve`, its 30 s default silently does nothing), and since hyper 1.x it
//! restarts as soon as an answer is written, so it also caps the keep-alive wait: a 10 s
//! header limit would close idle keep-alive connections after 10 s. Go's `net/http` and
//! Envoy keep the two apart; so do we.
//!
//! Known gap: the bytes of a pipelined next request that arrive while an answer is
//! still being written do not start a `header` phase; that head is bounded by
//! `idle_timeout` instead of `header_timeout`.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    // tokio's clock, so that unit tests can run it paused.
    time::Instant,
};

/// A phase of a connection's life (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a complete request head (and, first, the TLS handshake).
    Header,
    /// Reading the request body, handling it and handing the answer over.
    Request,
    /// Between requests on a keep-alive connection.
    Idle,
}

impl Phase {
    /// `header`, `request` or `idle` (logs and metrics).
    pub fn name(self) -> &'static str {
        match self {
            Phase::Header => "header",
            Phase::Request => "request",
            Phase::Idle => "idle",
        }
    }
}

/// How long each phase may last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseLimits {
    /// [`Phase::Header`].
    pub header: Duration,
    /// [`Phase::Request`].
    pub request: Duration,
    /// [`Phase::Idle`].
    pub idle: Duration,
}

impl PhaseLimits {
    /// The limit of `phase`.
    pub fn of(&self, phase: Phase) -> Duration {
        match phase {
            Phase::Header => self.header,
            Phase::Request => self.request,
            Phase::Idle => self.idle,
        }
    }

    /// When a phase entered at `since` runs out (far in the future on overflow).
    pub fn deadline(&self, phase: Phase, since: Instant) -> Instant {
        since
            .checked_add(self.of(phase))
            .unwrap_or_else(|| since + Duration::from_secs(86_400 * 365))
    }
}

/// The phase of one connection, shared by its parts.
pub struct Watch {
    state: Mutex<(Phase, Instant)>,
    changed: tokio::sync::Notify,
}

impl Watch {
    /// A connection just accepted: in [`Phase::Header`] from now.
    pub fn new() -> Self {
        Self {
            state: Mutex::new((Phase::Header, Instant::now())),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn get(&self) -> (Phase, Instant) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enters `phase` now.
    pub fn enter(&self, phase: Phase) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = (phase, Instant::now());
        self.changed.notify_one();
    }

    /// Bytes of a request arrived: an idle connection starts reading a head.
    fn bytes_read(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 == Phase::Idle {
            *state = (Phase::Header, Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// Resolves with the phase that outlived its limit. Cancel-safe (it only waits).
    pub async fn expired(&self, limits: PhaseLimits) -> Phase {
        loop {
            let (phase, since) = self.get();
            let deadline = limits.deadline(phase, since);
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    if self.get() == (phase, since) {
                        return phase;
                    }
                }
                // A change re-reads the state (a permit stored by `notify_one` while
                // nobody waited makes this return at once: harmless).
                _ = self.changed.notified() => {}
            }
        }
    }
}

impl Default for Watch {
    fn default() -> Self {
        Self::new()
    }
}

/// A connection's byte stream, reporting reads to its [`Watch`]. Placed above TLS, so
/// only request bytes count.
pub struct Watched<I> {
    inner: I,
    watch: Arc<Watch>,
}

impl<I> Watched<I> {
    /// Wraps `inner`.
    pub fn new(inner: I, watch: Arc<Watch>) -> Self {
        Self { inner, watch }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.watch.bytes_read();
        }
        poll
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Rides on an answer body; when hyper drops the body (written whole, or the
/// connection gone) the connection becomes [`Phase::Idle`].
pub struct AnswerDone(pub Arc<Watch>);

impl Drop for AnswerDone {
    fn drop(&mut self) {
        self.0.enter(Phase::Idle);
    }
}

/// An answer body that marks the end of its request when dropped.
pub struct AnswerBody {
    inner: axum::body::Body,
    _done: AnswerDone,
}

impl AnswerBody {
    /// `inner`, ending the request phase of `done`'s connection when dropped.
    pub fn new(inner: axum::body::Body, done: AnswerDone) -> Self {
        Self { inner, _done: done }
    }
}

impl http_body::Body for AnswerBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PhaseLimits = PhaseLimits {
        header: Duration::from_millis(40),
        request: Duration::from_millis(200),
        idle: Duration::from_millis(400),
    };

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }

    #[test]
    fn a_silent_connection_expires_in_the_header_phase() {
        runtime().block_on(async {
            let watch = Watch::new();
            assert_eq!(watch.expired(LIMITS).await, Phase::Header);
        });
    }

    #[test]
    fn each_phase_change_restarts_the_clock_with_that_phase_limit() {
        runtime().block_on(async {
            let watch = Arc::new(Watch::new());
            let w = watch.clone();
            let start = tokio::time::Instant::now();
            let driver = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                w.enter(Phase::Request);
                tokio::time::sleep(Duration::from_millis(150)).await;
                drop(AnswerDone(w.clone()));
            });
            let phase = watch.expired(LIMITS).await;
            driver.await.unwrap();
            // Idle entered at 180 ms; its 400 ms run out at 580 ms.
            assert_eq!(phase, Phase::Idle);
            assert_eq!(start.elapsed(), Duration::from_millis(580));
        });
    }

    #[test]
    fn a_byte_after_an_idle_wait_starts_a_header_phase_and_a_byte_mid_request_does_not() {
        let watch = Watch::new();
        watch.enter(Phase::Request);
        watch.bytes_read();
        assert_eq!(watch.get().0, Phase::Request);
        watch.enter(Phase::Idle);
        watch.bytes_read();
        assert_eq!(watch.get().0, Phase::Header);
    }
}
