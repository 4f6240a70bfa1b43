//! Public TCP endpoints: accept, evaluate the endpoint's traffic policy on the client
//! address, find the session bound to the target, terminate TLS when the endpoint says
//! so, open the stream on a pool member (edge/failover.rs: a parked data channel, the
//! stream header, the agent's status; another member while nothing reached an
//! upstream) and move bytes both ways (splice when both hops are plain TCP). A stream
//! whose agent session is kicked (its token revoked, its user deactivated) is cut: both
//! the client and the data channel are reset.

use std::{
    future::Future,
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
    pin::{pin, Pin},
    sync::Arc,
};

use monoio::net::{TcpListener, TcpStream};
use sluice_policy::Outcome;

use super::{
    control,
    failover::{self, Opened},
    pool::MemberLoad,
    registry::SessionHandle,
    stats::{EdgeStats, EndpointStats},
    EdgeShared, LiveEndpoint,
};
use crate::{
    io::{
        self, chunked,
        framed::FrameReader,
        idle::{until_idle, Progress},
        maybe_tls::MaybeTls,
        sockets,
    },
    wire::{Frame, StreamStart},
};

/// Accepts public connections; each is counted and handled by `handle` in its own task.
/// Used by TCP endpoints (`handle` = [`forward`]) and the TLS port (SNI routing first);
/// ends when a drain, or the endpoint's removal (`closed`), shuts the listener down.
pub async fn accept_loop<C, F, Fut>(
    listener: TcpListener,
    name: String,
    shared: Arc<EdgeShared>,
    closed: C,
    handle: F,
) where
    C: Fn() -> bool,
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                EdgeStats::bump(&shared.stats.accepted);
                monoio::spawn(handle(stream, peer));
            }
            Err(_) if shared.draining.load(std::sync::atomic::Ordering::Acquire) || closed() => {
                return
            }
            Err(e) => super::accept_backoff(&name, &e).await,
        }
    }
}

/// Forwards one accepted public connection. `early` holds bytes already read from
/// the client (a TLS endpoint's ClientHello); they reach the upstream first.
pub(super) async fn forward(
    client: TcpStream,
    peer: SocketAddr,
    endpoint: Arc<LiveEndpoint>,
    shared: Arc<EdgeShared>,
    early: Vec<u8>,
) {
    let accepted_at = std::time::Instant::now();
    let _in_flight = shared.in_flight.enter();
    let stats = &endpoint.stats;
    let _active = stats.active.track();
    stats.connections.inc();
    let _ip_slot = match endpoint.limits.admit(peer.ip(), endpoint.in_flight()) {
        Ok(slot) => slot,
        Err(hit) => {
            crate::log_throttled!(info, endpoint = %endpoint.url, %peer, limit = hit.as_str(), "connection limit reached; closed");
            stats.limited.inc();
            sockets::reset_on_close(client.as_raw_fd());
            return;
        }
    };
    let target = {
        let policy = endpoint.policy.load();
        let decision = policy.evaluate(peer);
        match decision.outcome() {
            Outcome::Deny => {
                crate::log_throttled!(info, endpoint = %endpoint.url, %peer, rule = decision.why().rule(),
                    rule_name = decision.why().rule_name().unwrap_or(""),
                    cause = decision.why().cause().as_str(), "denied by traffic policy");
                EdgeStats::bump(&shared.stats.denied);
                stats.denied.inc();
                sockets::reset_on_close(client.as_raw_fd());
                return;
            }
            Outcome::Forward(target) => {
                if decision.is_log_only() {
                    tracing::info!(endpoint = %endpoint.url, %peer, rule = decision.why().rule(),
                        "would be denied by traffic policy (enforce: false); forwarded");
                }
                target.canonical()
            }
        }
    };
    let Some(pool) = shared.registry.lookup(&target) else {
        crate::log_throttled!(info, endpoint = %endpoint.url, %peer, %target, "no agent serves the target");
        EdgeStats::bump(&shared.stats.no_agent);
        stats.no_agent.inc();
        return;
    };
    let _ = client.set_nodelay(true);
    let server = client.local_addr().unwrap_or(endpoint.addr);
    let (client, early) = match &endpoint.terminate_tls {
        None => (MaybeTls::Plain(client), early),
        Some(config) => {
            match Box::pin(super::terminate::handshake(client, early, config.clone())).await {
                Ok(tls) => (MaybeTls::Tls(Box::new(tls)), Vec::new()),
                Err(reason) => {
                    crate::log_throttled!(info, endpoint = %endpoint.url, %peer, %reason, "tls handshake with the client failed; closed");
                    EdgeStats::bump(&shared.stats.tls_handshake_failed);
                    stats.tls_handshake_failed.inc();
                    return;
                }
            }
        }
    };
    // Nothing has reached an upstream until the agent's status says so: a member that
    // fails before that is skipped for another one, invisibly to the client.
    let start = Frame::Stream(StreamStart {
        client: peer,
        server,
        internal_url: target.clone(),
    });
    let to = failover::Target {
        endpoint: &endpoint.url,
        peer,
        url: &target,
    };
    let opening = Box::pin(failover::open(&pool, &shared.registry, &start, &early, &to));
    let (load, opened, failovers) = match opening.await {
        Ok(opened) => opened,
        Err(tried) => {
            crate::log_throttled!(info, endpoint = %endpoint.url, %peer, %target, tried, "no pool member could take the connection");
            // Like a refused connection: the client sees a reset, not an empty stream.
            sockets::reset_on_close(client.as_raw_fd());
            EdgeStats::bump(&shared.stats.no_channel);
            stats.no_channel.inc();
            return;
        }
    };
    stats.failovers.add(failovers as u64);
    drop(pool);
    EdgeStats::bump(&shared.stats.forwarded);
    stats.forwarded.inc();
    stats.open_latency.observe(accepted_at.elapsed());
    match opened {
        Opened::Plain(channel) => {
            let fds = [client.as_raw_fd(), channel.as_raw_fd()];
            let work = pin!(forward_plain(
                shared.pump,
                endpoint.idle_timeout,
                client,
                channel,
                peer,
                stats,
            ));
            if unless_kicked(&load.0.session, fds, work).await.is_none() {
                log_cut(&endpoint, peer, &load);
            }
        }
        // Boxed: a TLS channel's state would otherwise size every stream's task.
        Opened::Tls(tls, reader) => {
            Box::pin(forward_tls(client, tls, reader, &endpoint, peer, &load)).await
        }
    }
}

/// Runs `work` (one stream's pumps, which own the client and the data channel whose
/// descriptors are `fds`) unless `session` is kicked first. Then both sockets are set
/// to reset on close before `work` is dropped, so the client and the agent see the cut
/// at once; `None`.
async fn unless_kicked<F: Future>(
    session: &SessionHandle,
    fds: [RawFd; 2],
    work: Pin<&mut F>,
) -> Option<F::Output> {
    let cut = async {
        session.kicked().await;
        for fd in fds {
            sockets::reset_on_close(fd);
        }
    };
    monoio::select! {
        output = work => Some(output),
        _ = cut => None,
    }
}

fn log_cut(endpoint: &LiveEndpoint, peer: SocketAddr, load: &MemberLoad) {
    crate::log_throttled!(info, endpoint = %endpoint.url, %peer, session = load.0.session.id,
        "stream cut: its agent session was ended (token revoked or user deactivated)");
    endpoint.stats.stream_errors.inc();
}

/// One stream on a plain-TCP channel whose agent connected the upstream: the pump
/// both ways (user-space copy when the edge terminates TLS).
async fn forward_plain(
    pump: io::Pump,
    idle_timeout: Option<std::time::Duration>,
    client: MaybeTls<rustls::ServerConnection>,
    channel: TcpStream,
    peer: SocketAddr,
    stats: &EndpointStats,
) {
    let progress = Progress::default();
    let work = pin!(async {
        match client {
            MaybeTls::Plain(client) => io::forward_tcp(pump, client, channel, &progress).await,
            tls => Box::pin(io::copy::forward(tls, channel, &progress)).await,
        }
    });
    match until_idle(idle_timeout, &progress, work).await {
        None => {
            tracing::debug!(%peer, "idle timeout; closed");
            stats.idle_timeouts.inc();
        }
        Some(Ok(bytes)) => {
            tracing::trace!(%peer, up = bytes.inbound_to_outbound, down = bytes.outbound_to_inbound, "stream closed");
            count_bytes(stats, &bytes);
        }
        Some(Err(e)) => {
            tracing::debug!(%peer, error = %e, "stream ended with an error");
            stats.stream_errors.inc();
        }
    }
}

/// One stream on a `tls` channel: chunk-framed both ways; the channel is parked again
/// for the next stream when both sides ended cleanly.
async fn forward_tls(
    client: MaybeTls<rustls::ServerConnection>,
    tls: Box<control::Tls>,
    mut reader: FrameReader,
    endpoint: &LiveEndpoint,
    peer: SocketAddr,
    load: &MemberLoad,
) {
    let stats = &endpoint.stats;
    let progress = Progress::default();
    let fds = [client.as_raw_fd(), tls.as_raw_fd()];
    let ran = {
        let work = pin!(chunked::forward(
            client,
            *tls,
            &mut reader,
            || true,
            &progress
        ));
        let work = pin!(until_idle(endpoint.idle_timeout, &progress, work));
        unless_kicked(&load.0.session, fds, work).await
    };
    let Some(idle_or_done) = ran else {
        log_cut(endpoint, peer, load);
        return;
    };
    let Some(outcome) = idle_or_done else {
        tracing::debug!(%peer, "idle timeout; closed");
        stats.idle_timeouts.inc();
        return;
    };
    match &outcome.result {
        Ok(bytes) => count_bytes(stats, bytes),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "stream ended with an error");
            stats.stream_errors.inc();
        }
    }
    // The agent sends nothing unasked between streams: leftover bytes mean a
    // confused peer, and such a channel is not reused.
    if let (Some(tls), false) = (outcome.reusable, reader.has_leftover()) {
        control::park_tls(tls, &load.0.session);
    }
}

fn count_bytes(stats: &EndpointStats, bytes: &io::PumpStats) {
    stats.bytes_in.add(bytes.inbound_to_outbound);
    stats.bytes_out.add(bytes.outbound_to_inbound);
}
