//! The agent's side of a data channel: the one place where `tcp` and `tls` channels
//! differ. [`DataChannel`] is what the stream pipeline (agent/pipeline.rs) needs from a
//! channel, step by step; `pipeline::open_loop` picks the implementation once, from
//! `agent.transport`, and spawns one task per requested channel, typed by it (so a
//! `tcp` channel's task is not sized by a `tls` channel's state).
//!
//! | step          | `tcp` (plain.rs)                  | `tls` (tls.rs)                          |
//! |---------------|-----------------------------------|-----------------------------------------|
//! | authenticate  | dial, magic + `ChannelHello`      | dial, TLS handshake, `ChannelHello`     |
//!
//! Everything after the hello is the same for both ([`FramedChannel`], framed.rs): a
//! `Stream` header, the agent's `StreamStatus`, then the stream's bytes chunk-framed
//! both ways ([`crate::io::chunked::forward`]); TLS termination runs over the stream's
//! chunks. A channel carries streams one after another and waits for the next header
//! when a stream ends, unless twice `data_channels` are already parked
//! ([`Stream::keeps_channel`]).

mod framed;
mod plain;
mod tls;

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use monoio::{
    io::{AsyncReadRent, AsyncWriteRent},
    net::TcpStream,
};
use rustls::ServerConfig;

pub(super) use self::framed::FramedChannel;

/// A `tcp` data channel.
pub(super) type PlainChannel = FramedChannel<TcpStream>;
/// A `tls` data channel.
pub(super) type TlsChannel = FramedChannel<tls::Tls>;

/// The connection under a data channel: how it is opened, and how a stream's bytes
/// cross it.
pub(super) trait ChannelLink: Sized {
    /// Dials the edge and proves the session ([`hello`]); `Ok` once sent.
    async fn dial(ticket: &SessionTicket, shared: &AgentShared) -> Result<Self, ChannelError>;

    /// Forwards one stream, chunk-framed on this link, between it and `upstream`
    /// ([`crate::io::chunked::forward`]); `keep` is asked when the upstream ends.
    fn forward<'a>(
        self,
        upstream: Upstream,
        reader: &'a mut FrameReader,
        keep: impl FnOnce() -> bool + 'a,
        progress: &'a Progress,
        pump: Pump,
    ) -> impl Future<Output = ChunkedOutcome<Self>> + 'a;
}
use super::{upstream::Upstream, AgentShared, SessionTicket, CONNECT_TIMEOUT};
use crate::{
    config::agent::AgentEndpoint,
    io::{
        chunked::ChunkedOutcome,
        framed::{FrameError, FrameReader},
        idle::Progress,
        splice::PumpError,
        Pump, PumpStats,
    },
    wire::{Frame, StreamCode, StreamStart, PROTOCOL_VERSION},
};

/// One stream handed to a channel: what each step needs to know about it.
pub(super) struct Stream<'a> {
    /// The header the edge sent.
    pub start: StreamStart,
    /// The endpoint its internal URL names.
    pub endpoint: &'a AgentEndpoint,
    /// The session the channel belongs to.
    pub ticket: &'a Arc<SessionTicket>,
    /// The agent.
    pub shared: &'a AgentShared,
}

impl Stream<'_> {
    /// Whether a reusable channel should wait for another stream now that this one
    /// ended: the session lives and fewer than twice `data_channels` are parked, so a
    /// steady load reuses channels instead of trading one handshake per stream.
    pub fn keeps_channel(&self) -> bool {
        self.ticket.is_alive() && self.ticket.below(2 * self.shared.settings.data_channels)
    }

    /// [`Self::keeps_channel`], to be asked later by a stream that outlives `self`.
    pub fn keep_channel_later(&self) -> impl Fn() -> bool + 'static {
        let ticket = self.ticket.clone();
        let ceiling = 2 * self.shared.settings.data_channels;
        move || ticket.is_alive() && ticket.below(ceiling)
    }
}

/// How a pumped stream ended.
pub(super) struct Pumped {
    /// Bytes moved, or the error that ended the stream; `None` when it ended before
    /// the pump started (the client's early bytes could not be delivered).
    pub result: Option<Result<PumpStats, PumpError>>,
    /// Whether the channel may take another stream (both sides kept it).
    pub again: bool,
}

/// A data channel, from the agent's side. Each async step is not cancel-safe (bytes
/// may have moved); the pipeline drops a channel only to close it.
///
/// The steps of a stream that is not terminated take `&mut self` rather than the
/// channel by value: an `async fn` keeps a by-value argument in its state for as long
/// as it runs, so a `tls` channel's connection (over a kilobyte) would be stored once
/// more in every channel's task for each such layer.
pub(super) trait DataChannel: Sized {
    /// The client's stream once the agent has terminated its TLS on this channel.
    type Client;

    /// Dials the edge and proves the session ([`hello`]); `Ok` once the channel is
    /// parked at the edge.
    async fn authenticate(
        ticket: &SessionTicket,
        shared: &AgentShared,
    ) -> Result<Self, ChannelError>;

    /// Waits parked, without a deadline, until the edge hands over a stream; its header
    /// and what the stream carries.
    async fn read_header(&mut self) -> Result<(StreamStart, Carries), ParkEnd>;

    /// Sends the stream's status; false if that failed.
    async fn send_status(&mut self, code: StreamCode) -> bool;

    /// What [`Self::pump`] ends with, for [`Self::pumped`].
    type PumpOutcome;

    /// Moves the stream's bytes (the client's early ones first) between the channel and
    /// `upstream` until both directions end; `progress` counts them (idle timeout).
    /// A plain function returning the pump's future, not an `async fn`, so that
    /// `upstream` is not kept a second time beside the pump in every channel's task.
    fn pump<'a>(
        &'a mut self,
        upstream: Upstream,
        stream: &'a Stream<'_>,
        progress: &'a Progress,
    ) -> impl Future<Output = Self::PumpOutcome> + 'a;

    /// How the pump ended. Unless [`Pumped::again`] says so, the channel is spent: its
    /// connection went with the stream.
    fn pumped(&mut self, outcome: Self::PumpOutcome) -> Pumped;

    /// The client's TLS handshake over the stream (`agent_tls_termination`), after an
    /// `Ok` status. `None`: refused (logged and counted; the channel is done).
    async fn accept_client(
        self,
        config: Arc<ServerConfig>,
        stream: &Stream<'_>,
    ) -> Option<Self::Client>;

    /// The stream as a byte stream of its own, for the multiplexed link a
    /// [`Carries::Mux`] stream carries (after the `Ok` status); the channel is closed
    /// when the link ends.
    type Link: AsyncReadRent
        + AsyncWriteRent
        + monoio::io::Split
        + std::os::fd::AsRawFd
        + Unpin
        + 'static;

    /// [`Self::Link`] over this channel (`None`: its connection is gone).
    fn into_link(self) -> Option<Self::Link>;

    /// Ends a terminated client whose upstream could not be connected.
    fn abandon(client: Self::Client);

    /// Moves a terminated client's plaintext to and from `upstream`; the client comes
    /// back when the stream ended cleanly and the channel may be reused.
    async fn pump_client(
        client: Self::Client,
        upstream: Upstream,
    ) -> (Result<PumpStats, PumpError>, Option<Self::Client>);

    /// The channel under a client that ended cleanly, when both sides keep it.
    async fn reuse(client: Self::Client) -> Option<Self>;
}

/// What a stream handed to a channel carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Carries {
    /// A connection's bytes, relayed to and from a connection to the upstream
    /// ([`Frame::Stream`]).
    Bytes,
    /// A multiplexed link whose sub-streams each go to an upstream connection of their
    /// own ([`Frame::MuxStream`], mux_relay.rs).
    Mux,
}

/// A future that may be absent: `None` is ready at once with `None`. Lets a channel
/// hand out its pump's future without an `async` wrapper (which would store the
/// pump's arguments twice).
pub(super) struct MaybeFuture<F>(pub Option<F>);

impl<F: Future> Future for MaybeFuture<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning of the only field: `MaybeFuture` never moves the
        // future out of its `Option` (no `Drop`, no `Unpin` impl, no method taking it),
        // so the pinned `Self` pins the future in place.
        let inner = unsafe { self.map_unchecked_mut(|m| &mut m.0) };
        match inner.as_pin_mut() {
            Some(future) => future.poll(cx).map(Some),
            None => Poll::Ready(None),
        }
    }
}

/// Why a data channel could not be opened (the heartbeat's top-up retries).
#[derive(Debug)]
pub(super) enum ChannelError {
    /// The edge's agent port could not be dialled.
    Dial(std::io::Error),
    /// Dialling took longer than [`CONNECT_TIMEOUT`].
    DialTimeout,
    /// The TLS handshake with the edge failed.
    Tls(std::io::Error),
    /// The TLS handshake took longer than [`CONNECT_TIMEOUT`].
    TlsTimeout,
    /// The hello could not be sent.
    Hello(std::io::Error),
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::Dial(e) | ChannelError::Hello(e) => e.fmt(f),
            ChannelError::DialTimeout => f.write_str("connect timed out"),
            ChannelError::Tls(e) => write!(
                f,
                "TLS handshake failed: {}",
                crate::tls::explain(&e.to_string())
            ),
            ChannelError::TlsTimeout => f.write_str("TLS handshake timed out"),
        }
    }
}

/// How a parked channel's wait ended without a stream.
#[derive(Debug)]
pub(super) enum ParkEnd {
    /// The edge closed it (session ended, pool trimmed).
    Closed,
    /// The edge sent another frame than `Stream`.
    Unexpected(&'static str),
    /// The channel failed.
    Failed(FrameError),
}

impl ParkEnd {
    /// The wait's result as a header or why there is none.
    pub fn from_read(
        read: Result<Option<Frame>, FrameError>,
    ) -> Result<(StreamStart, Carries), ParkEnd> {
        match read {
            Ok(Some(Frame::Stream(start))) => Ok((start, Carries::Bytes)),
            Ok(Some(Frame::MuxStream(start))) => Ok((start, Carries::Mux)),
            Ok(Some(frame)) => Err(ParkEnd::Unexpected(frame.name())),
            Ok(None) => Err(ParkEnd::Closed),
            Err(e) => Err(ParkEnd::Failed(e)),
        }
    }
}

/// A data channel's first frame: a fresh sequence number and its proof, never the
/// session secret itself.
pub(super) fn hello(ticket: &SessionTicket) -> Frame {
    let seq = ticket
        .next_channel
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Frame::ChannelHello {
        version: PROTOCOL_VERSION,
        session_id: ticket.id,
        seq,
        proof: crate::wire::channel_proof::prove(&ticket.secret, ticket.id, seq),
    }
}

/// Dials the edge's agent port, through the egress proxy if there is one (bounded by
/// [`CONNECT_TIMEOUT`]).
pub(super) async fn dial_edge(ticket: &SessionTicket) -> Result<TcpStream, ChannelError> {
    let dial = super::egress::dial(ticket.edge_addr, ticket.proxy.as_deref());
    match crate::io::idle::within(CONNECT_TIMEOUT, dial).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(ChannelError::Dial(e)),
        Err(_) => Err(ChannelError::DialTimeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_errors_read_as_before() {
        assert_eq!(ChannelError::DialTimeout.to_string(), "connect timed out");
        assert_eq!(
            ChannelError::TlsTimeout.to_string(),
            "TLS handshake timed out"
        );
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(
            ChannelError::Dial(std::io::Error::from_raw_os_error(libc::ECONNREFUSED)).to_string(),
            refused.to_string()
        );
        assert!(ChannelError::Tls(std::io::Error::other("x"))
            .to_string()
            .starts_with("TLS handshake failed: "));
    }

    #[test]
    fn a_parked_wait_ends_with_a_header_or_a_reason() {
        let start = StreamStart {
            client: "127.0.0.1:1".parse().unwrap(),
            server: "127.0.0.1:2".parse().unwrap(),
            internal_url: "tcp://a.internal:1".into(),
        };
        assert_eq!(
            ParkEnd::from_read(Ok(Some(Frame::Stream(start.clone())))).unwrap(),
            (start.clone(), Carries::Bytes)
        );
        assert_eq!(
            ParkEnd::from_read(Ok(Some(Frame::MuxStream(start.clone())))).unwrap(),
            (start, Carries::Mux)
        );
        assert!(matches!(ParkEnd::from_read(Ok(None)), Err(ParkEnd::Closed)));
        assert!(matches!(
            ParkEnd::from_read(Ok(Some(Frame::Ping { nonce: 1 }))),
            Err(ParkEnd::Unexpected(_))
        ));
        assert!(matches!(
            ParkEnd::from_read(Err(FrameError::TruncatedEof)),
            Err(ParkEnd::Failed(_))
        ));
    }
}
