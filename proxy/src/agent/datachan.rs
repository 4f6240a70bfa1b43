//! Data channels on the agent side: dial the edge, prove the session, wait for a
//! stream header, connect the upstream and forward both ways.

use std::{os::fd::AsRawFd, sync::Arc, time::Duration};

use monoio::{io::AsyncWriteRentExt, net::TcpStream};

use super::{AgentShared, SessionTicket};
use crate::{
    io::{framed, sockets, splice},
    wire::{self, Frame, DATA_CHANNEL_MAGIC, PROTOCOL_VERSION},
};

/// How long dialing the edge or the upstream may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves open requests from the shared queue for as long as the process runs.
pub async fn open_loop(shared: Arc<AgentShared>) {
    while let Ok(ticket) = shared.open_rx.recv().await {
        if ticket.is_alive() {
            monoio::spawn(serve_channel(ticket, shared.clone()));
        }
    }
}

async fn serve_channel(ticket: Arc<SessionTicket>, shared: Arc<AgentShared>) {
    let mut channel =
        match monoio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect_addr(ticket.edge_addr))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot open data channel");
                return;
            }
            Err(_) => {
                tracing::debug!("data channel connect timed out");
                return;
            }
        };
    let _ = channel.set_nodelay(true);
    let mut hello = bytes::BytesMut::with_capacity(64);
    hello.extend_from_slice(&DATA_CHANNEL_MAGIC);
    wire::encode(
        &Frame::ChannelHello {
            version: PROTOCOL_VERSION,
            session_id: ticket.id,
            secret: ticket.secret,
        },
        &mut hello,
    );
    let (res, _) = channel.write_all(hello).await;
    if res.is_err() {
        return;
    }
    // Parked at the edge now; wait (without a deadline) until a stream is assigned.
    let start = match framed::read_exact_frame(&mut channel).await {
        Ok(Frame::Stream(start)) => start,
        Ok(other) => {
            tracing::warn!(
                frame = other.name(),
                "unexpected frame on a data channel; closed"
            );
            return;
        }
        Err(e) => {
            tracing::debug!(error = %e, "idle data channel closed");
            return;
        }
    };
    if ticket.is_alive() {
        shared.request_channels(&ticket, 1);
    }
    let Some(upstream_addr) = shared.upstreams.get(&start.internal_url) else {
        tracing::warn!(url = %start.internal_url, "stream for an endpoint this agent does not serve");
        return;
    };
    let upstream = match monoio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect(upstream_addr.as_str()),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(url = %start.internal_url, upstream = %upstream_addr, client = %start.client, error = %e, "upstream connect failed");
            sockets::reset_on_close(channel.as_raw_fd());
            return;
        }
        Err(_) => {
            tracing::warn!(url = %start.internal_url, upstream = %upstream_addr, "upstream connect timed out");
            sockets::reset_on_close(channel.as_raw_fd());
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if sockets::set_nonblocking(channel.as_raw_fd()).is_err()
        || sockets::set_nonblocking(upstream.as_raw_fd()).is_err()
    {
        return;
    }
    match splice::forward(&channel, &upstream).await {
        Ok(stats) => {
            tracing::trace!(client = %start.client, up = stats.inbound_to_outbound, down = stats.outbound_to_inbound, "stream closed")
        }
        Err(e) => tracing::debug!(client = %start.client, error = %e, "stream ended with an error"),
    }
}
