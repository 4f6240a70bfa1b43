//! Bodies that flow through the edge ([`Flowing`]): a client's request body on its way
//! upstream, its bytes counted, and an upstream's response body on its way to the
//! client, watched. A response the client stops taking (an HTTP/2 client that opens
//! streams and reads none of them, a slow reader on HTTP/1.1) while the upstream has
//! nothing more to send, or that the upstream stops sending, holds its stream through
//! the tunnel (a data channel, an upstream connection at the agent). When no byte of
//! the exchange has moved either way (the response's bytes to the client, the request
//! body's to the upstream: a gRPC stream from the client moves) for the endpoint's
//! `idle_timeout`, as for a TCP connection, the response is cut: the upstream's side is dropped at once (its stream ends, the upstream's
//! connection with it), and the client's stream is reset when the client next reads.
//!
//! The watch costs one small shared cell and an entry on the worker's timing wheel
//! (io/idle.rs), and a task that sleeps until the response ends or stalls.

use std::{
    cell::{Cell, RefCell},
    future::poll_fn,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::io::idle::{until_idle, Progress};

/// A body on its way through the edge (see the module's documentation).
pub struct Flowing(Inner);

enum Inner {
    /// Passed through as it comes.
    Plain(Incoming),
    /// A request body, its bytes counted toward its exchange's motion.
    Counted(Incoming, Rc<Progress>),
    /// A response watched for stalls.
    Watched(Rc<Watch>),
}

/// What a watched response body and its watchdog share.
struct Watch {
    /// The upstream's body; gone once cut (or ended).
    body: RefCell<Option<Incoming>>,
    /// Bytes that moved, either way.
    progress: Rc<Progress>,
    /// The watchdog cut the response.
    cut: Cell<bool>,
    /// The body ended or was dropped: the watchdog can go.
    done: Cell<bool>,
    /// The idle timeout it is watched with.
    period: Duration,
    /// The client's side, waiting for the next frame.
    reader: Cell<Option<Waker>>,
    /// The watchdog, waiting for the end.
    watchdog: Cell<Option<Waker>>,
}

/// Why a flowing body failed.
#[derive(Debug)]
pub enum FlowError {
    /// The other side's error.
    Http(hyper::Error),
    /// Nothing moved for the idle timeout: the response was cut.
    Stalled(Duration),
}

impl std::fmt::Display for FlowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlowError::Http(e) => e.fmt(f),
            FlowError::Stalled(d) => write!(f, "no byte of the response moved for {d:?}"),
        }
    }
}

impl std::error::Error for FlowError {}

impl Flowing {
    /// `body` passed through as it comes.
    pub fn plain(body: Incoming) -> Flowing {
        Flowing(Inner::Plain(body))
    }

    /// A request body on its way upstream, its bytes counted in `motion`.
    pub fn counted(body: Incoming, motion: &Rc<Progress>) -> Flowing {
        Flowing(Inner::Counted(body, motion.clone()))
    }

    /// An upstream's response body, cut when nothing moves either way (`motion`: the
    /// request body's bytes, and this body's) for `period` (`None`: never); `on_cut`
    /// runs when it is.
    pub fn watched(
        body: Incoming,
        motion: Rc<Progress>,
        period: Option<Duration>,
        on_cut: impl FnOnce() + 'static,
    ) -> Flowing {
        let Some(period) = period else {
            return Flowing::plain(body);
        };
        if body.is_end_stream() {
            return Flowing::plain(body);
        }
        let watch = Rc::new(Watch {
            body: RefCell::new(Some(body)),
            progress: motion,
            cut: Cell::new(false),
            done: Cell::new(false),
            period,
            reader: Cell::new(None),
            watchdog: Cell::new(None),
        });
        monoio::spawn(watchdog(watch.clone(), period, on_cut));
        Flowing(Inner::Watched(watch))
    }
}

/// Waits for the response to end; cuts it if it stalls first.
async fn watchdog(watch: Rc<Watch>, period: Duration, on_cut: impl FnOnce()) {
    let ended = std::pin::pin!(poll_fn(|cx| {
        if watch.done.get() {
            return Poll::Ready(());
        }
        watch.watchdog.set(Some(cx.waker().clone()));
        Poll::Pending
    }));
    if until_idle(Some(period), &watch.progress, ended)
        .await
        .is_some()
    {
        return;
    }
    watch.cut.set(true);
    // Dropping the upstream's body ends its stream through the tunnel.
    drop(watch.body.borrow_mut().take());
    if let Some(reader) = watch.reader.take() {
        reader.wake();
    }
    on_cut();
}

impl Watch {
    fn finish(&self) {
        self.done.set(true);
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.wake();
        }
    }
}

impl Drop for Flowing {
    fn drop(&mut self) {
        if let Inner::Watched(watch) = &self.0 {
            drop(watch.body.borrow_mut().take());
            watch.finish();
        }
    }
}

impl Body for Flowing {
    type Data = Bytes;
    type Error = FlowError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, FlowError>>> {
        let watch = match &mut self.get_mut().0 {
            Inner::Plain(body) => return Pin::new(body).poll_frame(cx).map_err(FlowError::Http),
            Inner::Counted(body, motion) => {
                let frame = Pin::new(body).poll_frame(cx).map_err(FlowError::Http);
                if let Poll::Ready(Some(Ok(f))) = &frame {
                    motion.bump(f.data_ref().map_or(1, |d| d.len().max(1)) as u64);
                }
                return frame;
            }
            Inner::Watched(watch) => watch.clone(),
        };
        let mut slot = watch.body.borrow_mut();
        let Some(body) = slot.as_mut() else {
            return Poll::Ready(
                watch
                    .cut
                    .get()
                    .then_some(Err(FlowError::Stalled(watch.period))),
            );
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(1, |d| d.len().max(1));
                watch.progress.bump(n as u64);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(FlowError::Http(e)))),
            Poll::Ready(None) => {
                drop(slot.take());
                drop(slot);
                watch.finish();
                Poll::Ready(None)
            }
            Poll::Pending => {
                watch.reader.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Plain(body) | Inner::Counted(body, _) => body.is_end_stream(),
            Inner::Watched(watch) => match &*watch.body.borrow() {
                Some(body) => body.is_end_stream(),
                None => !watch.cut.get(),
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Plain(body) | Inner::Counted(body, _) => body.size_hint(),
            Inner::Watched(watch) => watch
                .body
                .borrow()
                .as_ref()
                .map_or_else(SizeHint::default, Body::size_hint),
        }
    }
}
