//! `tls` data channels: TLS to the agent port, a `ChannelHello`, then chunk-framed
//! streams one after another. The channel's [`FrameReader`] lives as long as the
//! channel: bytes read past one frame belong to what follows it (the client's first
//! chunk, the next header).

use std::{future::Future, sync::Arc};

use rustls::{ClientConnection, ServerConfig, ServerConnection};

use super::{dial_edge, hello, ChannelError, DataChannel, MaybeFuture, ParkEnd, Pumped, Stream};
use crate::{
    agent::{terminate, upstream::Upstream, AgentShared, SessionTicket, CONNECT_TIMEOUT},
    io::{
        self,
        chunked::{self, ChunkedOutcome},
        framed::{self, FrameReader},
        idle::Progress,
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

/// TLS to the edge's agent port.
type Tls = TlsStream<ClientConnection>;

/// A `tls` data channel and the reader holding bytes received past the last frame.
pub(in crate::agent) struct TlsChannel {
    /// `None` once a stream's pump took it and did not give it back.
    tls: Option<Tls>,
    reader: FrameReader,
}

impl DataChannel for TlsChannel {
    type Client = TlsStream<ServerConnection, ChunkedSub<Tls>>;

    async fn authenticate(
        ticket: &SessionTicket,
        shared: &AgentShared,
    ) -> Result<Self, ChannelError> {
        let tcp = dial_edge(ticket).await?;
        let name = shared.settings.server_name.clone();
        let handshake = io::tls_stream::connect(tcp, shared.settings.tls.clone(), name);
        let mut tls = match monoio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(ChannelError::Tls(e)),
            Err(_) => return Err(ChannelError::TlsTimeout),
        };
        framed::write_frame(&mut tls, &hello(ticket))
            .await
            .map_err(ChannelError::Hello)?;
        Ok(TlsChannel {
            tls: Some(tls),
            reader: FrameReader::new(),
        })
    }

    async fn read_header(&mut self) -> Result<StreamStart, ParkEnd> {
        let tls = self.tls.as_mut().ok_or(ParkEnd::Closed)?;
        ParkEnd::from_read(self.reader.next(tls).await)
    }

    async fn send_status(&mut self, code: StreamCode) -> bool {
        let Some(tls) = self.tls.as_mut() else {
            return false;
        };
        framed::write_frame(tls, &Frame::StreamStatus { code })
            .await
            .is_ok()
    }

    type PumpOutcome = Option<ChunkedOutcome<Tls>>;

    fn pump<'a>(
        &'a mut self,
        upstream: Upstream,
        stream: &'a Stream<'_>,
        progress: &'a Progress,
    ) -> impl Future<Output = Self::PumpOutcome> + 'a {
        let keep = move || stream.keeps_channel();
        let reader = &mut self.reader;
        MaybeFuture(
            self.tls
                .take()
                .map(|tls| chunked::forward(upstream, tls, reader, keep, progress)),
        )
    }

    fn pumped(&mut self, outcome: Self::PumpOutcome) -> Pumped {
        let Some(outcome) = outcome else {
            return Pumped {
                result: None,
                again: false,
            };
        };
        self.tls = outcome.reusable;
        Pumped {
            result: Some(outcome.result),
            again: self.tls.is_some(),
        }
    }

    async fn accept_client(
        self,
        config: Arc<ServerConfig>,
        stream: &Stream<'_>,
    ) -> Option<Self::Client> {
        let sub = ChunkedSub::new(self.tls?, self.reader, stream.keep_channel_later());
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
        let (tls, reader) = sub.finish(END_MARKER_WAIT).await?;
        Some(TlsChannel {
            tls: Some(tls),
            reader,
        })
    }
}
