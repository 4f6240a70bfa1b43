//! The edge's side of a data channel: the one place where `tcp` and `tls` channels
//! differ. [`ParkedChannel`] is an authenticated idle channel waiting in its session's
//! queue (a std socket, so any worker may take it); [`ParkedChannel::announce`]
//! rebuilds it on the worker that took it, sends the Stream header with the client
//! bytes already read, and reads the agent's status; the resulting [`DataChannel`] is
//! ready for the pump ([`DataChannel::pump`]), which on a `tls` channel hands the
//! channel back for parking again when both sides ended the stream cleanly.
//!
//! | step      | `tcp` (plain)                          | `tls`                                        |
//! |-----------|----------------------------------------|----------------------------------------------|
//! | park      | [`ParkedChannel::plain`] (agent port)  | [`ParkedChannel::tls`] (control.rs)          |
//!
//! From the announce on, both are the same: the header and one length-prefixed chunk of
//! early bytes, the status read through the channel's [`FrameReader`] (which keeps any
//! chunk bytes behind it), the stream chunk-framed both ways ([`chunked::forward`]),
//! and the channel parked again when both sides kept it.
//!
//! A failure before the agent's `Ok` status is an [`OpenError`]: nothing has reached an
//! upstream yet, so the open phase (edge/open.rs) may replay the stream on another
//! pool member.

use std::{
    os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd},
    time::Duration,
};

use monoio::{io::AsyncWriteRentExt, net::TcpStream};

use crate::{
    io::{
        self, chunked, framed, framed::FrameReader, idle, idle::Progress, maybe_tls::MaybeTls,
        splice::PumpError, tls_stream::TlsStream,
    },
    wire::{self, Frame, StreamCode},
};

/// A TLS connection on the agent port (a control channel, or a `tls` data channel).
pub(super) type Tls = TlsStream<rustls::ServerConnection>;

/// How long the agent may take to answer a stream: its upstream connect timeout
/// (10 s) plus a margin.
pub const STATUS_WAIT: Duration = Duration::from_secs(12);

/// An idle, authenticated data channel waiting at the edge for a stream. Either kind
/// carries chunk-framed streams one after another.
pub enum ParkedChannel {
    /// Plain TCP.
    Plain(std::net::TcpStream),
    /// TLS.
    Tls(std::net::TcpStream, Box<rustls::ServerConnection>),
}

impl AsRawFd for ParkedChannel {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            ParkedChannel::Plain(s) | ParkedChannel::Tls(s, _) => s.as_raw_fd(),
        }
    }
}

/// The socket, detached from this worker's runtime so another may adopt it.
fn detach(stream: TcpStream) -> std::net::TcpStream {
    let fd = stream.into_raw_fd();
    // SAFETY: `into_raw_fd` handed us sole ownership of this open socket.
    unsafe { std::net::TcpStream::from_raw_fd(fd) }
}

impl ParkedChannel {
    /// A plain-TCP channel whose hello the agent port accepted, or after a stream that
    /// left it reusable.
    pub fn plain(stream: TcpStream) -> Self {
        ParkedChannel::Plain(detach(stream))
    }

    /// A TLS channel (new from the agent port, or after a stream that left it
    /// reusable): its socket leaves this worker's runtime, its TLS state travels with
    /// it, and whichever worker takes it rebuilds the stream. `None` (the channel is
    /// closed) when rustls still holds unread bytes.
    pub fn tls(tls: Tls) -> Option<Self> {
        let Some((tcp, conn)) = tls.into_parts() else {
            tracing::debug!("data channel with unread bytes not parked");
            return None;
        };
        Some(ParkedChannel::Tls(detach(tcp), Box::new(conn)))
    }

    /// Rebuilds the channel on this worker, sends the stream header `start` (and the
    /// client's `early` bytes) and waits up to [`STATUS_WAIT`] for the agent's status.
    /// Not cancel-safe: bytes may have been sent; dropped only when the session ends,
    /// and the channel is closed with it.
    pub async fn announce(self, start: &Frame, early: &[u8]) -> Result<DataChannel, OpenError> {
        let mut first = bytes::BytesMut::with_capacity(64 + early.len());
        wire::encode(start, &mut first);
        if !early.is_empty() {
            bytes::BufMut::put_u32(&mut first, early.len() as u32);
            first.extend_from_slice(early);
        }
        let mut reader = FrameReader::new();
        match self {
            ParkedChannel::Plain(socket) => {
                let mut tcp = TcpStream::from_std(socket).map_err(|_| OpenError::Unusable)?;
                let (res, _) = tcp.write_all(first).await;
                res.map_err(|_| OpenError::Broke)?;
                let status = idle::within(STATUS_WAIT, reader.next(&mut tcp)).await;
                status_of(status)?;
                Ok(DataChannel::Plain(tcp, reader))
            }
            // Boxed from the start: the TLS state would otherwise size every open.
            ParkedChannel::Tls(socket, conn) => {
                Box::pin(announce_tls(socket, conn, first, reader)).await
            }
        }
    }
}

/// [`ParkedChannel::announce`] on a `tls` channel.
async fn announce_tls(
    socket: std::net::TcpStream,
    conn: Box<rustls::ServerConnection>,
    first: bytes::BytesMut,
    mut reader: FrameReader,
) -> Result<DataChannel, OpenError> {
    let tcp = TcpStream::from_std(socket).map_err(|_| OpenError::Unusable)?;
    let mut tls = Box::new(Tls::from_parts(tcp, *conn));
    let (res, _) = tls.write_all(first).await;
    res.map_err(|_| OpenError::Broke)?;
    let status = idle::within(STATUS_WAIT, reader.next(&mut *tls)).await;
    status_of(status)?;
    Ok(DataChannel::Tls(tls, reader))
}

type Status = Result<Result<Option<Frame>, framed::FrameError>, idle::TimedOut>;

/// The agent's answer to a Stream header, as an open result.
fn status_of(status: Status) -> Result<(), OpenError> {
    match status {
        Err(_) => Err(OpenError::NoStatus),
        Ok(Err(_)) | Ok(Ok(None)) => Err(OpenError::Broke),
        Ok(Ok(Some(Frame::StreamStatus { code }))) => match code {
            StreamCode::Ok => Ok(()),
            StreamCode::UnknownEndpoint => Err(OpenError::UnknownUrl),
            StreamCode::UpstreamFailed => Err(OpenError::UpstreamFailed),
            // Only edges send them, on peer links.
            StreamCode::PeerRefused | StreamCode::Denied => Err(OpenError::UnexpectedFrame),
        },
        Ok(Ok(Some(_))) => Err(OpenError::UnexpectedFrame),
    }
}

/// Why a stream could not be opened on one pool member. Every cause happens before
/// the agent's `Ok` status, so no byte has reached an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The member's session ended (before or while the stream was announced).
    SessionGone,
    /// No data channel arrived within [`super::CHANNEL_WAIT`].
    NoChannel,
    /// The parked socket could not be adopted by this worker.
    Unusable,
    /// The channel failed or closed while the stream was announced.
    Broke,
    /// No status within [`STATUS_WAIT`].
    NoStatus,
    /// The agent serves no such internal URL.
    UnknownUrl,
    /// The agent could not connect the upstream (refused, timed out, TLS failed).
    UpstreamFailed,
    /// Something other than a status came back.
    UnexpectedFrame,
}

/// Which hop an [`OpenError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedSide {
    /// The agent: its session, its data channel or its answer.
    Agent,
    /// The agent's upstream.
    Upstream,
}

impl OpenError {
    /// Every cause, in [`Self::index`] order (metrics).
    pub const ALL: [OpenError; 8] = [
        OpenError::SessionGone,
        OpenError::NoChannel,
        OpenError::Unusable,
        OpenError::Broke,
        OpenError::NoStatus,
        OpenError::UnknownUrl,
        OpenError::UpstreamFailed,
        OpenError::UnexpectedFrame,
    ];

    /// Position in [`Self::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether the stream may be replayed on another member. True for every cause
    /// today (the edge has sent nothing the client could not send again); a cause
    /// after which client bytes may have reached an upstream must say false.
    pub const fn retryable(self) -> bool {
        true
    }

    /// Which hop failed.
    pub const fn side(self) -> FailedSide {
        match self {
            OpenError::UpstreamFailed => FailedSide::Upstream,
            _ => FailedSide::Agent,
        }
    }

    /// Stable name for metric labels (`sluice_edge_open_failures_total{cause=…}`).
    pub const fn label(self) -> &'static str {
        match self {
            OpenError::SessionGone => "session_ended",
            OpenError::NoChannel => "no_channel",
            OpenError::Unusable => "channel_unusable",
            OpenError::Broke => "channel_broke",
            OpenError::NoStatus => "status_timeout",
            OpenError::UnknownUrl => "unknown_url",
            OpenError::UpstreamFailed => "upstream_failed",
            OpenError::UnexpectedFrame => "unexpected_frame",
        }
    }

    /// The sentence logs carry (`reason`).
    pub const fn as_str(self) -> &'static str {
        match self {
            OpenError::SessionGone => "session ended",
            OpenError::NoChannel => "no data channel in time",
            OpenError::Unusable => "data channel unusable",
            OpenError::Broke => "data channel broke",
            OpenError::NoStatus => "no stream status in time",
            OpenError::UnknownUrl => "agent does not serve the URL",
            OpenError::UpstreamFailed => "upstream connect failed",
            OpenError::UnexpectedFrame => "unexpected frame instead of a stream status",
        }
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for OpenError {}

/// A data channel whose agent connected the upstream: ready for the pump.
pub enum DataChannel {
    /// A `tcp` channel and the reader holding any chunk bytes already received.
    Plain(TcpStream, FrameReader),
    /// A `tls` channel and the reader holding any chunk bytes already received.
    Tls(Box<Tls>, FrameReader),
}

impl AsRawFd for DataChannel {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            DataChannel::Plain(tcp, _) => tcp.as_raw_fd(),
            DataChannel::Tls(tls, _) => tls.as_raw_fd(),
        }
    }
}

/// How a stream's pump ended.
pub struct Pumped {
    /// Bytes moved, or the error that ended the stream.
    pub result: Result<io::PumpStats, PumpError>,
    /// A channel both sides kept, to park again for the next stream.
    pub again: Option<ParkedChannel>,
}

impl DataChannel {
    /// Moves the stream's bytes between `client` and the channel, chunk-framed, until
    /// both directions end: spliced between plain sockets (unless `pump` says copy),
    /// copied otherwise. `progress` counts bytes (idle timeout). Not cancel-safe.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async block keeps its arguments once; an async fn, twice"
    )]
    pub fn pump<'a>(
        self,
        client: MaybeTls<rustls::ServerConnection>,
        pump: io::Pump,
        progress: &'a Progress,
    ) -> impl std::future::Future<Output = Pumped> + 'a {
        async move {
            match self {
                DataChannel::Plain(tcp, mut reader) => {
                    let outcome = io::forward_on_tcp_channel(
                        pump,
                        client,
                        tcp,
                        &mut reader,
                        || true,
                        progress,
                    )
                    .await;
                    Pumped {
                        again: reusable(outcome.reusable, &reader).map(ParkedChannel::plain),
                        result: outcome.result,
                    }
                }
                // Boxed: a TLS channel's state would otherwise size every stream's task.
                DataChannel::Tls(tls, reader) => {
                    let (result, again) = Box::pin(pump_tls(client, *tls, reader, progress)).await;
                    Pumped {
                        result,
                        again: again.and_then(ParkedChannel::tls),
                    }
                }
            }
        }
    }
}

/// One stream on a `tls` channel, chunk-framed both ways; the channel back when both
/// sides kept it.
async fn pump_tls(
    client: MaybeTls<rustls::ServerConnection>,
    channel: Tls,
    mut reader: FrameReader,
    progress: &Progress,
) -> (Result<io::PumpStats, PumpError>, Option<Tls>) {
    let outcome = chunked::forward(client, channel, &mut reader, || true, progress).await;
    (outcome.result, reusable(outcome.reusable, &reader))
}

/// A channel both sides kept, unless bytes came after the agent's end marker: the
/// agent sends nothing unasked between streams, so leftover bytes mean a confused peer,
/// and such a channel is not reused.
fn reusable<T>(channel: Option<T>, reader: &FrameReader) -> Option<T> {
    channel.filter(|_| !reader.has_leftover())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(frame: Option<Frame>) -> Status {
        Ok(Ok(frame))
    }

    #[test]
    fn the_agents_status_becomes_an_open_result() {
        let status = |code| answer(Some(Frame::StreamStatus { code }));
        assert_eq!(status_of(status(StreamCode::Ok)), Ok(()));
        assert_eq!(
            status_of(status(StreamCode::UpstreamFailed)),
            Err(OpenError::UpstreamFailed)
        );
        assert_eq!(
            status_of(status(StreamCode::UnknownEndpoint)),
            Err(OpenError::UnknownUrl)
        );
        assert_eq!(status_of(answer(None)), Err(OpenError::Broke));
        assert_eq!(
            status_of(answer(Some(Frame::Ping { nonce: 1 }))),
            Err(OpenError::UnexpectedFrame)
        );
        assert_eq!(
            status_of(Ok(Err(framed::FrameError::TruncatedEof))),
            Err(OpenError::Broke)
        );
    }

    #[test]
    fn open_errors_have_distinct_labels_in_index_order() {
        let labels: std::collections::HashSet<_> =
            OpenError::ALL.iter().map(|e| e.label()).collect();
        assert_eq!(labels.len(), OpenError::ALL.len());
        for (i, e) in OpenError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
            // Nothing reached an upstream before the status: every cause may be replayed.
            assert!(e.retryable());
        }
        assert_eq!(OpenError::UpstreamFailed.side(), FailedSide::Upstream);
        assert_eq!(OpenError::NoChannel.side(), FailedSide::Agent);
        // Log lines that tests and operators match on.
        assert_eq!(
            OpenError::UpstreamFailed.to_string(),
            "upstream connect failed"
        );
        assert_eq!(OpenError::NoChannel.to_string(), "no data channel in time");
    }
}
