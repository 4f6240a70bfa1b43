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
    audit::AuditEvent,
    auth::Identity,
    datachan::{ParkedChannel, Tls},
    registry::{BindRefusal, Registry},
    session_handle::SessionHandle,
    stats::EdgeStats,
    EdgeShared,
};
use crate::{
    io::framed::{self, FrameReader},
    wire::{ErrorCode, Frame, PROTOCOL_VERSION},
};

/// Bounds on the heartbeat tolerance an agent may ask for.
const MIN_TOLERANCE: Duration = Duration::from_secs(1);
const MAX_TOLERANCE: Duration = Duration::from_secs(600);

/// Handles a connection that started a TLS handshake on the agent port; the
/// handshake and the first frame must both be done by `deadline`.
pub async fn handle_tls(
    stream: TcpStream,
    peer: SocketAddr,
    deadline: std::time::Instant,
    shared: Arc<EdgeShared>,
) {
    let started = std::time::Instant::now();
    let left = || deadline.saturating_duration_since(std::time::Instant::now());
    let mut tls = match monoio::time::timeout(
        left(),
        crate::io::tls_stream::accept(stream, shared.agent_tls()),
    )
    .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            crate::log_throttled!(warn, %peer, error = %e, "agent TLS handshake failed");
            EdgeStats::bump(&shared.stats.agents_refused);
            return;
        }
        Err(_) => {
            crate::log_throttled!(info, %peer, "agent TLS handshake timed out");
            EdgeStats::bump(&shared.stats.agents_refused);
            return;
        }
    };
    let mut reader = FrameReader::new();
    let first = match monoio::time::timeout(left(), reader.next(&mut tls)).await {
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            crate::log_throttled!(warn, %peer, error = %e, "bad first frame from agent; closed");
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
            crate::log_throttled!(info, %peer, "agent sent no hello in time; closed");
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
                crate::log_throttled!(warn, %peer, version, "agent refused: version mismatch");
                refuse(&mut tls, ErrorCode::VersionMismatch, msg).await;
                EdgeStats::bump(&shared.stats.agents_refused);
                return;
            }
            let Some(identity) = shared.auth.load().authenticate(&authtoken) else {
                crate::log_throttled!(warn, %peer, "agent refused: unknown authtoken");
                shared.audit.send(AuditEvent::AuthFailed { peer });
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
            shared.stats.agent_handshake.0.observe(started.elapsed());
            run_session(
                tls,
                reader,
                peer,
                identity,
                agent_version,
                tolerance,
                shared,
            )
            .await;
        }
        Frame::ChannelHello {
            version: PROTOCOL_VERSION,
            session_id,
            seq,
            proof,
        } => {
            let Some(session) =
                super::channel_auth::authenticate_channel(&shared, peer, session_id, seq, &proof)
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
            if let Some(channel) = ParkedChannel::tls(tls) {
                session.park(channel);
            }
        }
        other => {
            crate::log_throttled!(warn, %peer, frame = other.name(), "unexpected first frame on a control channel; closed");
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
    identity: Arc<Identity>,
    agent_version: String,
    tolerance: Duration,
    shared: Arc<EdgeShared>,
) {
    let user = identity.user_name.clone();
    let (session, control_rx) =
        shared
            .registry
            .open_session(identity.clone(), peer, agent_version.clone());
    let welcome = Frame::Welcome {
        session_id: session.id,
        secret: Registry::secret_of(&session),
        plain_channels: shared.plain_channels,
    };
    if let Err(e) = framed::write_frame(&mut tls, &welcome).await {
        tracing::info!(%peer, error = %e, "agent left during welcome");
        shared.registry.close_session(&session);
        return;
    }
    tracing::info!(session = session.id, %peer, %user, token = %identity.token_id, %agent_version, "agent session started");
    shared.audit.send(AuditEvent::SessionStarted {
        session: session.id,
        identity: identity.clone(),
        peer,
        agent_version: agent_version.clone(),
    });
    let control_fd = std::os::fd::AsRawFd::as_raw_fd(&tls);
    let (mut rd, mut wr) = tls.into_split();
    monoio::spawn(async move {
        while let Ok(frame) = control_rx.recv().await {
            if framed::write_frame(&mut wr, &frame).await.is_err() {
                break;
            }
        }
        control_rx.close();
        // The queue closed: the session ended or was kicked. Shutting the socket (still
        // open: this task owns its write half) wakes the reader with end-of-file.
        crate::io::sockets::shutdown_both(control_fd);
    });
    monoio::spawn(measure_rtt(session.clone(), tolerance));
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
            Frame::Pong { nonce } => record_rtt(&session, nonce),
            Frame::EndpointHealth {
                url,
                healthy,
                weight,
            } => {
                let canonical = url
                    .parse::<sluice_policy::InternalUrl>()
                    .map(|u| u.canonical())
                    .unwrap_or(url);
                if !shared
                    .registry
                    .report_health(session.id, &canonical, healthy, weight)
                {
                    tracing::debug!(session = session.id, url = %canonical, "health report for a URL this session does not serve");
                }
            }
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
                    Ok(parsed) if !identity.may_bind(&parsed.canonical()) => {
                        let message = format!(
                            "{}: this authtoken may not bind it (its rules: {})",
                            parsed.canonical(),
                            identity
                                .acl
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        );
                        tracing::warn!(session = session.id, %url, token = %identity.token_id, "bind refused by the token's rules");
                        shared.audit.send(AuditEvent::BindRefused {
                            session: session.id,
                            identity: identity.clone(),
                            url: parsed.canonical(),
                            reason: message.clone(),
                            owner: None,
                        });
                        Frame::Error {
                            request_id,
                            code: ErrorCode::BadRequest,
                            message,
                        }
                    }
                    Ok(parsed) => {
                        let url = parsed.canonical();
                        match shared.registry.bind(&url, &session, pooling) {
                            Ok(bound) => {
                                tracing::info!(session = session.id, %url, members = bound.members, claimed = bound.claimed, "endpoint bound");
                                if bound.claimed {
                                    shared.audit.send(AuditEvent::UrlClaimed {
                                        session: session.id,
                                        identity: identity.clone(),
                                        url: url.clone(),
                                    });
                                }
                                shared.audit.send(AuditEvent::Bound {
                                    session: session.id,
                                    identity: identity.clone(),
                                    members: bound.members,
                                    url,
                                });
                                Frame::BindOk { request_id }
                            }
                            Err(refusal) => {
                                let message = refusal.message(&url);
                                let owner = match &refusal {
                                    BindRefusal::NotOwner(o) => {
                                        tracing::warn!(session = session.id, %url, user = %identity.user_name, owner = %o.user_name, "bind refused: the URL belongs to another service user");
                                        Some(o.clone())
                                    }
                                    _ => {
                                        tracing::warn!(session = session.id, %url, reason = %message, "bind refused: already bound");
                                        None
                                    }
                                };
                                shared.audit.send(AuditEvent::BindRefused {
                                    session: session.id,
                                    identity: identity.clone(),
                                    url,
                                    reason: message.clone(),
                                    owner,
                                });
                                Frame::Error {
                                    request_id,
                                    code: refusal.code(),
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
    // A kicked session's control channel closes because the edge shut it: the cause
    // worth reporting is the kick's.
    let reason = session.kick_reason().unwrap_or(reason);
    let unbound = shared.registry.close_session(&session);
    tracing::info!(session = session.id, %peer, %user, %reason, "agent session ended");
    shared.audit.send(AuditEvent::SessionEnded {
        session: session.id,
        identity,
        reason,
        unbound,
    });
}

/// How often the edge measures the control channel's round trip.
const RTT_INTERVAL: Duration = Duration::from_secs(5);

/// Pings the agent every [`RTT_INTERVAL`] (the nonce is the send time) until the
/// session's control queue closes; [`record_rtt`] takes the matching pong.
async fn measure_rtt(session: Arc<SessionHandle>, tolerance: Duration) {
    let every = RTT_INTERVAL.min(tolerance / 2);
    loop {
        let nonce = crate::clock::mono_us() | RTT_NONCE_TAG;
        if !session.send_control(Frame::Ping { nonce }) {
            return;
        }
        monoio::time::sleep(every).await;
    }
}

/// Marks edge-originated ping nonces (agent pings use small counters).
const RTT_NONCE_TAG: u64 = 1 << 63;

fn record_rtt(session: &SessionHandle, nonce: u64) {
    if nonce & RTT_NONCE_TAG != 0 {
        let sent = nonce & !RTT_NONCE_TAG;
        let rtt = crate::clock::mono_us().saturating_sub(sent).max(1);
        session
            .rtt_us
            .store(rtt, std::sync::atomic::Ordering::Relaxed);
    }
}
