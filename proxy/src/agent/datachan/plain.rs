//! `tcp` data channels: a plain socket proved by the magic bytes and a `ChannelHello`;
//! a stream to a plain upstream is spliced ([`crate::io::chunked_splice`]).

use std::future::Future;

use bytes::BytesMut;
use monoio::{io::AsyncWriteRentExt, net::TcpStream};

use super::{dial_edge, hello, ChannelError, ChannelLink};
use crate::{
    agent::{upstream::Upstream, AgentShared, SessionTicket},
    io::{
        chunked::{self, ChunkedOutcome},
        chunked_splice,
        framed::FrameReader,
        idle::Progress,
        maybe_tls::MaybeTls,
        Pump,
    },
    wire::{self, DATA_CHANNEL_MAGIC},
};

impl ChannelLink for TcpStream {
    async fn dial(ticket: &SessionTicket, _: &AgentShared) -> Result<Self, ChannelError> {
        let mut tcp = dial_edge(ticket).await?;
        let mut out = BytesMut::with_capacity(64);
        out.extend_from_slice(&DATA_CHANNEL_MAGIC);
        wire::encode(&hello(ticket), &mut out);
        let (res, _) = tcp.write_all(out).await;
        res.map_err(ChannelError::Hello)?;
        Ok(tcp)
    }

    #[allow(
        clippy::manual_async_fn,
        reason = "the trait's signature, which the `tls` link meets without a wrapper"
    )]
    fn forward<'a>(
        self,
        upstream: Upstream,
        reader: &'a mut FrameReader,
        keep: impl FnOnce() -> bool + 'a,
        progress: &'a Progress,
        pump: Pump,
    ) -> impl Future<Output = ChunkedOutcome<Self>> + 'a {
        async move {
            match upstream {
                MaybeTls::Plain(upstream) if pump == Pump::Splice => {
                    chunked_splice::forward(upstream, self, reader, keep, progress).await
                }
                // Boxed: the copy pump's buffers would otherwise size every channel's task.
                upstream => {
                    Box::pin(chunked::forward(upstream, self, reader, keep, progress)).await
                }
            }
        }
    }
}
