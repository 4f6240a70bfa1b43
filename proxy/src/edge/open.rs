//! The open phase: a public connection's stream opened on a pool member, failing over
//! to another member while nothing has reached an upstream.
//!
//! For each attempt the edge picks a member ([`Pool::pick`]), takes one of its parked
//! data channels, and announces the stream on it ([`ParkedChannel::announce`]: the
//! Stream header, with the client bytes the edge already holds, e.g. a ClientHello read
//! for SNI routing; then the agent's [`crate::wire::Frame::StreamStatus`]). The agent
//! sends that status after connecting to the upstream and before any upstream byte,
//! and the edge has read nothing from the client beyond `early`, so until the status
//! says `Ok` the attempt can be abandoned and replayed on another member without the
//! client noticing: no data channel in time, a channel that breaks or stays silent, an
//! agent that died, an upstream that refused — each an [`OpenError`] whose
//! [`OpenError::retryable`] says so. Each such failure marks the member suspect
//! ([`super::pool::SUSPECT_FOR`]), is counted by cause, and counts a failover; at most
//! [`MAX_ATTEMPTS`] members are tried.
//!
//! The wait for a status is bounded by [`super::datachan::STATUS_WAIT`] (the agent's
//! upstream connect timeout plus a margin) and cut short when the member's session
//! ends, so a member that dies silently costs a waiting connection at most its
//! heartbeat tolerance.

use std::{net::SocketAddr, sync::atomic::Ordering, sync::Arc};

use super::{
    datachan::{DataChannel, OpenError, ParkedChannel},
    pool::{Member, MemberLoad, Pool, PoolStats, MAX_ATTEMPTS},
    registry::Registry,
    session_handle::TakeError,
    CHANNEL_WAIT,
};
use crate::wire::{Frame, UpstreamProtocol};

/// A stream the agent accepted: the member's load guard, the channel ready for the
/// pump, and how many members failed first.
pub struct Opened {
    /// Counts the stream against its member until dropped.
    pub load: MemberLoad,
    /// The data channel; the next byte from it is the upstream's.
    pub channel: DataChannel,
    /// Members that failed before this one.
    pub failovers: usize,
}

/// No member could take the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoMember {
    /// Members tried.
    pub tried: usize,
    /// Why the last one failed (`None`: the pool had no member to try).
    pub last: Option<OpenError>,
}

impl From<TakeError> for OpenError {
    fn from(e: TakeError) -> Self {
        match e {
            TakeError::SessionGone => OpenError::SessionGone,
            TakeError::Timeout => OpenError::NoChannel,
        }
    }
}

/// Where a connection is going, for logs.
pub struct Target<'a> {
    /// The public endpoint.
    pub endpoint: &'a str,
    /// The client.
    pub peer: SocketAddr,
    /// The internal URL.
    pub url: &'a str,
}

/// Opens `start` on a member of `pool`, failing over as the module doc says.
/// `http_requests`: the stream is for HTTP requests (not a protocol switch), so a
/// member bound as [`UpstreamProtocol::Http1Multiplexed`] is announced a
/// [`Frame::MuxStream`] instead: its channel carries a multiplexed link (io/mux.rs).
pub async fn open(
    pool: &Pool,
    registry: &Registry,
    start: &Frame,
    early: &[u8],
    to: &Target<'_>,
    http_requests: bool,
) -> Result<Opened, NoMember> {
    let mut tried: Vec<u64> = Vec::new();
    let mut last = None;
    while tried.len() < MAX_ATTEMPTS {
        let Some(member) = pool.pick(&tried) else {
            break;
        };
        // Counted from the pick: a member slow to open is a loaded member.
        let load = MemberLoad::new(member.clone());
        let error = match attempt(&member, start, early, http_requests).await {
            Ok(channel) => {
                if !tried.is_empty() {
                    PoolStats::bump(&registry.pool_stats.failovers);
                }
                return Ok(Opened {
                    load,
                    channel,
                    failovers: tried.len(),
                });
            }
            Err(error) => error,
        };
        drop(load);
        suspect(registry, &member, error, to);
        tried.push(member.id());
        last = Some(error);
        if !error.retryable() {
            break;
        }
    }
    PoolStats::bump(&registry.pool_stats.exhausted);
    Err(NoMember {
        tried: tried.len(),
        last,
    })
}

/// One member: a parked channel, the stream announced, the agent's status.
async fn attempt(
    member: &Member,
    start: &Frame,
    early: &[u8],
    http_requests: bool,
) -> Result<DataChannel, OpenError> {
    let mux_stream;
    let start = match start {
        Frame::Stream(s)
            if http_requests && member.upstream == UpstreamProtocol::Http1Multiplexed =>
        {
            mux_stream = Frame::MuxStream(s.clone());
            &mux_stream
        }
        _ => start,
    };
    let channel: ParkedChannel = member.session.take_channel(CHANNEL_WAIT).await?;
    // A session that ends meanwhile (its agent went silent past the heartbeat
    // tolerance) ends the wait for its status too.
    monoio::select! {
        opened = channel.announce(start, early) => opened,
        _ = member.session.ended() => Err(OpenError::SessionGone),
    }
}

/// Logs and counts one failed attempt, marking the member suspect (logged once per
/// transition into suspicion).
pub(super) fn suspect(
    registry: &Registry,
    member: &Arc<Member>,
    error: OpenError,
    to: &Target<'_>,
) {
    registry.pool_stats.open_failures[error.index()].fetch_add(1, Ordering::Relaxed);
    member.note_open_failure();
    let reason = error.as_str();
    tracing::info!(endpoint = to.endpoint, peer = %to.peer, url = to.url, session = member.id(),
        reason, cause = error.label(), "pool member unusable; failing over");
    if member.session.is_closed() {
        return;
    }
    if member.mark_suspect() {
        PoolStats::bump(&registry.pool_stats.marked_suspect);
        tracing::warn!(url = %member.url, session = member.id(), reason,
            skipped_for = ?super::pool::SUSPECT_FOR, "pool member suspect");
    }
}
