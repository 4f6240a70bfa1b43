//! Data channels on the agent side: dial the edge, prove the session, wait for a
//! stream header, connect the upstream and forward both ways.
//!
//! `tcp` channels carry one stream, spliced, and are gone after it. `tls` channels
//! carry chunk-framed streams one after another and wait for the next header when a
//! stream ends, unless twice `data_channels` are already parked. Either way, a channel
//! that is handed a stream asks for a replacement while the parked count is below
//! `data_channels`, so the edge's pool refills as it is used.

use std::{
    os::fd::AsRawFd,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use monoio::{io::AsyncWriteRentExt, net::TcpStream};

use super::{AgentShared, SessionTicket};
use crate::{
    config::agent::Transport,
    io::{
        self, chunked,
        framed::{self, FrameReader},
        sockets,
    },
    wire::{self, Frame, StreamStart, DATA_CHANNEL_MAGIC, PROTOCOL_VERSION},
};

/// How long dialing the edge or the upstream may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves open requests from the shared queue for as long as the process runs.
pub async fn open_loop(shared: Arc<AgentShared>) {
    while let Ok(ticket) = shared.open_rx.recv().await {
        if ticket.is_alive() {
            let shared = shared.clone();
            monoio::spawn(async move {
                match shared.settings.transport {
                    Transport::Tcp => serve_plain(ticket, shared).await,
                    Transport::Tls => serve_tls(ticket, shared).await,
                }
            });
        }
    }
}

fn hello(ticket: &SessionTicket) -> Frame {
    Frame::ChannelHello {
        version: PROTOCOL_VERSION,
        session_id: ticket.id,
        secret: ticket.secret,
    }
}

async fn dial_edge(ticket: &SessionTicket) -> Option<TcpStream> {
    match monoio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect_addr(ticket.edge_addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Some(s)
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "cannot open data channel");
            None
        }
        Err(_) => {
            tracing::debug!("data channel connect timed out");
            None
        }
    }
}

/// Bookkeeping when a parked channel is handed a stream: one fewer parked, and a
/// replacement requested while below target.
fn on_stream_assigned(ticket: &Arc<SessionTicket>, shared: &AgentShared) {
    ticket.idle.fetch_sub(1, Ordering::Relaxed);
    if ticket.is_alive() && ticket.below(shared.settings.data_channels) {
        shared.request_channels(ticket, 1);
    }
}

/// Connects the stream's upstream and, when the endpoint asks for it, sends the PROXY
/// protocol header naming the public client before any other byte.
async fn connect_upstream(start: &StreamStart, shared: &AgentShared) -> Option<TcpStream> {
    let Some(endpoint) = shared.upstreams.get(&start.internal_url) else {
        tracing::warn!(url = %start.internal_url, "stream for an endpoint this agent does not serve");
        return None;
    };
    let addr = &endpoint.upstream;
    match monoio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr.as_str())).await {
        Ok(Ok(mut s)) => {
            let _ = s.set_nodelay(true);
            if let Some(version) = endpoint.proxy_protocol {
                let mut header = bytes::BytesMut::with_capacity(108);
                crate::proxy_protocol::encode(version, start.client, start.server, &mut header);
                let (res, _) = s.write_all(header).await;
                if let Err(e) = res {
                    tracing::warn!(url = %start.internal_url, upstream = %addr, error = %e, "PROXY header not sent");
                    return None;
                }
            }
            Some(s)
        }
        Ok(Err(e)) => {
            tracing::warn!(url = %start.internal_url, upstream = %addr, client = %start.client, error = %e, "upstream connect failed");
            None
        }
        Err(_) => {
            tracing::warn!(url = %start.internal_url, upstream = %addr, "upstream connect timed out");
            None
        }
    }
}

async fn serve_plain(ticket: Arc<SessionTicket>, shared: Arc<AgentShared>) {
    let Some(mut channel) = dial_edge(&ticket).await else {
        return;
    };
    let mut out = bytes::BytesMut::with_capacity(64);
    out.extend_from_slice(&DATA_CHANNEL_MAGIC);
    wire::encode(&hello(&ticket), &mut out);
    let (res, _) = channel.write_all(out).await;
    if res.is_err() {
        return;
    }
    ticket.idle.fetch_add(1, Ordering::Relaxed);
    // Parked at the edge now; wait (without a deadline) until a stream is assigned.
    // The client's first bytes may arrive in the same read as the header.
    let mut reader = FrameReader::new();
    let start = match reader.next(&mut channel).await {
        Ok(Some(Frame::Stream(start))) => start,
        other => {
            ticket.idle.fetch_sub(1, Ordering::Relaxed);
            match other {
                Ok(None) => tracing::debug!("idle data channel closed by the edge"),
                Ok(Some(frame)) => tracing::warn!(
                    frame = frame.name(),
                    "unexpected frame on a data channel; closed"
                ),
                Err(e) => tracing::debug!(error = %e, "idle data channel closed"),
            }
            return;
        }
    };
    on_stream_assigned(&ticket, &shared);
    let _in_flight = shared.in_flight.enter();
    let Some(mut upstream) = connect_upstream(&start, &shared).await else {
        sockets::reset_on_close(channel.as_raw_fd());
        return;
    };
    let early = reader.into_leftover();
    if !early.is_empty() {
        let (res, _) = upstream.write_all(early).await;
        if res.is_err() {
            sockets::reset_on_close(channel.as_raw_fd());
            return;
        }
    }
    let progress = io::idle::Progress::default();
    match io::forward_tcp(shared.settings.pump, channel, upstream, &progress).await {
        Ok(stats) => {
            tracing::trace!(client = %start.client, up = stats.inbound_to_outbound, down = stats.outbound_to_inbound, "stream closed")
        }
        Err(e) => tracing::debug!(client = %start.client, error = %e, "stream ended with an error"),
    }
}

async fn serve_tls(ticket: Arc<SessionTicket>, shared: Arc<AgentShared>) {
    let Some(tcp) = dial_edge(&ticket).await else {
        return;
    };
    let name = shared.settings.server_name.clone();
    let handshake = io::tls_stream::connect(tcp, shared.settings.tls.clone(), name);
    let mut tls = match monoio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "data channel TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::warn!("data channel TLS handshake timed out");
            return;
        }
    };
    if framed::write_frame(&mut tls, &hello(&ticket))
        .await
        .is_err()
    {
        return;
    }
    let mut reader = FrameReader::new();
    loop {
        ticket.idle.fetch_add(1, Ordering::Relaxed);
        let start = match reader.next(&mut tls).await {
            Ok(Some(Frame::Stream(start))) => start,
            other => {
                ticket.idle.fetch_sub(1, Ordering::Relaxed);
                match other {
                    Ok(Some(frame)) => tracing::warn!(
                        frame = frame.name(),
                        "unexpected frame on a data channel; closed"
                    ),
                    Ok(None) => tracing::debug!("idle data channel closed by the edge"),
                    Err(e) => tracing::debug!(error = %e, "idle data channel failed"),
                }
                return;
            }
        };
        on_stream_assigned(&ticket, &shared);
        let _in_flight = shared.in_flight.enter();
        let Some(upstream) = connect_upstream(&start, &shared).await else {
            return;
        };
        // Keep up to twice the target parked before retiring channels, so a steady
        // load reuses channels instead of trading one handshake per stream.
        let ceiling = 2 * shared.settings.data_channels;
        let keep = || ticket.is_alive() && ticket.below(ceiling);
        let progress = io::idle::Progress::default();
        let outcome = chunked::forward(upstream, tls, &mut reader, keep, &progress).await;
        if let Err(e) = &outcome.result {
            tracing::debug!(client = %start.client, error = %e, "stream ended with an error");
        }
        match outcome.reusable {
            Some(back) => tls = back,
            None => return,
        }
    }
}
