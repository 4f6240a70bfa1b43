//! Opening a public connection's stream on a pool member, failing over to another
//! member while nothing has reached an upstream.
//!
//! For each attempt the edge picks a member ([`Pool::pick`]), takes one of its parked
//! data channels, sends the Stream header (with the client bytes it already holds,
//! e.g. a ClientHello read for SNI routing) and waits for the agent's
//! [`Frame::StreamStatus`]. The agent sends that status after connecting to the
//! upstream and before any upstream byte, and the edge has read nothing from the
//! client beyond `early`, so until the status says `Ok` the attempt can be abandoned
//! and replayed on another member without the client noticing: no data channel in time,
//! a channel that breaks or stays silent, an agent that died, an upstream that refused.
//! Each such failure marks the member suspect ([`super::pool::SUSPECT_FOR`]) and
//! counts a failover; at most [`MAX_ATTEMPTS`] members are tried.
//!
//! The wait for a status is bounded by [`STATUS_WAIT`] (the agent's upstream connect
//! timeout plus a margin) and cut short when the member's session ends, so a member
//! that dies silently costs a waiting connection at most its heartbeat tolerance.
//!
//! On `tcp` channels the status is read with [`framed::read_exact_frame`], which reads
//! exactly its 6 bytes, so the splice that follows starts at the first upstream byte.
//! On `tls` channels it is read through the channel's [`FrameReader`], which keeps any
//! chunk bytes behind it for the chunked pump.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use monoio::{io::AsyncWriteRentExt, net::TcpStream};

use super::{
    control::Tls,
    pool::{Member, MemberLoad, Pool, PoolStats, MAX_ATTEMPTS},
    registry::{ParkedChannel, Registry, TakeError},
    CHANNEL_WAIT,
};
use crate::{
    io::framed::{self, FrameReader},
    wire::{self, Frame, StreamCode},
};

/// How long the agent may take to answer a stream: its upstream connect timeout
/// (10 s) plus a margin.
pub const STATUS_WAIT: Duration = Duration::from_secs(12);

/// A data channel whose agent connected the upstream: ready for the pump.
pub enum Opened {
    /// A `tcp` channel; the next byte from it is the upstream's.
    Plain(TcpStream),
    /// A `tls` channel and the reader holding any chunk bytes already received.
    Tls(Box<Tls>, FrameReader),
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

/// Opens `start` on a member of `pool`, failing over as the module doc says. Returns
/// the member's load guard, the ready channel and how many members failed first; or,
/// when no member could take it, how many were tried.
pub async fn open(
    pool: &Pool,
    registry: &Registry,
    start: &Frame,
    early: &[u8],
    to: &Target<'_>,
) -> Result<(MemberLoad, Opened, usize), usize> {
    let mut tried: Vec<u64> = Vec::new();
    while tried.len() < MAX_ATTEMPTS {
        let Some(member) = pool.pick(&tried) else {
            break;
        };
        // Counted from the pick: a member slow to open is a loaded member.
        let load = MemberLoad::new(member.clone());
        let failure = match member.session.take_channel(CHANNEL_WAIT).await {
            Err(TakeError::SessionGone) => "session ended",
            Err(TakeError::Timeout) => "no data channel in time",
            // A session that ends meanwhile (its agent went silent past the heartbeat
            // tolerance) ends the wait for its status too.
            Ok(channel) => match monoio::select! {
                opened = announce(channel, start, early) => opened,
                _ = member.session.ended() => Err("session ended"),
            } {
                Ok(opened) => {
                    if !tried.is_empty() {
                        PoolStats::bump(&registry.pool_stats.failovers);
                    }
                    return Ok((load, opened, tried.len()));
                }
                Err(reason) => reason,
            },
        };
        drop(load);
        suspect(registry, &member, failure, to);
        tried.push(member.id());
    }
    PoolStats::bump(&registry.pool_stats.exhausted);
    Err(tried.len())
}

/// Logs and counts one failed attempt, marking the member suspect (logged once per
/// transition into suspicion).
fn suspect(registry: &Registry, member: &Arc<Member>, reason: &str, to: &Target<'_>) {
    tracing::info!(endpoint = to.endpoint, peer = %to.peer, url = to.url, session = member.id(),
        reason, "pool member unusable; failing over");
    if member.session.is_closed() {
        return;
    }
    if member.mark_suspect() {
        PoolStats::bump(&registry.pool_stats.marked_suspect);
        tracing::warn!(url = %member.url, session = member.id(), reason,
            skipped_for = ?super::pool::SUSPECT_FOR, "pool member suspect");
    }
}

/// Sends the stream header (and `early`) on `channel` and waits for the agent's status.
async fn announce(
    channel: ParkedChannel,
    start: &Frame,
    early: &[u8],
) -> Result<Opened, &'static str> {
    let mut first = bytes::BytesMut::with_capacity(64 + early.len());
    wire::encode(start, &mut first);
    match channel {
        ParkedChannel::Plain(socket) => {
            let mut tcp = TcpStream::from_std(socket).map_err(|_| "data channel unusable")?;
            first.extend_from_slice(early);
            let (res, _) = tcp.write_all(first).await;
            res.map_err(|_| "data channel broke")?;
            let status =
                monoio::time::timeout(STATUS_WAIT, framed::read_exact_frame(&mut tcp)).await;
            check(status.map(|r| r.map(Some)))?;
            Ok(Opened::Plain(tcp))
        }
        ParkedChannel::Tls(socket, conn) => {
            let tcp = TcpStream::from_std(socket).map_err(|_| "data channel unusable")?;
            let mut tls = Tls::from_parts(tcp, *conn);
            if !early.is_empty() {
                bytes::BufMut::put_u32(&mut first, early.len() as u32);
                first.extend_from_slice(early);
            }
            let (res, _) = tls.write_all(first).await;
            res.map_err(|_| "data channel broke")?;
            let mut reader = FrameReader::new();
            let status = monoio::time::timeout(STATUS_WAIT, reader.next(&mut tls)).await;
            check(status)?;
            Ok(Opened::Tls(Box::new(tls), reader))
        }
    }
}

type Status = Result<Result<Option<Frame>, framed::FrameError>, monoio::time::error::Elapsed>;

fn check(status: Status) -> Result<(), &'static str> {
    match status {
        Err(_) => Err("no stream status in time"),
        Ok(Err(_)) | Ok(Ok(None)) => Err("data channel broke"),
        Ok(Ok(Some(Frame::StreamStatus {
            code: StreamCode::Ok,
        }))) => Ok(()),
        Ok(Ok(Some(Frame::StreamStatus {
            code: StreamCode::UnknownEndpoint,
        }))) => Err("agent does not serve the URL"),
        Ok(Ok(Some(Frame::StreamStatus { .. }))) => Err("upstream connect failed"),
        Ok(Ok(Some(_))) => Err("unexpected frame instead of a stream status"),
    }
}
