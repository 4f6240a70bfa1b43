//! A data channel of either transport, seen by the stream pipeline: after its hello
//! ([`ChannelLink::dial`]), chunk-framed streams one after another. The channel's
//! [`FrameReader`] lives as long as the channel: bytes read past one frame belong to
//! what follows it (the client's first chunk, the next header).

use std::{future::Future, os::fd::AsRawFd, sync::Arc};

use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use rustls::{ServerConfig, ServerConnection};

use super::{
    Carries, ChannelError, ChannelLink, DataChannel, MaybeFuture, ParkEnd, Pumped, Stream,
};
use crate::{
    agent::{terminate, upstream::Upstream, AgentShared, SessionTicket},
    io::{
        self,
        chunked::ChunkedOutcome,
        framed::{self, FrameReader},
        idle::Progress,
        readiness::Readiness,
        splice::PumpError,
        substream::ChunkedSub,
        tls_stream::TlsStream,
        PumpStats,
    },
    wire::{Frame, StreamCode, StreamStart},
};

/// After a TLS-terminated stream: how long to wait for the edge's end marker (the
/// client's FIN) before giving up on reusing the channel.
const END_MARKER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A data channel over link `L` (a socket, or TLS over one) and the reader holding
/// bytes received past the last frame.
pub(in crate::agent) struct FramedChannel<L> {
    /// `None` once a stream's pump took it and did not give it back.
    link: Option<L>,
    reader: FrameReader,
}

impl<L> DataChannel for FramedChannel<L>
where
    L: ChannelLink + Split + AsyncReadRent + AsyncWriteRent + Readiness + AsRawFd + Unpin + 'static,
{
    type Client = TlsStream<ServerConnection, ChunkedSub<L>>;

    async fn authenticate(
        ticket: &SessionTicket,
        shared: &AgentShared,
    ) -> Result<Self, ChannelError> {
        Ok(FramedChannel {
            link: Some(L::dial(ticket, shared).await?),
            reader: FrameReader::new(),
        })
    }

    async fn read_header(&mut self) -> Result<(StreamStart, Carries), ParkEnd> {
        let link = self.link.as_mut().ok_or(ParkEnd::Closed)?;
        ParkEnd::from_read(self.reader.next(link).await)
    }

    async fn send_status(&mut self, code: StreamCode) -> bool {
        let Some(link) = self.link.as_mut() else {
            return false;
        };
        framed::write_frame(link, &Frame::StreamStatus { code })
            .await
            .is_ok()
    }

    type PumpOutcome = Option<ChunkedOutcome<L>>;

    fn pump<'a>(
        &'a mut self,
        upstream: Upstream,
        stream: &'a Stream<'_>,
        progress: &'a Progress,
    ) -> impl Future<Output = Self::PumpOutcome> + 'a {
        let keep = move || stream.keeps_channel();
        let pump = stream.shared.settings.pump;
        let reader = &mut self.reader;
        MaybeFuture(
            self.link
                .take()
                .map(|link| link.forward(upstream, reader, keep, progress, pump)),
        )
    }

    fn pumped(&mut self, outcome: Self::PumpOutcome) -> Pumped {
        let Some(outcome) = outcome else {
            return Pumped {
                result: None,
                again: false,
            };
        };
        self.link = outcome.reusable;
        Pumped {
            result: Some(outcome.result),
            again: self.link.is_some(),
        }
    }

    async fn accept_client(
        self,
        config: Arc<ServerConfig>,
        stream: &Stream<'_>,
    ) -> Option<Self::Client> {
        let sub = ChunkedSub::new(self.link?, self.reader, stream.keep_channel_later());
        match terminate::accept(sub, Vec::new(), config, &stream.start, stream.shared).await {
            Ok(client) => Some(client),
            Err(failed) => {
                // End our direction (the alert already went out) and retire the channel.
                if let Some(mut failed) = failed {
                    failed.io_mut().retire();
                    let _ = monoio::io::AsyncWriteRent::shutdown(failed.io_mut()).await;
                }
                None
            }
        }
    }

    type Link = ChunkedSub<L>;

    fn into_link(self) -> Option<Self::Link> {
        Some(ChunkedSub::new(self.link?, self.reader, || false))
    }

    fn abandon(client: Self::Client) {
        drop(client);
    }

    async fn pump_client(
        client: Self::Client,
        upstream: Upstream,
    ) -> (Result<PumpStats, PumpError>, Option<Self::Client>) {
        let progress = Progress::default();
        io::copy::forward_returning(client, upstream, &progress).await
    }

    async fn reuse(client: Self::Client) -> Option<Self> {
        let (sub, _conn) = client.into_parts()?;
        let (link, reader) = sub.finish(END_MARKER_WAIT).await?;
        Some(FramedChannel {
            link: Some(link),
            reader,
        })
    }
}
