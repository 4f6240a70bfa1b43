//! Control channels: TLS handshake, authentication of the agent's token against the
//! service users, then the session loop (binds, heartbeats, requests for data
//! channels) until the agent leaves, goes silent past its heartbeat tolerance, or
//! sends something malformed. Ending a session unbinds its URLs and closes its parked
//! data channels; nothing else is disturbed.
//!
//! This file does the I/O: reading frames, writing the queue, timers, logs and audit
//! events. What each frame means is decided by [`SessionLogic`] (`session.rs`).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use monoio::{
    io::{AsyncWriteRent, Splitable},
    net::TcpStream,
};

use super::{
    agent_refusal::AgentRefusal,
    audit::AuditEvent,
    auth::Identity,
    bind_error::BindError,
    datachan::{ParkedChannel, Tls},
    registry::{Bound, Registry},
    session::{Action, SessionLogic},
    session_handle::SessionHandle,
    EdgeShared,
};
use crate::{
    io::framed::{self, FrameReader},
    wire::{ErrorCode, Frame, PROTOCOL_VERSION},
};

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
        Ok(Err(e)) => return AgentRefusal::TlsHandshake(&e).account(&shared, peer),
        Err(_) => return AgentRefusal::TlsHandshakeTimeout.account(&shared, peer),
    };
    let mut reader = FrameReader::new();
    let first = match monoio::time::timeout(left(), reader.next(&mut tls)).await {
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            AgentRefusal::BadFirstFrame(&e).account(&shared, peer);
            let message = format!("malformed frame: {e}");
            return refuse(&mut tls, ErrorCode::Malformed, message).await;
        }
        Err(_) => return AgentRefusal::NoHello.account(&shared, peer),
    };
    match first {
        Frame::Hello {
            version,
            authtoken,
            agent_version,
            heartbeat_tolerance_ms,
            metadata,
        } => {
            if version != PROTOCOL_VERSION {
                let msg = format!(
                    "protocol version {version} not supported; this edge speaks {PROTOCOL_VERSION}"
                );
                AgentRefusal::VersionMismatch(version).account(&shared, peer);
                return refuse(&mut tls, ErrorCode::VersionMismatch, msg).await;
            }
            let Some(identity) = shared.auth.load().authenticate(&authtoken) else {
                AgentRefusal::UnknownToken.account(&shared, peer);
                shared.audit.send(AuditEvent::AuthFailed { peer });
                let message = "authtoken not recognised".into();
                return refuse(&mut tls, ErrorCode::Unauthorized, message).await;
            };
            shared.stats.agent_handshake.0.observe(started.elapsed());
            run_session(
                tls,
                reader,
                peer,
                identity,
                AgentInfo {
                    version: agent_version,
                    metadata: metadata.unwrap_or_default(),
                },
                heartbeat_tolerance_ms,
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
            let frame = other.name();
            AgentRefusal::UnexpectedFrame {
                channel: "control",
                frame,
            }
            .account(&shared, peer);
            let message = format!("expected hello, got {frame}");
            refuse(&mut tls, ErrorCode::BadRequest, message).await;
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

/// What an agent's Hello says about it.
struct AgentInfo {
    /// Its version string.
    version: String,
    /// Its file's `metadata`.
    metadata: String,
}

async fn run_session(
    mut tls: Tls,
    mut reader: FrameReader,
    peer: SocketAddr,
    identity: Arc<Identity>,
    agent: AgentInfo,
    tolerance_ms: u32,
    shared: Arc<EdgeShared>,
) {
    let AgentInfo {
        version: agent_version,
        metadata,
    } = agent;
    let user = identity.user_name.clone();
    if shared.leaving.load(std::sync::atomic::Ordering::Acquire) {
        // Leaving the fleet: sessions move away, none start here.
        let refusal = Frame::Error {
            request_id: 0,
            code: ErrorCode::SessionEnding,
            message: "this edge is leaving its fleet (shutting down): connect to another edge"
                .into(),
        };
        let _ = framed::write_frame(&mut tls, &refusal).await;
        tracing::info!(%peer, %user, "agent refused: this edge is leaving its fleet");
        return;
    }
    let (session, control_rx) = shared.registry.open_session(
        identity.clone(),
        peer,
        agent_version.clone(),
        metadata.clone(),
    );
    let welcome = Frame::Welcome {
        session_id: session.id,
        secret: Registry::secret_of(&session),
        plain_channels: shared.plain_channels,
        edge_id: shared.edge_id.clone(),
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
        metadata,
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
    let mut logic = SessionLogic::new(identity.clone(), tolerance_ms, crate::clock::mono_ms());
    monoio::spawn(measure_rtt(session.clone(), logic.ping_interval()));
    let reason = loop {
        let timeout = logic.read_timeout(crate::clock::mono_ms());
        let action = match monoio::time::timeout(timeout, reader.next(&mut rd)).await {
            // The read is dropped with the timeout: the session ends whatever the check
            // says (it says "silent" unless the timer fired early).
            Err(_) => logic
                .on_tick(crate::clock::mono_ms())
                .unwrap_or_else(|| Action::End {
                    error: None,
                    reason: format!("no heartbeat for {:?}", logic.tolerance()),
                }),
            Ok(Ok(None)) => logic.on_closed(),
            Ok(Err(e)) => logic.on_read_error(&e),
            Ok(Ok(Some(frame))) => {
                logic.on_frame(frame, crate::clock::mono_ms(), crate::clock::mono_us())
            }
        };
        match action {
            Action::Nothing => {}
            Action::Reply(frame) => {
                session.send_control(frame);
            }
            Action::RecordRtt(us) => session
                .rtt_us
                .store(us, std::sync::atomic::Ordering::Relaxed),
            Action::ReportHealth {
                url,
                healthy,
                weight,
            } => {
                if !shared
                    .registry
                    .report_health(session.id, &url, healthy, weight)
                {
                    tracing::debug!(session = session.id, %url, "health report for a URL this session does not serve");
                }
            }
            Action::Bind {
                request_id,
                url,
                pooling,
                labels,
                policy,
                upstream,
            } => {
                let outcome = shared
                    .registry
                    .bind(&url, &session, pooling, policy, upstream);
                let answer = SessionLogic::bind_answer(request_id, &url, outcome.as_ref());
                match outcome {
                    Ok(bound) => {
                        session.set_labels(&url, labels);
                        report_bound(&shared, &session, &url, bound)
                    }
                    Err(error) => report_refused(&shared, &session, url, &error),
                }
                session.send_control(answer);
            }
            Action::RefuseBind { url, error, answer } => {
                report_refused(&shared, &session, url, &error);
                session.send_control(answer);
            }
            Action::End { error, reason } => {
                if let Some(frame) = error {
                    session.send_control(frame);
                }
                break reason;
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

/// Logs and audits a bind that succeeded.
fn report_bound(shared: &EdgeShared, session: &SessionHandle, url: &str, bound: Bound) {
    tracing::info!(session = session.id, %url, members = bound.members, claimed = bound.claimed, "endpoint bound");
    if bound.claimed {
        shared.audit.send(AuditEvent::UrlClaimed {
            session: session.id,
            identity: session.identity.clone(),
            url: url.to_string(),
        });
    }
    shared.audit.send(AuditEvent::Bound {
        session: session.id,
        identity: session.identity.clone(),
        members: bound.members,
        url: url.to_string(),
    });
}

/// Logs and audits a refused bind.
fn report_refused(shared: &EdgeShared, session: &SessionHandle, url: String, error: &BindError) {
    let identity = &session.identity;
    let message = error.message(&url);
    let reason = error.label();
    let mut owner = None;
    match error {
        BindError::NotOwner(o) => {
            tracing::warn!(session = session.id, %url, reason, user = %identity.user_name, owner = %o.user_name, "bind refused: the URL belongs to another service user");
            owner = Some(o.clone());
        }
        BindError::Forbidden { .. } => {
            tracing::warn!(session = session.id, %url, reason, token = %identity.token_id, "bind refused by the token's rules");
        }
        BindError::AlreadyBound => {
            tracing::warn!(session = session.id, %url, reason, detail = %message, "bind refused: already bound");
        }
        // An invalid URL is the agent's mistake alone: not an audit event (as before).
        BindError::InvalidUrl(_) => {
            tracing::warn!(session = session.id, %url, reason, detail = %message, "bind refused");
            return;
        }
        _ => {
            tracing::warn!(session = session.id, %url, reason, detail = %message, "bind refused");
        }
    }
    shared.audit.send(AuditEvent::BindRefused {
        session: session.id,
        identity: identity.clone(),
        url,
        reason: message,
        owner,
    });
}

/// Pings the agent every `every` (the nonce is the send time, [`SessionLogic::rtt_ping`])
/// until the session's control queue closes; the session loop takes the matching pong.
async fn measure_rtt(session: Arc<SessionHandle>, every: Duration) {
    loop {
        if !session.send_control(SessionLogic::rtt_ping(crate::clock::mono_us())) {
            return;
        }
        monoio::time::sleep(every).await;
    }
}
