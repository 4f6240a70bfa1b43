//! Control channels: TLS handshake, authentication of the agent's token against the
//! service users, then the session loop (binds, heartbeats, requests for data
//! channels) until the agent leaves, goes silent past its heartbeat tolerance, or
//! sends something malformed. Ending a session unbinds its URLs and closes its parked
//! data channels; nothing else is disturbed.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use monoio::{
    io::{AsyncWriteRent, Splitable},
    net::TcpStream,
};

use super::{
    registry::{ParkedChannel, Registry, SessionHandle},
    stats::EdgeStats,
    EdgeShared, AGENT_HANDSHAKE_TIMEOUT,
};
use crate::{
    io::framed::{self, FrameReader},
    token::TokenHash,
    wire::{ErrorCode, Frame, PROTOCOL_VERSION},
};

/// Bounds on the heartbeat tolerance an agent may ask for.
const MIN_TOLERANCE: Duration = Duration::from_secs(1);
const MAX_TOLERANCE: Duration = Duration::from_secs(600);

pub(super) type Tls = crate::io::tls_stream::TlsStream<rustls::ServerConnection>;

/// Handles a connection that started a TLS handshake on the agent port.
pub async fn handle_tls(stream: TcpStream, peer: SocketAddr, shared: Arc<EdgeShared>) {
    let mut tls = match monoio::time::timeout(
        AGENT_HANDSHAKE_TIMEOUT,
        crate::io::tls_stream::accept(stream, shared.agent_tls.clone()),
    )
    .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "agent TLS handshake failed");
            EdgeStats::bump(&shared.stats.agents_refused);
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "agent TLS handshake timed out");
            EdgeStats::bump(&shared.stats.agents_refused);
            return;
        }
    };
    let mut reader = FrameReader::new();
    let first = match monoio::time::timeout(AGENT_HANDSHAKE_TIMEOUT, reader.next(&mut tls)).await {
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "bad first frame from agent; closed");
            refuse(
                &mut tls,
                ErrorCode::Malformed,
                format!("malformed frame: {e}"),
            )
            .await;
            EdgeStats::bump(&shared.stats.agents_refused);
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "agent sent no hello in time; closed");
            EdgeStats::bump(&shared.stats.agents_refused);
            return;
        }
    };
    match first {
        Frame::Hello {
            version,
            authtoken,
            agent_version,
            heartbeat_tolerance_ms,
        } => {
            if version != PROTOCOL_VERSION {
                let msg = format!(
                    "protocol version {version} not supported; this edge speaks {PROTOCOL_VERSION}"
                );
                tracing::warn!(%peer, version, "agent refused: version mismatch");
                refuse(&mut tls, ErrorCode::VersionMismatch, msg).await;
                EdgeStats::bump(&shared.stats.agents_refused);
                return;
            }
            let Some(user) = authenticate(&shared, &authtoken) else {
                tracing::warn!(%peer, "agent refused: unknown authtoken");
                refuse(
                    &mut tls,
                    ErrorCode::Unauthorized,
                    "authtoken not recognised".into(),
                )
                .await;
                EdgeStats::bump(&shared.stats.agents_refused);
                return;
            };
            let tolerance = Duration::from_millis(heartbeat_tolerance_ms.into())
                .clamp(MIN_TOLERANCE, MAX_TOLERANCE);
            run_session(tls, reader, peer, user, agent_version, tolerance, shared).await;
        }
        Frame::ChannelHello {
            version: PROTOCOL_VERSION,
            session_id,
            secret,
        } => {
            let Some(session) =
                super::agent_port::authenticate_channel(&shared, peer, session_id, &secret)
            else {
                return;
            };
            if reader.has_leftover() {
                tracing::warn!(%peer, "bytes after a TLS data channel hello; closed");
                return;
            }
            tracing::debug!(
                session = session.id,
                transport = "tls",
                "new data channel parked"
            );
            park_tls(tls, &session);
        }
        other => {
            tracing::warn!(%peer, frame = other.name(), "unexpected first frame on a control channel; closed");
            refuse(
                &mut tls,
                ErrorCode::BadRequest,
                format!("expected hello, got {}", other.name()),
            )
            .await;
            EdgeStats::bump(&shared.stats.agents_refused);
        }
    }
}

/// The service user owning `token`, checked against every stored hash in constant time.
fn authenticate(shared: &EdgeShared, token: &str) -> Option<String> {
    let presented = TokenHash::of(token);
    let mut found = None;
    for user in &shared.users {
        for hash in &user.token_hashes {
            if hash.matches(&presented) && found.is_none() {
                found = Some(user.name.clone());
            }
        }
    }
    found
}

async fn refuse(tls: &mut Tls, code: ErrorCode, message: String) {
    let frame = Frame::Error {
        request_id: 0,
        code,
        message,
    };
    let _ = monoio::time::timeout(Duration::from_secs(2), async {
        let _ = framed::write_frame(tls, &frame).await;
        let _ = tls.shutdown().await;
    })
    .await;
}

async fn run_session(
    mut tls: Tls,
    mut reader: FrameReader,
    peer: SocketAddr,
    user: String,
    agent_version: String,
    tolerance: Duration,
    shared: Arc<EdgeShared>,
) {
    let (session, control_rx) = shared.registry.open_session(user.clone(), peer);
    let welcome = Frame::Welcome {
        session_id: session.id,
        secret: Registry::secret_of(&session),
    };
    if let Err(e) = framed::write_frame(&mut tls, &welcome).await {
        tracing::info!(%peer, error = %e, "agent left during welcome");
        shared.registry.close_session(&session);
        return;
    }
    tracing::info!(session = session.id, %peer, %user, %agent_version, "agent session started");
    let (mut rd, mut wr) = tls.into_split();
    monoio::spawn(async move {
        while let Ok(frame) = control_rx.recv().await {
            if framed::write_frame(&mut wr, &frame).await.is_err() {
                break;
            }
        }
        control_rx.close();
    });
    let reason = loop {
        let frame = match monoio::time::timeout(tolerance, reader.next(&mut rd)).await {
            Err(_) => break format!("no heartbeat for {tolerance:?}"),
            Ok(Ok(None)) => break "agent closed the control channel".to_string(),
            Ok(Err(e)) => {
                session.send_control(Frame::Error {
                    request_id: 0,
                    code: ErrorCode::Malformed,
                    message: e.to_string(),
                });
                break format!("control channel error: {e}");
            }
            Ok(Ok(Some(frame))) => frame,
        };
        match frame {
            Frame::Ping { nonce } => {
                session.send_control(Frame::Pong { nonce });
            }
            Frame::Pong { .. } => {}
            Frame::Bind {
                request_id,
                url,
                pooling,
            } => {
                let answer = match url.parse::<sluice_policy::InternalUrl>() {
                    Err(e) => Frame::Error {
                        request_id,
                        code: ErrorCode::BadRequest,
                        message: format!("{url}: {e}"),
                    },
                    Ok(parsed) => {
                        match shared.registry.bind(&parsed.canonical(), &session, pooling) {
                            Ok(members) => {
                                tracing::info!(session = session.id, url = %parsed.canonical(), members, "endpoint bound");
                                Frame::BindOk { request_id }
                            }
                            Err(message) => {
                                tracing::warn!(session = session.id, %url, reason = %message, "bind refused: already bound");
                                Frame::Error {
                                    request_id,
                                    code: ErrorCode::AlreadyBound,
                                    message,
                                }
                            }
                        }
                    }
                };
                session.send_control(answer);
            }
            other => {
                session.send_control(Frame::Error {
                    request_id: 0,
                    code: ErrorCode::BadRequest,
                    message: format!("unexpected {} frame on the control channel", other.name()),
                });
                break format!("unexpected {} frame", other.name());
            }
        }
    };
    shared.registry.close_session(&session);
    tracing::info!(session = session.id, %peer, %user, %reason, "agent session ended");
}

/// Parks a TLS data channel: its socket leaves this worker's runtime, its TLS state
/// travels with it, and whichever worker takes it rebuilds the stream.
pub(super) fn park_tls(tls: Tls, session: &SessionHandle) {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let Some((tcp, conn)) = tls.into_parts() else {
        tracing::debug!(
            session = session.id,
            "data channel with unread bytes not parked"
        );
        return;
    };
    let fd = tcp.into_raw_fd();
    // SAFETY: `into_raw_fd` handed us sole ownership of this open socket.
    let std_stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    session.park(ParkedChannel::Tls(std_stream, Box::new(conn)));
}
