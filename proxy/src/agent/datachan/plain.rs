//! `tcp` data channels: a plain socket proved by the magic bytes and a
//! `ChannelHello`, one stream each. The status is a raw frame, the stream's bytes are
//! spliced (copied when the upstream speaks TLS or the agent terminates the client's),
//! and the channel closes with its stream.

use std::{future::Future, os::fd::AsRawFd, sync::Arc};

use bytes::BytesMut;
use monoio::{io::AsyncWriteRentExt, net::TcpStream};
use rustls::{ServerConfig, ServerConnection};

use super::{dial_edge, hello, ChannelError, DataChannel, ParkEnd, Pumped, Stream};
use crate::{
    agent::{terminate, upstream::Upstream, AgentShared, SessionTicket},
    io::{
        self, framed, idle::Progress, maybe_tls::MaybeTls, sockets, splice::PumpError,
        tls_stream::TlsStream, PumpStats,
    },
    wire::{self, Frame, StreamCode, StreamStart, DATA_CHANNEL_MAGIC},
};

/// A `tcp` data channel.
pub(in crate::agent) struct PlainChannel {
    /// `None` once the stream's pump took it.
    tcp: Option<TcpStream>,
    /// The client's first bytes, read with the stream header.
    early: BytesMut,
}

impl DataChannel for PlainChannel {
    type Client = TlsStream<ServerConnection, TcpStream>;

    async fn authenticate(ticket: &SessionTicket, _: &AgentShared) -> Result<Self, ChannelError> {
        let mut tcp = dial_edge(ticket).await?;
        let mut out = BytesMut::with_capacity(64);
        out.extend_from_slice(&DATA_CHANNEL_MAGIC);
        wire::encode(&hello(ticket), &mut out);
        let (res, _) = tcp.write_all(out).await;
        res.map_err(ChannelError::Hello)?;
        Ok(PlainChannel {
            tcp: Some(tcp),
            early: BytesMut::new(),
        })
    }

    async fn read_header(&mut self) -> Result<StreamStart, ParkEnd> {
        // The client's first bytes may arrive in the same read as the header.
        let tcp = self.tcp.as_mut().ok_or(ParkEnd::Closed)?;
        let mut reader = framed::FrameReader::new();
        let start = ParkEnd::from_read(reader.next(tcp).await)?;
        self.early = reader.into_leftover();
        Ok(start)
    }

    async fn send_status(&mut self, code: StreamCode) -> bool {
        let Some(tcp) = self.tcp.as_mut() else {
            return false;
        };
        framed::write_frame(tcp, &Frame::StreamStatus { code })
            .await
            .is_ok()
    }

    type PumpOutcome = Option<Result<PumpStats, PumpError>>;

    fn pump<'a>(
        &'a mut self,
        mut upstream: Upstream,
        stream: &'a Stream<'_>,
        progress: &'a Progress,
    ) -> impl Future<Output = Self::PumpOutcome> + 'a {
        let tcp = self.tcp.take();
        let early = std::mem::take(&mut self.early);
        let pump = stream.shared.settings.pump;
        async move {
            let tcp = tcp?;
            if !early.is_empty() {
                let (res, _) = upstream.write_all(early).await;
                if res.is_err() {
                    sockets::reset_on_close(tcp.as_raw_fd());
                    return None;
                }
            }
            Some(match upstream {
                MaybeTls::Plain(upstream) => io::forward_tcp(pump, tcp, upstream, progress).await,
                // Boxed: its buffers would otherwise size every stream's task.
                upstream => Box::pin(io::copy::forward(tcp, upstream, progress)).await,
            })
        }
    }

    fn pumped(&mut self, outcome: Self::PumpOutcome) -> Pumped {
        Pumped {
            result: outcome,
            again: false,
        }
    }

    async fn accept_client(
        self,
        config: Arc<ServerConfig>,
        stream: &Stream<'_>,
    ) -> Option<Self::Client> {
        let tcp = self.tcp?;
        let early = self.early.to_vec();
        // On failure the alert went out; closing the channel (FIN) ends the client's stream.
        terminate::accept(tcp, early, config, &stream.start, stream.shared)
            .await
            .ok()
    }

    fn abandon(client: Self::Client) {
        sockets::reset_on_close(client.as_raw_fd());
    }

    async fn pump_client(
        client: Self::Client,
        upstream: Upstream,
    ) -> (Result<PumpStats, PumpError>, Option<Self::Client>) {
        let progress = Progress::default();
        (io::copy::forward(client, upstream, &progress).await, None)
    }

    async fn reuse(_: Self::Client) -> Option<Self> {
        None
    }
}
