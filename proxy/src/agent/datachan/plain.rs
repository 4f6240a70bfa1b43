//! `tcp` data channels: a plain socket proved by the magic bytes and a `ChannelHello`;
//! a stream to a plain upstream is spliced ([`crate::io::forward_on_tcp_channel`]).

use std::future::Future;

use bytes::BytesMut;
use monoio::{io::AsyncWriteRentExt, net::TcpStream};

use super::{dial_edge, hello, ChannelError, ChannelLink};
use crate::{
    agent::{upstream::Upstream, AgentShared, SessionTicket},
    io::{self, chunked::ChunkedOutcome, framed::FrameReader, idle::Progress, Pump},
    wire::{self, DATA_CHANNEL_MAGIC},
};

impl ChannelLink for TcpStream {
    async fn dial(ticket: &SessionTicket, _: &AgentShared) -> Result<Self, ChannelError> {
        let mut tcp = dial_edge(ticket).await?;
        // Non-blocking for good: the splice pump needs it, and sets it no more per stream.
        io::sockets::set_nonblocking(std::os::fd::AsRawFd::as_raw_fd(&tcp))
            .map_err(ChannelError::Dial)?;
        let mut out = BytesMut::with_capacity(64);
        out.extend_from_slice(&DATA_CHANNEL_MAGIC);
        wire::encode(&hello(ticket), &mut out);
        let (res, _) = tcp.write_all(out).await;
        res.map_err(ChannelError::Hello)?;
        Ok(tcp)
    }

    fn forward<'a>(
        self,
        upstream: Upstream,
        reader: &'a mut FrameReader,
        keep: impl FnOnce() -> bool + 'a,
        progress: &'a Progress,
        pump: Pump,
    ) -> impl Future<Output = ChunkedOutcome<Self>> + 'a {
        io::forward_on_tcp_channel(pump, upstream, self, reader, keep, progress)
    }
}
