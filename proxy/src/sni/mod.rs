//! Reading the server name (SNI) from a TLS ClientHello without consuming it, so the
//! edge can route a TLS connection and then forward the very same bytes untouched
//! (passthrough), and [`SniRouter`], which maps a name to an endpoint (exact names beat
//! `*.suffix` wildcards). No I/O here.
//!
//! [`peek_sni`] is called on everything received from the client so far; it answers
//! [`SniPeek::NeedMore`] until the whole ClientHello is there (it may span several TLS
//! records), then [`SniPeek::Found`] or [`SniPeek::NoSni`], or an [`SniError`] as soon as
//! the bytes seen cannot be the start of a valid ClientHello. Its answer on a prefix of
//! the input is either `NeedMore` or the answer on the whole input, so TCP segmentation
//! never changes the outcome. Everything is bounded by [`MAX_CLIENT_HELLO`].

use std::borrow::Cow;

mod host_name;
mod router;
#[cfg(test)]
mod tests;

use host_name::validate_host_name;
pub use router::SniRouter;

/// Raw bytes (TLS record headers included) within which the ClientHello must end;
/// beyond that [`peek_sni`] answers [`SniError::TooLarge`]. Real ClientHellos are well
/// under 2 KiB, even with post-quantum key shares.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;
/// Longest host name accepted (RFC 1035 text form without the trailing dot).
pub const MAX_HOST_NAME: usize = 253;

/// Largest TLS plaintext record payload (RFC 8446 §5.1).
const MAX_RECORD_LEN: usize = 1 << 14;
const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST_NAME: u8 = 0;

/// What the bytes received so far say about the client's server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SniPeek<'a> {
    /// The ClientHello is not complete yet: read more and call again with all bytes.
    NeedMore,
    /// The host name from the server_name extension, validated as a DNS name (ASCII
    /// letters, digits, `-`, `_`; no trailing dot; not an IPv4 literal) and returned
    /// as sent, *not* lowercased ([`SniRouter::route`] compares case-insensitively).
    /// Borrowed from the input, except when the ClientHello was split over several TLS
    /// records and had to be reassembled.
    Found(Cow<'a, str>),
    /// A complete, well-formed ClientHello without a host name.
    NoSni,
}

/// Why the bytes cannot be a ClientHello that a TLS server would accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SniError {
    /// The first byte has its high bit set: an SSLv2-compatible hello, which has no
    /// extensions and so no SNI.
    #[error("SSLv2-style record header (first byte {0:#04x}): no extensions, so no SNI")]
    SslV2(u8),
    /// A record before the end of the ClientHello is not a handshake record.
    #[error("TLS record content type {0} is not handshake (22)")]
    NotHandshake(u8),
    /// A record's legacy version is not 0x0300..=0x0304.
    #[error("TLS record version {0:#06x} is not 0x0300..=0x0304")]
    RecordVersion(u16),
    /// A record's length is 0 or over 16384.
    #[error("TLS record length {0} is not 1..=16384")]
    RecordLength(usize),
    /// The first handshake message is not a ClientHello.
    #[error("handshake message type {0} is not ClientHello (1)")]
    NotClientHello(u8),
    /// The ClientHello would end beyond [`MAX_CLIENT_HELLO`] bytes of input.
    #[error("ClientHello does not end within the first {MAX_CLIENT_HELLO} bytes")]
    TooLarge,
    /// The ClientHello's legacy_version is not 3.x.
    #[error("ClientHello legacy_version {0:#06x} is not 3.x")]
    HelloVersion(u16),
    /// A length field disagrees with its container or with the field's own rules.
    #[error("ClientHello field {0} has an invalid length")]
    BadLength(&'static str),
    /// Two server_name extensions, or two host names in one.
    #[error("ClientHello carries more than one {0}")]
    Duplicate(&'static str),
    /// The host name is not a DNS name.
    #[error("server_name host name is not a valid DNS name: {0}")]
    InvalidHostName(&'static str),
}

/// Reads the SNI host name from the start of a client's byte stream without consuming
/// anything: `buf` is everything received so far.
pub fn peek_sni(buf: &[u8]) -> Result<SniPeek<'_>, SniError> {
    let mut hello = Gathered::One(&[]);
    let mut total = None;
    let walked = walk_records(buf, &mut hello, &mut total);
    // Errors in the ClientHello body come before a later record's header in the byte
    // stream, so they win; this keeps every prefix's answer consistent with the whole.
    let body = match total {
        Some(total) => match &hello {
            Gathered::One(bytes) => parse_body(bytes, total).map(|n| n.map(Cow::Borrowed)),
            Gathered::Many(bytes) => {
                parse_body(bytes, total).map(|n| n.map(|n| Cow::Owned(n.to_owned())))
            }
        },
        None => Err(Stop::NeedMore),
    };
    match (walked, body) {
        (_, Err(Stop::Fail(e))) => Err(e),
        (Err(Stop::Fail(e)), _) => Err(e),
        (Ok(()), Ok(Some(name))) => Ok(SniPeek::Found(name)),
        (Ok(()), Ok(None)) => Ok(SniPeek::NoSni),
        // Unreachable: a complete ClientHello never needs more body bytes.
        (Ok(()), Err(Stop::NeedMore)) | (Err(Stop::NeedMore), _) => Ok(SniPeek::NeedMore),
    }
}

/// Parsing stopped: not enough bytes yet, or an error.
enum Stop {
    NeedMore,
    Fail(SniError),
}

impl From<SniError> for Stop {
    fn from(e: SniError) -> Self {
        Stop::Fail(e)
    }
}

type Step<T> = Result<T, Stop>;

/// The handshake bytes gathered from the records: borrowed while they come from one
/// record (the usual case), copied once a second record contributes.
enum Gathered<'a> {
    One(&'a [u8]),
    Many(Vec<u8>),
}

impl<'a> Gathered<'a> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Gathered::One(b) => b,
            Gathered::Many(v) => v,
        }
    }

    fn push(&mut self, more: &'a [u8]) {
        match self {
            _ if more.is_empty() => {}
            Gathered::One([]) => *self = Gathered::One(more),
            Gathered::One(b) => {
                let mut v = Vec::with_capacity(b.len() + more.len());
                v.extend_from_slice(b);
                v.extend_from_slice(more);
                *self = Gathered::Many(v);
            }
            Gathered::Many(v) => v.extend_from_slice(more),
        }
    }

    fn truncate(&mut self, len: usize) {
        match self {
            Gathered::One(b) => *b = &b[..len.min(b.len())],
            Gathered::Many(v) => v.truncate(len),
        }
    }
}

/// Raw offset at which the ClientHello can end at the earliest, given that `need` more
/// handshake bytes are due and the current record's payload (`len` bytes) starts at `at`.
fn earliest_end(at: usize, len: usize, need: usize) -> usize {
    if need <= len {
        at + need
    } else {
        at + len + RECORD_HEADER_LEN + (need - len)
    }
}

/// Walks the TLS records at the start of `buf`, gathering handshake bytes into `hello`
/// until the ClientHello (`total` bytes, header included, once known) is complete.
fn walk_records<'a>(
    buf: &'a [u8],
    hello: &mut Gathered<'a>,
    total: &mut Option<usize>,
) -> Step<()> {
    if let Some(&first) = buf.first() {
        if first & 0x80 != 0 {
            return Err(SniError::SslV2(first).into());
        }
    }
    let mut pos = 0;
    loop {
        let header = &buf[pos..];
        match header.first() {
            None => return Err(Stop::NeedMore),
            Some(&t) if t != CONTENT_HANDSHAKE => return Err(SniError::NotHandshake(t).into()),
            Some(_) => {}
        }
        let Some(version) = header.get(1..3) else {
            return Err(Stop::NeedMore);
        };
        let version = u16::from_be_bytes([version[0], version[1]]);
        if !(0x0300..=0x0304).contains(&version) {
            return Err(SniError::RecordVersion(version).into());
        }
        let Some(len) = header.get(3..5) else {
            return Err(Stop::NeedMore);
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len == 0 || len > MAX_RECORD_LEN {
            return Err(SniError::RecordLength(len).into());
        }
        let start = pos + RECORD_HEADER_LEN;
        let have = hello.as_slice().len();
        let need = total.unwrap_or(HANDSHAKE_HEADER_LEN) - have;
        if earliest_end(start, len, need) > MAX_CLIENT_HELLO {
            return Err(SniError::TooLarge.into());
        }
        let available = len.min(buf.len() - start);
        let take = match total {
            Some(_) => available.min(need),
            None => available,
        };
        hello.push(&buf[start..start + take]);

        let bytes = hello.as_slice();
        if let Some(&kind) = bytes.first() {
            if kind != HANDSHAKE_CLIENT_HELLO {
                return Err(SniError::NotClientHello(kind).into());
            }
        }
        if total.is_none() && bytes.len() >= HANDSHAKE_HEADER_LEN {
            let body_len =
                usize::from(bytes[1]) << 16 | usize::from(bytes[2]) << 8 | usize::from(bytes[3]);
            let hello_len = HANDSHAKE_HEADER_LEN + body_len;
            if earliest_end(start, len, hello_len - have) > MAX_CLIENT_HELLO {
                return Err(SniError::TooLarge.into());
            }
            *total = Some(hello_len);
            hello.truncate(hello_len);
        }
        if let Some(t) = *total {
            if hello.as_slice().len() == t {
                return Ok(());
            }
        }
        if available < len {
            return Err(Stop::NeedMore);
        }
        pos = start + len;
    }
}

/// A cursor over a field whose declared end (`end`) may lie beyond the bytes received
/// (`data`): reading past `end` is a length error, past `data` means more is needed.
struct Reader<'d> {
    data: &'d [u8],
    pos: usize,
    end: usize,
}

impl<'d> Reader<'d> {
    fn remaining(&self) -> usize {
        self.end - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Step<&'d [u8]> {
        if n > self.remaining() {
            return Err(SniError::BadLength(what).into());
        }
        let stop = self.pos + n;
        let bytes = self.data.get(self.pos..stop).ok_or(Stop::NeedMore)?;
        self.pos = stop;
        Ok(bytes)
    }

    fn u8(&mut self, what: &'static str) -> Step<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Step<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
}

/// Parses the ClientHello in `hello` (header included; possibly only its first bytes)
/// whose full length is `total`. Returns the host name if any.
fn parse_body(hello: &[u8], total: usize) -> Step<Option<&str>> {
    let mut r = Reader {
        data: hello,
        pos: HANDSHAKE_HEADER_LEN,
        end: total,
    };
    let version = r.u16("legacy_version")?;
    if version >> 8 != 3 {
        return Err(SniError::HelloVersion(version).into());
    }
    r.take(32, "random")?;
    let session_id = usize::from(r.u8("session_id")?);
    if session_id > 32 {
        return Err(SniError::BadLength("session_id").into());
    }
    r.take(session_id, "session_id")?;
    let suites = usize::from(r.u16("cipher_suites")?);
    if suites == 0 || suites % 2 != 0 {
        return Err(SniError::BadLength("cipher_suites").into());
    }
    r.take(suites, "cipher_suites")?;
    let compression = usize::from(r.u8("compression_methods")?);
    if compression == 0 {
        return Err(SniError::BadLength("compression_methods").into());
    }
    r.take(compression, "compression_methods")?;
    if r.remaining() == 0 {
        return Ok(None); // no extensions at all (allowed before TLS 1.3)
    }
    let extensions = usize::from(r.u16("extensions")?);
    if extensions != r.remaining() {
        return Err(SniError::BadLength("extensions").into());
    }
    let mut seen = false;
    let mut host = None;
    while r.remaining() > 0 {
        let kind = r.u16("extension header")?;
        let len = usize::from(r.u16("extension header")?);
        let data = r.take(len, "extension")?;
        if kind == EXT_SERVER_NAME {
            if seen {
                return Err(SniError::Duplicate("server_name extension").into());
            }
            seen = true;
            host = parse_server_name(data)?;
        }
    }
    Ok(host)
}

/// Parses a complete server_name extension body (RFC 6066 §3).
fn parse_server_name(data: &[u8]) -> Result<Option<&str>, SniError> {
    let fail = |stop| match stop {
        Stop::Fail(e) => e,
        Stop::NeedMore => SniError::BadLength("server_name"),
    };
    let mut r = Reader {
        data,
        pos: 0,
        end: data.len(),
    };
    let list = usize::from(r.u16("server_name list").map_err(fail)?);
    if list == 0 || list != r.remaining() {
        return Err(SniError::BadLength("server_name list"));
    }
    let mut host = None;
    while r.remaining() > 0 {
        let kind = r.u8("server_name entry").map_err(fail)?;
        let len = usize::from(r.u16("server_name entry").map_err(fail)?);
        let name = r.take(len, "server_name entry").map_err(fail)?;
        if kind == NAME_TYPE_HOST_NAME {
            if host.is_some() {
                return Err(SniError::Duplicate("host_name"));
            }
            host = Some(validate_host_name(name)?);
        }
    }
    Ok(host)
}
