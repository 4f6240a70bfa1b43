//! PROXY protocol headers (haproxy's `proxy-protocol.txt`): [`encode_v1`] (the text
//! line) and [`encode_v2`] (the binary block) tell an upstream the public client's
//! address before any other byte; [`decode`] reads either version, for tests and test
//! upstreams. No I/O here.
//!
//! Addresses are canonicalised before encoding: an IPv4-mapped IPv6 address
//! (`::ffff:a.b.c.d`, as a dual-stack socket reports IPv4 peers) is sent as IPv4; if one
//! side is IPv4 and the other IPv6, the IPv4 one is sent IPv4-mapped so both share the
//! family the header announces (the spec requires one family per header).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, BytesMut};

/// Longest v1 line, CRLF included (`PROXY UNKNOWN` with two full IPv6 addresses).
pub const V1_MAX_LEN: usize = 107;
/// The 12 bytes that start a v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Largest v2 address block (addresses and TLVs) [`decode`] accepts.
pub const V2_MAX_LEN: usize = 2048;

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_HEADER_LEN: usize = 16;
const V2_LOCAL: u8 = 0x20;
const V2_PROXY: u8 = 0x21;
const V2_TCP4: u8 = 0x11;
const V2_TCP6: u8 = 0x21;

/// Which version of the protocol a header used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The human-readable line.
    V1,
    /// The binary block.
    V2,
}

/// A decoded PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A relayed TCP connection and its original endpoints; an IPv4-mapped IPv6
    /// address (as a mixed-family header carries) comes back as IPv4.
    Tcp {
        /// Which version carried it.
        version: Version,
        /// The client's address.
        src: SocketAddr,
        /// The address the client connected to.
        dst: SocketAddr,
    },
    /// v1 `UNKNOWN`, or v2 PROXY for a family or protocol other than TCP over IPv4/IPv6
    /// (UNSPEC, UDP, unix): use the connection's own endpoints.
    Unknown {
        /// Which version carried it.
        version: Version,
    },
    /// v2 LOCAL: the proxy's own connection (a health check); use its endpoints.
    Local,
}

/// Why bytes are not a valid PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Neither `PROXY ` nor the v2 signature.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// No CRLF within [`V1_MAX_LEN`] bytes.
    #[error("PROXY v1 line without CRLF in its first {V1_MAX_LEN} bytes")]
    V1TooLong,
    /// A v1 line that does not match the grammar exactly.
    #[error("malformed PROXY v1 line: {0}")]
    V1Malformed(&'static str),
    /// The v2 version/command byte is not 0x20 (LOCAL) or 0x21 (PROXY).
    #[error("PROXY v2 version/command byte {0:#04x} is not 0x20 or 0x21")]
    V2Command(u8),
    /// The v2 family/protocol byte is not one the spec defines.
    #[error("PROXY v2 family/protocol byte {0:#04x} is not defined")]
    V2Family(u8),
    /// The v2 length is too short for the family's addresses, or over [`V2_MAX_LEN`].
    #[error("PROXY v2 address length {len} is invalid for family {family:#04x}")]
    V2Length {
        /// The family/protocol byte.
        family: u8,
        /// The announced length.
        len: usize,
    },
}

/// Both endpoints in one family.
enum Endpoints {
    V4([Ipv4Addr; 2], [u16; 2]),
    V6([Ipv6Addr; 2], [u16; 2]),
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

fn endpoints(src: SocketAddr, dst: SocketAddr) -> Endpoints {
    let (src, dst) = (canonical(src), canonical(dst));
    let ports = [src.port(), dst.port()];
    let v6 = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Endpoints::V4([s, d], ports),
        (s, d) => Endpoints::V6([v6(s), v6(d)], ports),
    }
}

/// Appends the v1 line for a TCP connection from `src` to `dst`, e.g.
/// `PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n`. IPv6 addresses are written in
/// RFC 5952 form, hexadecimal groups only (no dotted IPv4 tail), as the spec requires.
pub fn encode_v1(src: SocketAddr, dst: SocketAddr, out: &mut BytesMut) {
    out.reserve(V1_MAX_LEN);
    // Writing into a BytesMut cannot fail: it grows.
    let _ = match endpoints(src, dst) {
        Endpoints::V4([s, d], [sp, dp]) => write!(out, "PROXY TCP4 {s} {d} {sp} {dp}\r\n"),
        Endpoints::V6([s, d], [sp, dp]) => {
            write!(out, "PROXY TCP6 {} {} {sp} {dp}\r\n", Hex6(s), Hex6(d))
        }
    };
}

/// Appends the v2 block (PROXY command, TCP over IPv4 or IPv6, no TLVs) for a TCP
/// connection from `src` to `dst`: 28 bytes for IPv4, 52 for IPv6.
pub fn encode_v2(src: SocketAddr, dst: SocketAddr, out: &mut BytesMut) {
    out.put_slice(&V2_SIGNATURE);
    out.put_u8(V2_PROXY);
    let [sp, dp] = match endpoints(src, dst) {
        Endpoints::V4([s, d], ports) => {
            out.put_u8(V2_TCP4);
            out.put_u16(12);
            out.put_slice(&s.octets());
            out.put_slice(&d.octets());
            ports
        }
        Endpoints::V6([s, d], ports) => {
            out.put_u8(V2_TCP6);
            out.put_u16(36);
            out.put_slice(&s.octets());
            out.put_slice(&d.octets());
            ports
        }
    };
    out.put_u16(sp);
    out.put_u16(dp);
}

/// Appends a header of `version` for a TCP connection from `src` to `dst`.
pub fn encode(version: Version, src: SocketAddr, dst: SocketAddr, out: &mut BytesMut) {
    match version {
        Version::V1 => encode_v1(src, dst, out),
        Version::V2 => encode_v2(src, dst, out),
    }
}

/// An IPv6 address in RFC 5952 text form without the dotted-quad tail `Display` uses
/// for IPv4-mapped addresses.
struct Hex6(Ipv6Addr);

impl std::fmt::Display for Hex6 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups = self.0.segments();
        // The longest run of two or more zero groups (the first one on a tie) becomes "::".
        let (mut best, mut run) = ((0, 0), (0, 0));
        for (i, &g) in groups.iter().enumerate() {
            if g == 0 {
                run = if run.1 == 0 {
                    (i, 1)
                } else {
                    (run.0, run.1 + 1)
                };
                if run.1 > best.1 {
                    best = run;
                }
            } else {
                run = (0, 0);
            }
        }
        let write_all = |f: &mut std::fmt::Formatter<'_>, gs: &[u16]| {
            gs.iter().enumerate().try_for_each(|(i, g)| {
                let sep = if i == 0 { "" } else { ":" };
                write!(f, "{sep}{g:x}")
            })
        };
        if best.1 < 2 {
            return write_all(f, &groups);
        }
        write_all(f, &groups[..best.0])?;
        f.write_str("::")?;
        write_all(f, &groups[best.0 + best.1..])
    }
}

/// Decodes a PROXY header (either version) from the front of `buf`: `Ok(None)` while it
/// is incomplete, else the header and how many bytes it took.
pub fn decode(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let starts =
        |prefix: &[u8]| buf[..buf.len().min(prefix.len())] == prefix[..buf.len().min(prefix.len())];
    if buf.is_empty() {
        Ok(None)
    } else if starts(V1_PREFIX) {
        decode_v1(buf)
    } else if starts(&V2_SIGNATURE) {
        decode_v2(buf)
    } else {
        Err(ProxyError::NotProxy)
    }
}

fn decode_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return match buf.len() >= V1_MAX_LEN {
            true => Err(ProxyError::V1TooLong),
            false => Ok(None),
        };
    };
    let malformed = |why| Err(ProxyError::V1Malformed(why));
    if lf == 0 || window[lf - 1] != b'\r' {
        return malformed("line ends with LF instead of CRLF");
    }
    let line = &window[V1_PREFIX.len()..lf - 1];
    if line.contains(&b'\r') {
        return malformed("CR inside the line");
    }
    let Ok(line) = std::str::from_utf8(line) else {
        return malformed("not US-ASCII");
    };
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        let header = ProxyHeader::Unknown {
            version: Version::V1,
        };
        return Ok(Some((header, lf + 1)));
    }
    let mut fields = line.split(' ');
    let (Some(proto), Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return malformed("not five fields separated by single spaces");
    };
    let (src, dst) = match proto {
        "TCP4" => match (src.parse::<Ipv4Addr>(), dst.parse::<Ipv4Addr>()) {
            (Ok(s), Ok(d)) => (IpAddr::V4(s), IpAddr::V4(d)),
            _ => return malformed("TCP4 address is not a dotted quad"),
        },
        "TCP6" => match (src.parse::<Ipv6Addr>(), dst.parse::<Ipv6Addr>()) {
            (Ok(s), Ok(d)) if !src.contains('.') && !dst.contains('.') => {
                (IpAddr::V6(s), IpAddr::V6(d))
            }
            _ => return malformed("TCP6 address is not hexadecimal IPv6"),
        },
        _ => return malformed("protocol is not TCP4, TCP6 or UNKNOWN"),
    };
    let (Some(sport), Some(dport)) = (port(sport), port(dport)) else {
        return malformed("port is not 0..=65535 without leading zeroes");
    };
    let header = ProxyHeader::Tcp {
        version: Version::V1,
        src: canonical(SocketAddr::new(src, sport)),
        dst: canonical(SocketAddr::new(dst, dport)),
    };
    Ok(Some((header, lf + 1)))
}

/// A decimal port without leading zeroes.
fn port(s: &str) -> Option<u16> {
    let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

fn decode_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if let Some(&command) = buf.get(12) {
        if command != V2_LOCAL && command != V2_PROXY {
            return Err(ProxyError::V2Command(command));
        }
    }
    if let Some(&family) = buf.get(13) {
        if !matches!(family, 0x00 | 0x11 | 0x12 | 0x21 | 0x22 | 0x31 | 0x32) {
            return Err(ProxyError::V2Family(family));
        }
    }
    let Some(header) = buf.get(..V2_HEADER_LEN) else {
        return Ok(None);
    };
    let (command, family) = (header[12], header[13]);
    let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
    let needed = match (command, family >> 4) {
        (V2_LOCAL, _) => 0, // the family is to be ignored
        (_, 1) => 12,
        (_, 2) => 36,
        (_, 3) => 216,
        _ => 0,
    };
    if len < needed || len > V2_MAX_LEN {
        return Err(ProxyError::V2Length { family, len });
    }
    let Some(block) = buf.get(V2_HEADER_LEN..V2_HEADER_LEN + len) else {
        return Ok(None);
    };
    let used = V2_HEADER_LEN + len;
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    let header = match (command, family) {
        (V2_LOCAL, _) => ProxyHeader::Local,
        (_, V2_TCP4) => {
            let ip = |at: usize| {
                IpAddr::from(<[u8; 4]>::try_from(&block[at..at + 4]).unwrap_or_default())
            };
            ProxyHeader::Tcp {
                version: Version::V2,
                src: SocketAddr::new(ip(0), port(8)),
                dst: SocketAddr::new(ip(4), port(10)),
            }
        }
        (_, V2_TCP6) => {
            let ip = |at: usize| {
                IpAddr::from(<[u8; 16]>::try_from(&block[at..at + 16]).unwrap_or_default())
            };
            ProxyHeader::Tcp {
                version: Version::V2,
                src: canonical(SocketAddr::new(ip(0), port(32))),
                dst: canonical(SocketAddr::new(ip(16), port(34))),
            }
        }
        _ => ProxyHeader::Unknown {
            version: Version::V2,
        },
    };
    Ok(Some((header, used)))
}

#[cfg(test)]
mod tests;
