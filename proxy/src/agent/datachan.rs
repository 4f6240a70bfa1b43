//! Data channels on the agent side: dial the edge, prove the session, wait for a
//! stream header, connect the upstream and forward both ways.
//!
//! `tcp` channels carry one stream, spliced, and are gone after it. `tls` channels
//! carry chunk-framed streams one after another and wait for the next header when a
//! stream ends, unless twice `data_channels` are already parked. Either way, a channel
//! that is handed a stream asks for a replacement while the parked count is below
//! `data_channels`, so the edge's pool refills as it is used.
//!
//! Every stream is answered with a [`Frame::StreamStatus`] before any upstream byte:
//! `Ok` once the upstream is connected (PROXY header and upstream TLS done), else
//! `UpstreamFailed` (or `UnknownEndpoint`) and the channel is closed, so the edge can
//! replay the connection on another pool member. An endpoint with
//! `agent_tls_termination` answers `Ok` at once: the client's handshake needs the
//! stream, and the upstream is only dialed after it (a refusal then ends the stream).
//!
//! An endpoint with `agent_tls_termination` runs TLS over the stream first (over the
//! socket on `tcp` channels, over the chunk framing on `tls` ones), and one with
//! `upstream.tls` speaks TLS to its upstream; hops with TLS on either end copy through
//! user space, plain-to-plain hops splice.

use std::{
    os::fd::AsRawFd,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use monoio::{
    io::{AsyncWriteRent, AsyncWriteRentExt},
    net::TcpStream,
};
use rustls::ClientConnection;

use super::{terminate, AgentShared, Opening, SessionTicket};
use crate::{
    config::agent::{AgentEndpoint, Transport},
    io::{
        self, chunked,
        framed::{self, FrameReader},
        maybe_tls::MaybeTls,
        sockets,
        substream::ChunkedSub,
    },
    wire::{self, Frame, StreamCode, StreamStart, DATA_CHANNEL_MAGIC, PROTOCOL_VERSION},
};

/// How long dialing the edge or the upstream may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After a TLS-terminated stream on a `tls` channel: how long to wait for the edge's
/// end marker (the client's FIN) before giving up on reusing the channel.
const END_MARKER_WAIT: Duration = Duration::from_secs(5);

/// The upstream connection: plain, or TLS when the endpoint sets `upstream.tls`.
type Upstream = MaybeTls<ClientConnection>;

/// Sends a stream's status on a data channel (plain TCP or TLS); false if that failed.
async fn send_status<W: monoio::io::AsyncWriteRent>(channel: &mut W, code: StreamCode) -> bool {
    framed::write_frame(channel, &Frame::StreamStatus { code })
        .await
        .is_ok()
}

/// Serves open requests from the shared queue for as long as the process runs.
pub async fn open_loop(shared: Arc<AgentShared>) {
    while let Ok(opening) = shared.open_rx.recv().await {
        if opening.ticket.is_alive() {
            let shared = shared.clone();
            // One task type per transport, so a `tcp` channel's task is not sized by a
            // `tls` channel's state.
            match shared.settings.transport {
                Transport::Tcp => drop(monoio::spawn(serve_plain(opening, shared))),
                Transport::Tls => drop(monoio::spawn(serve_tls(opening, shared))),
            }
        }
    }
}

/// Counts a data channel that could not be opened; the heartbeat's top-up retries.
fn channel_failed(shared: &AgentShared, ticket: &SessionTicket, why: &dyn std::fmt::Display) {
    shared.stats.channel_failures.inc();
    crate::log_throttled!(warn, error = %why, "cannot open a data channel");
    shared.channel_health.failed(shared, ticket, why);
}

/// Counts a data channel that opened and is parked at the edge.
fn channel_opened(shared: &AgentShared, ticket: &SessionTicket) {
    shared.stats.channels_opened.inc();
    shared.channel_health.opened(shared, ticket);
}

/// A data channel's first frame: a fresh sequence number and its proof, never the
/// session secret itself.
fn hello(ticket: &SessionTicket) -> Frame {
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

async fn dial_edge(ticket: &SessionTicket, shared: &AgentShared) -> Option<TcpStream> {
    match monoio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect_addr(ticket.edge_addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Some(s)
        }
        Ok(Err(e)) => {
            channel_failed(shared, ticket, &e);
            None
        }
        Err(_) => {
            channel_failed(shared, ticket, &"connect timed out");
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

/// The endpoint a stream is for.
fn endpoint_for<'a>(start: &StreamStart, shared: &'a AgentShared) -> Option<&'a AgentEndpoint> {
    let endpoint = shared.upstreams.get(&start.internal_url);
    match shared.stats.endpoint(&start.internal_url) {
        Some(stats) => stats.streams.inc(),
        None => {
            shared.stats.unknown_endpoint.inc();
            crate::log_throttled!(warn, url = %start.internal_url, "stream for an endpoint this agent does not serve");
        }
    }
    endpoint
}

/// Counts a stream whose upstream could not be reached.
fn upstream_failed(start: &StreamStart, shared: &AgentShared) {
    if let Some(stats) = shared.stats.endpoint(&start.internal_url) {
        stats.upstream_failed.inc();
    }
}

/// Counts how a forwarded stream ended.
fn stream_ended(
    start: &StreamStart,
    shared: &AgentShared,
    result: &Result<io::PumpStats, impl std::fmt::Display>,
) {
    let Some(stats) = shared.stats.endpoint(&start.internal_url) else {
        return;
    };
    match result {
        Ok(bytes) => {
            stats.bytes_in.add(bytes.inbound_to_outbound);
            stats.bytes_out.add(bytes.outbound_to_inbound);
        }
        Err(e) => {
            stats.stream_errors.inc();
            tracing::debug!(client = %start.client, error = %e, "stream ended with an error");
        }
    }
}

/// Connects the stream's upstream and, when the endpoint asks for it, sends the PROXY
/// protocol header naming the public client before any other byte, then starts TLS
/// when the endpoint sets `upstream.tls`.
async fn connect_upstream(start: &StreamStart, endpoint: &AgentEndpoint) -> Option<Upstream> {
    let s = connect_tcp_upstream(start, endpoint).await?;
    let Some(tls) = &endpoint.upstream_tls else {
        return Some(MaybeTls::Plain(s));
    };
    let handshake = io::tls_stream::connect(s, tls.config.clone(), tls.server_name.clone());
    // Boxed: the handshake's state would otherwise size every stream's task.
    match Box::pin(monoio::time::timeout(CONNECT_TIMEOUT, handshake)).await {
        Ok(Ok(tls)) => Some(MaybeTls::Tls(Box::new(tls))),
        Ok(Err(e)) => {
            crate::log_throttled!(warn, url = %start.internal_url, upstream = %endpoint.upstream, error = %e, "upstream TLS handshake failed");
            None
        }
        Err(_) => {
            crate::log_throttled!(warn, url = %start.internal_url, upstream = %endpoint.upstream, "upstream TLS handshake timed out");
            None
        }
    }
}

async fn connect_tcp_upstream(start: &StreamStart, endpoint: &AgentEndpoint) -> Option<TcpStream> {
    let addr = &endpoint.upstream;
    match monoio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr.as_str())).await {
        Ok(Ok(mut s)) => {
            let _ = s.set_nodelay(true);
            if let Some(version) = endpoint.proxy_protocol {
                let mut header = bytes::BytesMut::with_capacity(108);
                crate::proxy_protocol::encode(version, start.client, start.server, &mut header);
                let (res, _) = s.write_all(header).await;
                if let Err(e) = res {
                    crate::log_throttled!(warn, url = %start.internal_url, upstream = %addr, error = %e, "PROXY header not sent");
                    return None;
                }
            }
            Some(s)
        }
        Ok(Err(e)) => {
            crate::log_throttled!(warn, url = %start.internal_url, upstream = %addr, client = %start.client, error = %e, "upstream connect failed");
            None
        }
        Err(_) => {
            crate::log_throttled!(warn, url = %start.internal_url, upstream = %addr, "upstream connect timed out");
            None
        }
    }
}

async fn serve_plain(opening: Opening, shared: Arc<AgentShared>) {
    let ticket = opening.ticket.clone();
    let Some(mut channel) = dial_edge(&ticket, &shared).await else {
        return;
    };
    let mut out = bytes::BytesMut::with_capacity(64);
    out.extend_from_slice(&DATA_CHANNEL_MAGIC);
    wire::encode(&hello(&ticket), &mut out);
    let (res, _) = channel.write_all(out).await;
    if let Err(e) = res {
        channel_failed(&shared, &ticket, &e);
        return;
    }
    channel_opened(&shared, &ticket);
    ticket.idle.fetch_add(1, Ordering::Relaxed);
    drop(opening);
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
    let Some(endpoint) = endpoint_for(&start, &shared) else {
        send_status(&mut channel, StreamCode::UnknownEndpoint).await;
        return;
    };
    let early = reader.into_leftover();
    let Some(config) = &endpoint.tls_termination else {
        let Some(upstream) = connect_upstream(&start, endpoint).await else {
            upstream_failed(&start, &shared);
            send_status(&mut channel, StreamCode::UpstreamFailed).await;
            return;
        };
        if send_status(&mut channel, StreamCode::Ok).await {
            pump_plain(MaybeTls::Plain(channel), upstream, early, &start, &shared).await;
        }
        return;
    };
    if !send_status(&mut channel, StreamCode::Ok).await {
        return;
    }
    let accepting = terminate::accept(channel, early.to_vec(), config.clone(), &start, &shared);
    let inbound = match Box::pin(accepting).await {
        Ok(tls) => MaybeTls::Tls(Box::new(tls)),
        // The alert went out; closing the channel (FIN) ends the client's stream.
        Err(_) => return,
    };
    let Some(upstream) = connect_upstream(&start, endpoint).await else {
        upstream_failed(&start, &shared);
        sockets::reset_on_close(inbound.as_raw_fd());
        return;
    };
    pump_plain(inbound, upstream, bytes::BytesMut::new(), &start, &shared).await;
}

/// The rest of a `tcp` channel's stream once the upstream is connected: the client's
/// early bytes, then both directions.
async fn pump_plain(
    inbound: MaybeTls<rustls::ServerConnection>,
    mut upstream: Upstream,
    early: bytes::BytesMut,
    start: &StreamStart,
    shared: &AgentShared,
) {
    if !early.is_empty() {
        let (res, _) = upstream.write_all(early).await;
        if res.is_err() {
            sockets::reset_on_close(inbound.as_raw_fd());
            return;
        }
    }
    let progress = io::idle::Progress::default();
    let result = match (inbound, upstream) {
        (MaybeTls::Plain(channel), MaybeTls::Plain(upstream)) => {
            io::forward_tcp(shared.settings.pump, channel, upstream, &progress).await
        }
        (inbound, upstream) => Box::pin(io::copy::forward(inbound, upstream, &progress)).await,
    };
    stream_ended(start, shared, &result);
}

async fn serve_tls(opening: Opening, shared: Arc<AgentShared>) {
    let ticket = opening.ticket.clone();
    let Some(tcp) = dial_edge(&ticket, &shared).await else {
        return;
    };
    let name = shared.settings.server_name.clone();
    let handshake = io::tls_stream::connect(tcp, shared.settings.tls.clone(), name);
    let mut tls = match monoio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            channel_failed(
                &shared,
                &ticket,
                &format_args!(
                    "TLS handshake failed: {}",
                    crate::tls::explain(&e.to_string())
                ),
            );
            return;
        }
        Err(_) => {
            channel_failed(&shared, &ticket, &"TLS handshake timed out");
            return;
        }
    };
    if let Err(e) = framed::write_frame(&mut tls, &hello(&ticket)).await {
        channel_failed(&shared, &ticket, &e);
        return;
    }
    channel_opened(&shared, &ticket);
    let mut reader = FrameReader::new();
    let mut opening = Some(opening);
    loop {
        ticket.idle.fetch_add(1, Ordering::Relaxed);
        opening.take();
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
        let Some(endpoint) = endpoint_for(&start, &shared) else {
            send_status(&mut tls, StreamCode::UnknownEndpoint).await;
            return;
        };
        // Keep up to twice the target parked before retiring channels, so a steady
        // load reuses channels instead of trading one handshake per stream.
        let ceiling = 2 * shared.settings.data_channels;
        if let Some(config) = &endpoint.tls_termination {
            if !send_status(&mut tls, StreamCode::Ok).await {
                return;
            }
            let keep = {
                let ticket = ticket.clone();
                move || ticket.is_alive() && ticket.below(ceiling)
            };
            let sub = ChunkedSub::new(tls, std::mem::take(&mut reader), keep);
            // Boxed: TLS termination's state would otherwise size every channel's task.
            match Box::pin(serve_terminated(
                sub,
                config.clone(),
                &start,
                endpoint,
                &shared,
            ))
            .await
            {
                Some((back, r)) => {
                    (tls, reader) = (back, r);
                    continue;
                }
                None => return,
            }
        }
        // A refused upstream retires the channel: the edge may have sent early client
        // bytes for this stream, and it drops the channel too.
        let Some(upstream) = connect_upstream(&start, endpoint).await else {
            upstream_failed(&start, &shared);
            send_status(&mut tls, StreamCode::UpstreamFailed).await;
            return;
        };
        if !send_status(&mut tls, StreamCode::Ok).await {
            return;
        }
        let keep = || ticket.is_alive() && ticket.below(ceiling);
        let progress = io::idle::Progress::default();
        let outcome = chunked::forward(upstream, tls, &mut reader, keep, &progress).await;
        stream_ended(&start, &shared, &outcome.result);
        match outcome.reusable {
            Some(back) => tls = back,
            None => return,
        }
    }
}

/// One stream of a `tls` channel for an endpoint with `agent_tls_termination`: TLS
/// over the stream's chunks, then plaintext to the upstream. The channel (and its
/// reader) comes back when the stream ended cleanly and both sides keep it.
async fn serve_terminated<T: io::Duplex>(
    sub: ChunkedSub<T>,
    config: std::sync::Arc<rustls::ServerConfig>,
    start: &StreamStart,
    endpoint: &AgentEndpoint,
    shared: &AgentShared,
) -> Option<(T, FrameReader)> {
    let client = match terminate::accept(sub, Vec::new(), config, start, shared).await {
        Ok(client) => client,
        Err(failed) => {
            // End our direction (the alert already went out) and retire the channel.
            if let Some(mut failed) = failed {
                failed.io_mut().retire();
                let _ = failed.io_mut().shutdown().await;
            }
            return None;
        }
    };
    let Some(upstream) = connect_upstream(start, endpoint).await else {
        upstream_failed(start, shared);
        return None;
    };
    let progress = io::idle::Progress::default();
    let (result, back) = io::copy::forward_returning(client, upstream, &progress).await;
    stream_ended(start, shared, &result);
    let (sub, _conn) = back?.into_parts()?;
    sub.finish(END_MARKER_WAIT).await
}
