//! One data channel's life at the agent, phase by phase; each phase is a function
//! (or a [`DataChannel`] step) with a typed result, and this module turns the results
//! into counters and log lines:
//!
//! 1. **accept channel** ([`DataChannel::authenticate`]): dial the agent port, prove
//!    the session, park. Failure: a [`ChannelError`], counted ([`channel_failed`]).
//! 2. **read stream header** ([`DataChannel::read_header`]): wait parked for a
//!    `Stream` frame; a channel handed a stream asks for its replacement
//!    ([`on_stream_assigned`]). A wait that ends otherwise is a [`ParkEnd`].
//! 3. **connect upstream** ([`connect_upstream`], agent/upstream.rs): failure is an
//!    [`UpstreamError`], logged with its cause and counted by it.
//! 4. **status** ([`DataChannel::send_status`]): `Ok`, or `UpstreamFailed` /
//!    `UnknownEndpoint` before any upstream byte, so the edge may replay the stream on
//!    another pool member. Under `agent_tls_termination` the status is `Ok` at once and
//!    the client's handshake ([`DataChannel::accept_client`]) comes before the connect
//!    ([`terminated`]); a refused upstream then ends the stream.
//! 5. **pump** ([`DataChannel::pump`] then [`DataChannel::pumped`];
//!    [`DataChannel::pump_client`] under termination): until both directions end;
//!    counted by [`stream_ended`]. A channel both sides keep goes back to step 2.
//!
//! A `MuxStream` header ([`Carries::Mux`]) takes another way after step 2: the
//! upstream connected, the status, then the link's sub-streams relayed until the edge
//! ends it, and the channel with it (mux_relay.rs).
//!
//! [`open_loop`] turns each channel the session asks for into a task of the configured
//! transport. The pipeline is generic over the channel type, so each transport's task
//! is sized by its own state ([`serve`] explains why the plain-stream phases are inline).

use std::sync::{atomic::Ordering, Arc};

use super::{
    datachan::{Carries, ChannelError, DataChannel, ParkEnd, PlainChannel, Stream, TlsChannel},
    mux_relay,
    upstream::{self, Upstream, UpstreamError},
    AgentShared, Opening, SessionTicket,
};
use crate::{
    config::agent::{AgentEndpoint, Transport},
    io::{idle::Progress, splice::PumpError, PumpStats},
    wire::{StreamCode, StreamStart},
};

/// Serves open requests from the shared queue for as long as the process runs: each
/// becomes a channel task of the configured transport.
pub async fn open_loop(shared: Arc<AgentShared>) {
    while let Ok(opening) = shared.open_rx.recv().await {
        if opening.ticket.is_alive() {
            let shared = shared.clone();
            match shared.settings.transport {
                Transport::Tcp => drop(monoio::spawn(serve::<PlainChannel>(opening, shared))),
                Transport::Tls => drop(monoio::spawn(serve::<TlsChannel>(opening, shared))),
            }
        }
    }
}

/// Serves one requested data channel of transport `C`: opens it, then forwards the
/// streams the edge hands it until it is spent.
///
/// Written as an `async` block rather than an `async fn`, and with the phases of a
/// plain stream inline: an `async fn` stores its arguments twice, and every layer of
/// futures between the task and the pump adds to the size of every channel's task.
#[allow(
    clippy::manual_async_fn,
    reason = "an async block keeps its arguments once; an async fn, twice"
)]
pub fn serve<C: DataChannel>(
    opening: Opening,
    shared: Arc<AgentShared>,
) -> impl std::future::Future<Output = ()> {
    async move {
        let ticket = opening.ticket.clone();
        // 1. Accept channel.
        let mut channel = match C::authenticate(&ticket, &shared).await {
            Ok(channel) => channel,
            Err(e) => return channel_failed(&shared, &ticket, &e),
        };
        channel_opened(&shared, &ticket);
        ticket.idle.fetch_add(1, Ordering::Relaxed);
        // Parked: no longer on its way.
        drop(opening);
        loop {
            // 2. Read stream header.
            let (start, carries) = match channel.read_header().await {
                Ok(header) => header,
                Err(end) => {
                    ticket.idle.fetch_sub(1, Ordering::Relaxed);
                    return park_ended(&end);
                }
            };
            on_stream_assigned(&ticket, &shared);
            let _in_flight = shared.in_flight.enter();
            if shared.draining.load(Ordering::SeqCst) {
                // The agent has left the edge and its drain may already have seen no
                // stream in flight: the process could exit under this stream. A
                // status before any upstream byte makes the edge replay it elsewhere.
                channel.send_status(StreamCode::UpstreamFailed).await;
                return;
            }
            let Some(endpoint) = endpoint_for(&start, &shared) else {
                channel.send_status(StreamCode::UnknownEndpoint).await;
                return;
            };
            let stream = Stream {
                start,
                endpoint,
                ticket: &ticket,
                shared: &shared,
            };
            if carries == Carries::Mux {
                // Boxed: the link's state would otherwise size every channel's task.
                return Box::pin(mux_relay::serve(channel, stream, shared.clone())).await;
            }
            let again = match &stream.endpoint.tls_termination {
                None => {
                    // 3. Connect upstream. A refused upstream retires the channel: the
                    // edge may have sent early client bytes for this stream, and it
                    // drops the channel too.
                    let Ok(upstream) = connect_upstream(&stream).await else {
                        channel.send_status(StreamCode::UpstreamFailed).await;
                        return;
                    };
                    // 4. Status.
                    if !channel.send_status(StreamCode::Ok).await {
                        return;
                    }
                    // 5. Pump.
                    let progress = Progress::default();
                    let outcome = channel.pump(upstream, &stream, &progress).await;
                    let pumped = channel.pumped(outcome);
                    if let Some(result) = &pumped.result {
                        stream_ended(&stream, result);
                    }
                    pumped.again
                }
                Some(config) => {
                    // 4. Status first: the client's handshake needs the stream.
                    if !channel.send_status(StreamCode::Ok).await {
                        return;
                    }
                    // Boxed: TLS termination's state would otherwise size every task.
                    let Some(back) = Box::pin(terminated(channel, config.clone(), &stream)).await
                    else {
                        return;
                    };
                    channel = back;
                    true
                }
            };
            if !again {
                return;
            }
            ticket.idle.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Under `agent_tls_termination`, after the `Ok` status: the client's handshake, then
/// the upstream, then plaintext both ways. The channel comes back when the stream
/// ended cleanly and both sides keep it.
async fn terminated<C: DataChannel>(
    channel: C,
    config: Arc<rustls::ServerConfig>,
    stream: &Stream<'_>,
) -> Option<C> {
    let client = channel.accept_client(config, stream).await?;
    let upstream = match connect_upstream(stream).await {
        Ok(upstream) => upstream,
        Err(_) => {
            C::abandon(client);
            return None;
        }
    };
    let (result, back) = C::pump_client(client, upstream).await;
    stream_ended(stream, &result);
    C::reuse(back?).await
}

/// The connect-upstream phase: on failure, its log line and counters.
async fn connect_upstream(stream: &Stream<'_>) -> Result<Upstream, UpstreamError> {
    upstream::connect_counted(&stream.start, stream.endpoint, &stream.shared.stats).await
}

/// Counts a data channel that could not be opened; the heartbeat's top-up retries.
fn channel_failed(shared: &AgentShared, ticket: &SessionTicket, why: &ChannelError) {
    shared.stats.channel_failures.inc();
    crate::log_throttled!(warn, error = %why, "cannot open a data channel");
    ticket.channel_health.failed(shared, ticket, why);
}

/// Counts a data channel that opened and is parked at the edge.
fn channel_opened(shared: &AgentShared, ticket: &SessionTicket) {
    shared.stats.channels_opened.inc();
    ticket.channel_health.opened(shared, ticket);
}

/// Logs a parked channel's wait that ended without a stream.
fn park_ended(end: &ParkEnd) {
    match end {
        ParkEnd::Closed => tracing::debug!("idle data channel closed by the edge"),
        ParkEnd::Unexpected(frame) => {
            tracing::warn!(frame, "unexpected frame on a data channel; closed")
        }
        ParkEnd::Failed(e) => tracing::debug!(error = %e, "idle data channel failed"),
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

/// Counts how a forwarded stream ended.
fn stream_ended(stream: &Stream<'_>, result: &Result<PumpStats, PumpError>) {
    let Some(stats) = stream.shared.stats.endpoint(&stream.start.internal_url) else {
        return;
    };
    match result {
        Ok(bytes) => {
            stats.bytes_in.add(bytes.inbound_to_outbound);
            stats.bytes_out.add(bytes.outbound_to_inbound);
        }
        Err(e) => {
            stats.stream_errors.inc();
            tracing::debug!(client = %stream.start.client, error = %e, "stream ended with an error");
        }
    }
}
