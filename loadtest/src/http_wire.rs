//! HTTP/1.1 on a [`Stream`] for `sluice-load http` and `serve --mode http`: the heads
//! are parsed by `httparse` (hyper's parser), bodies are framed by `Content-Length`,
//! `Transfer-Encoding: chunked` or, for a response, the end of the connection.
//! [`Conn`] keeps the bytes read past one message for the next, so pipelined or
//! coalesced messages are read whole; heads and chunk lines are bounded.

use crate::{stream::Stream, Failure};

/// Largest head read; beyond it the message is refused.
pub const MAX_HEAD: usize = 64 << 10;
/// Most headers in one head.
const MAX_HEADERS: usize = 64;
const READ: usize = 16 << 10;

/// A connection with the bytes read but not yet consumed.
pub struct Conn {
    /// The stream.
    pub stream: Stream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// A response as read: its status, whether the server keeps the connection, and the
/// body's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The connection may carry the next request.
    pub keep_alive: bool,
    /// Body bytes read.
    pub body: u64,
}

/// A request head as read by the server side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The client asked to close after the response (or spoke HTTP/1.0 without
    /// keep-alive).
    pub close: bool,
    /// A `HEAD` request: the response has no body.
    pub head: bool,
}

/// How a body is delimited.
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

impl Conn {
    /// Wraps a stream.
    #[must_use]
    pub fn new(stream: Stream) -> Conn {
        Conn {
            stream,
            buf: vec![0; READ],
            start: 0,
            end: 0,
        }
    }

    /// Reads more bytes after the unconsumed ones; `Ok(0)` at the end of the stream.
    async fn fill(&mut self, what: &str) -> Result<usize, Failure> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.end, self.start) = (self.end - self.start, 0);
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= MAX_HEAD {
                return Err(Failure::new(
                    crate::ErrorClass::Other,
                    format!("{what}: a line or head over {MAX_HEAD} bytes"),
                ));
            }
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let buf = std::mem::take(&mut self.buf);
        let room = self.end..buf.len();
        let (res, buf) = self.stream.reader.read(buf, room).await;
        self.buf = buf;
        let n = res.map_err(|e| Failure::io(what, &e))?;
        self.end += n;
        Ok(n)
    }

    /// Whether bytes wait unread (a message arrived with nothing asked).
    #[must_use]
    pub fn has_buffered(&self) -> bool {
        self.start < self.end
    }

    /// Reads one response (the answer to a `HEAD` request has no body); interim `1xx`
    /// responses before it (`100 Continue`, `103 Early Hints`) are skipped.
    pub async fn read_response(&mut self, head_only: bool) -> Result<Response, Failure> {
        loop {
            let response = self.read_one_response(head_only).await?;
            if response.status / 100 != 1 || response.status == 101 {
                return Ok(response);
            }
        }
    }

    /// Reads one response head and its body.
    async fn read_one_response(&mut self, head_only: bool) -> Result<Response, Failure> {
        let (status, keep_alive, framing) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(&self.buf[self.start..self.end]) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = parsed.code.unwrap_or(0);
                    let http11 = parsed.version == Some(1);
                    let (framing, close, keep) = framing_of(parsed.headers)?;
                    self.start += len;
                    let keep_alive = !close && (http11 || keep);
                    let framing =
                        if head_only || status / 100 == 1 || status == 204 || status == 304 {
                            Framing::Length(0)
                        } else {
                            framing.unwrap_or(Framing::UntilClose)
                        };
                    break (status, keep_alive, framing);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(bad("response head", e)),
            }
            if self.fill("response head").await? == 0 {
                return Err(Failure::short_read(
                    "response head",
                    self.end - self.start,
                    self.end - self.start + 1,
                ));
            }
        };
        let keep_alive = keep_alive && !matches!(framing, Framing::UntilClose);
        let body = self.skip_body(framing, "response body").await?;
        Ok(Response {
            status,
            keep_alive,
            body,
        })
    }

    /// Reads one request head and skips its body; `None` when the client closed
    /// between requests.
    pub async fn read_request(&mut self) -> Result<Option<Request>, Failure> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Request::new(&mut headers);
            match parsed.parse(&self.buf[self.start..self.end]) {
                Ok(httparse::Status::Complete(len)) => {
                    let http11 = parsed.version == Some(1);
                    let head = parsed.method == Some("HEAD");
                    let (framing, close, keep) = framing_of(parsed.headers)?;
                    self.start += len;
                    let framing = framing.unwrap_or(Framing::Length(0));
                    self.skip_body(framing, "request body").await?;
                    return Ok(Some(Request {
                        close: close || !(http11 || keep),
                        head,
                    }));
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(bad("request head", e)),
            }
            let had = self.end - self.start;
            if self.fill("request head").await? == 0 {
                return match had {
                    0 => Ok(None),
                    n => Err(Failure::short_read("request head", n, n + 1)),
                };
            }
        }
    }

    /// Consumes a body; its length.
    async fn skip_body(&mut self, framing: Framing, what: &str) -> Result<u64, Failure> {
        match framing {
            Framing::Length(n) => self.skip(n, what).await.map(|()| n),
            Framing::UntilClose => {
                let mut total = (self.end - self.start) as u64;
                self.start = self.end;
                loop {
                    let n = self.fill(what).await?;
                    if n == 0 {
                        return Ok(total);
                    }
                    total += n as u64;
                    self.start = self.end;
                }
            }
            Framing::Chunked => {
                let mut total = 0;
                loop {
                    let size = loop {
                        match httparse::parse_chunk_size(&self.buf[self.start..self.end]) {
                            Ok(httparse::Status::Complete((len, size))) => {
                                self.start += len;
                                break size;
                            }
                            Ok(httparse::Status::Partial) => {
                                if self.fill(what).await? == 0 {
                                    return Err(Failure::short_read(what, 0, 1));
                                }
                            }
                            Err(_) => {
                                return Err(Failure::new(
                                    crate::ErrorClass::Other,
                                    format!("{what}: a bad chunk size line"),
                                ))
                            }
                        }
                    };
                    if size == 0 {
                        // Trailer lines, up to the empty one.
                        while !self.skip_line(what).await? {}
                        return Ok(total);
                    }
                    self.skip(size, what).await?;
                    self.skip_line(what).await?;
                    total = total.saturating_add(size);
                }
            }
        }
    }

    /// Consumes `n` bytes.
    async fn skip(&mut self, mut n: u64, what: &str) -> Result<(), Failure> {
        let want = n;
        loop {
            let here = ((self.end - self.start) as u64).min(n);
            self.start += here as usize;
            n -= here;
            if n == 0 {
                return Ok(());
            }
            if self.fill(what).await? == 0 {
                return Err(Failure::short_read(
                    what,
                    (want - n) as usize,
                    want as usize,
                ));
            }
        }
    }

    /// Consumes bytes up to and including the next CRLF; whether the line was empty.
    async fn skip_line(&mut self, what: &str) -> Result<bool, Failure> {
        loop {
            if let Some(i) = self.buf[self.start..self.end]
                .windows(2)
                .position(|w| w == b"\r\n")
            {
                self.start += i + 2;
                return Ok(i == 0);
            }
            if self.fill(what).await? == 0 {
                return Err(Failure::short_read(what, 0, 2));
            }
        }
    }

    /// Writes all of `bytes`.
    pub async fn write_all(&mut self, bytes: Vec<u8>, what: &str) -> Result<Vec<u8>, Failure> {
        let len = bytes.len();
        let (res, bytes) = self.stream.writer.write_all(bytes, 0..len).await;
        res.map_err(|e| Failure::io(what, &e))?;
        Ok(bytes)
    }
}

/// The body's framing (if the head says), `Connection: close`, `Connection:
/// keep-alive`.
fn framing_of(headers: &[httparse::Header<'_>]) -> Result<(Option<Framing>, bool, bool), Failure> {
    let mut framing = None;
    let (mut close, mut keep) = (false, false);
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Failure::new(crate::ErrorClass::Other, "a bad Content-Length".to_owned())
                })?;
            match framing {
                Some(Framing::Length(m)) if m != n => {
                    return Err(Failure::new(
                        crate::ErrorClass::Other,
                        format!("Content-Length given twice ({m} and {n})"),
                    ))
                }
                Some(Framing::Chunked) => {}
                _ => framing = Some(Framing::Length(n)),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked last, or the body cannot be delimited (RFC 9112 6.3).
            if h.value
                .split(|b| *b == b',')
                .next_back()
                .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"))
            {
                framing = Some(Framing::Chunked);
            } else {
                return Err(Failure::new(
                    crate::ErrorClass::Other,
                    "a Transfer-Encoding that does not end in chunked".to_owned(),
                ));
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    Ok((framing, close, keep))
}

fn bad(what: &str, e: httparse::Error) -> Failure {
    Failure::new(crate::ErrorClass::Other, format!("{what}: malformed ({e})"))
}
