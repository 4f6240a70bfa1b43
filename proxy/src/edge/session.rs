//! The decisions of an agent session's control loop, without I/O and without a clock
//! (every timestamp is an argument): [`SessionLogic`] takes the frames the agent sends
//! and answers each with one [`Action`] for `control.rs` to carry out (reply, record a
//! round trip or a health report, bind through the registry, end the session). It also
//! says when the agent has been silent past its heartbeat tolerance
//! ([`SessionLogic::on_tick`]) and what the edge's round-trip pings carry.
//!
//! What a bind then means for the URL (ownership, pools) is the registry's decision
//! (`registry.rs`, `pool.rs`), itself free of I/O. Unit tests drive both with a fake
//! clock and no sockets (`session/tests.rs`).

use std::{sync::Arc, time::Duration};

use super::{auth::Identity, bind_error::BindError, endpoint_policy::BoundPolicy, registry::Bound};
use crate::wire::{ErrorCode, Frame};

/// Bounds on the heartbeat tolerance an agent may ask for.
pub const MIN_TOLERANCE: Duration = Duration::from_secs(1);
/// See [`MIN_TOLERANCE`].
pub const MAX_TOLERANCE: Duration = Duration::from_secs(600);

/// How often the edge measures the control channel's round trip (at most; twice per
/// tolerance when that is shorter).
pub const RTT_INTERVAL: Duration = Duration::from_secs(5);

/// Marks edge-originated ping nonces (agent pings use small counters).
const RTT_NONCE_TAG: u64 = 1 << 63;

/// What the control loop does about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    Nothing,
    /// Queue this frame for the agent.
    Reply(Frame),
    /// The control channel's round trip, in microseconds.
    RecordRtt(u64),
    /// The agent's health report for one of its URLs (canonical when it parses).
    ReportHealth {
        /// The internal URL.
        url: String,
        /// Whether the agent's checks reach the upstream.
        healthy: bool,
        /// Pool weight.
        weight: u16,
    },
    /// Bind `url` (canonical; the token's rules allow it) through the registry, then
    /// answer with [`SessionLogic::bind_answer`].
    Bind {
        /// Echoed in the answer.
        request_id: u32,
        /// The canonical internal URL.
        url: String,
        /// Whether the agent asks to join a pool.
        pooling: bool,
        /// Its `description` and `metadata`, kept with the session once bound.
        labels: crate::wire::Labels,
        /// Its `traffic_policy`, compiled, enforced on connections to the URL.
        policy: Option<Arc<BoundPolicy>>,
        /// The HTTP version its upstream speaks.
        upstream: crate::wire::UpstreamProtocol,
    },
    /// Refuse a bind before it reaches the registry (log, audit, then send `answer`).
    RefuseBind {
        /// The URL as the refusal names it.
        url: String,
        /// Why.
        error: BindError,
        /// The frame for the agent.
        answer: Frame,
    },
    /// End the session, sending `error` first if there is one.
    End {
        /// A last frame for the agent.
        error: Option<Frame>,
        /// Why, for the log and the audit event.
        reason: String,
    },
}

/// One session's control-loop state.
pub struct SessionLogic {
    identity: Arc<Identity>,
    tolerance: Duration,
    /// When the agent was last heard from (ms on the crate clock).
    last_heard_ms: u64,
}

impl SessionLogic {
    /// A session of `identity` whose agent asked for `tolerance_ms` of silence at most
    /// (clamped to [`MIN_TOLERANCE`]..=[`MAX_TOLERANCE`]), starting at `now_ms`.
    pub fn new(identity: Arc<Identity>, tolerance_ms: u32, now_ms: u64) -> Self {
        Self {
            identity,
            tolerance: Self::tolerance_for(tolerance_ms),
            last_heard_ms: now_ms,
        }
    }

    /// The tolerance the edge grants an agent asking for `tolerance_ms`.
    pub fn tolerance_for(tolerance_ms: u32) -> Duration {
        Duration::from_millis(tolerance_ms.into()).clamp(MIN_TOLERANCE, MAX_TOLERANCE)
    }

    /// The heartbeat tolerance in force.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// How long the next read may wait at `now_ms` before the agent counts as silent.
    pub fn read_timeout(&self, now_ms: u64) -> Duration {
        let deadline = self.last_heard_ms + self.tolerance.as_millis() as u64;
        Duration::from_millis(deadline.saturating_sub(now_ms))
    }

    /// The heartbeat check at `now_ms`: ends the session once the agent has been silent
    /// for the whole tolerance.
    pub fn on_tick(&self, now_ms: u64) -> Option<Action> {
        (now_ms >= self.last_heard_ms + self.tolerance.as_millis() as u64).then(|| Action::End {
            error: None,
            reason: format!("no heartbeat for {:?}", self.tolerance),
        })
    }

    /// The agent closed its control channel (it left, or drains and leaves the edge).
    pub fn on_closed(&self) -> Action {
        Action::End {
            error: None,
            reason: "agent closed the control channel".to_string(),
        }
    }

    /// The control channel broke or carried something undecodable.
    pub fn on_read_error(&self, error: &dyn std::fmt::Display) -> Action {
        Action::End {
            error: Some(Frame::Error {
                request_id: 0,
                code: ErrorCode::Malformed,
                message: error.to_string(),
            }),
            reason: format!("control channel error: {error}"),
        }
    }

    /// A frame from the agent, received at `now_ms` (`now_us`: the same instant in
    /// microseconds, for round trips).
    pub fn on_frame(&mut self, frame: Frame, now_ms: u64, now_us: u64) -> Action {
        self.last_heard_ms = self.last_heard_ms.max(now_ms);
        match frame {
            Frame::Ping { nonce } => Action::Reply(Frame::Pong { nonce }),
            Frame::Pong { nonce } if nonce & RTT_NONCE_TAG != 0 => {
                let sent = nonce & !RTT_NONCE_TAG;
                Action::RecordRtt(now_us.saturating_sub(sent).max(1))
            }
            Frame::Pong { .. } => Action::Nothing,
            Frame::EndpointHealth {
                url,
                healthy,
                weight,
            } => Action::ReportHealth {
                url: url
                    .parse::<sluice_policy::InternalUrl>()
                    .map(|u| u.canonical())
                    .unwrap_or(url),
                healthy,
                weight,
            },
            Frame::Bind {
                request_id,
                url,
                pooling,
                labels,
                traffic_policy,
                upstream_protocol,
            } => self.on_bind(
                request_id,
                url,
                pooling,
                labels,
                traffic_policy,
                upstream_protocol,
            ),
            other => Action::End {
                error: Some(Frame::Error {
                    request_id: 0,
                    code: ErrorCode::BadRequest,
                    message: format!("unexpected {} frame on the control channel", other.name()),
                }),
                reason: format!("unexpected {} frame", other.name()),
            },
        }
    }

    fn on_bind(
        &self,
        request_id: u32,
        url: String,
        pooling: bool,
        labels: crate::wire::Labels,
        traffic_policy: String,
        upstream: crate::wire::UpstreamProtocol,
    ) -> Action {
        let refuse = |url: String, error: BindError| Action::RefuseBind {
            answer: Self::bind_answer(request_id, &url, Err(&error)),
            url,
            error,
        };
        match url.parse::<sluice_policy::InternalUrl>() {
            Err(e) => refuse(url, BindError::InvalidUrl(e.to_string())),
            Ok(parsed) => {
                let url = parsed.canonical();
                if self.identity.may_bind(&url) {
                    let policy = match BoundPolicy::from_bind(&traffic_policy, &parsed) {
                        Ok(policy) => policy.map(Arc::new),
                        Err(why) => return refuse(url, BindError::InvalidPolicy(why)),
                    };
                    return Action::Bind {
                        request_id,
                        url,
                        pooling,
                        labels,
                        policy,
                        upstream,
                    };
                }
                let rules = self
                    .identity
                    .acl
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                refuse(url, BindError::Forbidden { rules })
            }
        }
    }

    /// The agent's answer to bind `request_id` of `url`, given its outcome.
    pub fn bind_answer(request_id: u32, url: &str, outcome: Result<&Bound, &BindError>) -> Frame {
        match outcome {
            Ok(_) => Frame::BindOk { request_id },
            Err(e) => Frame::Error {
                request_id,
                code: e.code(),
                message: e.message(url),
            },
        }
    }

    /// How often the edge pings to measure the round trip.
    pub fn ping_interval(&self) -> Duration {
        RTT_INTERVAL.min(self.tolerance / 2)
    }

    /// The edge's round-trip ping sent at `now_us` on the crate clock.
    pub fn rtt_ping(now_us: u64) -> Frame {
        Frame::Ping {
            nonce: now_us | RTT_NONCE_TAG,
        }
    }
}

#[cfg(test)]
mod tests;
