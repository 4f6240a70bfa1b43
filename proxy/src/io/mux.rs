//! Many byte streams over one link: the sub-streams of a data channel stream announced
//! as [`Frame::MuxStream`](crate::wire::Frame::MuxStream) (docs/protocol.md,
//! "Multiplexed streams"). The edge opens a sub-stream for each HTTP/1.1 connection it
//! runs to a member's upstream; the agent answers it once its own upstream connection
//! is up (or refused) and relays the bytes.
//!
//! Frames: stream id (u32), kind (u8), payload length (u32), payload. Kinds: open,
//! opened, refused (the acceptor's answers: no byte of a refused stream reached an
//! upstream), data, fin (this side sends no more), credit (u32 increment) and reset
//! (this side is gone; drop the stream).
//!
//! Flow control per stream and direction: a sender may have at most [`WINDOW`] bytes
//! its peer's reader has not taken; the reader grants credit back once it took half a
//! window. A peer that breaks the rules (a frame too long, data past its window, an
//! open it may not send, an unknown kind) ends the whole link at once, as does
//! [`Mux::abort`]: both close it with a reset, so the far side sees the cut.
//!
//! An [`Role::Opener`] link closes itself, after sending what it queued, when its last
//! stream ends; an [`Role::Acceptor`] link when the opener closes it.

use std::{
    cell::{Cell, RefCell},
    collections::{HashMap, VecDeque},
    future::poll_fn,
    os::fd::{AsRawFd, RawFd},
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};

use super::sockets;

const OPEN: u8 = 1;
const DATA: u8 = 2;
const FIN: u8 = 3;
const CREDIT: u8 = 4;
const OPENED: u8 = 5;
const REFUSED: u8 = 6;
const RESET: u8 = 7;
/// Stream id, kind, payload length.
const HEADER: usize = 9;
/// Unconsumed bytes a stream's sender may have at its peer's reader.
pub const WINDOW: usize = 256 * 1024;
/// Streams a link carries at once; an opener opens no more, an acceptor takes an open
/// past it as a broken peer.
pub const MAX_STREAMS: usize = 256;
/// Bytes asked of the link per read.
const READ_SIZE: usize = 64 * 1024;

/// Which side of the link this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opens streams (the edge); closes the link when its last stream ends.
    Opener,
    /// Accepts them (the agent).
    Acceptor,
}

/// How the acceptor answered a stream's open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Its upstream connection is up.
    Opened,
    /// Its upstream could not be reached; no byte of the stream went anywhere.
    Refused,
}

/// Why a stream is not usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Gone {
    /// The acceptor refused it.
    #[error("refused: the agent could not reach its upstream")]
    Refused,
    /// The peer reset it.
    #[error("reset by the peer")]
    Reset,
    /// The link ended.
    #[error("the multiplexed link ended")]
    Closed,
}

/// One stream's state.
struct Sub {
    inbound: VecDeque<Bytes>,
    /// Bytes queued in `inbound`.
    queued: usize,
    /// Bytes the reader took and this side has not credited back yet.
    taken: usize,
    /// Bytes this side may still send.
    credit: usize,
    /// The peer sent fin.
    fin: bool,
    /// The peer reset it.
    reset: bool,
    /// The acceptor's answer (opener side).
    answer: Option<Answer>,
    reader: Option<Waker>,
    sender: Option<Waker>,
    /// A task waiting for the stream to go ([`SubStream::gone`]).
    watcher: Option<Waker>,
}

impl Default for Sub {
    fn default() -> Self {
        Sub {
            inbound: VecDeque::new(),
            queued: 0,
            taken: 0,
            credit: WINDOW,
            fin: false,
            reset: false,
            answer: None,
            reader: None,
            sender: None,
            watcher: None,
        }
    }
}

impl Sub {
    fn wake(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
        if let Some(w) = self.sender.take() {
            w.wake();
        }
        if let Some(w) = self.watcher.take() {
            w.wake();
        }
    }
}

struct Inner {
    role: Role,
    /// The link's socket, set to reset on close when the link is aborted.
    fd: RawFd,
    /// Frames queued for the writer.
    out: BytesMut,
    writer: Option<Waker>,
    subs: HashMap<u32, Sub>,
    next_id: u32,
    /// No new stream opens (an opener's link whose session ended).
    retired: bool,
    closed: bool,
    accepted: VecDeque<u32>,
    acceptor: Option<Waker>,
    /// Tasks waiting for the link to close.
    on_close: Vec<Waker>,
}

/// One multiplexed link: its reader and writer run as tasks of their own; every handle
/// and stream shares this state.
#[derive(Clone)]
pub struct Mux(Rc<RefCell<Inner>>);

impl Mux {
    /// Runs the reader and writer over `link`, as `role`.
    pub fn start<L>(link: L, role: Role) -> Mux
    where
        L: monoio::io::Split + AsyncReadRent + AsyncWriteRent + AsRawFd + 'static,
    {
        let mux = Mux::state(role, link.as_raw_fd());
        let (read, write) = link.into_split();
        monoio::spawn(mux.clone().read_loop(read));
        monoio::spawn(mux.clone().write_loop(write));
        mux
    }

    /// The shared state of a link over socket `fd`, with no reader or writer yet.
    fn state(role: Role, fd: RawFd) -> Mux {
        Mux(Rc::new(RefCell::new(Inner {
            role,
            fd,
            out: BytesMut::new(),
            writer: None,
            subs: HashMap::new(),
            next_id: 0,
            retired: false,
            closed: false,
            accepted: VecDeque::new(),
            acceptor: None,
            on_close: Vec::new(),
        })))
    }

    async fn read_loop<R: AsyncReadRent>(self, mut read: R) {
        let mut pending = BytesMut::with_capacity(READ_SIZE);
        let mut buf = Vec::with_capacity(READ_SIZE);
        loop {
            let got = monoio::select! {
                got = read.read(buf) => got,
                _ = self.closed() => return,
            };
            let (res, b) = got;
            buf = b;
            match res {
                Ok(0) | Err(_) => break,
                Ok(_) => pending.extend_from_slice(&buf),
            }
            buf.clear();
            if self.dispatch(&mut pending).is_err() {
                crate::log_throttled!(warn, "a multiplexed link broke the protocol; closed");
                self.abort();
                return;
            }
        }
        self.close();
    }

    async fn write_loop<W: AsyncWriteRent>(self, mut write: W) {
        loop {
            let out = poll_fn(|cx| {
                let mut inner = self.0.borrow_mut();
                if !inner.out.is_empty() {
                    return Poll::Ready(Some(inner.out.split()));
                }
                if inner.closed {
                    return Poll::Ready(None);
                }
                inner.writer = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
            let Some(out) = out else { break };
            let (res, _) = write.write_all(out).await;
            if res.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
        self.close();
    }

    /// Ends the link: no new stream, every stream's waits end; the writer sends what is
    /// queued, then shuts its side.
    pub fn close(&self) {
        let mut inner = self.0.borrow_mut();
        if inner.closed {
            return;
        }
        inner.closed = true;
        for sub in inner.subs.values_mut() {
            sub.wake();
        }
        for w in inner
            .writer
            .take()
            .into_iter()
            .chain(inner.acceptor.take())
            .chain(std::mem::take(&mut inner.on_close))
        {
            w.wake();
        }
    }

    /// Cuts the link now: what is queued is dropped and the socket resets on close, so
    /// the far side sees the cut at once.
    pub fn abort(&self) {
        {
            let mut inner = self.0.borrow_mut();
            inner.out.clear();
            sockets::reset_on_close(inner.fd);
        }
        self.close();
    }

    /// Opens no more streams; an opener's link closes when its last one ends.
    pub fn retire(&self) {
        let idle = {
            let mut inner = self.0.borrow_mut();
            inner.retired = true;
            inner.subs.is_empty()
        };
        if idle {
            self.close();
        }
    }

    /// Whether a stream may open on it now.
    pub fn is_usable(&self) -> bool {
        let inner = self.0.borrow();
        !inner.closed && !inner.retired && inner.subs.len() < MAX_STREAMS
    }

    /// Whether the link ended.
    pub fn is_closed(&self) -> bool {
        self.0.borrow().closed
    }

    /// Resolves once the link ended.
    pub async fn closed(&self) {
        poll_fn(|cx| {
            let mut inner = self.0.borrow_mut();
            if inner.closed {
                return Poll::Ready(());
            }
            inner.on_close.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Takes the complete frames at the front of `pending`; `Err` when the peer broke
    /// the protocol.
    fn dispatch(&self, pending: &mut BytesMut) -> Result<(), ()> {
        let mut inner = self.0.borrow_mut();
        while pending.len() >= HEADER {
            let id = u32::from_be_bytes([pending[0], pending[1], pending[2], pending[3]]);
            let kind = pending[4];
            let len = u32::from_be_bytes([pending[5], pending[6], pending[7], pending[8]]) as usize;
            let fits = match kind {
                DATA => len <= WINDOW,
                CREDIT => len == 4,
                OPEN | FIN | OPENED | REFUSED | RESET => len == 0,
                _ => false,
            };
            if !fits {
                return Err(());
            }
            if pending.len() < HEADER + len {
                break;
            }
            pending.advance(HEADER);
            let payload = pending.split_to(len);
            let inner = &mut *inner;
            if kind == OPEN {
                if inner.role != Role::Acceptor
                    || id == 0
                    || inner.subs.len() >= MAX_STREAMS
                    || inner.subs.contains_key(&id)
                {
                    return Err(());
                }
                inner.subs.insert(id, Sub::default());
                inner.accepted.push_back(id);
                if let Some(w) = inner.acceptor.take() {
                    w.wake();
                }
                continue;
            }
            if matches!(kind, OPENED | REFUSED) && inner.role != Role::Opener {
                return Err(());
            }
            // A stream this side already let go: the peer's frames were on their way.
            let Some(sub) = inner.subs.get_mut(&id) else {
                continue;
            };
            match kind {
                DATA => {
                    sub.queued += len;
                    if sub.queued > WINDOW {
                        return Err(());
                    }
                    sub.inbound.push_back(payload.freeze());
                }
                CREDIT => {
                    let grant =
                        u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    sub.credit = sub.credit.saturating_add(grant as usize);
                    if sub.credit > WINDOW {
                        return Err(());
                    }
                }
                FIN => sub.fin = true,
                OPENED => sub.answer = Some(Answer::Opened),
                REFUSED => sub.answer = Some(Answer::Refused),
                _ => sub.reset = true,
            }
            sub.wake();
        }
        Ok(())
    }

    /// Queues one frame for the writer.
    fn send(&self, id: u32, kind: u8, payload: &[u8]) {
        let mut inner = self.0.borrow_mut();
        if inner.closed {
            return;
        }
        inner.out.reserve(HEADER + payload.len());
        inner.out.put_u32(id);
        inner.out.put_u8(kind);
        inner.out.put_u32(payload.len() as u32);
        inner.out.extend_from_slice(payload);
        if let Some(w) = inner.writer.take() {
            w.wake();
        }
    }

    /// Counts `n` bytes the reader of `id` took; credits them back once half a window
    /// was taken.
    fn took(&self, id: u32, n: usize) {
        let grant = {
            let mut inner = self.0.borrow_mut();
            let Some(sub) = inner.subs.get_mut(&id) else {
                return;
            };
            sub.queued -= n;
            sub.taken += n;
            if sub.taken < WINDOW / 2 || sub.fin || sub.reset {
                return;
            }
            std::mem::take(&mut sub.taken)
        };
        self.send(id, CREDIT, &(grant as u32).to_be_bytes());
    }

    /// Up to `want` bytes of `id`'s credit, taken; pending while it has none; `Err` once
    /// the stream or link is gone.
    fn poll_credit(&self, id: u32, want: usize, cx: &mut Context<'_>) -> Poll<Result<usize, Gone>> {
        let mut inner = self.0.borrow_mut();
        let closed = inner.closed;
        let Some(sub) = inner.subs.get_mut(&id) else {
            return Poll::Ready(Err(Gone::Closed));
        };
        if sub.reset {
            return Poll::Ready(Err(Gone::Reset));
        }
        if closed {
            return Poll::Ready(Err(Gone::Closed));
        }
        if sub.credit == 0 {
            sub.sender = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = want.min(sub.credit);
        sub.credit -= n;
        Poll::Ready(Ok(n))
    }

    /// Opens a stream (the acceptor answers it: [`SubStream::answered`]); `None` when
    /// the link is not [usable](Self::is_usable).
    pub fn open(&self) -> Option<SubStream> {
        let id = {
            let mut inner = self.0.borrow_mut();
            if inner.role != Role::Opener
                || inner.closed
                || inner.retired
                || inner.subs.len() >= MAX_STREAMS
            {
                return None;
            }
            inner.next_id = inner.next_id.checked_add(1)?;
            let id = inner.next_id;
            inner.subs.insert(id, Sub::default());
            id
        };
        self.send(id, OPEN, &[]);
        Some(SubStream::new(id, self.clone()))
    }

    /// The next stream the opener opened; `None` once the link ended.
    pub async fn accept(&self) -> Option<SubStream> {
        let id = poll_fn(|cx| {
            let mut inner = self.0.borrow_mut();
            if inner.closed {
                return Poll::Ready(None);
            }
            if let Some(id) = inner.accepted.pop_front() {
                return Poll::Ready(Some(id));
            }
            inner.acceptor = Some(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        Some(SubStream::new(id, self.clone()))
    }
}

/// One stream of a [`Mux`]; dropping it resets the stream unless both sides finished.
pub struct SubStream {
    id: u32,
    mux: Mux,
    fin_sent: Cell<bool>,
}

// SAFETY: hyper's client wants `Send` I/O because other runtimes move connections
// between threads. A stream, its link and every task touching them live and are
// dropped on the monoio worker that opened the link; nothing hands them to another
// thread (as io/hyper_rt.rs's `Io`).
unsafe impl Send for SubStream {}

impl SubStream {
    fn new(id: u32, mux: Mux) -> SubStream {
        SubStream {
            id,
            mux,
            fin_sent: Cell::new(false),
        }
    }

    /// The acceptor's answer to this stream's open (opener side).
    pub async fn answered(&self) -> Result<(), Gone> {
        poll_fn(|cx| {
            let mut inner = self.mux.0.borrow_mut();
            let closed = inner.closed;
            let Some(sub) = inner.subs.get_mut(&self.id) else {
                return Poll::Ready(Err(Gone::Closed));
            };
            match sub.answer {
                Some(Answer::Opened) => Poll::Ready(Ok(())),
                Some(Answer::Refused) => Poll::Ready(Err(Gone::Refused)),
                None if sub.reset => Poll::Ready(Err(Gone::Reset)),
                None if closed => Poll::Ready(Err(Gone::Closed)),
                None => {
                    sub.reader = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Answers the open (acceptor side).
    pub fn answer(&self, answer: Answer) {
        let kind = match answer {
            Answer::Opened => OPENED,
            Answer::Refused => REFUSED,
        };
        self.mux.send(self.id, kind, &[]);
        if answer == Answer::Refused {
            self.fin_sent.set(true);
        }
    }

    /// The next bytes from the peer; `Ok(None)` after its fin.
    pub async fn recv(&self) -> Result<Option<Bytes>, Gone> {
        let got = poll_fn(|cx| self.poll_recv(cx)).await?;
        if let Some(b) = &got {
            self.mux.took(self.id, b.len());
        }
        Ok(got)
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Gone>> {
        let mut inner = self.mux.0.borrow_mut();
        let closed = inner.closed;
        let Some(sub) = inner.subs.get_mut(&self.id) else {
            return Poll::Ready(Err(Gone::Closed));
        };
        if sub.reset {
            return Poll::Ready(Err(Gone::Reset));
        }
        if let Some(b) = sub.inbound.pop_front() {
            return Poll::Ready(Ok(Some(b)));
        }
        if sub.fin {
            return Poll::Ready(Ok(None));
        }
        if closed {
            return Poll::Ready(Err(Gone::Closed));
        }
        sub.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Waits for credit to send, then takes up to `want` bytes of it.
    pub async fn credit(&self, want: usize) -> Result<usize, Gone> {
        poll_fn(|cx| self.mux.poll_credit(self.id, want, cx)).await
    }

    /// Sends `data`, which must fit in credit taken by [`Self::credit`].
    pub fn send(&self, data: &[u8]) {
        self.mux.send(self.id, DATA, data);
    }

    /// Sends all of `data` as credit allows.
    pub async fn send_all(&self, mut data: &[u8]) -> Result<(), Gone> {
        while !data.is_empty() {
            let n = self.credit(data.len()).await?;
            self.send(&data[..n]);
            data = &data[n..];
        }
        Ok(())
    }

    /// Ends this side: the peer reads to its end.
    pub fn finish(&self) {
        if !self.fin_sent.replace(true) {
            self.mux.send(self.id, FIN, &[]);
        }
    }

    /// Resolves once the peer reset the stream or the link ended.
    pub async fn gone(&self) {
        poll_fn(|cx| {
            let mut inner = self.mux.0.borrow_mut();
            let closed = inner.closed;
            match inner.subs.get_mut(&self.id) {
                Some(sub) if !sub.reset && !closed => {
                    sub.watcher = Some(cx.waker().clone());
                    Poll::Pending
                }
                _ => Poll::Ready(()),
            }
        })
        .await
    }
}

impl Drop for SubStream {
    fn drop(&mut self) {
        let (finished, last) = {
            let mut inner = self.mux.0.borrow_mut();
            let sub = inner.subs.remove(&self.id);
            let finished = sub.is_none_or(|s| s.fin || s.reset) && self.fin_sent.get();
            let last = inner.subs.is_empty() && (inner.role == Role::Opener || inner.retired);
            (finished, last)
        };
        if !finished {
            self.mux.send(self.id, RESET, &[]);
        }
        if last {
            self.mux.close();
        }
    }
}

impl hyper::rt::Read for SubStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut inner = self.mux.0.borrow_mut();
        let closed = inner.closed;
        let Some(sub) = inner.subs.get_mut(&self.id) else {
            return Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()));
        };
        if sub.reset {
            return Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()));
        }
        if let Some(front) = sub.inbound.front_mut() {
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            front.advance(n);
            if front.is_empty() {
                sub.inbound.pop_front();
            }
            drop(inner);
            self.mux.took(self.id, n);
            return Poll::Ready(Ok(()));
        }
        if sub.fin {
            return Poll::Ready(Ok(()));
        }
        if closed {
            return Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()));
        }
        sub.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl hyper::rt::Write for SubStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.mux.poll_credit(self.id, buf.len(), cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
            Poll::Ready(Ok(n)) => {
                self.send(&buf[..n]);
                Poll::Ready(Ok(n))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.finish();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests;
