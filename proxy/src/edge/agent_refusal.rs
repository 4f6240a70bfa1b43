//! The account phase of the agent port: every way a connection to it is refused before
//! it becomes a session or a parked data channel, as one type, and the one place each
//! is logged (rate limited: outsiders trigger these) and counted in
//! `sluice_edge_agents_refused_total{reason}`. The callers only decide and close.

use std::{fmt, net::SocketAddr};

use super::EdgeShared;

/// Why an agent-port connection was refused.
#[derive(Clone, Copy)]
pub(super) enum AgentRefusal<'e> {
    /// Over a limit of the unauthenticated phase (`edge/preauth.rs`); which one.
    PreAuthLimit(&'static str),
    /// Too many TLS handshakes from one source without a session; which limit.
    HandshakeRate(&'static str),
    /// No first byte before the handshake deadline.
    Silent,
    /// A plain-TCP data channel while `agents.plain_channels` is false.
    PlainChannelsOff,
    /// A first byte that is neither TLS nor the data-channel magic.
    Garbage(u8),
    /// The control channel's TLS handshake failed.
    TlsHandshake(&'e dyn fmt::Display),
    /// The control channel's TLS handshake ran past the deadline.
    TlsHandshakeTimeout,
    /// The first frame over TLS did not decode.
    BadFirstFrame(&'e dyn fmt::Display),
    /// No first frame over TLS before the deadline.
    NoHello,
    /// A hello of another protocol version.
    VersionMismatch(u16),
    /// A hello with a token nobody issued (or that was revoked).
    UnknownToken,
    /// A first frame that is neither a hello nor a channel hello.
    UnexpectedFrame {
        /// What the connection looked like: "control" (TLS) or "data" (plain).
        channel: &'static str,
        /// The frame's name.
        frame: &'static str,
    },
    /// A plain data channel's opening did not decode.
    BadChannelHello(&'e dyn fmt::Display),
    /// A plain data channel's opening did not arrive before the deadline.
    ChannelSilent,
    /// A data channel's proof was wrong or used before.
    ChannelRefused {
        /// The session it named.
        session: u64,
        /// Its sequence number.
        seq: u64,
        /// Why its proof was refused.
        reason: &'static str,
    },
}

impl AgentRefusal<'_> {
    /// Metric labels, by [`Self::index`].
    pub const LABELS: [&'static str; 15] = [
        "preauth_limit",
        "handshake_rate",
        "silent",
        "plain_channels_off",
        "garbage",
        "tls_handshake",
        "tls_handshake_timeout",
        "bad_first_frame",
        "no_hello",
        "version_mismatch",
        "unknown_token",
        "unexpected_frame",
        "bad_channel_hello",
        "channel_silent",
        "channel_refused",
    ];

    /// Position of this cause in [`Self::LABELS`].
    pub const fn index(&self) -> usize {
        match self {
            Self::PreAuthLimit(_) => 0,
            Self::HandshakeRate(_) => 1,
            Self::Silent => 2,
            Self::PlainChannelsOff => 3,
            Self::Garbage(_) => 4,
            Self::TlsHandshake(_) => 5,
            Self::TlsHandshakeTimeout => 6,
            Self::BadFirstFrame(_) => 7,
            Self::NoHello => 8,
            Self::VersionMismatch(_) => 9,
            Self::UnknownToken => 10,
            Self::UnexpectedFrame { .. } => 11,
            Self::BadChannelHello(_) => 12,
            Self::ChannelSilent => 13,
            Self::ChannelRefused { .. } => 14,
        }
    }

    /// The metric label.
    pub const fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }

    /// Logs the refusal (each cause under its own rate limit) and counts it.
    pub fn account(&self, shared: &EdgeShared, peer: SocketAddr) {
        let cause = self.label();
        match *self {
            Self::PreAuthLimit(limit) => {
                crate::log_throttled!(warn, %peer, limit, cause, "agent port connection refused before authentication")
            }
            Self::HandshakeRate(limit) => {
                crate::log_throttled!(warn, %peer, limit, cause, "agent TLS handshake refused: too many from this source")
            }
            Self::Silent => {
                crate::log_throttled!(info, %peer, cause, "agent connection silent past the handshake timeout; closed")
            }
            Self::PlainChannelsOff => {
                crate::log_throttled!(warn, %peer, cause, "plain-TCP data channel refused: this edge does not accept them (agents.plain_channels: false)")
            }
            Self::Garbage(first_byte) => {
                crate::log_throttled!(warn, %peer, first_byte, cause, "garbage on the agent port; closed")
            }
            Self::TlsHandshake(error) => {
                crate::log_throttled!(warn, %peer, %error, cause, "agent TLS handshake failed")
            }
            Self::TlsHandshakeTimeout => {
                crate::log_throttled!(info, %peer, cause, "agent TLS handshake timed out")
            }
            Self::BadFirstFrame(error) => {
                crate::log_throttled!(warn, %peer, %error, cause, "bad first frame from agent; closed")
            }
            Self::NoHello => {
                crate::log_throttled!(info, %peer, cause, "agent sent no hello in time; closed")
            }
            Self::VersionMismatch(version) => {
                crate::log_throttled!(warn, %peer, version, cause, "agent refused: version mismatch")
            }
            Self::UnknownToken => {
                crate::log_throttled!(warn, %peer, cause, "agent refused: unknown authtoken")
            }
            Self::UnexpectedFrame {
                channel: "data",
                frame,
            } => {
                crate::log_throttled!(warn, %peer, frame, cause, "unexpected first frame on a data channel; closed")
            }
            Self::UnexpectedFrame { frame, .. } => {
                crate::log_throttled!(warn, %peer, frame, cause, "unexpected first frame on a control channel; closed")
            }
            Self::BadChannelHello(error) => {
                crate::log_throttled!(warn, %peer, %error, cause, "bad data channel hello; closed")
            }
            Self::ChannelSilent => {
                crate::log_throttled!(info, %peer, cause, "data channel silent past the handshake timeout; closed")
            }
            Self::ChannelRefused {
                session,
                seq,
                reason: why,
            } => {
                crate::log_throttled!(warn, %peer, session, seq, reason = why, cause, "data channel refused; closed")
            }
        }
        shared.stats.agents_refused[self.index()].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_has_its_own_label_at_its_index() {
        let e = std::io::Error::other("x");
        let all = [
            AgentRefusal::PreAuthLimit("max_unauthenticated"),
            AgentRefusal::HandshakeRate("handshakes_per_ip_per_sec"),
            AgentRefusal::Silent,
            AgentRefusal::PlainChannelsOff,
            AgentRefusal::Garbage(0),
            AgentRefusal::TlsHandshake(&e),
            AgentRefusal::TlsHandshakeTimeout,
            AgentRefusal::BadFirstFrame(&e),
            AgentRefusal::NoHello,
            AgentRefusal::VersionMismatch(2),
            AgentRefusal::UnknownToken,
            AgentRefusal::UnexpectedFrame {
                channel: "control",
                frame: "Bind",
            },
            AgentRefusal::BadChannelHello(&e),
            AgentRefusal::ChannelSilent,
            AgentRefusal::ChannelRefused {
                session: 1,
                seq: 1,
                reason: "replayed",
            },
        ];
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut labels: Vec<_> = all.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), AgentRefusal::LABELS.len());
    }
}
