//! A multiplexed link at the agent (a `MuxStream` header, io/mux.rs): the endpoint's
//! upstream connected before the `Ok` status as for any stream (a refused one fails
//! over at the edge), then each sub-stream the edge opens answered once an upstream
//! connection of its own is up (the first takes the one already made; a refused one
//! is answered so, and no byte of it goes anywhere) and relayed both ways until both
//! sides end or either is cut. A sub-stream counts as a stream in flight for the
//! agent's drain; once the agent drains, new ones are refused.
//!
//! Counted per endpoint: the link as an assigned stream, each sub-stream in
//! `substreams`, its upstream failures, errors and bytes as a stream's.

use std::{
    rc::Rc,
    sync::{atomic::Ordering, Arc},
};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};

use super::{
    datachan::{DataChannel, Stream},
    upstream::{connect_counted, Upstream},
    AgentShared,
};
use crate::{
    config::agent::AgentEndpoint,
    io::mux::{Answer, Gone, Mux, Role, SubStream},
    wire::{StreamCode, StreamStart, UpstreamProtocol},
};

/// Why a sub-stream's relay ended before both sides finished.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("the edge's side: {0}")]
    Edge(#[from] Gone),
    #[error("the upstream connection: {0}")]
    Upstream(std::io::Error),
}

/// Bytes read from an upstream at a time.
const READ_SIZE: usize = 16 * 1024;

/// What every sub-stream of one link shares.
struct Link {
    start: StreamStart,
    endpoint: AgentEndpoint,
    shared: Arc<AgentShared>,
}

/// Serves the link `channel` carries for `stream` until the edge ends it.
pub(super) async fn serve<C: DataChannel>(
    channel: C,
    stream: Stream<'_>,
    shared: Arc<AgentShared>,
) {
    let mut channel = channel;
    if stream.endpoint.bind_protocol() != UpstreamProtocol::Http1Multiplexed {
        crate::log_throttled!(warn, url = %stream.start.internal_url,
            "a multiplexed stream for an endpoint not bound for it; refused");
        channel.send_status(StreamCode::UnknownEndpoint).await;
        return;
    }
    let connected = connect_counted(&stream.start, stream.endpoint, &stream.shared.stats);
    let Ok(first) = connected.await else {
        channel.send_status(StreamCode::UpstreamFailed).await;
        return;
    };
    if !channel.send_status(StreamCode::Ok).await {
        return;
    }
    let Some(io) = channel.into_link() else {
        return;
    };
    let link = Rc::new(Link {
        start: stream.start,
        endpoint: stream.endpoint.clone(),
        shared,
    });
    let mux = Mux::start(io, Role::Acceptor);
    let mut first = Some(first);
    while let Some(sub) = mux.accept().await {
        let upstream = first.take();
        monoio::spawn(relay(sub, upstream, link.clone()));
    }
}

/// One sub-stream: its upstream connection (`upstream`: already made), the answer, then
/// bytes both ways.
async fn relay(sub: SubStream, upstream: Option<Upstream>, link: Rc<Link>) {
    let shared = link.shared.clone();
    let _in_flight = shared.in_flight.enter();
    let stats = shared.stats.endpoint(&link.start.internal_url);
    if let Some(stats) = stats {
        stats.substreams.inc();
    }
    if shared.draining.load(Ordering::SeqCst) {
        return sub.answer(Answer::Refused);
    }
    let upstream = match upstream {
        Some(upstream) => upstream,
        None => {
            let connecting = connect_counted(&link.start, &link.endpoint, &link.shared.stats);
            match monoio::select! {
                connected = connecting => Some(connected),
                _ = sub.gone() => None,
            } {
                Some(Ok(upstream)) => upstream,
                Some(Err(_)) => return sub.answer(Answer::Refused),
                None => return,
            }
        }
    };
    sub.answer(Answer::Opened);
    let (read, write) = upstream.into_split();
    let bytes = std::cell::Cell::new((0u64, 0u64));
    let relayed = async {
        let (up, down) = monoio::join!(
            to_upstream(&sub, write, &bytes),
            from_upstream(&sub, read, &bytes)
        );
        up.and(down)
    };
    let result = monoio::select! {
        result = relayed => result,
        _ = sub.gone() => Err(RelayError::Edge(Gone::Reset)),
    };
    let Some(stats) = stats else { return };
    let (inbound, outbound) = bytes.get();
    match result {
        Ok(()) => {
            stats.bytes_in.add(inbound);
            stats.bytes_out.add(outbound);
        }
        Err(e) => {
            stats.stream_errors.inc();
            tracing::debug!(client = %link.start.client, error = %e, "multiplexed stream ended with an error");
        }
    }
}

/// The edge's bytes to the upstream, then the upstream's write side shut.
async fn to_upstream<W: AsyncWriteRent>(
    sub: &SubStream,
    mut write: W,
    bytes: &std::cell::Cell<(u64, u64)>,
) -> Result<(), RelayError> {
    while let Some(data) = sub.recv().await? {
        let n = data.len() as u64;
        let (res, _) = write.write_all(data).await;
        res.map_err(RelayError::Upstream)?;
        let (inbound, outbound) = bytes.get();
        bytes.set((inbound + n, outbound));
    }
    let _ = write.shutdown().await;
    Ok(())
}

/// The upstream's bytes to the edge, within the edge's credit; then this side's fin.
async fn from_upstream<R: AsyncReadRent>(
    sub: &SubStream,
    mut read: R,
    bytes: &std::cell::Cell<(u64, u64)>,
) -> Result<(), RelayError> {
    let mut buf = Vec::with_capacity(READ_SIZE);
    loop {
        let (res, b) = read.read(buf).await;
        buf = b;
        match res {
            Ok(0) => break,
            Err(e) => return Err(RelayError::Upstream(e)),
            Ok(n) => {
                sub.send_all(&buf[..n]).await?;
                let (inbound, outbound) = bytes.get();
                bytes.set((inbound, outbound + n as u64));
                buf.clear();
            }
        }
    }
    sub.finish();
    Ok(())
}
