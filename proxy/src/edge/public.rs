//! Public TCP endpoints: accept, evaluate the endpoint's traffic policy on the client
//! address, find the session bound to the target, take a parked data channel, announce
//! the stream on it and splice bytes both ways.

use std::{net::SocketAddr, os::fd::AsRawFd, sync::Arc};

use monoio::{
    io::AsyncWriteRentExt,
    net::{TcpListener, TcpStream},
};
use sluice_policy::Outcome;

use super::{registry::TakeError, stats::EdgeStats, EdgeShared, LiveEndpoint, CHANNEL_WAIT};
use crate::{
    io::{sockets, splice},
    wire::{self, Frame, StreamStart},
};

/// Accepts public connections forever; each is forwarded in its own task.
pub async fn accept_loop(
    listener: TcpListener,
    endpoint: Arc<LiveEndpoint>,
    shared: Arc<EdgeShared>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                EdgeStats::bump(&shared.stats.accepted);
                monoio::spawn(forward(stream, peer, endpoint.clone(), shared.clone()));
            }
            Err(e) => super::accept_backoff(&endpoint.url, &e).await,
        }
    }
}

async fn forward(
    client: TcpStream,
    peer: SocketAddr,
    endpoint: Arc<LiveEndpoint>,
    shared: Arc<EdgeShared>,
) {
    let target = {
        let policy = endpoint.policy.load();
        let decision = policy.evaluate(peer);
        match decision.outcome() {
            Outcome::Deny => {
                tracing::debug!(endpoint = %endpoint.url, %peer, rule = decision.why().rule(),
                    cause = decision.why().cause().as_str(), "denied by traffic policy");
                EdgeStats::bump(&shared.stats.denied);
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
    let Some(session) = shared.registry.lookup(&target) else {
        tracing::debug!(endpoint = %endpoint.url, %peer, %target, "no agent serves the target");
        EdgeStats::bump(&shared.stats.no_agent);
        return;
    };
    let channel = match session.take_channel(CHANNEL_WAIT).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(endpoint = %endpoint.url, %peer, %target, session = session.id,
                reason = if e == TakeError::Timeout { "timeout" } else { "session ended" },
                "no data channel available");
            EdgeStats::bump(&shared.stats.no_channel);
            return;
        }
    };
    drop(session);
    let mut channel = match TcpStream::from_std(channel) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot adopt data channel");
            return;
        }
    };
    let mut header = bytes::BytesMut::with_capacity(64);
    wire::encode(
        &Frame::Stream(StreamStart {
            client: peer,
            internal_url: target,
        }),
        &mut header,
    );
    let (res, _) = channel.write_all(header).await;
    if let Err(e) = res {
        tracing::info!(endpoint = %endpoint.url, %peer, error = %e, "data channel failed before the stream started");
        return;
    }
    EdgeStats::bump(&shared.stats.forwarded);
    let _ = client.set_nodelay(true);
    if sockets::set_nonblocking(client.as_raw_fd()).is_err()
        || sockets::set_nonblocking(channel.as_raw_fd()).is_err()
    {
        return;
    }
    match splice::forward(&client, &channel).await {
        Ok(stats) => {
            tracing::trace!(%peer, up = stats.inbound_to_outbound, down = stats.outbound_to_inbound, "stream closed")
        }
        Err(e) => tracing::debug!(%peer, error = %e, "stream ended with an error"),
    }
}
