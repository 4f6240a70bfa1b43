//! Requests to a pool member bound [`UpstreamProtocol::Http1Multiplexed`]: each of a
//! worker's HTTP/1.1 connections to the member's upstream is a sub-stream of one data
//! channel stream, the worker's link to that member and URL (io/mux.rs; upstreams.rs
//! keeps it). Kept-alive connections go back to upstreams.rs's idle list as any other.
//!
//! A new sub-stream carries a request only once the agent answered that its upstream
//! connection is up, so a refused one never loses a request. The link is cut at once
//! when the member's session is kicked (token revoked, user deactivated); once the
//! session ended it takes no new sub-stream, its idle ones are let go, and it closes
//! when the requests under way are done.
//!
//! [`UpstreamProtocol::Http1Multiplexed`]: crate::wire::UpstreamProtocol::Http1Multiplexed

use std::{sync::Arc, time::Duration};

use hyper::client::conn::http1::SendRequest;

use super::page::Body;
use crate::{
    edge::session_handle::SessionHandle,
    io::mux::{Gone, Mux, Role},
};

/// Longest the edge waits for the agent's answer to a new sub-stream: past the agent's
/// own upstream connect timeout.
const ANSWER_WAIT: Duration = Duration::from_secs(12);

/// Starts the worker's link over `stream`, a data channel stream the open phase
/// announced as a `MuxStream` on `session`'s member.
pub fn start<L>(stream: L, session: &Arc<SessionHandle>) -> Mux
where
    L: monoio::io::Split
        + monoio::io::AsyncReadRent
        + monoio::io::AsyncWriteRent
        + std::os::fd::AsRawFd
        + 'static,
{
    let link = Mux::start(stream, Role::Opener);
    monoio::spawn(follow(session.clone(), link.clone()));
    link
}

/// Cuts `link` when `session` is kicked; retires it when the session ends, letting go
/// of the member's idle connections (sub-streams of it), so that it closes once the
/// requests under way are done.
async fn follow(session: Arc<SessionHandle>, link: Mux) {
    monoio::select! {
        _ = session.kicked() => return link.abort(),
        _ = session.ended() => {
            super::upstreams::forget_member(session.id);
            link.retire();
        }
        _ = link.closed() => return,
    }
    monoio::select! {
        _ = session.kicked() => link.abort(),
        _ = link.closed() => {}
    }
}

/// An HTTP/1.1 connection on a new sub-stream of `link`, once the agent answered that
/// its upstream connection is up; hyper's connection task runs until the sub-stream
/// ends.
pub async fn connection(link: &Mux) -> Result<SendRequest<Body>, Gone> {
    let sub = link.open().ok_or(Gone::Closed)?;
    match monoio::time::timeout(ANSWER_WAIT, sub.answered()).await {
        Ok(Ok(())) => {}
        Ok(Err(gone)) => return Err(gone),
        Err(_) => return Err(Gone::Closed),
    }
    let (sender, connection) = hyper::client::conn::http1::handshake(sub)
        .await
        .map_err(|_| Gone::Closed)?;
    monoio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "http: a multiplexed upstream connection ended");
        }
    });
    Ok(sender)
}
