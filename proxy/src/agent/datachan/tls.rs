//! `tls` data channels: TLS to the agent port, then a `ChannelHello` frame over it.

use std::future::Future;

use super::{dial_edge, hello, ChannelError, ChannelLink};
use crate::{
    agent::{upstream::Upstream, AgentShared, SessionTicket, CONNECT_TIMEOUT},
    io::{
        self,
        chunked::{self, ChunkedOutcome},
        framed::{self, FrameReader},
        idle::Progress,
        tls_stream::TlsStream,
        Pump,
    },
};

/// TLS to the edge's agent port.
pub(in crate::agent) type Tls = TlsStream<rustls::ClientConnection>;

impl ChannelLink for Tls {
    async fn dial(ticket: &SessionTicket, shared: &AgentShared) -> Result<Self, ChannelError> {
        let tcp = dial_edge(ticket).await?;
        let name = ticket.server_name.clone();
        let handshake = io::tls_stream::connect(tcp, shared.settings.tls.clone(), name);
        let mut tls = match monoio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(ChannelError::Tls(e)),
            Err(_) => return Err(ChannelError::TlsTimeout),
        };
        framed::write_frame(&mut tls, &hello(ticket))
            .await
            .map_err(ChannelError::Hello)?;
        Ok(tls)
    }

    fn forward<'a>(
        self,
        upstream: Upstream,
        reader: &'a mut FrameReader,
        keep: impl FnOnce() -> bool + 'a,
        progress: &'a Progress,
        _: Pump,
    ) -> impl Future<Output = ChunkedOutcome<Self>> + 'a {
        chunked::forward(upstream, self, reader, keep, progress)
    }
}
