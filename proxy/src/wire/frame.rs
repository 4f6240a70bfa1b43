//! The frames of the agent protocol and their meaning.

use std::net::SocketAddr;

/// Version spoken by this build; a peer with another version is refused at hello.
/// Version 2 added [`Frame::EndpointHealth`] and the [`Frame::StreamStatus`] answer
/// that every stream on a data channel now starts with (a version-1 agent would leave
/// the edge waiting for it, so the edge refuses version 1 with a message naming both).
/// Version 3: data channels prove their session with a single-use MAC
/// ([`super::channel_proof`]) instead of quoting the secret, and the welcome says
/// whether the edge accepts plain-TCP data channels.
/// Version 4: plain-TCP data channels are chunk-framed like TLS ones
/// ([`super::chunk`]) and carry streams one after another (a version-3 agent would
/// send raw bytes and close its channel after each stream).
/// Version 8: a Bind says which HTTP version the endpoint's upstream speaks
/// ([`UpstreamProtocol`]).
/// Version 9: an HTTP/1.1 upstream may be bound as [`UpstreamProtocol::Http1Multiplexed`],
/// and the edge then carries its requests in the sub-streams of a [`Frame::MuxStream`]
/// (io/mux.rs).
pub const PROTOCOL_VERSION: u16 = 9;

/// The HTTP version the edge speaks through the tunnel to an `http://` endpoint's
/// upstream (`upstream.protocol` in the agent file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (the default; also every `tcp://` and `tls://` endpoint).
    #[default]
    Http1,
    /// HTTP/2: with prior knowledge on a plain upstream, negotiated by ALPN (`h2`) over
    /// `upstream.tls`.
    Http2,
    /// An HTTP/1.1 upstream whose agent multiplexes ([`Frame::MuxStream`]): the edge's
    /// HTTP/1.1 connections to it, for all the client connections a worker serves,
    /// are sub-streams of one data channel stream (io/mux.rs), each relayed by the
    /// agent to an upstream connection of its own. A protocol switch (websockets)
    /// still takes a [`Frame::Stream`] of its own.
    Http1Multiplexed,
}

impl UpstreamProtocol {
    /// Its byte in a Bind.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Http1 => 1,
            Self::Http2 => 2,
            Self::Http1Multiplexed => 3,
        }
    }

    /// Its name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::Http2 => "http2",
            Self::Http1Multiplexed => "http1_multiplexed",
        }
    }

    /// From its byte (anything unknown: HTTP/1.1).
    pub fn from_u8(b: u8) -> Self {
        match b {
            2 => Self::Http2,
            3 => Self::Http1Multiplexed,
            _ => Self::Http1,
        }
    }
}

/// The longest agent endpoint `traffic_policy` a Bind carries (JSON bytes): it must fit
/// a frame with the rest of the Bind.
pub const MAX_POLICY_LEN: usize = 12 * 1024;

/// First bytes an agent sends on a plain-TCP data channel, so the edge's agent port can
/// tell it from a TLS ClientHello (which starts with 0x16).
pub const DATA_CHANNEL_MAGIC: [u8; 4] = *b"SLDC";

/// First bytes an edge of a fleet sends on a peer link (a connection forwarded to the
/// edge that holds its URL's session), on the other edge's agent port.
pub const PEER_STREAM_MAGIC: [u8; 4] = *b"SLPS";

/// Why the edge refused something; sent in [`Frame::Error`] as a `u16`.
///
/// Decoding never fails on a code: one this build does not know (a newer edge's) reads
/// as [`ErrorCode::Unknown`] with its number, and the agent treats an unknown bind
/// refusal as one to retry (see `agent/control.rs`). Agents built before codes 8 to 11
/// read them as [`ErrorCode::Internal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: the authtoken is unknown, malformed or revoked.
    Unauthorized,
    /// 2: the peer speaks another protocol version.
    VersionMismatch,
    /// 3: the internal URL is already bound by another live session, without pooling.
    AlreadyBound,
    /// 4: the request itself is invalid (bad URL, ...).
    BadRequest,
    /// 5: a frame could not be decoded.
    Malformed,
    /// 6: the data channel's session is unknown or its secret is wrong.
    UnknownSession,
    /// 7: the internal URL belongs to another service user.
    NotOwner,
    /// 8: the URL's pool and this bind disagree on `pooling_enabled`.
    PoolingMismatch,
    /// 9: the session is ending; the agent binds again in its next session.
    SessionEnding,
    /// 10: this session has bound the URL already.
    AlreadyBoundHere,
    /// 11: the authtoken's bind rules do not allow the URL.
    BindForbidden,
    /// 12: the endpoint's traffic policy is not the one the URL's pool has.
    PolicyMismatch,
    /// 13: the endpoint's traffic policy does not parse or compile at the edge.
    InvalidPolicy,
    /// 99: anything else; the message says what.
    Internal,
    /// A code this build does not know.
    Unknown(u16),
}

impl ErrorCode {
    /// The code's number on the wire.
    pub const fn to_u16(self) -> u16 {
        match self {
            Self::Unauthorized => 1,
            Self::VersionMismatch => 2,
            Self::AlreadyBound => 3,
            Self::BadRequest => 4,
            Self::Malformed => 5,
            Self::UnknownSession => 6,
            Self::NotOwner => 7,
            Self::PoolingMismatch => 8,
            Self::SessionEnding => 9,
            Self::AlreadyBoundHere => 10,
            Self::BindForbidden => 11,
            Self::PolicyMismatch => 12,
            Self::InvalidPolicy => 13,
            Self::Internal => 99,
            Self::Unknown(v) => v,
        }
    }

    pub(crate) const fn from_u16(v: u16) -> Self {
        match v {
            1 => Self::Unauthorized,
            2 => Self::VersionMismatch,
            3 => Self::AlreadyBound,
            4 => Self::BadRequest,
            5 => Self::Malformed,
            6 => Self::UnknownSession,
            7 => Self::NotOwner,
            8 => Self::PoolingMismatch,
            9 => Self::SessionEnding,
            10 => Self::AlreadyBoundHere,
            11 => Self::BindForbidden,
            12 => Self::PolicyMismatch,
            13 => Self::InvalidPolicy,
            99 => Self::Internal,
            v => Self::Unknown(v),
        }
    }

    /// The code's name for logs (`NotOwner`, ...; `Unknown` for codes this build does
    /// not know: log [`Self::to_u16`] beside it).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unauthorized => "Unauthorized",
            Self::VersionMismatch => "VersionMismatch",
            Self::AlreadyBound => "AlreadyBound",
            Self::BadRequest => "BadRequest",
            Self::Malformed => "Malformed",
            Self::UnknownSession => "UnknownSession",
            Self::NotOwner => "NotOwner",
            Self::PoolingMismatch => "PoolingMismatch",
            Self::SessionEnding => "SessionEnding",
            Self::AlreadyBoundHere => "AlreadyBoundHere",
            Self::BindForbidden => "BindForbidden",
            Self::PolicyMismatch => "PolicyMismatch",
            Self::InvalidPolicy => "InvalidPolicy",
            Self::Internal => "Internal",
            Self::Unknown(_) => "Unknown",
        }
    }
}

/// The agent's answer to a [`Frame::Stream`], sent before any upstream byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StreamCode {
    /// The upstream is connected; stream bytes follow.
    Ok = 0,
    /// Connecting to the upstream failed (refused, timed out, TLS to it failed): no
    /// byte was exchanged with it, so the edge may try another pool member.
    UpstreamFailed = 1,
    /// This agent serves no such internal URL (or, on a peer link, no session of the
    /// receiving edge does).
    UnknownEndpoint = 2,
    /// A peer link's opening was refused (a wrong proof, a replay, a stale time): the
    /// sending edge's fleet key is not this edge's.
    PeerRefused = 3,
    /// On a peer link: the agent endpoint's traffic policy refused the client.
    Denied = 4,
}

impl StreamCode {
    /// Decodes a status byte; unknown values read as [`StreamCode::UpstreamFailed`].
    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Ok,
            2 => Self::UnknownEndpoint,
            3 => Self::PeerRefused,
            4 => Self::Denied,
            _ => Self::UpstreamFailed,
        }
    }

    /// Short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::UpstreamFailed => "upstream connect failed",
            Self::UnknownEndpoint => "unknown endpoint",
            Self::PeerRefused => "peer link refused",
            Self::Denied => "denied by the endpoint's traffic policy",
        }
    }
}

/// What the edge tells the agent when it hands a data channel a public connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStart {
    /// The public client's address, as the edge saw it.
    pub client: SocketAddr,
    /// The edge address the client connected to (for PROXY protocol headers).
    pub server: SocketAddr,
    /// The internal URL the connection was forwarded to (selects the upstream).
    pub internal_url: String,
}

/// An internal endpoint's `description` and `metadata`, as its agent's file gives them
/// (empty when it gives none).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Labels {
    /// Free text for people.
    pub description: String,
    /// Free text for tools (often JSON).
    pub metadata: String,
}

/// One frame of the agent protocol. Its `Debug` never prints an authtoken, a session
/// secret or a channel proof (`***` in their place).
#[derive(Clone, PartialEq, Eq)]
pub enum Frame {
    /// agent -> edge, first frame of a control channel.
    Hello {
        /// [`PROTOCOL_VERSION`] of the agent.
        version: u16,
        /// The agent's authtoken (the edge stores only its hash).
        authtoken: String,
        /// Free-form agent build description, for logs and the admin API.
        agent_version: String,
        /// After this long without any frame from the agent, the edge ends the session.
        heartbeat_tolerance_ms: u32,
        /// The agent file's `metadata` (free text, shown by the admin API and in
        /// events); `None` in a Hello of a version before 6 (which ends before it), so
        /// that one is refused for its version, not for its length.
        metadata: Option<String>,
    },
    /// edge -> agent: the session is established.
    Welcome {
        /// Session id, quoted by data channels.
        session_id: u64,
        /// Per-session secret: the key of data channels' proofs; never sent again.
        secret: [u8; 32],
        /// Whether this edge accepts plain-TCP data channels (`agents.plain_channels`).
        plain_channels: bool,
        /// The edge's `edge_id`: an agent that reaches one edge by two addresses keeps
        /// one session with it.
        edge_id: String,
    },
    /// agent -> edge: bind an internal endpoint.
    Bind {
        /// Request id echoed in the answer.
        request_id: u32,
        /// The internal URL (`tcp://db.internal:5432`).
        url: String,
        /// Whether the agent wants to join a pool for this URL.
        pooling: bool,
        /// The endpoint's `description` and `metadata` from the agent file.
        labels: Labels,
        /// The endpoint's `traffic_policy` as JSON (empty: none), enforced by the edge
        /// on every connection to the URL; at most [`MAX_POLICY_LEN`] bytes.
        traffic_policy: String,
        /// The HTTP version of the upstream (`http://` endpoints).
        upstream_protocol: UpstreamProtocol,
    },
    /// edge -> agent: the bind with this request id succeeded.
    BindOk {
        /// Request id of the bind.
        request_id: u32,
    },
    /// Either way: a refusal or failure with a code and a readable message.
    Error {
        /// Request id it answers, 0 for none.
        request_id: u32,
        /// What kind of failure.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
    /// Either way: heartbeat; the other side answers with `Pong` and the same nonce.
    Ping {
        /// Echoed in the pong; the sender measures RTT with it.
        nonce: u64,
    },
    /// Answer to `Ping`.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// edge -> agent: open this many more data channels (the idle pool ran low).
    NeedChannels {
        /// How many.
        count: u32,
    },
    /// agent -> edge, first frame of a data channel.
    ChannelHello {
        /// [`PROTOCOL_VERSION`] of the agent.
        version: u16,
        /// Session the channel belongs to.
        session_id: u64,
        /// This channel's sequence number in the session (1, 2, …; each used once).
        seq: u64,
        /// [`super::channel_proof::prove`] of the session secret, id and `seq`.
        proof: [u8; 32],
    },
    /// edge -> agent on a data channel: a public connection starts on it.
    Stream(StreamStart),
    /// edge -> agent on a data channel, for an endpoint bound as
    /// [`UpstreamProtocol::Http1Multiplexed`]: a multiplexed link starts on it (the
    /// client named is the first whose request opened it). The agent connects the
    /// upstream as for a `Stream`, answers with a `StreamStatus`, then relays each
    /// sub-stream the edge opens (io/mux.rs) to an upstream connection of its own; the
    /// channel is closed when the link ends.
    MuxStream(StreamStart),
    /// agent -> edge: an endpoint's upstream health and its pool weight; sent after
    /// its Bind and again whenever either changes.
    EndpointHealth {
        /// The internal URL, as bound.
        url: String,
        /// Whether the agent's checks reach the upstream.
        healthy: bool,
        /// Relative share of new connections within the pool (1..=1000).
        weight: u16,
    },
    /// edge -> edge, first frame of a peer link (after [`PEER_STREAM_MAGIC`]): a public
    /// connection the sending edge admitted, for a URL whose session the receiving edge
    /// holds. Followed by one chunk of early client bytes, like a Stream on a data
    /// channel; answered with a `StreamStatus`, then the stream's chunks both ways.
    PeerStream {
        /// The sending edge's `edge_id`.
        edge: String,
        /// The sender's wall clock (ms): openings outside a short window are refused.
        at_ms: u64,
        /// Random, once per opening: a replayed opening is refused.
        nonce: u64,
        /// HMAC-SHA256 of the rest with the fleet's peer key.
        proof: [u8; 32],
        /// The connection, as the sending edge accepted it.
        start: StreamStart,
    },
    /// edge -> agent: this edge is leaving (SIGTERM in a fleet). The agent opens a
    /// session with another edge, then ends this one; meanwhile this one keeps serving.
    Drain {
        /// How long the edge keeps serving before it stops accepting.
        grace_ms: u32,
    },
    /// agent -> edge on a data channel, the first thing after each Stream: whether
    /// the upstream connected. Stream bytes from the upstream follow only after `Ok`.
    StreamStatus {
        /// The outcome.
        code: StreamCode,
    },
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Frame::Hello {
                version,
                agent_version,
                heartbeat_tolerance_ms,
                metadata,
                ..
            } => f
                .debug_struct("Hello")
                .field("version", version)
                .field("authtoken", &"***")
                .field("agent_version", agent_version)
                .field("heartbeat_tolerance_ms", heartbeat_tolerance_ms)
                .field("metadata", metadata)
                .finish(),
            Frame::Welcome {
                session_id,
                plain_channels,
                edge_id,
                ..
            } => f
                .debug_struct("Welcome")
                .field("session_id", session_id)
                .field("secret", &"***")
                .field("plain_channels", plain_channels)
                .field("edge_id", edge_id)
                .finish(),
            Frame::ChannelHello {
                version,
                session_id,
                seq,
                ..
            } => f
                .debug_struct("ChannelHello")
                .field("version", version)
                .field("session_id", session_id)
                .field("seq", seq)
                .field("proof", &"***")
                .finish(),
            Frame::Bind {
                request_id,
                url,
                pooling,
                labels,
                traffic_policy,
                upstream_protocol,
            } => f
                .debug_struct("Bind")
                .field("request_id", request_id)
                .field("url", url)
                .field("pooling", pooling)
                .field("labels", labels)
                .field("traffic_policy", traffic_policy)
                .field("upstream_protocol", upstream_protocol)
                .finish(),
            Frame::BindOk { request_id } => f
                .debug_struct("BindOk")
                .field("request_id", request_id)
                .finish(),
            Frame::Error {
                request_id,
                code,
                message,
            } => f
                .debug_struct("Error")
                .field("request_id", request_id)
                .field("code", code)
                .field("message", message)
                .finish(),
            Frame::Ping { nonce } => f.debug_struct("Ping").field("nonce", nonce).finish(),
            Frame::Pong { nonce } => f.debug_struct("Pong").field("nonce", nonce).finish(),
            Frame::NeedChannels { count } => f
                .debug_struct("NeedChannels")
                .field("count", count)
                .finish(),
            Frame::Stream(start) => f.debug_tuple("Stream").field(start).finish(),
            Frame::MuxStream(start) => f.debug_tuple("MuxStream").field(start).finish(),
            Frame::Drain { grace_ms } => {
                f.debug_struct("Drain").field("grace_ms", grace_ms).finish()
            }
            Frame::PeerStream {
                edge,
                at_ms,
                nonce,
                start,
                ..
            } => f
                .debug_struct("PeerStream")
                .field("edge", edge)
                .field("at_ms", at_ms)
                .field("nonce", nonce)
                .field("proof", &"***")
                .field("start", start)
                .finish(),
            Frame::EndpointHealth {
                url,
                healthy,
                weight,
            } => f
                .debug_struct("EndpointHealth")
                .field("url", url)
                .field("healthy", healthy)
                .field("weight", weight)
                .finish(),
            Frame::StreamStatus { code } => {
                f.debug_struct("StreamStatus").field("code", code).finish()
            }
        }
    }
}

impl Frame {
    /// A short name for logs (never prints fields, so never a secret).
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "hello",
            Frame::Welcome { .. } => "welcome",
            Frame::Bind { .. } => "bind",
            Frame::BindOk { .. } => "bind_ok",
            Frame::Error { .. } => "error",
            Frame::Ping { .. } => "ping",
            Frame::Pong { .. } => "pong",
            Frame::NeedChannels { .. } => "need_channels",
            Frame::ChannelHello { .. } => "channel_hello",
            Frame::Stream(_) => "stream",
            Frame::MuxStream(_) => "mux_stream",
            Frame::PeerStream { .. } => "peer_stream",
            Frame::Drain { .. } => "drain",
            Frame::EndpointHealth { .. } => "endpoint_health",
            Frame::StreamStatus { .. } => "stream_status",
        }
    }
}
