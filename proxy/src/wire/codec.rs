//! Encoding and decoding of [`Frame`]s; no I/O here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, BytesMut};

use super::frame::{
    ErrorCode, Frame, Labels, StreamCode, StreamStart, UpstreamProtocol, MAX_POLICY_LEN,
};

/// Largest frame body accepted or produced, in bytes.
pub const MAX_FRAME_LEN: usize = 16 * 1024;
/// Longest string field accepted.
const MAX_STRING_LEN: usize = 4096;

/// Why bytes could not be decoded into a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The length prefix exceeds [`MAX_FRAME_LEN`] (or is zero).
    #[error("frame length {0} outside 1..={MAX_FRAME_LEN}")]
    BadLength(usize),
    /// The frame kind byte is unknown.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// The body ended before a field did.
    #[error("frame body truncated in {0}")]
    Truncated(&'static str),
    /// The body has bytes after its last field.
    #[error("{0} trailing bytes after frame body")]
    Trailing(usize),
    /// A string field is not UTF-8 or too long.
    #[error("invalid string field {0}")]
    BadString(&'static str),
    /// An address field has an unknown family tag.
    #[error("invalid address family {0}")]
    BadAddress(u8),
}

const HELLO: u8 = 1;
const WELCOME: u8 = 2;
const BIND: u8 = 3;
const BIND_OK: u8 = 4;
const ERROR: u8 = 5;
const PING: u8 = 6;
const PONG: u8 = 7;
const NEED_CHANNELS: u8 = 8;
const CHANNEL_HELLO: u8 = 9;

/// Bytes of an encoded [`Frame::ChannelHello`], length prefix included: it has no
/// variable-length field, so a data channel's opening is read in one bounded piece.
pub const CHANNEL_HELLO_FRAME_LEN: usize = 4 + 1 + 2 + 8 + 8 + 32;
const STREAM: u8 = 10;
const ENDPOINT_HEALTH: u8 = 11;
const STREAM_STATUS: u8 = 12;
const PEER_STREAM: u8 = 13;
const DRAIN: u8 = 14;
const MUX_STREAM: u8 = 15;

/// Appends `frame` to `out`. Strings longer than the decoder accepts are truncated at a
/// char boundary rather than producing a frame the peer would reject.
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    let start = out.len();
    out.put_u32(0);
    match frame {
        Frame::Hello {
            version,
            authtoken,
            agent_version,
            heartbeat_tolerance_ms,
            metadata,
        } => {
            out.put_u8(HELLO);
            out.put_u16(*version);
            put_str(out, authtoken);
            put_str(out, agent_version);
            out.put_u32(*heartbeat_tolerance_ms);
            if let Some(metadata) = metadata {
                put_str(out, metadata);
            }
        }
        Frame::Welcome {
            session_id,
            secret,
            plain_channels,
            edge_id,
        } => {
            out.put_u8(WELCOME);
            out.put_u64(*session_id);
            out.put_slice(secret);
            out.put_u8(u8::from(*plain_channels));
            put_str(out, edge_id);
        }
        Frame::Bind {
            request_id,
            url,
            pooling,
            labels,
            traffic_policy,
            upstream_protocol,
        } => {
            out.put_u8(BIND);
            out.put_u32(*request_id);
            put_str(out, url);
            out.put_u8(u8::from(*pooling));
            put_str(out, &labels.description);
            put_str(out, &labels.metadata);
            // Never cut: a cut policy would be another policy. The agent refuses longer
            // ones when it reads its file.
            let policy = if traffic_policy.len() <= MAX_POLICY_LEN {
                traffic_policy.as_str()
            } else {
                ""
            };
            out.put_u16(policy.len() as u16);
            out.put_slice(policy.as_bytes());
            out.put_u8(upstream_protocol.as_u8());
        }
        Frame::BindOk { request_id } => {
            out.put_u8(BIND_OK);
            out.put_u32(*request_id);
        }
        Frame::Error {
            request_id,
            code,
            message,
        } => {
            out.put_u8(ERROR);
            out.put_u32(*request_id);
            out.put_u16(code.to_u16());
            put_str(out, message);
        }
        Frame::Ping { nonce } => {
            out.put_u8(PING);
            out.put_u64(*nonce);
        }
        Frame::Pong { nonce } => {
            out.put_u8(PONG);
            out.put_u64(*nonce);
        }
        Frame::NeedChannels { count } => {
            out.put_u8(NEED_CHANNELS);
            out.put_u32(*count);
        }
        Frame::ChannelHello {
            version,
            session_id,
            seq,
            proof,
        } => {
            out.put_u8(CHANNEL_HELLO);
            out.put_u16(*version);
            out.put_u64(*session_id);
            out.put_u64(*seq);
            out.put_slice(proof);
        }
        Frame::Stream(StreamStart {
            client,
            server,
            internal_url,
        })
        | Frame::MuxStream(StreamStart {
            client,
            server,
            internal_url,
        }) => {
            out.put_u8(if matches!(frame, Frame::Stream(_)) {
                STREAM
            } else {
                MUX_STREAM
            });
            put_addr(out, client);
            put_addr(out, server);
            put_str(out, internal_url);
        }
        Frame::PeerStream {
            edge,
            at_ms,
            nonce,
            proof,
            start,
        } => {
            out.put_u8(PEER_STREAM);
            put_str(out, edge);
            out.put_u64(*at_ms);
            out.put_u64(*nonce);
            out.put_slice(proof);
            put_addr(out, &start.client);
            put_addr(out, &start.server);
            put_str(out, &start.internal_url);
        }
        Frame::Drain { grace_ms } => {
            out.put_u8(DRAIN);
            out.put_u32(*grace_ms);
        }
        Frame::EndpointHealth {
            url,
            healthy,
            weight,
        } => {
            out.put_u8(ENDPOINT_HEALTH);
            put_str(out, url);
            out.put_u8(u8::from(*healthy));
            out.put_u16(*weight);
        }
        Frame::StreamStatus { code } => {
            out.put_u8(STREAM_STATUS);
            out.put_u8(*code as u8);
        }
    }
    let body_len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&body_len.to_be_bytes());
}

/// Decodes one frame from the front of `buf`: `Ok(Some((frame, consumed)))`, or
/// `Ok(None)` when `buf` does not yet hold a whole frame.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
    let Some(len_bytes) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
    if len == 0 || len > MAX_FRAME_LEN {
        return Err(WireError::BadLength(len));
    }
    let Some(body) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    let mut r = Reader(body);
    let frame = match r.u8("kind")? {
        HELLO => Frame::Hello {
            version: r.u16("hello.version")?,
            authtoken: r.string("hello.authtoken")?,
            agent_version: r.string("hello.agent_version")?,
            heartbeat_tolerance_ms: r.u32("hello.heartbeat_tolerance_ms")?,
            // Version 6 on; an older agent's Hello ends here and is refused for its
            // version once decoded.
            metadata: if r.0.is_empty() {
                None
            } else {
                Some(r.string("hello.metadata")?)
            },
        },
        WELCOME => Frame::Welcome {
            session_id: r.u64("welcome.session_id")?,
            secret: r.array("welcome.secret")?,
            plain_channels: r.u8("welcome.plain_channels")? != 0,
            edge_id: r.string("welcome.edge_id")?,
        },
        BIND => Frame::Bind {
            request_id: r.u32("bind.request_id")?,
            url: r.string("bind.url")?,
            pooling: r.u8("bind.pooling")? != 0,
            labels: Labels {
                description: r.string("bind.description")?,
                metadata: r.string("bind.metadata")?,
            },
            traffic_policy: r.string_up_to("bind.traffic_policy", MAX_POLICY_LEN)?,
            upstream_protocol: UpstreamProtocol::from_u8(r.u8("bind.upstream_protocol")?),
        },
        BIND_OK => Frame::BindOk {
            request_id: r.u32("bind_ok.request_id")?,
        },
        ERROR => Frame::Error {
            request_id: r.u32("error.request_id")?,
            code: ErrorCode::from_u16(r.u16("error.code")?),
            message: r.string("error.message")?,
        },
        PING => Frame::Ping {
            nonce: r.u64("ping.nonce")?,
        },
        PONG => Frame::Pong {
            nonce: r.u64("pong.nonce")?,
        },
        NEED_CHANNELS => Frame::NeedChannels {
            count: r.u32("need_channels.count")?,
        },
        CHANNEL_HELLO => Frame::ChannelHello {
            version: r.u16("channel_hello.version")?,
            session_id: r.u64("channel_hello.session_id")?,
            seq: r.u64("channel_hello.seq")?,
            proof: r.array("channel_hello.proof")?,
        },
        STREAM => Frame::Stream(StreamStart {
            client: r.addr("stream.client")?,
            server: r.addr("stream.server")?,
            internal_url: r.string("stream.internal_url")?,
        }),
        MUX_STREAM => Frame::MuxStream(StreamStart {
            client: r.addr("mux_stream.client")?,
            server: r.addr("mux_stream.server")?,
            internal_url: r.string("mux_stream.internal_url")?,
        }),
        PEER_STREAM => Frame::PeerStream {
            edge: r.string("peer_stream.edge")?,
            at_ms: r.u64("peer_stream.at_ms")?,
            nonce: r.u64("peer_stream.nonce")?,
            proof: r.array("peer_stream.proof")?,
            start: StreamStart {
                client: r.addr("peer_stream.client")?,
                server: r.addr("peer_stream.server")?,
                internal_url: r.string("peer_stream.internal_url")?,
            },
        },
        DRAIN => Frame::Drain {
            grace_ms: r.u32("drain.grace_ms")?,
        },
        ENDPOINT_HEALTH => Frame::EndpointHealth {
            url: r.string("endpoint_health.url")?,
            healthy: r.u8("endpoint_health.healthy")? != 0,
            weight: r.u16("endpoint_health.weight")?,
        },
        STREAM_STATUS => Frame::StreamStatus {
            code: StreamCode::from_u8(r.u8("stream_status.code")?),
        },
        other => return Err(WireError::UnknownKind(other)),
    };
    if !r.0.is_empty() {
        return Err(WireError::Trailing(r.0.len()));
    }
    Ok(Some((frame, 4 + len)))
}

fn put_str(out: &mut BytesMut, s: &str) {
    let s = char_prefix(s, MAX_STRING_LEN);
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn char_prefix(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_addr(out: &mut BytesMut, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.put_u8(4);
            out.put_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.put_u8(6);
            out.put_slice(&ip.octets());
        }
    }
    out.put_u16(addr.port());
}

/// A cursor over a frame body; every read names the field it was reading.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&[u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated(field));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        Ok(self.take(N, field)?.try_into().expect("length checked"))
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }
    fn string(&mut self, field: &'static str) -> Result<String, WireError> {
        self.string_up_to(field, MAX_STRING_LEN)
    }
    fn string_up_to(&mut self, field: &'static str, max: usize) -> Result<String, WireError> {
        let len = self.u16(field)? as usize;
        if len > max {
            return Err(WireError::BadString(field));
        }
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| WireError::BadString(field))
    }
    fn addr(&mut self, field: &'static str) -> Result<SocketAddr, WireError> {
        let ip = match self.u8(field)? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>(field)?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>(field)?)),
            other => return Err(WireError::BadAddress(other)),
        };
        Ok(SocketAddr::new(ip, self.u16(field)?))
    }
}
